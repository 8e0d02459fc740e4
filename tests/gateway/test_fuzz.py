"""Property-based fuzzing of the gateway's API: the real gateway over HTTP, on SQLite and PostgreSQL.

For every request hypothesis makes up (arbitrary JSON, chat bodies with wrong types and unknown
fields, lone surrogates written as JSON escapes, nesting 100-3000 deep, strings up to the body
limit, NaN, every content type, streamed or not, random methods and paths):

- never a 5xx, and every 4xx is an OpenAI error body ``{"error": {"message", "type", "param", "code"}}``;
- every request to ``/v1/chat/completions`` leaves exactly one trace, under the response's
  ``x-smallfleet-trace-id``, with the status that was answered;
- the store keeps writing: after each request the recorder drains and ``/healthz`` answers 200;
  after the run a normal request is recorded and nothing was set aside as a dead letter.

Where the right answer is known it is checked too: a valid request is answered 200 and reaches the
upstream intact, a body over the limit 413, a field of the wrong JSON type 400 naming it, NaN 400,
another method on an API path 405 with ``Allow``, feedback stored for every 200, ...

The SQLite gateway has no keys; the PostgreSQL one has a key with a daily budget (every request
authenticated and reserved against it in the store), so both paths of the gateway are fuzzed.

Each test makes ``FUZZ_EXAMPLES`` requests (default 150, derandomized so the suite is stable).
``FUZZ_EXAMPLES=10000 pytest tests/gateway/test_fuzz.py`` runs a long, randomly seeded campaign;
hypothesis prints a ``@reproduce_failure`` blob for what it finds.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from gwkit import Running, model_cfg
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from smallfleet.config import load_settings
from smallfleet.gateway.app import create_app
from smallfleet.gateway.auth import hash_key
from smallfleet.gateway.server import BackgroundServer
from smallfleet.store.trace_store import TraceStore
from smallfleet.testing import ScriptedUpstream

# Not SMALLFLEET_*: tests/conftest.py clears those so that no test reads the developer's config.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 0)

FUZZ = settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    derandomize=not EXAMPLES,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

LIMIT = 256 * 1024  # gateway.max_body_bytes of the fuzzed gateway
MAX_DEPTH = 64  # gateway.max_json_depth (its default)
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
CLIENT_ERROR = frozenset(range(400, 500))
OK = frozenset({200})
BAD_REQUEST = frozenset({400})
FOREIGN_ORIGIN = "https://evil.example"
KEY = "sk-fuzz-0123456789abcdef"  # the gateway key of the keyed (PostgreSQL) runs


# ---------------------------------------------------------------- what is sent, and what should come back


@dataclass
class Case:
    """One request, and the statuses that are right for it (None: anything but a 5xx)."""

    method: str
    path: str
    body: bytes | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    expect: frozenset[int] | None = None
    param: str | None = None  # the error's `param` must start with this
    forwarded: list[Any] | None = None  # the messages the upstream must receive (surrogates as U+FFFD)
    chunked: bool = False  # send the body without a Content-Length

    def __repr__(self) -> str:
        body = "None" if self.body is None else repr(self.body[:300])
        if self.body is not None and len(self.body) > 300:
            body += f"...({len(self.body)} bytes)"
        expect = "4xx" if self.expect == CLIENT_ERROR else sorted(self.expect or []) or "any"
        return (
            f"Case({self.method} {self.path} headers={self.headers!r} body={body} expect={expect} "
            f"param={self.param!r} chunked={self.chunked})"
        )


def _json(obj: Any, *, ascii: bool = True) -> bytes:
    """JSON bytes as a client would send them; lone surrogates as \\ud800 escapes when ``ascii``."""
    text = json.dumps(obj, ensure_ascii=ascii, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")  # raw surrogates (ascii=False): invalid UTF-8 on purpose


def _ctype(value: str = "application/json") -> list[tuple[bytes, bytes]]:
    return [(b"content-type", value.encode("latin-1"))]


def _no_surrogates(obj: Any) -> Any:
    """``obj`` with every lone surrogate replaced by U+FFFD (what the gateway forwards and stores)."""
    if isinstance(obj, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in obj)
    if isinstance(obj, list):
        return [_no_surrogates(v) for v in obj]
    if isinstance(obj, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in obj.items()}
    return obj


def _messages_received(body: bytes) -> Any:
    """The messages a JSON parser reads from ``body`` (an escaped surrogate pair is one character),
    lone surrogates replaced: what the upstream must receive."""
    return _no_surrogates(json.loads(body)["messages"])


# ---------------------------------------------------------------- strategies

_SPECIAL = [
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\x00",
    "\u2028",
    "\ufeff",
    "\ufffd",
    '"',
    "\\",
    "\U0001f600",
]
_CHARS = st.one_of(st.characters(), st.sampled_from(_SPECIAL))


def texts(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any string, lone surrogates and NULs included."""
    return st.text(_CHARS, max_size=max_size)


