"""The docs' examples, run as written: against a real gateway on 127.0.0.1 whose large model is a
scripted loopback upstream, and the README's commands through the real CLI in a subprocess.

An example is the fenced block after an ``<!-- example: NAME -->`` comment in the doc. Each is run
by the test named after it; one that cannot run offline says so in its comment and in ``NOT_RUN``
below, and every fenced block of the covered sections must carry a marker, so none is left out
silently. The only substitutions: the gateway's documented address ``http://127.0.0.1:8787`` is
replaced by the test gateway's, the collector's ``http://127.0.0.1:4318`` by a loopback OTLP
receiver's, an Anthropic backend's (commented-out) ``base_url`` is pointed at a scripted Anthropic
server, and the README's placeholders ``ROUTE`` and ``NEW-NAME`` become real route names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# The gateway tests' helpers: the Running handle, the scripted upstream's model config, the OTLP
# receiver, and the scripted Anthropic server (their directories are not packages).
sys.path[:0] = [str(Path(__file__).parent / "gateway"), str(Path(__file__).parent / "models")]
from gwkit import PRICE, Running, model_cfg  # noqa: E402
from test_anthropic_http import ScriptedAnthropic  # noqa: E402
from test_telemetry import Receiver  # noqa: E402

from smallfleet.config import TelemetryConfig, load_settings  # noqa: E402
from smallfleet.gateway.app import create_app  # noqa: E402
from smallfleet.gateway.server import BackgroundServer  # noqa: E402
from smallfleet.routing.routes import Route, RouteStore  # noqa: E402
from smallfleet.store.trace_store import TraceStore  # noqa: E402
from smallfleet.testing import Reply, ScriptedUpstream  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = "http://127.0.0.1:8787"  # the address the docs give the gateway
COLLECTOR = "http://127.0.0.1:4318"  # the address the docs give an OTLP collector
ALIAS = "gpt-4o-mini"  # the alias the docs use

#: The sections whose every fenced block must be an example (a marker before it).
SECTIONS = {
    "docs/gateway.md": ["## Anthropic's Messages API", "## OpenAI's Responses API"],
    "docs/telemetry.md": ["# OpenTelemetry export"],  # the whole page
    "docs/models.md": ["## Anthropic's Messages API (`backend: anthropic`)"],
    "README.md": ["## Quickstart"],
}
#: Examples (or lines of them) left out, and why; the doc's marker says so too.
NOT_RUN = {
    # `pip install 'smallfleet[otel]'` installs from the package index (no network in the tests);
    # test_otel_extra_exists checks that the extra it names is there instead.
    "otel-install": "installs from the package index",
}
#: Every example the tests below run (whole, or all but the lines their markers name).
RUN = {
    "chat-sdk",
    "custom-tools",
    "messages-sdk",
    "responses-sdk",
    "telemetry-yaml",
    "telemetry-python",
    "anthropic-backend",
    "quickstart-commands",  # all but `smallfleet chat`, which calls OpenAI
    "quickstart-python",
    "quickstart-loop",  # on three imported calls (the flywheel finds no task type in them)
}


@dataclass(frozen=True)
class Example:
    name: str
    lang: str
    code: str
    note: str  # what the marker says beyond the name (why a line is not run)


_MARKED = re.compile(r"<!-- example: ([\w-]+)(?: \((.*?)\))? -->\n```(\w*)\n(.*?)\n```", re.S)
_FENCE = re.compile(r"^```(\w*)\n(.*?)\n```", re.S | re.M)


def examples(doc: str) -> dict[str, Example]:
    text = (ROOT / doc).read_text()
    return {m[1]: Example(m[1], m[3], m[4], m[2] or "") for m in _MARKED.finditer(text)}


def example(name: str) -> Example:
    for doc in SECTIONS:
        found = examples(doc)
        if name in found:
            return found[name]
    raise AssertionError(f"no example {name!r} in {list(SECTIONS)}")


def section(doc: str, heading: str) -> str:
    """The text from ``heading`` to the next heading of its level or above."""
    text = (ROOT / doc).read_text()
    start = text.index(f"\n{heading}" if not text.startswith(heading) else heading)
    level = len(heading) - len(heading.lstrip("#"))
    rest = text[start + 1 :]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{level}}} ", rest, re.M) if m.start() > 0]
    # a fenced block's "# comment" lines are not headings
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(rest)]
    ends = [e for e in ends if not any(a < e < b for a, b in fences)]
    return rest[: ends[0]] if ends else rest


def run_python(code: str, **subs: str) -> dict[str, Any]:
    for old, new in subs.items():
        assert old in code, f"{old!r} is not in the example any more"
        code = code.replace(old, new)
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    exec(compile(code, "<doc example>", "exec"), namespace)
    return namespace


def test_every_block_of_the_covered_sections_is_an_example() -> None:
    names: set[str] = set()
    for doc, headings in SECTIONS.items():
        for heading in headings:
            body = section(doc, heading)
            blocks = _FENCE.findall(body)
            marked = _MARKED.findall(body)
            assert blocks, f"{doc} {heading}: no code block found"
            assert len(marked) == len(blocks), f"{doc} {heading}: a code block without an example marker"
        names |= set(examples(doc))
    assert names == RUN | set(NOT_RUN), "an example is neither run nor listed in NOT_RUN"
    for name in NOT_RUN:
        assert "not run" in example(name).note, f"the doc does not say that {name} is not run"


# ---------------------------------------------------------------- a gateway on loopback


def start(tmp: Path, models: dict[str, Any], settings_file: Path | None = None, **over: Any) -> Running:
    url = f"sqlite:///{tmp / 'traces.db'}"
    overrides = {"models": models, "store": {"url": url}, "gateway": {"flush_interval_ms": 20}, **over}
    settings = load_settings(settings_file, env={}, overrides=overrides)
    store = TraceStore(url)
    app = create_app(settings, store=store)
    return Running(app, BackgroundServer(app).start(), store)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("gw"), {ALIAS: model_cfg(upstream.url, model="gpt-upstream")})
    yield running
    running.server.stop()
    running.store.close()


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.reset()


def new_traces(gw: Running, before: int) -> list[Any]:
    return sorted(gw.traces(), key=lambda t: t.created_at)[before:]


# ---------------------------------------------------------------- docs/gateway.md


def test_chat_and_custom_tools(gw: Running, upstream: ScriptedUpstream) -> None:
    before = len(gw.traces())
    ns = run_python(example("chat-sdk").code, **{GATEWAY: gw.server.base})
    run_python_in(ns, example("custom-tools").code)  # "with the client above"
    chat, custom = upstream.requests
    assert chat["messages"] == [{"role": "user", "content": "Where is order 1234?"}]
    assert custom["tools"] == [ns["patch_tool"]]  # passed through as sent
    assert custom["tool_choice"]["type"] == "allowed_tools"
    t1, t2 = new_traces(gw, before)
    assert (t1.workload, t1.route, t1.status) == ("support-agent", "direct", "ok")
    assert (t2.route, t2.status, t2.tool_names) == ("direct", "ok", ["apply_patch"])


def run_python_in(namespace: dict[str, Any], code: str) -> None:
    exec(compile(code, "<doc example>", "exec"), namespace)


def test_messages_sdk(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Paris"}, prompt_tokens=30))
    before = len(gw.traces())
    msg = run_python(example("messages-sdk").code, **{GATEWAY: gw.server.base})["msg"]
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris"})
    sent = upstream.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "You are the weather desk."}
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    (t,) = new_traces(gw, before)
    assert (t.status, t.route, t.tool_names) == ("ok", "direct", ["get_weather"])


def test_responses_sdk(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Paris"}, prompt_tokens=30))
    before = len(gw.traces())
    resp = run_python(example("responses-sdk").code, **{GATEWAY: gw.server.base})["resp"]
    assert resp.status == "completed"
    (call,) = resp.output
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        {"city": "Paris"},
    )
    sent = upstream.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "You are the weather desk."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    (t,) = new_traces(gw, before)
    assert resp.id == f"resp_{t.id}" and t.status == "ok"


# ---------------------------------------------------------------- docs/telemetry.md, docs/config.md


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_otel_extra_exists() -> None:
    """``otel-install`` is not run (it needs the package index); the extra it names exists."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "pip install 'smallfleet[otel]'" in example("otel-install").code
    assert any(dep.startswith("opentelemetry") for dep in extras["otel"])


