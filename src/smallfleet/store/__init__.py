"""smallfleet.store: the trace store, its schema and migrations, redaction and pricing."""

from smallfleet.store.records import TraceRecord, new_trace_id
from smallfleet.store.trace_store import TraceStore

__all__ = ["TraceRecord", "TraceStore", "new_trace_id"]