def json_values(nan: bool = True, max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary JSON (and, with ``nan``, the NaN / Infinity that Python's json writes and reads)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=nan, allow_infinity=nan),
        texts(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(10), inner, max_size=4),
        max_leaves=max_leaves,
    )


def _content() -> st.SearchStrategy[Any]:
    part = st.fixed_dictionaries({"type": st.just("text"), "text": texts()})
    return texts(60) | st.lists(part, min_size=1, max_size=3)


def _messages() -> st.SearchStrategy[list[dict[str, Any]]]:
    user = st.fixed_dictionaries({"role": st.just("user"), "content": _content()})
    system = st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": _content()})
    call = st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=8),
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": st.just("lookup"), "arguments": texts()}),
        }
    )
    assistant = st.fixed_dictionaries(
        {"role": st.just("assistant")},
        optional={"content": st.none() | texts(), "tool_calls": st.lists(call, min_size=1, max_size=2)},
    )
    tool = st.fixed_dictionaries(
        {"role": st.just("tool"), "content": texts(), "tool_call_id": st.text(min_size=1, max_size=8)}
    )
    others = st.lists(st.one_of(system, assistant, tool), max_size=3)
    return st.tuples(others, user).map(lambda t: [*t[0], t[1]])


def _tools() -> st.SearchStrategy[list[dict[str, Any]]]:
    params = st.fixed_dictionaries(
        {
            "type": st.just("object"),
            "properties": st.dictionaries(texts(8), json_values(nan=False, max_leaves=4)),
        }
    )
    fn = st.fixed_dictionaries(
        {"name": st.from_regex(r"[a-z_]{1,12}", fullmatch=True)},
        optional={"description": texts(), "parameters": params},
    )
    return st.lists(
        st.fixed_dictionaries({"type": st.just("function"), "function": fn}), min_size=1, max_size=3
    )


#: What an OpenAI client may send, within the gateway's limits.
_OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "temperature": st.floats(min_value=0, max_value=2) | st.integers(0, 2),
    "top_p": st.floats(min_value=0, max_value=1),
    "max_tokens": st.integers(1, 10**6),
    "max_completion_tokens": st.integers(1, 10**6),
    "n": st.just(1),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": texts(10) | st.lists(texts(10), max_size=3),
    "user": texts(),
    "metadata": st.dictionaries(texts(10).filter(lambda k: k != "workload"), texts(), max_size=3),
    "logprobs": st.booleans(),
    "presence_penalty": st.floats(min_value=-2, max_value=2),
    "tools": _tools(),
    "tool_choice": st.sampled_from(["none", "auto", "required"]),
    "parallel_tool_calls": st.booleans(),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
}
_KNOWN_FIELDS = frozenset({"model", "messages", *_OPTIONAL_FIELDS, "top_logprobs", "frequency_penalty"})


def valid_chats() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"model": st.just("big"), "messages": _messages()}, optional=_OPTIONAL_FIELDS
    )


#: A header value as it may arrive: visible ASCII and obs-text (latin-1), up to 400 characters.
_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E)
    | st.characters(min_codepoint=0xA0, max_codepoint=0xFF),
    min_size=1,
    max_size=400,
)
_LABEL = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)


@st.composite
def valid_cases(draw: st.DrawFn) -> Case:
    """A valid chat request (lone surrogates in its strings included): 200, forwarded intact."""
    body = draw(valid_chats())
    headers = _ctype(draw(st.sampled_from(["application/json", "application/json; charset=utf-8"])))
    if draw(st.booleans()):
        headers.append((b"x-smallfleet-workload", draw(_LABEL).encode()))
    return Case(
        "POST",
        draw(st.sampled_from(CHAT_PATHS)),
        _json(body),
        headers,
        expect=OK,
        forwarded=_messages_received(_json(body)),
        chunked=draw(st.booleans()),
    )


