"""`smallfleet traces import/export/show/list` and `smallfleet stats`, run through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smallfleet.cli import app
from smallfleet.store import TraceRecord, TraceStore

runner = CliRunner()


def _completion(text: str, model: str = "gpt-4o-mini-2024-07-18", p: int = 1000, c: int = 100) -> dict:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def _request(text: str, model: str = "gpt-4o-mini") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def cli(db: str, *args: str) -> object:
    return runner.invoke(app, list(args), env={"SMALLFLEET_STORE__URL": db, "COLUMNS": "200"})


def test_import_pairs_reports_bad_lines_redacts_and_prices(tmp_path: Path, db: str) -> None:
    f = _jsonl(
        tmp_path / "in.jsonl",
        [
            {"request": _request("mail bob@example.com"), "response": _completion("ok bob@example.com")},
            "{not json",
            {"request": {"model": "m"}, "response": _completion("x")},
            "",
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"input": [{"role": "user", "content": "2+2?"}], "output": "4"},
            {"request": _request("q"), "response": {"choices": []}},
            [1, 2],
        ],
    )
    r = cli(db, "traces", "import", str(f), "--workload", "support")
    assert r.exit_code == 0, r.output
    assert "Imported 3 new trace(s)" in r.output
    assert "4 bad line(s)" in r.output
    assert "line 2: not valid JSON" in r.output
    assert "line 3: request: Missing required parameter: 'messages'" in r.output
    assert "line 7: response has no choices" in r.output
    assert "line 8: a line must be a JSON object" in r.output
    store = TraceStore(db, create=False)
    rows = list(store.iter_traces())
    assert (
        len(rows) == 3
        and {r.workload for r in rows} == {"support"}
        and {r.route for r in rows} == {"imported"}
    )
    first = next(r for r in rows if r.input_tokens == 1000)
    assert first.created_at == 1_700_000_000
    assert first.model_requested == "gpt-4o-mini" and first.model_served == "gpt-4o-mini-2024-07-18"
    assert first.cost_usd == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    assert first.request["messages"][0]["content"] == "mail <EMAIL_1>"  # type: ignore[index]
    assert first.response["choices"][0]["message"]["content"] == "ok <EMAIL_1>"  # type: ignore[index]
    ft = next(r for r in rows if r.request["messages"][0]["content"] == "hi")  # type: ignore[index]
    assert ft.response["choices"][0]["message"]["content"] == "hello"  # type: ignore[index]
    store.close()
    assert b"bob@example.com" not in (tmp_path / "cli.db").read_bytes()
    # Importing the same file again stores nothing new.
    again = cli(db, "traces", "import", str(f), "--workload", "support")
    assert "Imported 0 new trace(s)" in again.output and "3 were already stored" in again.output


def test_import_of_only_bad_lines_fails(tmp_path: Path, db: str) -> None:
    r = cli(db, "traces", "import", str(_jsonl(tmp_path / "bad.jsonl", ["nope", "[]"])))
    assert r.exit_code == 1
    assert "2 bad line(s)" in r.output


def test_export_import_round_trip(tmp_path: Path, db: str) -> None:
    store = TraceStore(db)
    originals = [
        TraceRecord(
            id=f"trace{i}",
            created_at=1_700_000_000.5 + i,
            workload="w" if i % 2 else "v",
            model_requested="fast",
            model_served="gpt-4o-mini",
            route="direct",
            request=_request(f"question {i}", model="fast"),
            response=_completion(f"answer {i}"),
            tool_names=[],
            input_tokens=1000,
            output_tokens=100,
            latency_ms=12.5 + i,
            ttft_ms=3.0,
            cost_usd=0.01,
            status="ok" if i != 3 else "error",
            http_status=200 if i != 3 else 502,
            error=None if i != 3 else "upstream 502",
            metadata={"k": str(i)},
        )
        for i in range(6)
    ]
    store.write_traces(originals)
    store.close()
    out = tmp_path / "out.jsonl"
    r = cli(db, "traces", "export", "--out", str(out))
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and list(lines[0])[:2] == ["request", "response"]
    only_w = cli(db, "traces", "export", "--workload", "w")
    assert len(only_w.stdout.splitlines()) == 3
    db2 = f"sqlite:///{tmp_path / 'second.db'}"
    r2 = cli(db2, "traces", "import", str(out))
    assert r2.exit_code == 0 and "Imported 6 new" in r2.output
    back = {t.id: t for t in TraceStore(db2, create=False).iter_traces()}
    for o in originals:
        b = back[o.id]
        assert (b.request, b.response, b.workload, b.created_at) == (
            o.request,
            o.response,
            o.workload,
            o.created_at,
        )
        assert (b.input_tokens, b.output_tokens, b.latency_ms, b.ttft_ms, b.cost_usd) == (
            o.input_tokens,
            o.output_tokens,
            o.latency_ms,
            o.ttft_ms,
            o.cost_usd,
        )
        assert (b.status, b.http_status, b.error, b.metadata) == (
            o.status,
            o.http_status,
            o.error,
            o.metadata,
        )
        assert b.route == "imported"


def test_openai_batch_output_with_and_without_input(tmp_path: Path, db: str) -> None:
    batch_in = _jsonl(
        tmp_path / "batch_in.jsonl",
        [
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": _request(f"q{i}"),
            }
            for i in range(3)
        ],
    )
    batch_out = _jsonl(
        tmp_path / "batch_out.jsonl",
        [
            {
                "id": "batch_req_1",
                "custom_id": "req-0",
                "response": {"status_code": 200, "request_id": "r1", "body": _completion("a0", p=10, c=2)},
                "error": None,
            },
            {
                "id": "batch_req_2",
                "custom_id": "req-1",
                "response": {"status_code": 500, "request_id": "r2", "body": {"error": {"message": "boom"}}},
                "error": None,
            },
            {"id": "batch_req_3", "custom_id": "req-2", "response": None, "error": {"message": "expired"}},
            {
                "id": "batch_req_4",
                "custom_id": "req-9",
                "response": {"status_code": 200, "body": _completion("z")},
            },
        ],
    )
    r = cli(db, "traces", "import", str(batch_out), "--batch-input", str(batch_in))
    assert r.exit_code == 0, r.output
    assert (
        "Imported 3 new" in r.output
        and "line 4: custom_id 'req-9' is not in the batch input file" in r.output
    )
    store = TraceStore(db, create=False)
    rows = {t.metadata["batch_custom_id"]: t for t in store.iter_traces()}
    ok = rows["req-0"]
    assert (
        ok.request == _request("q0") and ok.status == "ok" and (ok.input_tokens, ok.output_tokens) == (10, 2)
    )
    assert ok.cost_usd == pytest.approx((10 * 0.15 + 2 * 0.6) / 1e6)
    assert (rows["req-1"].status, rows["req-1"].http_status, rows["req-1"].error) == ("error", 500, "boom")
    assert (rows["req-2"].status, rows["req-2"].error) == ("error", "expired")
    store.close()
    # Without the input file the responses are imported with an unknown request, and it says so.
    db2 = f"sqlite:///{tmp_path / 'noinput.db'}"
    r2 = cli(db2, "traces", "import", str(batch_out))
    assert "Imported 4 new" in r2.output and "4 trace(s) have no request" in r2.output
    assert all(t.request is None for t in TraceStore(db2, create=False).iter_traces())


def test_stats_show_and_list(tmp_path: Path, db: str) -> None:
    import time

    now = time.time()
    store = TraceStore(db)
    store.write_traces(
        [
            TraceRecord(
                id="a1",
                created_at=now - 60,
                workload="alpha",
                model_requested="m1",
                latency_ms=10.0,
                input_tokens=5,
                output_tokens=1,
                cost_usd=0.5,
                request=_request("find me"),
            ),
            TraceRecord(
                id="a2",
                created_at=now - 30,
                workload="alpha",
                model_requested="m1",
                latency_ms=30.0,
                status="error",
                http_status=502,
            ),
            TraceRecord(
                id="b1", created_at=now - 10 * 86400, workload="beta", model_requested="m2", latency_ms=5.0
            ),
        ]
    )
    store.add_feedback("a1", 1.0, "good")
    store.close()
    r = cli(db, "stats", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [g["group"] for g in rows] == ["alpha"]
    assert rows[0]["calls"] == 2 and rows[0]["errors"] == 1 and rows[0]["p50_ms"] == pytest.approx(20.0)
    table = cli(db, "stats", "--since", "30d", "--by", "model")
    assert table.exit_code == 0 and "m1" in table.output and "m2" in table.output and "total" in table.output
    assert cli(db, "stats", "--by", "colour").exit_code == 2
    shown = cli(db, "traces", "show", "a1")
    assert shown.exit_code == 0
    data = json.loads(shown.stdout)
    assert data["id"] == "a1" and data["feedback"][0]["comment"] == "good"
    assert cli(db, "traces", "show", "zzz").exit_code == 1
    listed = cli(db, "traces", "list", "--text", "find")
    assert "a1" in listed.output and "a2" not in listed.output


def test_stats_without_a_store_says_what_to_do(tmp_path: Path) -> None:
    r = cli(f"sqlite:///{tmp_path / 'none.db'}", "stats")
    assert r.exit_code != 0
    assert "No trace store" in str(r.exception or r.output)
