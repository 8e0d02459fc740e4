"""What a new user meets first, through the real CLI in a subprocess: the gateway's port and
banner, the flywheel on no traces, read-only commands that create nothing, routes renamed,
messages that say ``error:`` and where, progress that logs when not on a terminal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smallfleet.routing.routes import Route, RouteStore
from smallfleet.store.trace_store import TraceStore


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    env.update(COLUMNS="200", NO_COLOR="1", HF_HUB_OFFLINE="1", **extra)
    return env


def run(tmp_path: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smallfleet.cli", *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# ---------------------------------------------------------------- the gateway


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    r = run(tmp_path, "gateway", "--port", "99999")
    assert r.returncode == 2 and "65535" in r.stderr
    assert "smallfleet gateway on" not in r.stdout


def test_a_port_in_use_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run(tmp_path, "gateway", "--host", "127.0.0.1", "--port", str(port))
    line = one_error_line(r)
    assert f"port {port}" in line and "already in use" in line and "--port" in line
    assert r.stdout == ""  # no banner
    assert not (tmp_path / "smallfleet.db").exists()


def test_the_banner_names_the_port_it_binds_and_the_dashboard(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "smallfleet.cli", "gateway", "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(2)]
        url = banner[0].split()[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1") and ":0/" not in url
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert banner[1].split() == ["dashboard:", f"http://127.0.0.1:{port}/ui"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the announced port is the one served
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the gateway did not listen on the port it announced")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


# ---------------------------------------------------------------- the flywheel on no traces


@pytest.mark.parametrize("store", ["missing", "empty"])
def test_the_flywheel_on_no_traces_says_how_to_get_some(tmp_path: Path, store: str) -> None:
    if store == "empty":
        TraceStore(f"sqlite:///{tmp_path / 'smallfleet.db'}").close()
    r = run(tmp_path, "flywheel", "run")
    line = one_error_line(r)
    assert r.returncode == 1
    for words in ("no traces", "smallfleet gateway", "smallfleet traces import", "min_examples", "100"):
        assert words in line
    assert "TraceStore(" not in line
    assert (tmp_path / "smallfleet.db").exists() == (store == "empty")
    assert not (tmp_path / "report.html").exists()


def test_read_only_commands_create_no_database(tmp_path: Path) -> None:
    r = run(tmp_path, "routes", "list")
    assert r.returncode == 0 and "No routes yet" in r.stdout
    for args in (["report"], ["stats"], ["routes", "show", "x"], ["traces", "show", "x"]):
        one_error_line(run(tmp_path, *args))
    assert list(tmp_path.iterdir()) == []


def test_messages_name_the_store_not_its_repr(tmp_path: Path) -> None:
    TraceStore(f"sqlite:///{tmp_path / 'smallfleet.db'}").close()
    line = one_error_line(run(tmp_path, "traces", "show", "nope"))
    assert line == "error: no trace with id 'nope' in ./smallfleet.db."
    line = one_error_line(run(tmp_path, "report"))
    assert "no flywheel run in ./smallfleet.db" in line and "smallfleet flywheel run" in line
    line = one_error_line(run(tmp_path, "stats", "--by", "colour"))
    assert line.startswith("error: --by must be one of")


# ---------------------------------------------------------------- routes rename


def _two_routes(tmp_path: Path) -> TraceStore:
    store = TraceStore(f"sqlite:///{tmp_path / 'smallfleet.db'}")
    routes = RouteStore(store.engine)
    for name in ("support-label-high-low-normal-urgent", "support-issue-refund"):
        routes.promote(Route(name=name, kind="classifier", specialist_path="/nowhere", threshold=0.5))
    routes.promote(
        Route(name="support-issue-refund", kind="tool_caller", specialist_path="/x", threshold=0.4)
    )
    routes.record_check("support-issue-refund", 2, "guard", agree=True, confidence=0.9)
    return store


def test_routes_rename_moves_every_version_and_its_history(tmp_path: Path) -> None:
    store = _two_routes(tmp_path)
    r = run(tmp_path, "routes", "rename", "support-issue-refund", "refunds", "--as", "ana")
    assert r.returncode == 0, r.stderr
    assert "renamed support-issue-refund → refunds (2 versions)" in r.stdout
    routes = RouteStore(store.engine)
    assert sorted(x.name for x in routes.active()) == ["refunds", "support-label-high-low-normal-urgent"]
    assert [v.version for v in routes.versions("refunds")] == [1, 2]
    assert routes.agreement("refunds") == (1.0, 1)
    events = routes.events("refunds")
    assert {e.action for e in events} >= {"promote", "rename"}
    assert any(
        e.action == "rename" and e.actor == "ana" and e.detail["old"] == "support-issue-refund"
        for e in events
    )
    assert "refunds" in run(tmp_path, "routes", "list").stdout


def test_routes_rename_refuses_a_name_that_exists_or_is_not_a_name(tmp_path: Path) -> None:
    store = _two_routes(tmp_path)
    line = one_error_line(
        run(tmp_path, "routes", "rename", "support-issue-refund", "support-label-high-low-normal-urgent")
    )
    assert "exists already" in line
    line = one_error_line(run(tmp_path, "routes", "rename", "support-issue-refund", "Has Spaces"))
    assert "not a route name" in line
    line = one_error_line(run(tmp_path, "routes", "rename", "support-issue-refnd", "refunds"))
    assert "No route 'support-issue-refnd'" in line and "support-issue-refund" in line  # did you mean
    assert sorted(x.name for x in RouteStore(store.engine).active()) == [
        "support-issue-refund",
        "support-label-high-low-normal-urgent",
    ]


# ---------------------------------------------------------------- progress off a terminal


def test_progress_logs_at_a_steady_interval_when_not_on_a_terminal(tmp_path: Path) -> None:
    script = (
        "import time\n"
        "from smallfleet._progress import Progress\n"
        "with Progress(interval=0.25) as p:\n"
        "    t = p.add_task('curate', total=100)\n"
        "    for i in range(10):\n"
        "        time.sleep(0.15)\n"
        "        p.update(t, description='curate: find near-duplicates', completed=(i + 1) * 10)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "curate · 100 to do"
    ticks = [ln for ln in lines if "elapsed" in ln]
    assert len(ticks) >= 4, lines  # one every 0.25 s over 1.5 s, not only at the end
    assert "about" in " ".join(ticks) and "left" in " ".join(ticks)
    assert lines[-1].startswith("curate: find near-duplicates · done in")
    assert "\x1b" not in r.stdout  # no terminal control codes in a log