#: Values of the wrong JSON type (or out of range) for each field; each is a 400 naming the field.
WRONG: dict[str, list[Any]] = {
    "model": [1, True, None, [], {}, ["big"]],
    "messages": ["hi", {}, 1, None, [], [1], ["hi"], [{}], [{"role": "robot", "content": "x"}]],
    "stream": ["yes", "true", "false", 1, 0, [], {}, "1"],
    "stream_options": ["x", [], 1, {"include_usage": "yes"}],
    "temperature": ["1", True, [], {}, "hot", 3, -1],
    "top_p": ["0.5", 2, False],
    "max_tokens": ["10", 1.5, True, 0, -1, []],
    "max_completion_tokens": ["10", False, 0],
    "n": [2, "1", 0, 1.5],
    "seed": ["1", 1.5, [], {}],
    "logprobs": ["yes", 1, "true"],
    "top_logprobs": [21, "3", 1.5, -1],
    "parallel_tool_calls": ["no", 0],
    "user": [1, True, [], {}],
    "metadata": ["x", [], 1, {"k": 1}, {"k": None}, {"k": ["v"]}],
    "stop": [1, True, [1], {}, [None]],
    "tools": ["x", {}, [1], [{"type": "function"}], [{"type": "function", "function": {"name": 1}}]],
    "tool_choice": [1, "sometimes", True, [], {"type": "function"}],
    "response_format": ["json", {"type": "yaml"}, 1, []],
    "presence_penalty": ["0", 5, True],
    "frequency_penalty": [-5, "1"],
}


@st.composite
def wrong_type_cases(draw: st.DrawFn) -> Case:
    """A valid chat with one field of the wrong JSON type: a 400 whose ``param`` names it."""
    body = draw(valid_chats())
    name = draw(st.sampled_from(sorted(WRONG)))
    body[name] = draw(st.sampled_from(WRONG[name]))
    return Case("POST", "/v1/chat/completions", _json(body), _ctype(), expect=BAD_REQUEST, param=name)


_MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "function_call"]


@st.composite
def mutated_cases(draw: st.DrawFn) -> Case:
    """A chat body with unknown fields, fields replaced by arbitrary JSON, or removed."""
    body = draw(valid_chats())
    expect: frozenset[int] | None = None
    kind = draw(st.sampled_from(["unknown", "replace", "drop", "message", "message"]))
    if kind == "unknown":  # extra fields are passed on, as the OpenAI API does
        extra = draw(
            st.dictionaries(texts(12).filter(lambda k: k not in _KNOWN_FIELDS), json_values(nan=False))
        )
        body.update(extra)
        expect = OK
    elif kind == "replace":
        body[draw(st.sampled_from(sorted(_KNOWN_FIELDS)))] = draw(json_values())
    elif kind == "drop":
        del body[draw(st.sampled_from(["model", "messages"]))]
        expect = BAD_REQUEST
    else:  # any field of any message, declared by its role or not, set to anything
        msg = draw(st.sampled_from(body["messages"][::-1]))  # the user's last message first
        msg[draw(st.sampled_from(_MESSAGE_FIELDS))] = draw(json_values())
    odd = draw(odd_headers()) if draw(st.integers(0, 3)) == 0 else []
    body_bytes = _json(body, ascii=draw(st.booleans()))
    if not _is_utf8(body_bytes):  # a lone surrogate written raw, not as an escape
        expect = BAD_REQUEST
    return Case("POST", "/v1/chat/completions", body_bytes, _ctype() + odd, expect=None if odd else expect)


@st.composite
def cross_role_cases(draw: st.DrawFn) -> Case:
    """A message with a field its role does not declare (a user's tool_calls...), of any value."""
    body = draw(valid_chats())
    msg = body["messages"][-1]  # the user's
    msg["role"] = draw(st.sampled_from(["user", "system", "developer", "tool", "function"]))
    msg[draw(st.sampled_from(["tool_calls", "tool_call_id", "function_call", "refusal", "name"]))] = draw(
        json_values(nan=False)
    )
    return Case("POST", "/v1/chat/completions", _json(body), _ctype())


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def arbitrary_cases(draw: st.DrawFn) -> Case:
    """Any JSON, or any bytes, as a chat body."""
    if draw(st.booleans()):
        body = _json(draw(json_values(max_leaves=30)), ascii=draw(st.booleans()))
    else:
        body = draw(st.binary(max_size=300))
    return Case("POST", "/v1/chat/completions", body, _ctype() + draw(odd_headers()))


