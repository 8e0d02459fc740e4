"""The router inside the gateway, end to end over real HTTP.

The client is the official ``openai`` SDK, the large model a :class:`ScriptedUpstream`,
the gateway real (uvicorn on 127.0.0.1, SQLite store), and the routes promoted with
:class:`RouteStore` point at a support-desk classifier trained once for this module.
Every route keys on its own system prompt (the classifier ignores the system prompt
when all its training examples shared one), so one gateway holds a route per case.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from routekit import (
    ALIAS,
    SCRIPTED_KIND,
    RoutedGateway,
    ScriptedToolCaller,
    key_matcher,
    start_gateway,
    train_triage,
)
from typer.testing import CliRunner

from smallfleet.routing.routes import Route
from smallfleet.specialists.base import KINDS
from smallfleet.store.fleet_tables import route_checks
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.testing.intents import SYSTEM_PROMPT, support_desk_examples
from smallfleet.types import ChatRequest

LARGE = "answer from the large model"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]
TOOL_SCRIPT = {
    "weather in Paris": ("get_weather", {"city": "Paris", "days": 3}, 0.9),  # valid
    "weather in Rome": ("delete_account", {"user": "me"}, 0.95),  # a tool the request does not offer
    "weather in Oslo": ("get_weather", {"city": "Oslo", "days": "three"}, 0.95),  # wrong argument type
    "weather in Lima": ("get_weather", {"city": "Lima"}, 0.2),  # valid but unsure
}


def system(name: str) -> str:
    return f"{SYSTEM_PROMPT} [{name}]"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A support-desk classifier (head only on the frozen encoder: seconds, confident on easy data)."""
    out = tmp_path_factory.mktemp("specialists") / "triage"
    return out, train_triage(out)


@pytest.fixture(scope="module")
def queries(trained: tuple[Path, Any]) -> list[tuple[str, str, float]]:
    """(user text, the specialist's own answer, its confidence) for requests worded like its training."""
    _, clf = trained
    examples = support_desk_examples(24, split="train", seed=5)
    preds = clf.predict([ex.request for ex in examples])
    return [
        (ex.request.last_user_text(), p.response.message.content, p.confidence)
        for ex, p in zip(examples, preds, strict=True)
    ]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: ScriptedUpstream) -> None:
    upstream.reset()
    upstream.set_responder(lambda body: Reply.text(LARGE))


@pytest.fixture(scope="module")
def scripted_kind() -> Iterator[None]:
    KINDS[SCRIPTED_KIND] = "routekit:ScriptedToolCaller"
    yield
    KINDS.pop(SCRIPTED_KIND, None)


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory,
    trained: tuple[Path, Any],
    upstream: ScriptedUpstream,
    scripted_kind: None,
) -> Iterator[RoutedGateway]:
    """One gateway, a route per case (guard off, so the upstream is called only on escalation)."""
    spec_dir, clf = trained
    work = tmp_path_factory.mktemp("routed")
    broken = work / "broken"
    shutil.copytree(spec_dir, broken)
    (broken / "weights.safetensors").write_bytes(b"not a tensor file")
    tools_dir = ScriptedToolCaller(TOOL_SCRIPT).save(work / "tools")

    def route(name: str, mode: str = "on", threshold: float = 0.3, **kw: Any) -> Route:
        fields: dict[str, Any] = {"specialist_path": str(spec_dir), "labels": list(clf.labels)}
        fields.update(kw)
        fields.setdefault("matcher", key_matcher(system(name)))
        return Route(name=name, kind="classifier", threshold=threshold, mode=mode, **fields)

    routes = [
        route("triage"),
        route("unsure", threshold=0.999),
        route("narrow", labels=["refund"]),
        route("broken", specialist_path=str(broken)),
        route("closed", mode="off"),
        route("shadowed", mode="shadow"),
        route("canary", mode="canary:0.3"),
        route("switch"),
        Route(
            name="tools",
            kind="tool_caller",
            specialist_path=str(tools_dir),
            threshold=0.5,
            mode="on",
            matcher=key_matcher(system("tools"), TOOLS),
        ),
    ]
    running = start_gateway(work, upstream.url, routes)
    yield running
    running.stop()


