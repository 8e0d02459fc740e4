"""smallfleet.store: the trace store, its schema and migrations, redaction, pricing and budget ledgers."""

from smallfleet.store.budgets import MemoryLedger, SpendLedger
from smallfleet.store.pricing import PRICES_AS_OF, PriceTable
from smallfleet.store.records import TraceRecord, new_trace_id
from smallfleet.store.redact import Redactor
from smallfleet.store.trace_store import TraceStore

__all__ = [
    "PRICES_AS_OF",
    "MemoryLedger",
    "PriceTable",
    "Redactor",
    "SpendLedger",
    "TraceRecord",
    "TraceStore",
    "new_trace_id",
]
