"""The recorder: traces leave the request path through a bounded queue.

The gateway calls :meth:`Recorder.submit` (an append, never a wait); a writer
thread wakes every ``flush_interval_ms`` (or as soon as ``batch_size`` traces are
waiting), redacts each trace (bodies, metadata, error text, workload, model names)
and writes the batch with one :meth:`TraceStore.write_traces` call.

- Queue full: the trace is dropped, the request still succeeds,
  ``smallfleet_traces_dropped_total`` counts it and a WARNING is logged (at most
  once every few seconds).
- A row the store refuses (a value no column can hold): the store writes the
  rest of the batch; the refused trace is set aside in the dead-letter file
  (``gateway.dead_letter_path``, one redacted JSON object a line, with the
  reason), counted in ``smallfleet_traces_dead_lettered_total`` and logged with
  its trace id. It never blocks the traces behind it.
- The store unreachable (a connection failure): the batch is kept and retried
  with backoff, never silently lost; traces keep queueing up to the bound, and
  :meth:`Recorder.healthy` turns false (``/healthz`` answers 503) until a write
  succeeds again.
- :meth:`Recorder.close` drains everything that is queued before it returns
  (the gateway calls it at shutdown, after in-flight requests have finished).
  What the store still refuses at the deadline goes to the dead-letter file.

- A span export (``exporter``, :mod:`smallfleet.gateway.telemetry`) gets each batch
  once it is redacted, before the store write (a store that is down does not hold
  the spans back); :meth:`Recorder.close` shuts it down after the last batch.

Redaction is pure-Python regex work (about 0.1-0.3 ms of CPU a trace): in the
writer thread it holds the interpreter in slices of the switch interval while
the event loop waits. So the writer gives the interpreter back between traces,
and a gateway that serves in a process of its own with a core to spare
(:func:`smallfleet.gateway.server.serve` with ``offload``) calls :meth:`Recorder.offload`:
batches of ``min_batch`` traces or more are then redacted in a child process
(the writer thread only waits for the answer), small ones in the thread. A
child that fails or hangs costs nothing but speed: the batch is redacted in the
thread, and the child is started again later. Traces never leave the writer
until the store has them, wherever they are redacted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import ProcessPoolExecutor

    from smallfleet.config import RedactionConfig
    from smallfleet.gateway.metrics import Metrics
    from smallfleet.store.records import TraceRecord

__all__ = ["Recorder", "TraceExporter", "TraceSink"]

log = logging.getLogger("smallfleet.gateway.recorder")

_WARN_EVERY_S = 5.0
_RETRY_MAX_S = 5.0
#: Consecutive failed writes after which the recorder reports itself unhealthy.
_UNHEALTHY_AFTER = 3
#: How long the writer waits for the redaction child (its first batch includes its start).
_CHILD_TIMEOUT_S = 60.0
#: Traces a chunk sent to the child holds.
_CHILD_CHUNK = 32
#: After the child failed: redact in the thread for this long before starting a new one.
_CHILD_RETRY_S = 30.0


class TraceSink(Protocol):
    """Where traces go: :class:`smallfleet.store.TraceStore` is one.

    Returns the records it refused, each with the reason (None: all written);
    raises when it could not write at all (the batch is retried).
    """

    def write_traces(self, records: Sequence[TraceRecord]) -> list[tuple[TraceRecord, str]] | None: ...


class TraceExporter(Protocol):
    """Where redacted traces are also sent (:class:`smallfleet.gateway.telemetry.SpanExport` is one).

    ``export`` is called from the writer thread and must not block on the network.
    """

    def export(self, records: Sequence[TraceRecord]) -> None: ...

    def shutdown(self, timeout_s: float = 10.0) -> None: ...


class _Redactor(Protocol):
    def redact_record(self, record: TraceRecord) -> TraceRecord: ...

    def redact_text(self, text: str) -> str: ...


class Recorder:
    """A bounded in-memory queue of traces and the thread that writes them in batches."""

    #: The writer hands the interpreter back (``time.sleep(0)``) after each trace it redacts.
    #: Measured with ``benchmarks/gateway_overhead.py --rounds 4`` (issue 20, 2 loaded cores): 1.35x
    #: the requests/s at concurrency 64, 0.81x the CPU a request, open-loop added p99 15 ms against
    #: 104 ms without it. False only for that benchmark's baselines.
    yield_between_traces = True

    def __init__(
        self,
        sink: TraceSink,
        *,
        redactor: _Redactor | None = None,
        flush_interval_ms: int = 200,
        batch_size: int = 500,
        queue_size: int = 50_000,
        metrics: Metrics | None = None,
        dead_letter_path: str | Path | None = None,
        exporter: TraceExporter | None = None,
    ) -> None:
        self.sink = sink
        self.exporter = exporter
        self.dead_letter_path = None if dead_letter_path is None else Path(dead_letter_path)
        self.redactor = redactor
        self.flush_interval = flush_interval_ms / 1000
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.metrics = metrics
        self._queue: deque[TraceRecord] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._give_up_at: float | None = None
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._busy = 0  # traces taken off the queue and not yet written
        self._last_warning = 0.0
        self._last_export_warning = 0.0
        self.dropped = 0
        self.written = 0
        self.dead_lettered = 0
        self.failures = 0
        self._failing = 0  # consecutive failed writes
        self._dead_lock = threading.Lock()
        self._offload: dict[str, Any] | None = None  # the redaction config the child is built from
        self._offload_min = 8
        self._pool: ProcessPoolExecutor | None = None
        self._pool_retry_at = 0.0
        self.offloaded = 0  # traces redacted in the child process

    # ------------------------------------------------------------ request path

    def submit(self, record: TraceRecord) -> bool:
        """Queue ``record`` for writing; False (and counted) when the queue is full."""
        if len(self._queue) >= self.queue_size:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.traces_dropped += 1
            now = time.monotonic()
            if now - self._last_warning > _WARN_EVERY_S:
                self._last_warning = now
                log.warning(
                    "Trace queue full (%d traces waiting): dropping traces (%d dropped so far). "
                    "The store is too slow or down; raise gateway.queue_size or check store.url.",
                    len(self._queue),
                    self.dropped,
                )
            return False
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        return True

    def depth(self) -> int:
        """Traces waiting to be written (queued, or in a batch being written)."""
        return len(self._queue) + self._busy

    def healthy(self) -> bool:
        """False while traces are not being written (the store kept failing)."""
        return self._failing < _UNHEALTHY_AFTER

    # ------------------------------------------------------------ lifecycle

    def offload(self, config: RedactionConfig, min_batch: int = 8) -> None:
        """Redact batches of ``min_batch`` traces or more in a child process built from ``config``.

        For a process that serves the gateway alone: the child is started (spawned) on
        the first such batch and stopped by :meth:`close`. A disabled config is a no-op.
        """
        if self.redactor is None or not config.enabled:
            return
        self._offload = config.model_dump(mode="json")
        self._offload_min = max(1, min_batch)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="smallfleet-recorder", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        if self._thread is None:
            self._write_all()
            return self.depth() == 0
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self.depth() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the writer after it has written every queued trace.

        When the store keeps failing, what is not written a little before ``timeout``
        goes to the dead-letter file instead (never silently lost).
        """
        give_up = None if timeout is None else time.monotonic() + max(0.0, timeout * 0.9 - 0.1)
        thread = self._thread
        if thread is None:
            self._write_all(deadline=give_up)
            self._close_exporter(timeout)
            return
        self._give_up_at = give_up
        self._stop = True
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("Trace writer did not finish within %ss; %d traces not written.", timeout, self.depth())
        self._thread = None
        self._stop_pool(wait=not thread.is_alive())
        self._close_exporter(timeout)

    def _close_exporter(self, timeout: float | None) -> None:
        exporter, self.exporter = self.exporter, None
        if exporter is None:
            return
        try:
            exporter.shutdown(10.0 if timeout is None else max(1.0, timeout / 3))
        except Exception:
            log.exception("Shutting down the span export failed")

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stop
            self._write_all(deadline=self._give_up_at if stopping else None)
            if stopping:
                return

    def _write_all(self, deadline: float | None = None) -> None:
        """Write what is queued now, batch by batch, retrying failed batches."""
        while self._queue:
            batch = self._take()
            self._write(batch, deadline)

    def _take(self) -> list[TraceRecord]:
        batch: list[TraceRecord] = []
        q = self._queue
        while q and len(batch) < self.batch_size:
            self._busy += 1  # counted before it leaves the queue, so depth() never dips to 0 early
            batch.append(q.popleft())
        return batch

    def _write(self, batch: list[TraceRecord], deadline: float | None) -> None:
        batch = self._redact_batch(batch)
        exporter = self.exporter
        if exporter is not None:
            self._export(exporter, batch)
        wait = 0.05
        while True:
            try:
                refused = self.sink.write_traces(batch) or []
            except Exception as e:
                self.failures += 1
                self._failing += 1
                if self.metrics is not None:
                    self.metrics.trace_write_failures += 1
                log.error("Writing %d traces failed (%s: %s); retrying.", len(batch), type(e).__name__, e)
                if deadline is not None and time.monotonic() > deadline:
                    log.error("Giving up on %d traces at shutdown: the store kept failing.", len(batch))
                    self._dead_letter([(r, f"not written at shutdown: {type(e).__name__}") for r in batch])
                    break
                time.sleep(wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic())))
                wait = min(wait * 2, _RETRY_MAX_S)
                continue
            written = len(batch) - len(refused)
            # A batch the store refused whole counts as a failure too: nothing is being written.
            self._failing = 0 if written or not batch else self._failing + 1
            self.written += written
            if self.metrics is not None:
                self.metrics.traces_written += written
            if refused:
                self._dead_letter(refused)
            break
        with self._idle:
            self._busy = 0
            self._idle.notify_all()

    def _export(self, exporter: TraceExporter, batch: list[TraceRecord]) -> None:
        try:
            exporter.export(batch)
        except Exception as e:  # telemetry never costs a trace
            now = time.monotonic()
            if now - self._last_export_warning > _WARN_EVERY_S:
                self._last_export_warning = now
                log.warning("Exporting %d spans failed (%s: %s).", len(batch), type(e).__name__, e)

    def _dead_letter(self, refused: list[tuple[TraceRecord, str]]) -> None:
        """Set refused traces aside: counted, logged by id, appended to the dead-letter file."""
        self.dead_lettered += len(refused)
        if self.metrics is not None:
            self.metrics.traces_dead_lettered += len(refused)
        for record, why in refused:
            log.error("The store refused trace %s (%s); it goes to the dead-letter file.", record.id, why)
        if self.dead_letter_path is None:
            return
        # ensure_ascii: whatever the record holds (lone surrogates too) becomes a writable line.
        lines = [
            json.dumps({"reason": why, "trace": record.to_dict()}, ensure_ascii=True, default=str) + "\n"
            for record, why in refused
        ]
        try:
            with self._dead_lock, self.dead_letter_path.open("a", encoding="utf-8") as f:
                f.writelines(lines)
        except OSError as e:
            log.error("Could not write %d traces to %s: %s", len(lines), self.dead_letter_path, e)

    def _redact_batch(self, batch: list[TraceRecord]) -> list[TraceRecord]:
        if self.redactor is None:
            return batch
        if self._offload is not None and len(batch) >= self._offload_min:
            out = self._redact_in_child(batch)
            if out is not None:
                return out
        if not self.yield_between_traces:
            return [self._redact(record) for record in batch]
        redacted = []
        for record in batch:
            redacted.append(self._redact(record))
            time.sleep(0)  # give the interpreter back: the event loop may be waiting for it
        return redacted

    def _redact_in_child(self, batch: list[TraceRecord]) -> list[TraceRecord] | None:
        """The batch redacted by the child process; None (redact it here) when it cannot be."""
        if self._pool is None:
            if time.monotonic() < self._pool_retry_at:
                return None
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                1, multiprocessing.get_context("spawn"), _child_init, (self._offload,)
            )
        # In chunks: each is pickled in one call that holds the interpreter while it runs.
        chunks = [batch[i : i + _CHILD_CHUNK] for i in range(0, len(batch), _CHILD_CHUNK)]
        try:
            results = [
                r for part in self._pool.map(_child_redact, chunks, timeout=_CHILD_TIMEOUT_S) for r in part
            ]
        except Exception as e:  # a child that died, hung or could not take the batch: redact here
            log.warning(
                "Redacting %d traces in a child process failed (%s: %s); redacting in the gateway "
                "process, trying a new child in %.0fs.",
                len(batch),
                type(e).__name__,
                e,
                _CHILD_RETRY_S,
            )
            self._stop_pool(wait=False)
            self._pool_retry_at = time.monotonic() + _CHILD_RETRY_S
            return None
        out = []
        for record, failed in results:
            if failed:
                log.error(_REDACTION_FAILED, record.id, failed)
            out.append(record)
        self.offloaded += len(out)
        return out

    def _stop_pool(self, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    def _redact(self, record: TraceRecord) -> TraceRecord:
        assert self.redactor is not None
        red, failed = redact_trace(self.redactor, record)
        if failed:
            log.error(_REDACTION_FAILED, record.id, failed)
        return red


_REDACTION_FAILED = "Redaction failed for trace %s (%s); storing it without its bodies."


def redact_trace(redactor: _Redactor, record: TraceRecord) -> tuple[TraceRecord, str | None]:
    """The record as it is stored: every string redacted, metadata taken from the request.

    The second item names the exception when redaction failed: the record then keeps
    no bodies, since a trace is never lost to a redaction bug nor stored unredacted.
    """
    try:
        red = redactor.redact_record(record)  # workload and model_requested included
        if red.escalation is not None:
            red.escalation = redactor.redact_text(red.escalation)
    except Exception as e:  # its message may hold what it failed to redact: only its type is kept
        record.request, record.response, record.error = None, None, "redaction failed"
        record.metadata = {}
        record.workload, record.model_requested, record.escalation = "default", "", None
        return record, type(e).__name__
    meta = red.request.get("metadata") if isinstance(red.request, dict) else None
    if isinstance(meta, dict):
        red.metadata = {str(k): str(v) for k, v in meta.items()}
    return red, None


# ---------------------------------------------------------------- the redaction child process

_CHILD_REDACTOR: _Redactor | None = None


def _child_init(config: dict[str, Any]) -> None:
    global _CHILD_REDACTOR
    import signal

    # Ctrl-C and a service manager's SIGTERM reach the whole group: the gateway's shutdown
    # still has batches to hand over. The child ends when the gateway closes it or dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from smallfleet.config import RedactionConfig
    from smallfleet.store.redact import Redactor

    _CHILD_REDACTOR = Redactor(RedactionConfig.model_validate(config))


def _child_redact(batch: list[TraceRecord]) -> list[tuple[TraceRecord, str | None]]:
    assert _CHILD_REDACTOR is not None
    return [redact_trace(_CHILD_REDACTOR, r) for r in batch]
