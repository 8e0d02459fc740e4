"""smallfleet.store: the trace store, its schema and migrations, redaction and pricing."""

from smallfleet.store.pricing import PRICES_AS_OF, PriceTable
from smallfleet.store.records import TraceRecord, new_trace_id
from smallfleet.store.redact import Redactor
from smallfleet.store.trace_store import TraceStore

__all__ = ["PRICES_AS_OF", "PriceTable", "Redactor", "TraceRecord", "TraceStore", "new_trace_id"]
