"""Durations as people type them: ``30s``, ``15m``, ``24h``, ``7d``, ``2w``, ``1h30m``."""

from __future__ import annotations

import re
import time

from smallfleet.errors import UserError

__all__ = ["parse_duration", "parse_since"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.I)


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``24h``, ``7d``, ``30m``, ``1h30m`` or ``90`` (plain seconds)."""
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise UserError("Empty duration; use e.g. 30m, 24h or 7d.")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value < 0:
            raise UserError(f"Duration {text!r} is negative.")
        return value
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise UserError(f"Cannot read duration {text!r}; use e.g. 30m, 24h, 7d or 1h30m.")
    return total


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """A unix time from ``--since``: a duration back from now (``24h``) or an ISO date; None stays None."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return (time.time() if now is None else now) - parse_duration(text)
    except UserError:
        pass
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"Cannot read {text!r} as a time; use a duration (30m, 24h, 7d) or a date (2025-01-31)."
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