def ask_raw(gw: RoutedGateway, text: str, route: str, **kw: Any) -> Any:
    """The SDK's raw response (headers, then ``parse()``) for one request through the gateway."""
    return gw.client().chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=[{"role": "system", "content": system(route)}, {"role": "user", "content": text}],
        **kw,
    )


def ask(gw: RoutedGateway, text: str, route: str, **kw: Any) -> tuple[str, str, Any]:
    """(x-smallfleet-route, trace id, the parsed completion) for one request through the SDK."""
    raw = ask_raw(gw, text, route, **kw)
    return raw.headers["x-smallfleet-route"], raw.headers["x-smallfleet-trace-id"], raw.parse()


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------- served small


def test_confident_valid_answer_is_served_small(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    confident = [q for q in queries if q[2] >= 0.4][:4]
    assert len(confident) >= 3, queries
    for text, label, confidence in confident:
        route, trace_id, out = ask(gw, text, "triage")
        assert route == "specialist:triage"
        assert out.choices[0].message.content == label
        assert out.model == "smallfleet:triage"
        rec = gw.trace(trace_id)
        assert rec.route == "specialist:triage" and rec.status == "ok"
        assert rec.model_served == "smallfleet:triage"
        assert rec.confidence == pytest.approx(confidence, abs=0.02)  # batched vs single: padding
        assert rec.escalation is None
        assert rec.cost_usd == pytest.approx(rec.latency_ms / 3.6e6 * 0.5, rel=0.05)  # compute time
    raw = ask_raw(gw, confident[0][0], "triage")
    assert float(raw.headers["x-smallfleet-confidence"]) == pytest.approx(confident[0][2], abs=0.02)
    assert upstream.requests == []  # the large model was never asked


def test_concurrent_requests_are_served_small_in_batches_each_with_its_own_answer(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    """Requests arriving together at one route are answered by its specialist as batches
    (``routing.max_batch``), each request still getting its own label."""
    from concurrent.futures import ThreadPoolExecutor

    confident = [q for q in queries if q[2] >= 0.4]
    batcher = gw.app.router.router._batchers.get(str(gw.routes.get("triage").specialist_path))
    before = (batcher.batches, batcher.requests) if batcher is not None else (0, 0)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda q: ask(gw, q[0], "triage"), confident * 2))
    assert [r for r, _, _ in got] == ["specialist:triage"] * len(got)
    assert [out.choices[0].message.content for _, _, out in got] == [label for _, label, _ in confident * 2]
    batcher = gw.app.router.router._batchers[str(gw.routes.get("triage").specialist_path)]
    batches, answered = batcher.batches - before[0], batcher.requests - before[1]
    print(f"{answered} concurrent requests in {batches} batches")
    assert answered == len(got) and batches < answered  # some went together
    assert upstream.requests == []


def test_valid_tool_call_is_served_small(gw: RoutedGateway, upstream: ScriptedUpstream) -> None:
    route, trace_id, out = ask(gw, "weather in Paris", "tools", tools=TOOLS)
    assert route == "specialist:tools"
    (call,) = out.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris", "days": 3}'
    assert gw.trace(trace_id).confidence == pytest.approx(0.9)
    assert upstream.requests == []