def test_telemetry_yaml(tmp_path: Path, upstream: ScriptedUpstream, receiver: Receiver) -> None:
    yaml = example("telemetry-yaml").code
    assert COLLECTOR in yaml
    config = tmp_path / "smallfleet.yaml"
    config.write_text(yaml.replace(COLLECTOR, receiver.url))
    gw = start(tmp_path, {ALIAS: model_cfg(upstream.url)}, settings_file=config)
    try:
        assert gw.app.settings.telemetry.service_name == "smallfleet-gateway"
        r = httpx.post(
            f"{gw.url}/chat/completions",
            json={"model": ALIAS, "messages": [{"role": "user", "content": "Where is order 1234?"}]},
            timeout=15,
        )
        assert r.status_code == 200, r.text
        span = receiver.span(r.headers["x-smallfleet-trace-id"])
    finally:
        gw.server.stop()
        gw.store.close()
    assert span["resource"]["service.name"] == "smallfleet-gateway"
    assert span["attrs"]["gen_ai.request.model"] == ALIAS
    assert "gen_ai.input.messages" not in span["attrs"]  # export_content: false
    # the one-line form of the same setting
    env = {"SMALLFLEET_TELEMETRY__OTLP_ENDPOINT": COLLECTOR}
    assert load_settings(None, env=env).telemetry.otlp_endpoint == COLLECTOR


