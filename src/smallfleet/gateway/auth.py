"""Gateway API keys and per-key daily budgets (both off unless ``gateway.keys`` is set).

Only the SHA-256 of each key is configured (``smallfleet keys hash KEY``). A
request then needs ``Authorization: Bearer KEY``; a key with
``daily_budget_usd`` is refused with 429 ``insufficient_quota`` once what it
spent since midnight UTC reaches the budget. Spend is kept in memory, seeded at
start-up from the store's traces of the day.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from smallfleet.errors import BudgetExceeded, UserError

if TYPE_CHECKING:
    from smallfleet.config import GatewayKey

__all__ = ["BodyTooLarge", "KeyRing", "Unauthorized", "hash_key", "new_key"]


class Unauthorized(UserError):
    """No key, or a key the gateway does not know → 401."""

    status_code = 401
    code = "invalid_api_key"


class BodyTooLarge(UserError):
    """The request body is over ``gateway.max_body_bytes`` → 413."""

    status_code = 413
    code = "request_too_large"


def hash_key(key: str) -> str:
    """The SHA-256 (hex) of a key, as it goes into ``gateway.keys[].sha256``."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key in the OpenAI style."""
    return "sf-" + secrets.token_urlsafe(32)


def _day(t: float) -> int:
    return int(t // 86400)


class KeyRing:
    """The configured keys, and what each has spent today."""

    def __init__(self, keys: Iterable[GatewayKey]) -> None:
        self._by_hash = {k.sha256.strip().lower(): k for k in keys}
        self._spent: dict[str, float] = {}
        self._day = _day(time.time())

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    def authenticate(self, authorization: str | None) -> GatewayKey | None:
        """The key named by an ``Authorization`` header; None when keys are off."""
        if not self._by_hash:
            return None
        if not authorization:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
                "(this gateway has keys configured in gateway.keys)."
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("The Authorization header must be 'Bearer YOUR_KEY'.")
        key = self._by_hash.get(hash_key(token.strip()))
        if key is None:
            raise Unauthorized("Incorrect API key provided.")
        return key

    def check_budget(self, key: GatewayKey | None) -> None:
        """Raise :class:`BudgetExceeded` when ``key`` has spent its daily budget."""
        if key is None or key.daily_budget_usd is None:
            return
        spent = self.spent(key.name)
        if spent >= key.daily_budget_usd:
            raise BudgetExceeded(
                f"Key {key.name!r} has spent ${spent:.4f} of its ${key.daily_budget_usd:.2f} daily budget; "
                "it resets at 00:00 UTC."
            )

    def _roll(self) -> None:
        today = _day(time.time())
        if today != self._day:
            self._day = today
            self._spent.clear()

    def spent(self, name: str) -> float:
        self._roll()
        return self._spent.get(name, 0.0)

    def add_spend(self, name: str | None, usd: float | None, at: float | None = None) -> None:
        if name is None or not usd:
            return
        self._roll()
        if at is not None and _day(at) != self._day:
            return
        self._spent[name] = self._spent.get(name, 0.0) + usd

    def start_of_day(self) -> float:
        self._roll()
        return self._day * 86400.0