def test_streamed_request_served_small_streams_proper_chunks(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    text, label, _ = next(q for q in queries if q[2] >= 0.4)
    raw = gw.client().chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=[{"role": "system", "content": system("triage")}, {"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-smallfleet-route"] == "specialist:triage"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert float(raw.headers["x-smallfleet-confidence"]) >= 0.3
    chunks = list(raw.parse())
    assert len(chunks) >= 3  # role, content, finish (+ usage)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == label
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    rec = gw.trace(raw.headers["x-smallfleet-trace-id"])
    assert rec.stream and rec.route == "specialist:triage"
    assert rec.response["choices"][0]["message"]["content"] == label
    assert upstream.requests == []


# ---------------------------------------------------------------- escalations


def _escalated(gw: RoutedGateway, upstream: ScriptedUpstream, text: str, route: str, **kw: Any) -> Any:
    before = len(upstream.requests)
    header, trace_id, out = ask(gw, text, route, **kw)
    assert out.choices[0].message.content == LARGE  # the large model's answer, unchanged
    assert len(upstream.requests) == before + 1
    rec = gw.trace(trace_id)
    assert rec.route == header and rec.model_served == ALIAS and rec.status == "ok"
    return rec


def test_unknown_task_type_goes_to_the_large_model(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    rec = _escalated(gw, upstream, queries[0][0], "no route has this system prompt")
    assert rec.route == "escalated:no_match" and rec.escalation == "no_match"


def test_low_confidence_escalates(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    raw = ask_raw(gw, queries[0][0], "unsure")
    assert float(raw.headers["x-smallfleet-confidence"]) == pytest.approx(queries[0][2], abs=0.02)
    rec = _escalated(gw, upstream, queries[0][0], "unsure")
    assert rec.route == "escalated:low_confidence" and rec.escalation == "low_confidence"
    assert rec.confidence == pytest.approx(queries[0][2], abs=0.02)


def test_tool_call_with_low_confidence_escalates(gw: RoutedGateway, upstream: ScriptedUpstream) -> None:
    rec = _escalated(gw, upstream, "weather in Lima", "tools", tools=TOOLS)
    assert rec.escalation == "low_confidence" and rec.confidence == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "why"),
    [("weather in Rome", "'delete_account', which the request does not offer"), ("weather in Oslo", "days")],
)
def test_invalid_tool_call_is_never_served(
    gw: RoutedGateway, upstream: ScriptedUpstream, text: str, why: str
) -> None:
    """Confident (0.95 ≥ 0.5) but calling an absent tool, or with a wrong argument type."""
    rec = _escalated(gw, upstream, text, "tools", tools=TOOLS)
    assert rec.route == "escalated:invalid_output"
    assert rec.escalation.startswith("invalid_output: ") and why in rec.escalation
    assert rec.response["choices"][0]["message"]["content"] == LARGE


def test_label_outside_the_route_set_is_invalid(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    text = next(t for t, label, c in queries if label != "refund" and c >= 0.4)
    rec = _escalated(gw, upstream, text, "narrow")
    assert rec.escalation.startswith("invalid_output: ") and "not one of the route's labels" in rec.escalation


def test_failing_specialist_escalates(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    for _ in range(2):  # the second within the retry delay: the failed folder is not reloaded
        rec = _escalated(gw, upstream, queries[0][0], "broken")
        assert rec.route == "escalated:specialist_error" and rec.escalation == "specialist_error"


def test_route_in_mode_off_escalates(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    rec = _escalated(gw, upstream, queries[0][0], "closed")
    assert rec.route == "escalated:mode_off" and rec.escalation == "mode_off"


# ---------------------------------------------------------------- shadow, canary, set-mode


def test_shadow_records_agreement_without_changing_responses(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    picked = [q for q in queries if q[2] >= 0.4][:5]
    wrong = {picked[3][0], picked[4][0]}  # the large model disagrees with the specialist on two
    large = {text: "not a label" if text in wrong else label for text, label, _ in picked}
    upstream.set_responder(lambda body: Reply.text(large[body["messages"][-1]["content"]]))
    ids = {}
    for text, _, _ in picked:
        header, trace_id, out = ask(gw, text, "shadowed")
        assert header == "escalated:shadow"
        assert out.choices[0].message.content == large[text]  # the large model's answer, always
        ids[trace_id] = text
    assert len(upstream.requests) == 5
    rate, _ = wait_for(lambda: (r := gw.routes.agreement("shadowed", kind="shadow")) and r[1] == 5 and r)
    assert rate == pytest.approx(3 / 5)
    with gw.store.engine.connect() as conn:
        rows = conn.execute(sa.select(route_checks).where(route_checks.c.route == "shadowed")).all()
    assert {r.trace_id for r in rows} == set(ids)
    assert {ids[r.trace_id] for r in rows if not r.agree} == wrong
    assert gw.trace(next(iter(ids))).escalation == "shadow"


def test_canary_serves_its_share_small(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    text = next(t for t, _, c in queries if c >= 0.4)
    n, p = 200, 0.3
    routes = [ask(gw, text, "canary")[0] for _ in range(n)]
    small = routes.count("specialist:canary")
    assert small + routes.count("escalated:canary_holdout") == n
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(small - n * p) <= 4 * sd, small
    assert len(upstream.requests) == n - small


def test_set_mode_takes_effect_without_restart(
    gw: RoutedGateway, queries: list[tuple[str, str, float]], upstream: ScriptedUpstream
) -> None:
    from smallfleet.cli import app

    text = next(t for t, _, c in queries if c >= 0.4)
    runner = CliRunner()
    env = {"SMALLFLEET_STORE__URL": gw.db_url, "COLUMNS": "200"}
    assert ask(gw, text, "switch")[0] == "specialist:switch"
    for mode, expected in [
        ("off", "escalated:mode_off"),
        ("shadow", "escalated:shadow"),
        ("on", "specialist:switch"),
    ]:
        result = runner.invoke(app, ["routes", "set-mode", "switch", mode], env=env)
        assert result.exit_code == 0, result.output
        assert wait_for(lambda exp=expected: ask(gw, text, "switch")[0] == exp)
    actions = [(e.action, e.detail.get("new")) for e in gw.routes.events("switch")]
    assert actions[:3] == [("set-mode", "on"), ("set-mode", "shadow"), ("set-mode", "off")]


# ---------------------------------------------------------------- the guard


def test_guard_demotes_a_route_when_the_large_model_starts_disagreeing(
    tmp_path: Path,
    trained: tuple[Path, Any],
    queries: list[tuple[str, str, float]],
    upstream: ScriptedUpstream,
) -> None:
    from smallfleet.cli import app

    spec_dir, clf = trained
    guarded = Route(
        name="guarded",
        kind="classifier",
        specialist_path=str(spec_dir),
        threshold=0.3,
        mode="on",
        labels=list(clf.labels),
        matcher=key_matcher(system("guarded")),
        metrics={"target_accuracy": 0.9},
    )
    gw = start_gateway(
        tmp_path, upstream.url, [guarded], guard_fraction=1.0, guard_window=6, guard_min_checks=6
    )
    try:
        confident = [q for q in queries if q[2] >= 0.4]
        assert len(confident) >= 8, queries
        truth = {text: label for text, label, _ in confident}
        agreeing = True

        def answer(body: dict[str, Any]) -> Reply:
            text = body["messages"][-1]["content"]
            return Reply.text(truth[text] if agreeing else "not a label at all")

        upstream.set_responder(answer)
        # the large model agrees: every answer is served small and checked, the route stays on
        for text, _, _ in confident[:6]:
            assert ask(gw, text, "guarded")[0] == "specialist:guarded"
        assert wait_for(lambda: gw.routes.agreement("guarded", kind="guard") == (1.0, 6))
        assert gw.routes.get("guarded").mode == "on"
        assert len(upstream.requests) == 6  # each check asked the large model, in the background

        agreeing = False  # the large model starts disagreeing: one check takes 6/6 to 5/6 < 90%
        assert ask(gw, confident[6][0], "guarded")[0] == "specialist:guarded"
        assert wait_for(lambda: gw.routes.get("guarded").mode == "shadow")
        (event,) = [e for e in gw.routes.events("guarded") if e.action == "guard-demote"]
        assert event.actor == "guard" and event.detail["old"] == "on" and event.detail["new"] == "shadow"
        assert "agreement 83.3%" in event.detail["reason"]
        # the gateway serves it as shadow now, without a restart
        assert wait_for(lambda: ask(gw, confident[7][0], "guarded")[0] == "escalated:shadow")

        listing = CliRunner().invoke(
            app, ["routes", "list"], env={"SMALLFLEET_STORE__URL": gw.db_url, "COLUMNS": "200"}
        )
        assert listing.exit_code == 0, listing.output
        assert "guard" in listing.output and "set guarded v1 to shadow" in listing.output
    finally:
        gw.stop()


def test_a_request_has_the_static_key_of_its_route() -> None:
    """The request the router sees is the client's, parsed once: its static key is the route's key."""
    from smallfleet.routing.matcher import static_key

    req = ChatRequest.parse(
        {
            "model": ALIAS,
            "messages": [{"role": "system", "content": system("x")}, {"role": "user", "content": "hi"}],
        }
    )
    assert [static_key(req)] == key_matcher(system("x"))["keys"]