def test_telemetry_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)  # the example's default store is ./smallfleet.db
    app = run_python(example("telemetry-python").code, **{COLLECTOR: receiver.url})["app"]
    with BackgroundServer(app) as server:  # no models configured: the call is refused, a span too
        r = httpx.post(
            f"{server.url}/chat/completions",
            json={"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]},
            timeout=15,
        )
    assert r.status_code == 404, r.text
    span = receiver.span(r.headers["x-smallfleet-trace-id"])  # flushed when it shut down
    assert (span["attrs"]["error.type"], span["status"][0]) == ("404", 2)


def test_config_md_telemetry_table_matches_the_settings() -> None:
    body = section("docs/config.md", "### `telemetry`")
    rows = re.findall(r"^\| `(\w+)` \| (.*?) \|", body, re.M)
    shown = {
        "unset": None,
        "`smallfleet-gateway`": "smallfleet-gateway",
        "`{}`": {},
        "`false`": False,
        "`1000`": 1000,
        "`5.0`": 5.0,
    }
    fields = TelemetryConfig.model_fields
    assert [k for k, _ in rows] == list(fields)
    defaults = TelemetryConfig()
    for key, default in rows:
        assert shown[default] == getattr(defaults, key), key


# ---------------------------------------------------------------- docs/models.md


def test_anthropic_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml = example("anthropic-backend").code
    config = tmp_path / "smallfleet.yaml"
    config.write_text(yaml)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-docs-example")
    claude = ScriptedAnthropic()
    with BackgroundServer(claude) as anthropic_server:
        over = {"claude": {"base_url": anthropic_server.url}}  # the yaml's commented-out key, set
        gw = start(tmp_path, over, settings_file=config)
        try:
            chat = gw.client().chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "Say hi"}]
            )
            import anthropic

            client = anthropic.Anthropic(base_url=gw.server.base, api_key="x", max_retries=0)
            msg = client.messages.create(
                model="claude", max_tokens=50, messages=[{"role": "user", "content": "Say hi"}]
            )
            traces = gw.traces()
        finally:
            gw.server.stop()
            gw.store.close()
    assert chat.choices[0].message.content == "ok" and msg.content[0].text == "ok"
    first, second = claude.requests
    assert (first["model"], first["max_tokens"]) == ("claude-sonnet-4-5", 4096)  # none asked: the default
    assert second["max_tokens"] == 50
    for h in claude.headers:
        assert (h["x-api-key"], h["anthropic-version"]) == ("sk-ant-docs-example", "2023-06-01")
    assert len(traces) == 2
    for t in traces:  # price: {input: 3.0, output: 15.0} USD per 1M tokens
        assert t.cost_usd == pytest.approx((t.input_tokens * 3.0 + t.output_tokens * 15.0) / 1e6)


# ---------------------------------------------------------------- README.md


