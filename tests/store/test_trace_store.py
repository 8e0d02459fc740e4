"""TraceStore on a real SQLite file and on the real local PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa

from smallfleet.errors import ConfigError, UserError
from smallfleet.store import TraceRecord, TraceStore
from smallfleet.store.migrations import MIGRATIONS, applied_migrations, run_migrations

T0 = 1_700_000_000.0


def rec(i: int, **kw: object) -> TraceRecord:
    base: dict[str, object] = {
        "id": f"t{i:05d}",
        "created_at": T0 + i,
        "model_requested": "gpt-4o-mini",
        "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i}"}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]},
    }
    base.update(kw)
    return TraceRecord(**base)  # type: ignore[arg-type]


def test_write_and_get_round_trips_every_field(store: TraceStore) -> None:
    full = TraceRecord(
        id="abc",
        created_at=T0 + 0.123456,
        workload="support",
        key_id="agent",
        model_requested="fast",
        model_served="gpt-4o-mini",
        route="fallback:backup",
        request={"model": "fast", "messages": [{"role": "user", "content": "héllo ✓ 日本"}], "n": 1},
        response={"choices": [{"message": {"content": None, "tool_calls": [{"id": "c1"}]}}]},
        tool_names=["lookup", "refund"],
        input_tokens=12,
        output_tokens=7,
        cached_tokens=4,
        latency_ms=12.5,
        ttft_ms=3.25,
        cost_usd=0.000123,
        status="error",
        http_status=502,
        error="upstream said no",
        stream=True,
        run_id="run1",
        step=3,
        confidence=0.875,
        escalation="low_confidence",
        metadata={"workload": "support", "user": "u1"},
    )
    empty = TraceRecord(id="empty", created_at=T0, request=None, response=None)
    store.write_traces([full, empty])
    assert store.get_trace("abc") == full
    got = store.get_trace("empty")
    assert got is not None and got.request is None and got.response is None
    assert got.tool_names == [] and got.metadata == {}
    assert store.get_trace("missing") is None


def test_batches_are_idempotent(store: TraceStore) -> None:
    batch = [rec(i) for i in range(20)]
    store.write_traces(batch)
    store.write_traces(batch)  # a re-sent batch
    store.write_traces([*batch[:5], rec(20)])  # overlapping + one new
    store.write_traces([])
    assert store.count_traces() == 21
    # The first write wins: a re-sent id does not overwrite.
    store.write_traces([rec(0, workload="other")])
    assert store.get_trace("t00000").workload == "default"  # type: ignore[union-attr]


def test_iterate_with_filters_and_keyset_batches(store: TraceStore) -> None:
    records = []
    for i in range(23):
        records.append(
            rec(
                i,
                # Several traces share a timestamp: the keyset must break ties by id.
                created_at=T0 + i // 4,
                workload="a" if i % 2 else "b",
                status="error" if i % 5 == 0 else "ok",
                route="specialist:r1" if i % 3 == 0 else "direct",
            )
        )
    store.write_traces(records)
    asc = list(store.iter_traces(batch_size=4))
    assert [r.id for r in asc] == sorted(r.id for r in records)
    desc = list(store.iter_traces(order="desc", batch_size=5))
    assert [r.id for r in desc] == [r.id for r in reversed(asc)]
    a = [r.id for r in store.iter_traces(workload="a", batch_size=3)]
    assert a == [r.id for r in records if r.workload == "a"]
    errs = {r.id for r in store.iter_traces(status="error")}
    assert errs == {r.id for r in records if r.status == "error"}
    spec = {r.id for r in store.iter_traces(route="specialist")}
    assert spec == {r.id for r in records if r.route.startswith("specialist:")}
    assert {r.id for r in store.iter_traces(route="specialist:r1")} == spec
    window = {r.id for r in store.iter_traces(since=T0 + 2, until=T0 + 4)}
    assert window == {r.id for r in records if T0 + 2 <= r.created_at < T0 + 4}
    assert store.count_traces(workload="a", status="ok") == sum(
        1 for r in records if r.workload == "a" and r.status == "ok"
    )
    with pytest.raises(UserError):
        list(store.iter_traces(order="sideways"))  # type: ignore[arg-type]


def test_search_pages_with_keyset(store: TraceStore) -> None:
    records = [
        rec(
            i,
            created_at=T0 + i // 3,
            model_served="small" if i % 2 else "big",
            request={"messages": [{"role": "user", "content": f"Refund order {i}" if i % 4 == 0 else "hi"}]},
        )
        for i in range(30)
    ]
    store.write_traces(records)
    seen: list[str] = []
    before = None
    while True:
        page = store.search_traces(limit=7, before_id=before)
        if not page:
            break
        seen += [r.id for r in page]
        before = page[-1].id
    newest_first = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)
    assert seen == [r.id for r in newest_first]
    hits = store.search_traces(text="refund ORDER", limit=100)
    assert {r.id for r in hits} == {r.id for r in records if r.id != "" and int(r.id[1:]) % 4 == 0}
    small = store.search_traces(model="small", limit=100)
    assert {r.id for r in small} == {r.id for r in records if r.model_served == "small"}
    assert store.search_traces(text="100%_", limit=5) == []  # LIKE wildcards are literal
    with pytest.raises(UserError):
        store.search_traces(before_id="nope")


def test_stats_by_group_hand_checked(store: TraceStore) -> None:
    rows = [
        rec(1, workload="w1", latency_ms=10.0, input_tokens=100, output_tokens=10, cost_usd=0.5),
        rec(2, workload="w1", latency_ms=20.0, input_tokens=200, output_tokens=20, cost_usd=0.25),
        rec(3, workload="w1", latency_ms=30.0, status="error", http_status=502),
        rec(4, workload="w1", latency_ms=40.0),
        rec(5, workload="w2", latency_ms=None, route="specialist:x", model_served="tiny"),
        rec(6, workload="w2", latency_ms=7.0, created_at=T0 - 1000),
    ]
    store.write_traces(rows)
    stats = {g["group"]: g for g in store.stats(by="workload")}
    w1 = stats["w1"]
    assert (w1["calls"], w1["errors"], w1["input_tokens"], w1["output_tokens"]) == (4, 1, 300, 30)
    assert w1["error_rate"] == pytest.approx(0.25)
    assert w1["cost_usd"] == pytest.approx(0.75)
    assert w1["p50_ms"] == pytest.approx(25.0)
    assert w1["p95_ms"] == pytest.approx(38.5)  # 30 + 0.85 * 10, as percentile_cont interpolates
    assert stats["w2"]["cost_usd"] is None and stats["w2"]["p50_ms"] == pytest.approx(7.0)
    recent = {g["group"]: g for g in store.stats(by="workload", since=T0)}
    assert recent["w2"]["calls"] == 1 and recent["w2"]["p50_ms"] is None
    by_model = {g["group"]: g["calls"] for g in store.stats(by="model")}
    assert by_model == {"gpt-4o-mini": 5, "tiny": 1}
    by_route = {g["group"]: g["calls"] for g in store.stats(by="route")}
    assert by_route == {"direct": 5, "specialist:x": 1}
    with pytest.raises(UserError):
        store.stats(by="colour")


def test_feedback(store: TraceStore) -> None:
    store.write_traces([rec(1)])
    store.add_feedback("t00001", 1.0, "right")
    store.add_feedback("t00001", -1)
    fb = store.get_feedback("t00001")
    assert [(f["score"], f["comment"]) for f in fb] == [(1.0, "right"), (-1.0, None)]
    with pytest.raises(UserError):
        store.add_feedback("nope", 1.0)
    with pytest.raises(UserError):
        store.add_feedback("t00001", float("nan"))


def test_migrations_recorded_and_rerun_is_a_no_op(store_url: str) -> None:
    s1 = TraceStore(store_url)
    s1.write_traces([rec(1)])
    with s1.engine.connect() as conn:
        assert applied_migrations(conn) == [name for name, _ in MIGRATIONS]
    assert run_migrations(s1.engine) == []
    s1.close()
    s2 = TraceStore(store_url)  # reopening: nothing to do, data intact
    assert s2.count_traces() == 1

    def add_column(conn: sa.Connection) -> None:
        conn.execute(sa.text("ALTER TABLE traces ADD COLUMN extra_note TEXT"))

    later = [*MIGRATIONS, ("9999_test_extra_note", add_column)]
    assert run_migrations(s2.engine, later) == ["9999_test_extra_note"]
    assert run_migrations(s2.engine, later) == []
    cols = {c["name"] for c in sa.inspect(s2.engine).get_columns("traces")}
    assert "extra_note" in cols
    s2.close()
    s3 = TraceStore(store_url, create=False)
    assert s3.count_traces() == 1
    s3.close()


def test_concurrent_writers(store: TraceStore) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for b in range(10):
                store.write_traces([rec(k * 1000 + b * 10 + j) for j in range(10)])
        except BaseException as e:  # pragma: no cover - the failure we look for
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count_traces() == 400


def test_nul_characters_do_not_lose_the_batch(store: TraceStore) -> None:
    bad = rec(1, request={"messages": [{"role": "user", "content": "a\x00b"}]}, error="e\x00")
    store.write_traces([bad, rec(2)])
    assert store.count_traces() == 2
    got = store.get_trace("t00001")
    assert got is not None and got.request["messages"][0]["content"] in ("a\x00b", "a\ufffdb")  # type: ignore[index]


def test_non_finite_numbers_are_stored_as_null(store: TraceStore) -> None:
    # Python's json module reads NaN/Infinity from a request body; JSON (and jsonb) has no such values.
    store.write_traces([rec(1, request={"temperature": float("nan"), "x": [float("inf"), 1.5]})])
    got = store.get_trace("t00001")
    assert got is not None and got.request == {"temperature": None, "x": [None, 1.5]}


def test_sqlite_is_wal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = TraceStore(f"sqlite:///{tmp_path}/sub/dir/x.db")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    s.close()


def test_clear_errors_for_bad_urls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="not a database URL"):
        TraceStore("not a url")
    with pytest.raises(ConfigError, match="only sqlite"):
        TraceStore("mysql://localhost/x")
    with pytest.raises(ConfigError, match="No trace store"):
        TraceStore(f"sqlite:///{tmp_path}/missing.db", create=False)
    sqlite3.connect(tmp_path / "empty.db").close()  # a file, but no store in it
    with pytest.raises(ConfigError, match="No trace store"):
        TraceStore(f"sqlite:///{tmp_path}/empty.db", create=False)
    with pytest.raises(ConfigError, match="Cannot open the trace store") as e:
        TraceStore("postgresql://postgres:hunter2@127.0.0.1:1/test")
    assert "hunter2" not in str(e.value)
