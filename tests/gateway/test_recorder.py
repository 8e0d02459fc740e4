"""The recorder on a real SQLite TraceStore: batches, bounded queue, retries, redaction, drain on close."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from smallfleet.config import RedactionConfig
from smallfleet.gateway.metrics import Metrics
from smallfleet.gateway.recorder import Recorder
from smallfleet.store.records import TraceRecord
from smallfleet.store.redact import Redactor
from smallfleet.store.trace_store import TraceStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    s = TraceStore(f"sqlite:///{tmp_path / 'traces.db'}")
    yield s
    s.close()


class FlakyStore:
    """The real store behind a switch that makes the first ``fail`` writes raise (a database outage)."""

    def __init__(self, store: TraceStore, fail: int = 0) -> None:
        self.store, self.fail, self.batches = store, fail, []

    def write_traces(self, records: Sequence[TraceRecord]) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("database is down")
        self.batches.append(len(records))
        self.store.write_traces(records)


def rec(i: int, text: str = "hello") -> TraceRecord:
    return TraceRecord(
        request={"model": "m", "messages": [{"role": "user", "content": text}]}, workload=f"w{i}"
    )


def test_batches_and_drain_on_close(store: TraceStore) -> None:
    sink = FlakyStore(store)
    r = Recorder(sink, flush_interval_ms=10_000, batch_size=3)  # only size or close triggers a write
    r.start()
    for i in range(7):
        assert r.submit(rec(i))
    r.close()
    assert store.count_traces() == 7
    assert max(sink.batches) <= 3 and sum(sink.batches) == 7
    assert r.depth() == 0 and r.written == 7


def test_full_queue_drops_counts_and_warns(store: TraceStore, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    r = Recorder(store, queue_size=5, metrics=metrics)  # not started: nothing drains the queue
    with caplog.at_level(logging.WARNING, logger="smallfleet.gateway.recorder"):
        accepted = [r.submit(rec(i)) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert r.dropped == metrics.traces_dropped == 3
    assert len([m for m in caplog.messages if "queue full" in m.lower()]) == 1  # rate-limited warning
    r.close()
    assert store.count_traces() == 5


def test_failed_writes_are_retried_not_lost(store: TraceStore) -> None:
    metrics = Metrics()
    sink = FlakyStore(store, fail=2)
    r = Recorder(sink, flush_interval_ms=5, metrics=metrics)
    r.start()
    for i in range(10):
        r.submit(rec(i))
    assert r.flush(timeout=10)
    r.close()
    assert store.count_traces() == 10
    assert metrics.trace_write_failures == 2 and metrics.traces_written == 10


def test_redacts_before_writing(store: TraceStore) -> None:
    r = Recorder(store, redactor=Redactor(RedactionConfig()), flush_interval_ms=5)
    r.start()
    t = rec(0, "mail bob@example.com")
    t.request["metadata"] = {"owner": "bob@example.com"}
    r.submit(t)
    r.close()
    got = store.get_trace(t.id)
    assert got is not None
    assert "bob@example.com" not in str(got.request) + str(got.metadata)
    assert got.request["messages"][0]["content"] == "mail <EMAIL_1>"
    assert got.metadata == {"owner": "<EMAIL_1>"}


def test_flush_interval(store: TraceStore) -> None:
    r = Recorder(store, flush_interval_ms=20)
    r.start()
    r.submit(rec(0))
    deadline = time.monotonic() + 5
    while store.count_traces() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.count_traces() == 1  # written by the timer, without flush() or close()
    r.close()


# ---------------------------------------------------------------- refused rows, outages, health


def _dead(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_refused_row_is_set_aside_and_never_blocks(
    store: TraceStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    dead = tmp_path / "dead.jsonl"
    r = Recorder(store, redactor=Redactor(), batch_size=10, metrics=metrics, dead_letter_path=dead)
    r.start()
    bad = rec(1, "card 4111 1111 1111 1111")
    bad.input_tokens = 2**70  # no INTEGER column holds it: the database refuses this row
    for x in (rec(0), bad, rec(2)):
        r.submit(x)
    assert r.flush(10)
    assert {t.workload for t in store.iter_traces()} == {"w0", "w2"}
    assert (r.written, r.dead_lettered, metrics.traces_written, metrics.traces_dead_lettered) == (2, 1, 2, 1)
    [line] = _dead(dead)
    assert line["trace"]["id"] == bad.id and line["reason"]
    assert "4111" not in dead.read_text()  # redacted before it was set aside
    assert any(bad.id in m for m in caplog.messages)
    assert r.healthy()
    r.submit(rec(3))  # the rows behind it are written as usual
    r.close()
    assert store.count_traces() == 3


def test_an_outage_turns_unhealthy_then_recovers(store: TraceStore) -> None:
    sink = FlakyStore(store, fail=5)
    r = Recorder(sink, flush_interval_ms=5)
    r.start()
    r.submit(rec(0))
    deadline = time.monotonic() + 5
    while r.healthy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not r.healthy() and r.depth() == 1  # failing, the trace still held
    assert r.flush(15) and r.healthy() and store.count_traces() == 1
    r.close()


def test_what_cannot_be_written_at_shutdown_goes_to_the_dead_letter_file(
    store: TraceStore, tmp_path: Path
) -> None:
    dead = tmp_path / "dead.jsonl"
    r = Recorder(FlakyStore(store, fail=10**9), flush_interval_ms=10_000, dead_letter_path=dead)
    r.start()
    for i in range(4):
        r.submit(rec(i))
    t0 = time.monotonic()
    r.close(timeout=1.0)
    assert time.monotonic() - t0 < 1.5
    assert sorted(x["trace"]["workload"] for x in _dead(dead)) == ["w0", "w1", "w2", "w3"]
    assert r.dead_lettered == 4 and r.depth() == 0


@pytest.mark.postgres
def test_postgres_lock_timeout_is_an_outage_not_a_refusal(pg_schema: str, tmp_path: Path) -> None:
    """A busy database (here a table lock) fails the batch as a whole: retried, not dead-lettered."""
    import sqlalchemy as sa

    u = sa.make_url(pg_schema)
    options = u.query["options"] + " -cstatement_timeout=200"
    store = TraceStore(u.update_query_dict({"options": options}).render_as_string(hide_password=False))
    dead = tmp_path / "dead.jsonl"
    r = Recorder(store, flush_interval_ms=5, dead_letter_path=dead)
    locker = sa.create_engine(pg_schema)
    try:
        with locker.connect() as conn:
            tx = conn.begin()
            conn.execute(sa.text("LOCK TABLE traces IN ACCESS EXCLUSIVE MODE"))
            r.start()
            r.submit(rec(0))
            deadline = time.monotonic() + 10
            while r.healthy() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not r.healthy() and r.dead_lettered == 0
            tx.rollback()
        assert r.flush(15) and r.healthy() and store.count_traces() == 1
        assert not dead.exists()
    finally:
        r.close()
        store.close()
        locker.dispose()