def _deep(n: int, shape: str) -> bytes:
    if shape == "array":
        return b"[" * n + b"]" * n
    if shape == "object":
        return b'{"a":' * n + b"1" + b"}" * n
    if shape == "mixed":
        return b'[{"a":' * (n // 2) + b"null" + b"}]" * (n // 2)
    return b"[" * n  # unbalanced: not JSON, and deep


@st.composite
def deep_cases(draw: st.DrawFn) -> Case:
    """Nesting far beyond gateway.max_json_depth, anywhere in the body: a 400."""
    n = draw(st.sampled_from([100, 500, 900, 1000, 1500, 3000]) | st.integers(MAX_DEPTH + 1, 3000))
    deep = _deep(n, draw(st.sampled_from(["array", "object", "mixed", "open"])))
    where = draw(st.sampled_from(["body", "extra", "content", "metadata", "tool", "stream"]))
    head = b'{"model":"big","messages":[{"role":"user","content":'
    body = {
        "body": deep,
        "extra": head + b'"hi"}],"x":' + deep + b"}",
        "content": head + deep + b"}]}",
        "metadata": head + b'"hi"}],"metadata":{"k":' + deep + b"}}",
        "tool": head
        + b'"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":'
        + deep
        + b"}}]}",
        "stream": head + b'"hi"}],"stream":true,"x":' + deep + b"}",
    }[where]
    return Case("POST", "/v1/chat/completions", body, _ctype(), expect=BAD_REQUEST)


@st.composite
def huge_cases(draw: st.DrawFn) -> Case:
    """A valid chat of an exact size around the body limit: 200 up to it, 413 over it."""
    size = draw(
        st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1])
        | st.integers(LIMIT - 2048, LIMIT + 2048)
        | st.integers(200, LIMIT)
        | st.integers(LIMIT, 4 * LIMIT)
    )
    char = draw(st.sampled_from(["a", "é", "\u20ac", "\ud800", "\U0001f600", "\\"]))
    stream = draw(st.booleans())
    empty = {"model": "big", "messages": [{"role": "user", "content": ""}], "stream": stream}
    unit = len(_json(char)) - 2  # bytes one character adds inside a JSON string
    room = size - len(_json(empty))
    text = char * (room // unit) + "a" * (room % unit)
    body = _json({**empty, "messages": [{"role": "user", "content": text}]})
    assert len(body) == size
    case = Case("POST", "/v1/chat/completions", body, _ctype(), chunked=draw(st.booleans()))
    case.expect = OK if size <= LIMIT else frozenset({413})
    if size <= LIMIT:
        case.forwarded = _messages_received(body)
    return case


_JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    "Application/JSON",
    'application/json ; charset="utf-8"',
]
_OTHER_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=sfbound",
    "application/xml",
    "text/html",
    "*/*",
    "",
]
_AMBIGUOUS_TYPES = ["application/json-patch+json", "application/vnd.api+json", "application/json; foo=bar"]


@st.composite
def content_type_cases(draw: st.DrawFn) -> Case:
    """A valid chat body under every content type and encoding: only UTF-8 JSON is served."""
    chat = draw(valid_chats())
    data = _json(chat)
    kind = draw(
        st.sampled_from(
            [
                "json",
                "other",
                "none",
                "utf16",
                "utf16-declared",
                "form",
                "multipart",
                "latin1",
                "ambiguous",
                "foreign-origin",
            ]
        )
    )
    path = "/v1/chat/completions"
    if kind == "json":
        return Case(
            "POST",
            path,
            data,
            _ctype(draw(st.sampled_from(_JSON_TYPES))),
            expect=OK,
            forwarded=_messages_received(data),
        )
    if kind == "other":
        return Case("POST", path, data, _ctype(draw(st.sampled_from(_OTHER_TYPES))), expect=CLIENT_ERROR)
    if kind == "none":
        return Case("POST", path, data, [], expect=CLIENT_ERROR)
    if kind in ("utf16", "utf16-declared"):
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32"]))
        utf16 = json.dumps(chat, ensure_ascii=False).encode(codec, "surrogatepass")
        ctype = f"application/json; charset={codec}" if kind == "utf16-declared" else "application/json"
        return Case("POST", path, utf16, _ctype(ctype), expect=CLIENT_ERROR)
    if kind == "form":
        form = b"payload=" + urllib.parse.quote_from_bytes(data).encode()
        return Case("POST", path, form, _ctype("application/x-www-form-urlencoded"), expect=CLIENT_ERROR)
    if kind == "multipart":
        part = (
            b'--sfbound\r\nContent-Disposition: form-data; name="body"\r\n\r\n'
            + data
            + b"\r\n--sfbound--\r\n"
        )
        return Case("POST", path, part, _ctype("multipart/form-data; boundary=sfbound"), expect=CLIENT_ERROR)
    if kind == "latin1":
        body = json.dumps(chat, ensure_ascii=False).encode("latin-1", "replace")
        return Case("POST", path, body, _ctype("application/json; charset=iso-8859-1"), expect=CLIENT_ERROR)
    if kind == "ambiguous":
        return Case("POST", path, data, _ctype(draw(st.sampled_from(_AMBIGUOUS_TYPES))))
    # A cross-site browser POST: refused whatever its content type.
    ctype = draw(st.sampled_from(["text/plain", "application/json", "application/x-www-form-urlencoded"]))
    return Case(
        "POST", path, data, [*_ctype(ctype), (b"origin", FOREIGN_ORIGIN.encode())], expect=CLIENT_ERROR
    )