def test_quickstart_python(gw: Running, upstream: ScriptedUpstream) -> None:
    before = len(gw.traces())
    run_python(example("quickstart-python").code, **{GATEWAY: gw.server.base})
    (t,) = new_traces(gw, before)
    assert (t.workload, t.status) == ("support-agent", "ok")
    assert t.cost_usd == pytest.approx(
        (t.input_tokens * PRICE["input"] + t.output_tokens * PRICE["output"]) / 1e6
    )


def commands(name: str) -> list[str]:
    """The example's command lines, comments dropped."""
    return [ln.split("  #")[0].strip() for ln in example(name).code.splitlines() if ln.strip()]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `smallfleet`
    env.update(COLUMNS="200", NO_COLOR="1", HF_HUB_OFFLINE="1", **extra)
    return env


def sh(cmd: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


def test_quickstart_commands(tmp_path: Path) -> None:
    assert shutil.which("smallfleet", path=cli_env()["PATH"]), "the smallfleet command is not installed"
    init, models, chat, gateway = commands("quickstart-commands")
    assert (init, models, gateway) == ("smallfleet init", "smallfleet models", "smallfleet gateway")
    # not run: `smallfleet chat` calls OpenAI with a real key (the doc's marker says so)
    assert chat.startswith("export OPENAI_API_KEY=") and "smallfleet chat" in chat
    assert "not run" in example("quickstart-commands").note
    sh(init, tmp_path)
    assert (tmp_path / "smallfleet.yaml").exists()
    assert ALIAS in sh(models, tmp_path).stdout
    # the gateway as written, on a free port (8787 may be taken on a test machine), then Ctrl-C
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {gateway}"],
        cwd=tmp_path,
        env=cli_env(SMALLFLEET_GATEWAY__PORT="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"{url}/models", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not answer"
                time.sleep(0.2)
        assert ALIAS in [m["id"] for m in r.json()["data"]]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_quickstart_loop(tmp_path: Path) -> None:
    lines = commands("quickstart-loop")
    assert [ln.split()[1] for ln in lines] == [
        "traces",
        "stats",
        "flywheel",
        "report",
        "routes",
        "routes",
        "routes",
    ]
    imp, stats, flywheel, report, routes_list, set_mode, rename = lines

    def pair(i: int) -> dict[str, Any]:
        ask = [{"role": "user", "content": f"Where is order {1234 + i}?"}]
        return {"id": f"t{i}", "request": {"model": ALIAS, "messages": ask}, "response": answer}

    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": ALIAS,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "It ships today."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }
    (tmp_path / "calls.jsonl").write_text("".join(json.dumps(pair(i)) + "\n" for i in range(3)))
    assert "3" in sh(imp, tmp_path).stdout
    assert "support" in sh(stats, tmp_path).stdout
    # three calls are no recurring task type: the run says so, and the report shows it
    assert "why: no recurring task type was found in 3 calls" in sh(flywheel, tmp_path, timeout=120).stdout
    sh(report, tmp_path)
    assert (tmp_path / "report.html").exists()
    store = TraceStore(f"sqlite:///{tmp_path / 'smallfleet.db'}", create=False)
    try:
        RouteStore(store.engine).promote(
            Route(name="support-intent", kind="classifier", specialist_path="/nowhere", threshold=0.5)
        )
    finally:
        store.close()
    assert "support-intent" in sh(routes_list, tmp_path).stdout
    sh(set_mode.replace("ROUTE", "support-intent"), tmp_path)
    sh(rename.replace("ROUTE", "support-intent").replace("NEW-NAME", "intents"), tmp_path)
    assert "intents" in sh(routes_list, tmp_path).stdout


# ---------------------------------------------------------------- the demo on a small workload


@pytest.mark.slow  # about a minute on 2 cores
def test_a_small_demo_says_why_nothing_was_promoted(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "smallfleet.cli",
            "demo",
            "--calls",
            "200",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = " ".join(r.stdout.split())  # rich wraps lines
    assert "200 calls is a smaller workload than the demo's 10,000" in out
    assert "fewer task types are promoted, at lower coverage, and fewer calls are served small" in out
    assert "Nothing was promoted:" in out
    assert "fewer than min_examples (30)" in out
    assert "→ " in out  # the hint: what to do about it
    assert "served small: 0.0% of calls" in out
