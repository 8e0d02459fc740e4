"""Durations as people type them."""

from __future__ import annotations

import pytest

from smallfleet._time import parse_duration, parse_since
from smallfleet.errors import UserError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("30m", 1800),
        ("24h", 86400),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("90", 90),
        ("1.5h", 5400),
        (" 24H ", 86400),
        ("250ms", 0.25),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "h", "24x", "-5", "5h 3", "1d-2h", "soon"])
def test_bad_durations_are_user_errors(bad: str) -> None:
    with pytest.raises(UserError):
        parse_duration(bad)


def test_parse_since() -> None:
    assert parse_since("24h", now=100_000.0) == pytest.approx(100_000.0 - 86400)
    assert parse_since(None) is None and parse_since("all") is None
    assert parse_since("2025-01-01") == 1735689600.0
    assert parse_since("2025-01-01T00:00:00Z") == 1735689600.0
    with pytest.raises(UserError, match="duration"):
        parse_since("yesterday-ish")
