"""smallfleet.store exports exactly its public names."""

from __future__ import annotations

import types

import smallfleet.store as store


def test_all_is_exactly_what_is_exported() -> None:
    public = {
        n for n, v in vars(store).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert set(store.__all__) == public
    assert {"TraceStore", "TraceRecord", "Redactor", "PriceTable"} <= public
