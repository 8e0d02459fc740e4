"""Prometheus metrics of the gateway, kept in plain dicts and written out by hand.

Names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai_client_operation_duration_seconds``, ``gen_ai_client_token_usage``,
``gen_ai_server_time_to_first_token_seconds``); the rest are ``smallfleet_*``.
Every series is labelled by ``workload``, ``model`` (the alias that answered, or
the one asked for when none did), ``route`` and ``status``.

Label values are bounded, since each new value is a new series kept for the
life of the process: ``workload`` comes from a client header, so only the
workloads of ``gateway.metrics_workloads`` are kept (when set), else the first
``gateway.metrics_max_workloads`` seen; every other workload counts as ``other``.

The hot path costs one dict lookup and a few additions per request: all updates
come from the event loop thread, except the recorder's counters, which are
plain integer increments (atomic under the GIL).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "TTFT_BUCKETS", "Metrics"]

#: Seconds: from 5 ms to 2 minutes (LLM calls are slow; the gateway adds < 1 ms).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Tokens per request, the OpenTelemetry GenAI recommended boundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)

Labels = tuple[str, str, str, str]  # workload, model, route, status
LABEL_NAMES = ("workload", "model", "route", "status")


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


class _Series:
    """Everything recorded for one label set."""

    __slots__ = (
        "cost",
        "duration",
        "errors",
        "input_tokens",
        "output_tokens",
        "requests",
        "tok_in",
        "tok_out",
        "ttft",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.duration = _Histogram(DURATION_BUCKETS)
        self.ttft: _Histogram | None = None
        self.tok_in = _Histogram(TOKEN_BUCKETS)
        self.tok_out = _Histogram(TOKEN_BUCKETS)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class Metrics:
    """The gateway's counters and histograms, rendered in the Prometheus text format."""

    def __init__(self, workloads: list[str] | None = None, max_workloads: int = 50) -> None:
        self._series: dict[Labels, _Series] = {}
        self._allowed = None if workloads is None else frozenset(workloads)
        self._seen_workloads: set[str] = set()
        self._max_workloads = max_workloads
        self.traces_dropped = 0
        self.traces_written = 0
        self.traces_dead_lettered = 0
        self.trace_write_failures = 0
        #: Set by the app: a callable giving the recorder's queue depth now.
        self.queue_depth: Callable[[], int] = lambda: 0
        self.in_flight = 0

    def workload_label(self, workload: str) -> str:
        """``workload`` if it may be a label value, else ``other`` (see the module docs)."""
        if self._allowed is not None:
            return workload if workload in self._allowed else "other"
        seen = self._seen_workloads
        if workload in seen:
            return workload
        if len(seen) >= self._max_workloads:
            return "other"
        seen.add(workload)
        return workload

    def observe(
        self,
        workload: str,
        model: str,
        route: str,
        status: str,
        *,
        duration_s: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float | None = None,
        ttft_s: float | None = None,
    ) -> None:
        """Count one finished request."""
        key = (self.workload_label(workload), model, route, status)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        s.requests += 1
        if status != "ok":
            s.errors += 1
        s.input_tokens += input_tokens
        s.output_tokens += output_tokens
        if cost_usd:
            s.cost += cost_usd
        s.duration.observe(duration_s)
        if status == "ok":
            s.tok_in.observe(input_tokens)
            s.tok_out.observe(output_tokens)
        if ttft_s is not None:
            if s.ttft is None:
                s.ttft = _Histogram(TTFT_BUCKETS)
            s.ttft.observe(ttft_s)

    # ------------------------------------------------------------ exposition

    def render(self) -> str:
        """The metrics in the Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []
        series = sorted(self._series.items())

        def counter(name: str, help_: str, get: Callable[[_Series], float]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} counter")
            for key, s in series:
                out.append(f"{name}{_labels(LABEL_NAMES, key)} {_num(get(s))}")

        def histogram(name: str, help_: str, rows: list[tuple[str, _Histogram]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} histogram")
            for lab, h in rows:
                cum = 0
                for bound, n in zip(h.bounds, h.counts, strict=False):
                    cum += n
                    out.append(f'{name}_bucket{lab[:-1]},le="{_num(bound)}"}} {cum}')
                out.append(f'{name}_bucket{lab[:-1]},le="+Inf"}} {h.count}')
                out.append(f"{name}_sum{lab} {_num(h.total)}")
                out.append(f"{name}_count{lab} {h.count}")

        counter("smallfleet_requests_total", "Chat completion requests handled.", lambda s: s.requests)
        counter("smallfleet_errors_total", "Requests that ended in an error.", lambda s: s.errors)
        counter("smallfleet_input_tokens_total", "Input (prompt) tokens.", lambda s: s.input_tokens)
        counter("smallfleet_output_tokens_total", "Output (completion) tokens.", lambda s: s.output_tokens)
        counter("smallfleet_cost_usd_total", "Cost of the requests in USD.", lambda s: s.cost)
        histogram(
            "gen_ai_client_operation_duration_seconds",
            "Time from request arrival to the last byte sent.",
            [(_labels(LABEL_NAMES, k), s.duration) for k, s in series],
        )
        histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from request arrival to the first content byte of a stream.",
            [(_labels(LABEL_NAMES, k), s.ttft) for k, s in series if s.ttft is not None],
        )
        names = (*LABEL_NAMES, "gen_ai_token_type")
        rows: list[tuple[str, _Histogram]] = []
        for k, s in series:
            if s.tok_in.count:
                rows.append((_labels(names, (*k, "input")), s.tok_in))
                rows.append((_labels(names, (*k, "output")), s.tok_out))
        histogram("gen_ai_client_token_usage", "Tokens per successful request.", rows)
        for name, kind, help_, value in (
            ("smallfleet_trace_queue_depth", "gauge", "Traces waiting to be written.", self.queue_depth()),
            ("smallfleet_requests_in_flight", "gauge", "Requests being handled now.", self.in_flight),
            (
                "smallfleet_traces_written_total",
                "counter",
                "Traces written to the store.",
                self.traces_written,
            ),
            (
                "smallfleet_traces_dropped_total",
                "counter",
                "Traces dropped because the queue was full.",
                self.traces_dropped,
            ),
            (
                "smallfleet_traces_dead_lettered_total",
                "counter",
                "Traces the store refused, written to the dead-letter file instead.",
                self.traces_dead_lettered,
            ),
            (
                "smallfleet_trace_write_failures_total",
                "counter",
                "Failed attempts to write a batch of traces (retried).",
                self.trace_write_failures,
            ),
        ):
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.append(f"{name} {_num(value)}")
        return "\n".join(out) + "\n"