_KNOWN_PATHS = [
    *CHAT_PATHS,
    "/v1/models",
    "/models",
    "/v1/feedback",
    "/feedback",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/v1/chat/completions/",
    "/v1",
    "/",
    "/v1/embeddings",
    "/ui/nope",
]
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
# Every other method uvicorn's HTTP parser (llhttp) knows; it answers any other token itself,
# with a plain-text 400, before the gateway sees the request. CONNECT makes a tunnel.
_OTHER_METHODS = [
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "QUERY",
]


@st.composite
def odd_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """Sometimes a key (right, wrong, malformed) and a workload (long, odd bytes) of the client's own."""
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.booleans()):
        auth = st.sampled_from([f"Bearer {KEY}", "Bearer wrong", "Basic eDp5", "Bearer", "bearer " + KEY])
        headers.append(
            (b"authorization", draw(auth | _HEADER_TEXT.map(lambda t: "Bearer " + t)).encode("latin-1"))
        )
    if draw(st.booleans()):
        headers.append((b"x-smallfleet-workload", draw(_HEADER_TEXT).encode("latin-1")))
    return headers


@st.composite
def method_path_cases(draw: st.DrawFn) -> Case:
    """Any method on any path (a query string sometimes), with or without a body."""
    method = draw(st.sampled_from(_METHODS) | st.sampled_from(_OTHER_METHODS))
    path = draw(
        st.sampled_from(_KNOWN_PATHS)
        | st.from_regex(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-F]{2}){0,40}", fullmatch=True)
        | st.from_regex(r"/v1/(?:[a-z0-9/]|%[0-9A-F]{2}){0,30}", fullmatch=True)
    )
    if draw(st.booleans()):
        path += "?" + draw(st.from_regex(r"(?:[a-z0-9=&]|%[0-9A-F]{2}){0,20}", fullmatch=True))
    body = draw(st.none() | st.binary(max_size=100) | valid_chats().map(_json))
    headers = _ctype() if body is not None else []
    headers += draw(odd_headers())
    expect = None
    if path.split("?")[0] in CHAT_PATHS and method != "POST":
        expect = frozenset({405})
    return Case(method, path, body, headers, expect=expect)


#: The one method each API path serves.
_SERVED = {
    **dict.fromkeys(CHAT_PATHS, "POST"),
    **dict.fromkeys(["/v1/feedback", "/feedback"], "POST"),
    **dict.fromkeys(["/v1/models", "/models", "/healthz", "/metrics", "/openapi.json"], "GET"),
}


@st.composite
def wrong_method_cases(draw: st.DrawFn) -> Case:
    """Another method on an API path: 405 with an ``Allow`` header (RFC 9110), not a 404 or a 200.

    HEAD on a GET path may be served; OPTIONS may be answered (200, 204).
    """
    path = draw(st.sampled_from(sorted(_SERVED)))
    method = draw(st.sampled_from([m for m in _METHODS + _OTHER_METHODS if m != _SERVED[path]]))
    expect = {405}
    if method == "HEAD" and _SERVED[path] == "GET":
        expect.add(200)
    if method == "OPTIONS":
        expect |= {200, 204}
    body = draw(st.none() | valid_chats().map(_json))
    return Case(method, path, body, _ctype() if body is not None else [], expect=frozenset(expect))


