"""The recorder: traces leave the request path through a bounded queue.

The gateway calls :meth:`Recorder.submit` (an append, never a wait); a writer
thread wakes every ``flush_interval_ms`` (or as soon as ``batch_size`` traces are
waiting), redacts each trace and writes the batch with one
:meth:`TraceStore.write_traces` call.

- Queue full: the trace is dropped, the request still succeeds,
  ``smallfleet_traces_dropped_total`` counts it and a WARNING is logged (at most
  once every few seconds).
- A failed write is logged and retried with backoff; the batch is kept, never
  silently lost. While the store is down, traces keep queueing up to the bound.
- :meth:`Recorder.close` drains everything that is queued before it returns
  (the gateway calls it at shutdown, after in-flight requests have finished).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smallfleet.gateway.metrics import Metrics
    from smallfleet.store.records import TraceRecord

__all__ = ["Recorder", "TraceSink"]

log = logging.getLogger("smallfleet.gateway.recorder")

_WARN_EVERY_S = 5.0
_RETRY_MAX_S = 5.0


class TraceSink(Protocol):
    """Where traces go: :class:`smallfleet.store.TraceStore` is one."""

    def write_traces(self, records: Sequence[TraceRecord]) -> None: ...


class _Redactor(Protocol):
    def redact_trace(
        self, request: dict[str, Any], response: dict[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]: ...


class Recorder:
    """A bounded in-memory queue of traces and the thread that writes them in batches."""

    def __init__(
        self,
        sink: TraceSink,
        *,
        redactor: _Redactor | None = None,
        flush_interval_ms: int = 200,
        batch_size: int = 500,
        queue_size: int = 50_000,
        metrics: Metrics | None = None,
    ) -> None:
        self.sink = sink
        self.redactor = redactor
        self.flush_interval = flush_interval_ms / 1000
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.metrics = metrics
        self._queue: deque[TraceRecord] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._busy = 0  # traces taken off the queue and not yet written
        self._last_warning = 0.0
        self.dropped = 0
        self.written = 0
        self.failures = 0

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

    # ------------------------------------------------------------ lifecycle

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
        """Stop the writer after it has written every queued trace (or ``timeout`` passed)."""
        thread = self._thread
        if thread is None:
            self._write_all(deadline=None if timeout is None else time.monotonic() + timeout)
            return
        self._stop = True
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("Trace writer did not finish within %ss; %d traces not written.", timeout, self.depth())
        self._thread = None

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stop
            self._write_all(deadline=time.monotonic() + 30.0 if stopping else None)
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
        batch = [self._redact(r) for r in batch]
        wait = 0.05
        while True:
            try:
                self.sink.write_traces(batch)
            except Exception as e:
                self.failures += 1
                if self.metrics is not None:
                    self.metrics.trace_write_failures += 1
                log.error("Writing %d traces failed (%s: %s); retrying.", len(batch), type(e).__name__, e)
                if deadline is not None and time.monotonic() > deadline:
                    log.error("Giving up on %d traces at shutdown: the store kept failing.", len(batch))
                    break
                time.sleep(wait)
                wait = min(wait * 2, _RETRY_MAX_S)
                continue
            self.written += len(batch)
            if self.metrics is not None:
                self.metrics.traces_written += len(batch)
            break
        with self._idle:
            self._busy = 0
            self._idle.notify_all()

    def _redact(self, record: TraceRecord) -> TraceRecord:
        if self.redactor is None or record.request is None:
            return record
        try:
            record.request, record.response = self.redactor.redact_trace(record.request, record.response)
        except Exception:  # never lose a trace to a redaction bug; never store it unredacted either
            log.exception("Redaction failed for trace %s; storing it without its bodies.", record.id)
            record.request, record.response = None, None
            record.metadata = {}
            return record
        meta = record.request.get("metadata") if isinstance(record.request, dict) else None
        if isinstance(meta, dict):
            record.metadata = {str(k): str(v) for k, v in meta.items()}
        return record
