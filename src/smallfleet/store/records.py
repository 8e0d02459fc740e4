"""What one recorded chat call looks like inside smallfleet (a dataclass, not a wire type)."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TRACE_FIELDS", "TraceRecord", "new_trace_id"]


def new_trace_id() -> str:
    """A trace id: a uuid4 in hex (also sent back as ``x-smallfleet-trace-id``)."""
    return uuid.uuid4().hex


@dataclass
class TraceRecord:
    """One chat call as the store keeps it: request, response, who asked, what answered, what it cost."""

    id: str = field(default_factory=new_trace_id)
    created_at: float = field(default_factory=time.time)
    workload: str = "default"
    key_id: str | None = None
    model_requested: str = ""
    model_served: str | None = None
    #: "direct", "fallback:<alias>", "specialist:<route>", "escalated:<reason>", "rejected", "imported"
    route: str = "direct"
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    tool_names: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None
    #: "ok" | "error" | "client_disconnected"
    status: str = "ok"
    http_status: int = 200
    error: str | None = None
    stream: bool = False
    run_id: str | None = None
    step: int | None = None
    confidence: float | None = None
    escalation: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceRecord:
        """Build a record from a dict, ignoring keys that are not fields."""
        return cls(**{k: v for k, v in data.items() if k in TRACE_FIELDS})


TRACE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TraceRecord))
