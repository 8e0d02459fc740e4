"""What the gateway accepts from the outside, checked before a request is served.

- **Host**: the ``Host`` header must be one of ``gateway.allowed_hosts`` (a name,
  or ``name:port``; ``*`` = any). Unset: when the gateway is bound to a loopback
  address, only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``) — a web
  page that rebinds its own DNS name to 127.0.0.1 then cannot read the gateway;
  bound elsewhere, any host.
- **Origin**: a state-changing request (anything but GET, HEAD, OPTIONS) that
  carries an ``Origin`` (browsers always send it on a cross-site POST) must come
  from the gateway's own origin (the Origin's host is the Host header) or one of
  ``gateway.allowed_origins``. Clients that are not browsers send no Origin.
- **Body**: ``Content-Type: application/json`` (``charset=utf-8`` or none), the
  bytes valid UTF-8 (no UTF-16 and friends: they would be forwarded as they are),
  at most ``gateway.max_json_depth`` levels of nesting, and lone UTF-16
  surrogates (``"\\ud800"`` escapes, which no database or UTF-8 encoder takes)
  replaced by U+FFFD.
- **Labels**: a workload or model name longer than ``gateway.max_label_chars``
  is refused (400) and stored cut to that length.

Every failure is a :class:`~smallfleet.errors.SmallfleetError` with its 4xx
status and OpenAI-style body; none of it reaches a 500.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import TYPE_CHECKING, Any

from smallfleet.errors import Forbidden, RequestInvalid, UnsupportedMediaType

if TYPE_CHECKING:
    from smallfleet.config import GatewayConfig

__all__ = ["Intake", "cut_label", "raw_body_record"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A \uD800-\uDFFF escape in the raw JSON: only then can a parsed string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: How much of a body that could not be parsed is kept in its trace.
RAW_BODY_KEEP = 64 * 1024


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name part of a Host header value (without the port), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def cut_label(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def raw_body_record(body: bytes) -> dict[str, Any]:
    """What a trace keeps of a body that is not a JSON object the gateway could read."""
    text = body[:RAW_BODY_KEEP].decode("utf-8", "replace")
    return {"raw_body": _SURROGATE.sub("\ufffd", text), "raw_body_bytes": len(body)}


class Intake:
    """The checks of one gateway's configuration (built once; each call is cheap)."""

    def __init__(self, cfg: GatewayConfig) -> None:
        if cfg.allowed_hosts is not None:
            hosts = {h.strip().lower() for h in cfg.allowed_hosts}
            self.hosts: frozenset[str] | None = None if "*" in hosts else frozenset(hosts)
        elif _is_loopback(cfg.host):
            self.hosts = _LOOPBACK_NAMES
        else:
            self.hosts = None
        self.origins = frozenset(o.strip().rstrip("/").lower() for o in cfg.allowed_origins)
        self.max_depth = cfg.max_json_depth
        self.max_label = cfg.max_label_chars

    # ------------------------------------------------------------ where from

    def check_source(self, method: str, host: str | None, origin: str | None) -> None:
        """Raise :class:`Forbidden` for a Host not served or a cross-site state-changing request."""
        if self.hosts is not None and host is not None:
            value = host.strip().lower()
            if value not in self.hosts and _host_name(value) not in self.hosts:
                raise Forbidden(
                    f"Host {host[:100]!r} is not served by this gateway; add it to gateway.allowed_hosts.",
                    code="host_not_allowed",
                )
        if origin is None or method in _SAFE_METHODS:
            return
        o = origin.strip().rstrip("/").lower()
        if o in self.origins:
            return
        _, sep, netloc = o.partition("://")
        if sep and host is not None and netloc == host.strip().lower():
            return  # same origin: the gateway's own dashboard
        raise Forbidden(
            f"Requests from the web origin {origin[:100]!r} are not allowed; "
            "add it to gateway.allowed_origins to let that site call the gateway.",
            code="origin_not_allowed",
        )

    # ------------------------------------------------------------ the body

    @staticmethod
    def check_content_type(ctype: str | None) -> None:
        """Only ``application/json``, in UTF-8: anything else a browser may send cross-site unasked."""
        if ctype is None:
            raise UnsupportedMediaType(
                "Send the body as JSON with 'Content-Type: application/json'.", "content-type"
            )
        mime, _, params = ctype.partition(";")
        if mime.strip().lower() != "application/json":
            raise UnsupportedMediaType(
                f"Content-Type {ctype[:100]!r} is not supported; send 'application/json'.", "content-type"
            )
        for param in params.split(";"):
            name, _, value = param.partition("=")
            charset = value.strip().strip('"').lower()
            if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
                raise UnsupportedMediaType(
                    f"Charset {value.strip()[:40]!r} is not supported; send UTF-8 JSON.", "content-type"
                )

    def parse_json(self, body: bytes) -> tuple[Any, bytes]:
        """The parsed body, and the bytes to forward (re-encoded when lone surrogates were replaced)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestInvalid(
                f"The body is not valid UTF-8 (byte {e.start}); send UTF-8 JSON.", code="invalid_encoding"
            ) from None
        if text.startswith("\ufeff"):
            text = text[1:]
        try:
            data = json.loads(text, parse_constant=_NotJSON)
        except ValueError as e:
            raise RequestInvalid(f"The body is not valid JSON: {e}", code="invalid_json") from None
        except RecursionError:
            raise self._too_deep() from None
        if body.count(b"[") + body.count(b"{") > self.max_depth and _depth(data) > self.max_depth:
            raise self._too_deep()
        if b"NaN" in body or b"Infinity" in body:
            _refuse_constants(data)
        if _SURROGATE_ESCAPE.search(body) is not None:
            data, changed = _clean(data)
            if changed:
                body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return data, body

    def _too_deep(self) -> RequestInvalid:
        return RequestInvalid(
            f"The body is nested more than {self.max_depth} levels deep.", code="too_deeply_nested"
        )

    def check_label(self, value: str, what: str) -> None:
        if len(value) > self.max_label:
            raise RequestInvalid(
                f"The {what} is {len(value)} characters long; at most {self.max_label} are taken.",
                what,
                code="label_too_long",
            )


class _NotJSON:
    """Where Python's json read ``NaN`` or ``Infinity``, which JSON (RFC 8259) does not have."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _refuse_constants(data: Any) -> None:
    """A 400 naming the first field that holds NaN or Infinity."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _NotJSON):
            where = f"'{path}' is" if path else "The body is"
            message = f"{where} {node.name}, which is not JSON: numbers must be finite."
            raise RequestInvalid(message, path or None)
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))


def _depth(node: Any) -> int:
    """How deep ``node`` nests (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _clean(node: Any) -> tuple[Any, bool]:
    """``node`` with lone surrogates replaced by U+FFFD in every string and key; whether any was."""
    if isinstance(node, str):
        out = _SURROGATE.sub("\ufffd", node)
        return out, out != node
    if isinstance(node, list):
        changed = False
        items = []
        for v in node:
            v, c = _clean(v)
            items.append(v)
            changed |= c
        return items, changed
    if isinstance(node, dict):
        changed = False
        obj = {}
        for k, v in node.items():
            k2, ck = _clean(k)
            v2, cv = _clean(v)
            obj[k2] = v2
            changed |= ck or cv
        return obj, changed
    return node, False