def _check_allow(fz: Fuzzed, case: Case) -> None:
    resp = fz.check(case)
    if resp.status_code == 405:
        allow = {m.strip().upper() for m in resp.headers.get("allow", "").split(",") if m.strip()}
        path = case.path.split("?")[0]
        assert _SERVED[path] in allow, f"405 without 'Allow: {_SERVED[path]}' for {case!r}: {resp.headers}"


# ---------------------------------------------------------------- the gateway under fuzzing


def _start(store_url: str, upstream: ScriptedUpstream, dead_letters: Path, keyed: bool) -> Running:
    gateway: dict[str, Any] = {
        "max_body_bytes": LIMIT,
        "flush_interval_ms": 20,
        "dead_letter_path": str(dead_letters),
    }
    if keyed:  # every request authenticated, and reserved against a daily budget in the store
        gateway["keys"] = [
            {"name": "fuzz", "sha256": hash_key(KEY), "admin": True, "daily_budget_usd": 1000.0}
        ]
    overrides = {
        "models": {"big": model_cfg(upstream.url, model="gpt-upstream")},
        "store": {"url": store_url},
        "gateway": gateway,
    }
    settings_ = load_settings(env={}, overrides=overrides)
    store = TraceStore(store_url)
    app = create_app(settings_, store=store)
    return Running(app, BackgroundServer(app).start(), store)


