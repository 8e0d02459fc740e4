"""Who is looking at the dashboard, and may they act.

Keys are the gateway's (``gateway.keys``): when none are configured the
dashboard is open and every action is recorded as ``dashboard``. When keys are
on, a request needs one, as ``Authorization: Bearer KEY`` or in the HttpOnly
``sf_key`` cookie the login form sets; the key is checked by its SHA-256 like
every gateway request. Any valid key may read; only admin keys may act.

Actions are POST forms carrying a CSRF token: an HMAC of the browser's own
random session cookie (``sf_session``) under a secret made per process. A
request that authenticates with an ``Authorization`` header sends no cookies a
browser could be tricked into sending, so it needs no token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smallfleet.errors import UserError
from smallfleet.gateway.auth import Unauthorized

if TYPE_CHECKING:
    from smallfleet.gateway.auth import KeyRing

__all__ = ["KEY_COOKIE", "SESSION_COOKIE", "Forbidden", "Viewer", "csrf_token", "identify"]

KEY_COOKIE = "sf_key"
SESSION_COOKIE = "sf_session"


class Forbidden(UserError):
    """A valid key that may not do this (not an admin key, or a bad CSRF token) → 403."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True)
class Viewer:
    """The one looking: their key's name (``dashboard`` when keys are off) and what they may do."""

    name: str
    admin: bool
    via_header: bool = False
    keys_on: bool = False


def identify(keys: KeyRing, authorization: str | None, cookie_key: str | None) -> Viewer:
    """The viewer for a request; raises :class:`Unauthorized` when keys are on and none valid is given."""
    if not keys.enabled:
        return Viewer("dashboard", admin=True)
    if authorization:
        key = keys.authenticate(authorization)
        assert key is not None
        return Viewer(key.name, key.admin, via_header=True, keys_on=True)
    if cookie_key:
        key = keys.authenticate("Bearer " + cookie_key)
        assert key is not None
        return Viewer(key.name, key.admin, keys_on=True)
    raise Unauthorized("Sign in with a gateway key to see the dashboard.")


def new_session() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret: bytes, session: str) -> str:
    """The token a form of this browser session must carry."""
    return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()


def check_csrf(secret: bytes, session: str | None, token: str | None) -> None:
    if not session or not token or not hmac.compare_digest(csrf_token(secret, session), token):
        raise Forbidden("The form's CSRF token is missing or stale; reload the page and try again.")
