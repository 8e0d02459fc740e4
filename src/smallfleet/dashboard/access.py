"""Who is looking at the dashboard, and may they act.

Keys are the gateway's (``gateway.keys``). When none are configured the
dashboard is open and every action is recorded as ``dashboard``. When keys are
on, a request needs one: as ``Authorization: Bearer KEY`` (scripts), or a
signed session a browser got by signing in with a key at ``/ui/login``. Any
valid key may read; only admin keys may act.

Sessions. The ``sf_session`` cookie never holds a key. It holds
``v1.NAME.TAG.EXPIRES.NONCE.SIG``: the key's name (base64url), ``TAG`` a short
hash of the key's configured SHA-256 (``-`` when keys are off), the expiry
(Unix seconds, 12 hours after sign-in), a random nonce, and ``SIG`` the
HMAC-SHA256 of all that under the session secret. A session is issued only
after authentication (a valid key posted to ``/ui/login``, or, with keys off,
on the first page view). On every request the signature and expiry are
checked and the named key is looked up in the :class:`KeyRing` again; a key
removed from the configuration, or whose SHA-256 changed, ends its sessions.

CSRF. An action (a POST form) carries a token derived from the session:
``HMAC(secret, "csrf:" + nonce)``. A cookie that someone minted without a key
is not a session at all, a cookie they planted beside an admin's either fails
the signature or names their own key, and the token of one session is
worthless with another. A request that carries two session cookies (one
planted) may not act. The sign-in form has its own token, bound the same way
to a random ``sf_login`` cookie that grants nothing. A request authenticated
by an ``Authorization`` header needs no token: a browser never adds that
header on its own.

The secret is ``gateway.session_secret`` (``SMALLFLEET_GATEWAY__SESSION_SECRET``);
replicas behind one load balancer must share it, or a form served by one is
refused by another. Unset, each process makes a random one, and sessions end
with the process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smallfleet.errors import (
    Forbidden,  # a valid key that may not do this (not admin, a bad CSRF token)
    Unauthorized,  # no key, or an unknown one
)

if TYPE_CHECKING:
    from smallfleet.config import GatewayKey
    from smallfleet.gateway.auth import KeyRing

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Forbidden",
    "Session",
    "Sessions",
    "Viewer",
    "cookie_count",
    "identify",
    "key_tag",
    "new_nonce",
    "session_key",
]

SESSION_COOKIE = "sf_session"
LOGIN_COOKIE = "sf_login"
SESSION_SECONDS = 12 * 3600
_OPEN = "-"  # the key tag of a session issued while keys are off
_VERSION = "v1"


@dataclass(frozen=True)
class Viewer:
    """The one looking: their key's name (``dashboard`` when keys are off) and what they may do."""

    name: str
    admin: bool
    via_header: bool = False
    keys_on: bool = False


@dataclass(frozen=True)
class Session:
    """A verified session: whose (key name and tag), until when, and its nonce."""

    name: str
    tag: str
    expires: int
    nonce: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_tag(key: GatewayKey) -> str:
    """A short hash of the key's configured SHA-256: changes when the key is replaced, reveals nothing."""
    digest = hashlib.sha256(b"smallfleet-session:" + key.sha256.strip().lower().encode()).digest()
    return _b64(digest[:12])


class Sessions:
    """Issues and verifies signed session values and their CSRF tokens under one secret."""

    def __init__(self, secret: str | bytes, ttl: float = SESSION_SECONDS) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        # One derived key, so the configured secret is never used raw for anything else.
        self._key = hashlib.sha256(b"smallfleet-dashboard-session\0" + raw).digest()
        self.ttl = ttl

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}:{text}".encode(), hashlib.sha256).hexdigest()

    def issue(self, key: GatewayKey | None, now: float | None = None) -> str:
        """A new session value for ``key`` (None: keys are off)."""
        now = time.time() if now is None else now
        name, tag = ("dashboard", _OPEN) if key is None else (key.name, key_tag(key))
        body = ".".join(
            [_VERSION, _b64(name.encode()), tag, str(int(now + self.ttl)), secrets.token_urlsafe(18)]
        )
        return body + "." + self._mac("session", body)

    def verify(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value holds, or None when it is absent, forged, malformed or expired."""
        parts = (value or "").split(".")
        if len(parts) != 6 or parts[0] != _VERSION:
            return None
        body, sig = ".".join(parts[:5]), parts[5]
        if not hmac.compare_digest(self._mac("session", body), sig):
            return None
        try:
            name, expires = _unb64(parts[1]).decode(), int(parts[3])
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if expires <= (time.time() if now is None else now):
            return None
        return Session(name, parts[2], expires, parts[4])

    def csrf(self, session: Session) -> str:
        """The token the forms of this session carry."""
        return self._mac("csrf", session.nonce)

    def check_csrf(self, session: Session | None, token: str | None) -> None:
        if session is None or not token or not hmac.compare_digest(self.csrf(session), token):
            raise Forbidden("The form's CSRF token is missing or stale; reload the page and try again.")

    def login_token(self, nonce: str) -> str:
        """The sign-in form's token, bound to the ``sf_login`` cookie's nonce."""
        return self._mac("login", nonce)

    def check_login(self, nonce: str | None, token: str | None) -> None:
        if not nonce or not token or not hmac.compare_digest(self.login_token(nonce), token):
            raise Forbidden("The sign-in form is stale; reload the page and try again.")


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def identify(keys: KeyRing, authorization: str | None, session: Session | None) -> Viewer:
    """The viewer for a request; raises :class:`Unauthorized` when keys are on and none valid is given."""
    if not keys.enabled:
        return Viewer("dashboard", admin=True)
    if authorization:
        key = keys.authenticate(authorization)
        assert key is not None
        return Viewer(key.name, key.admin, via_header=True, keys_on=True)
    key = session_key(keys, session)
    if key is None:
        raise Unauthorized("Sign in with a gateway key to see the dashboard.")
    return Viewer(key.name, key.admin, keys_on=True)


def session_key(keys: KeyRing, session: Session | None) -> GatewayKey | None:
    """The configured key a session names, if it still exists unchanged (looked up on every request)."""
    if session is None or session.tag == _OPEN:
        return None
    return next((k for k in keys.named(session.name) if hmac.compare_digest(key_tag(k), session.tag)), None)


def cookie_count(header: str | None, name: str) -> int:
    """How many cookies called ``name`` a ``Cookie`` header carries (more than one: one was planted)."""
    return sum(1 for part in (header or "").split(";") if part.strip().partition("=")[0] == name)