class Fuzzed:
    """A gateway under fuzzing and what it owes: one trace for each chat request sent.

    A gateway whose store stops writing is set aside and a fresh one (same store) takes its
    place, so that the request that broke it fails alone and hypothesis shrinks it, instead
    of every later request failing for it.
    """

    def __init__(self, store_url: str, upstream: ScriptedUpstream, tmp: Path, *, keyed: bool) -> None:
        self.store_url = store_url
        self.upstream = upstream
        self.keyed = keyed
        self.dead_letters = tmp / "dead-letters.jsonl"
        self.broken: list[Running] = []
        self.gw = _start(store_url, upstream, self.dead_letters, keyed)
        self.http = self._client()
        self.owed = 0
        self.counted = self.gw.store.count_traces()
        self.feedback_ok = 0
        self.trace_id = self._normal_request()
        self.feedback_base = len(self.gw.store.get_feedback(self.trace_id))

    def _client(self) -> httpx.Client:
        headers = {"authorization": f"Bearer {KEY}"} if self.keyed else {}
        return httpx.Client(base_url=self.gw.server.base, headers=headers, timeout=30)

    # ------------------------------------------------------------ one request

    def send(self, case: Case) -> httpx.Response:
        self.upstream.reset()  # forget what it received (fuzzed bodies can be large)
        content: Any = case.body
        if case.chunked and case.body is not None:
            data = case.body
            content = iter([data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""])
        # The raw path as it is (a base URL joined with "//x" would be another host).
        url = httpx.URL(self.gw.server.base).copy_with(raw_path=case.path.encode())
        return self.http.request(case.method, url, headers=case.headers, content=content)

    def check(self, case: Case) -> httpx.Response:
        """Send ``case`` and assert every property; the response, for more checks."""
        resp = self.send(case)
        status = resp.status_code
        note(f"sent {case!r}\ngot {status} {resp.headers.get('content-type')}: {resp.text[:500]!r}")
        path = case.path.split("?")[0]
        if path in CHAT_PATHS:
            self.owed += 1  # whatever else fails, this request owes its trace
            self.settle(case)  # first, so that a store this request broke is blamed on it
        assert status < 500, f"{status} for {case!r}: {resp.text[:500]}"
        if status >= 400 and case.method != "HEAD" and not path.startswith("/ui"):
            error = _openai_error(resp)
            if case.param is not None:
                assert str(error["param"] or "").startswith(case.param), (case, resp.text[:500])
        if case.expect is not None:
            assert status in case.expect, f"{status} (want {case!r}): {resp.text[:500]}"
        if status == 200 and case.forwarded is not None:
            self._check_forwarded(case, resp)
        if path in CHAT_PATHS:
            self._check_trace(case, resp)
        health = self.http.get("/healthz")
        assert health.status_code == 200, f"/healthz {health.status_code} after {case!r}: {health.text[:300]}"
        return resp

    def _check_forwarded(self, case: Case, resp: httpx.Response) -> None:
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            events = [line for line in resp.text.split("\n") if line.startswith("data: ")]
            assert events and events[-1] == "data: [DONE]", (
                f"stream not finished for {case!r}: {resp.text[-300:]}"
            )
            assert not any('"error"' in e for e in events), (
                f"error in stream for {case!r}: {resp.text[-300:]}"
            )
        else:
            assert resp.json()["choices"], resp.text[:300]
        assert self.upstream.requests, f"nothing reached the upstream for {case!r}"
        got = self.upstream.requests[-1]
        assert _no_surrogates(got.get("messages")) == case.forwarded, (
            f"upstream got {str(got)[:500]} for {case!r}"
        )

    def _check_trace(self, case: Case, resp: httpx.Response) -> None:
        trace_id = resp.headers.get("x-smallfleet-trace-id")
        assert trace_id, f"no x-smallfleet-trace-id on {resp.status_code} for {case!r}"
        trace = self.gw.store.get_trace(trace_id)
        assert trace is not None, f"no trace {trace_id} for {case!r} ({self._dead_letter_text()})"
        assert trace.http_status == resp.status_code, (trace.http_status, resp.status_code, case)
        stored = self.gw.store.count_traces()
        assert stored == self.counted + self.owed, f"{stored - self.counted} traces for {self.owed} requests"

    def settle(self, case: Case | None = None) -> None:
        """Wait until every trace of the requests sent so far is written; replace a stuck gateway."""
        app = self.gw.app
        deadline = time.monotonic() + 10
        while app.metrics.in_flight and time.monotonic() < deadline:  # responses go out before traces
            time.sleep(0.002)
        if app.recorder.flush(5.0):
            return
        depth = app.recorder.depth()
        self._replace()
        raise AssertionError(f"the store stopped writing ({depth} traces stuck) after {case!r}")

    def _replace(self) -> None:
        old = self.gw
        self.broken.append(old)
        old.app.recorder.close(timeout=0.5)  # its writer keeps retrying in the background; let it
        self.gw = _start(self.store_url, self.upstream, self.dead_letters, self.keyed)
        self.http.close()
        self.http = self._client()
        self.owed = 0
        self.counted = self.gw.store.count_traces()

    def _dead_letter_text(self) -> str:
        if not self.dead_letters.exists():
            return "no dead letters"
        return "dead letters: " + self.dead_letters.read_text(errors="replace")[:1000]

    # ------------------------------------------------------------ before and after

    def _normal_request(self) -> str:
        body = {"model": "big", "messages": [{"role": "user", "content": "Where is order 1234?"}]}
        resp = self.http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        trace_id = resp.headers["x-smallfleet-trace-id"]
        self.owed += 1
        self.settle()
        trace = self.gw.store.get_trace(trace_id)
        assert trace is not None and trace.status == "ok", trace
        return trace_id

    def finish(self) -> None:
        """After a run: the store still writes, nothing is stuck or set aside, health and metrics answer."""
        self.settle()
        assert self.gw.app.recorder.depth() == 0
        assert not self.broken, f"{len(self.broken)} gateway(s) stopped writing traces during the run"
        self._normal_request()
        assert self.gw.app.recorder.depth() == 0
        health = self.http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        metrics = self.http.get("/metrics")
        assert metrics.status_code == 200, metrics.text[:300]
        assert self.gw.store.count_traces() == self.counted + self.owed
        assert not self.dead_letters.exists() or not self.dead_letters.read_text().strip(), (
            self._dead_letter_text()
        )
        feedback = len(self.gw.store.get_feedback(self.trace_id)) - self.feedback_base
        assert feedback == self.feedback_ok, (
            f"{feedback} feedback rows stored for {self.feedback_ok} accepted"
        )

    def close(self) -> None:
        self.http.close()
        for running in [*self.broken, self.gw]:
            running.server.stop(timeout=10)
            running.store.close()


def _openai_error(resp: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of an OpenAI error body (asserting its shape)."""
    assert resp.headers.get("content-type", "").startswith("application/json"), (
        resp.status_code,
        resp.headers.get("content-type"),
        resp.text[:300],
    )
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), resp.text[:300]
    error = body["error"]
    assert isinstance(error.get("message"), str) and isinstance(error.get("type"), str), error
    assert "param" in error and "code" in error, error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    return error


@pytest.fixture(params=["sqlite", pytest.param("postgres-keys", marks=pytest.mark.postgres)])
def fuzzed(request: pytest.FixtureRequest, upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[Fuzzed]:
    """A fresh gateway on a fresh store, checked after the test's run: SQLite with no keys, then
    PostgreSQL with a key (sent on every request unless the case sends its own) and a daily budget.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'traces.db'}"
    else:
        url = request.getfixturevalue("pg_schema")
    upstream.reset()
    fz = Fuzzed(url, upstream, tmp_path, keyed=request.param != "sqlite")
    try:
        yield fz
    finally:
        fz.close()


def fuzz(
    fz: Fuzzed, strategy: st.SearchStrategy[Case], check: Callable[[Fuzzed, Case], Any] | None = None
) -> None:
    """Run ``strategy``'s cases through ``fz`` (then ``check`` each), then the after-run checks."""

    @FUZZ
    @given(case=strategy)
    def run(case: Case) -> None:
        if check is None:
            fz.check(case)
        else:
            check(fz, case)

    run()
    fz.finish()


# ---------------------------------------------------------------- the tests


def test_valid_requests_are_served_and_recorded(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, valid_cases())


def test_wrong_types_are_refused_naming_the_field(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, wrong_type_cases())


def test_mutated_and_arbitrary_bodies(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, st.one_of(mutated_cases(), cross_role_cases(), arbitrary_cases()))


def test_deep_nesting_is_refused(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, deep_cases())


def test_bodies_up_to_and_over_the_limit(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, huge_cases())


def test_only_utf8_json_is_served(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, content_type_cases())


def test_any_method_any_path(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, method_path_cases())


def test_other_methods_are_405_with_allow(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, wrong_method_cases(), _check_allow)


@st.composite
def nan_cases(draw: st.DrawFn) -> Case:
    """NaN and Infinity are not JSON (RFC 8259), though Python's json reads them: a 400."""
    token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
    where = draw(st.sampled_from(["extra", "temperature", "seed", "nested", "tool"]))
    head = b'{"model":"big","messages":[{"role":"user","content":"hi"}]'
    body = {
        "extra": head + b',"x":' + token + b"}",
        "temperature": head + b',"temperature":' + token + b"}",
        "seed": head + b',"seed":' + token + b"}",
        "nested": head + b',"x":{"y":[1,' + token + b"]}}",
        "tool": head
        + b',"tools":[{"type":"function","function":{"name":"f","parameters":{"default":'
        + token
        + b"}}}]}",
    }[where]
    return Case("POST", "/v1/chat/completions", body, _ctype(), expect=BAD_REQUEST)


def test_nan_and_infinity_are_refused(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, nan_cases())


#: Values of each feedback field that are wrong, or right but odd (a NUL, a lone surrogate).
_ODD_FEEDBACK: dict[str, list[Any]] = {
    "trace_id": [None, True, 1, "", " ", "x" * 65, "\x00", "a\x00b", "a\ud800", [], {}],
    "score": [None, True, "1", 10**400, -(10**400), 1e308, -0.0, [], {}, float("nan"), float("-inf")],
    "comment": [1, True, [], {}, "", "x" * 10000, "x" * 10001, "\x00", "a\ud800b", "\U0001f600" * 10000],
    "extra": [None, 1, "x"],
}


@st.composite
def feedback_cases(draw: st.DrawFn) -> Case:
    """Feedback bodies: valid, with wrong or odd values, or any JSON. Marked with what is right."""
    kind = draw(st.sampled_from(["valid", "odd", "any"]))
    if kind == "any":
        return Case("POST", "/v1/feedback", _json(draw(json_values())), _ctype())
    known = "\x00KNOWN"  # replaced by the fixture's real trace id when sent
    body: dict[str, Any] = {"trace_id": known, "score": draw(st.floats(-10, 10) | st.integers(-10, 10))}
    if draw(st.booleans()):
        body["comment"] = draw(st.none() | texts(200))
    expect: frozenset[int] | None = OK
    if kind == "odd":
        name = draw(st.sampled_from(sorted(_ODD_FEEDBACK)))
        value = draw(
            st.sampled_from(_ODD_FEEDBACK[name])
            | texts(80)
            | st.floats()
            | st.integers(min_value=-(10**400), max_value=10**400)
        )
        body[name] = value
        expect = None
    return Case("POST", "/v1/feedback", _json(body, ascii=draw(st.booleans())), _ctype(), expect=expect)


def _check_feedback(fz: Fuzzed, case: Case) -> None:
    assert case.body is not None
    case.body = case.body.replace(b"\\u0000KNOWN", fz.trace_id.encode())
    resp = fz.check(case)
    if resp.status_code == 200:
        fz.feedback_ok += 1


def test_feedback(fuzzed: Fuzzed) -> None:
    fuzz(fuzzed, feedback_cases(), _check_feedback)
