"""What the gateway accepts, over real HTTP: encodings, nesting, labels, content types, Host and Origin.

Every refusal is a 4xx with an OpenAI-style body and leaves exactly one trace; a
request that once stopped all trace writing (a lone surrogate) is stored and the
store keeps writing after it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from gwkit import Running, model_cfg

from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse, Usage

JSON = {"content-type": "application/json"}
MSG = [{"role": "user", "content": "hi"}]


def post(
    gw: Running, body: bytes | str, headers: dict[str, str] | None = None, path: str = "/chat/completions"
):
    return httpx.post(
        gw.url + path, content=body, headers=headers if headers is not None else JSON, timeout=15
    )


def error_of(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def trace_of(gw: Running, r: httpx.Response) -> Any:
    tid = r.headers["x-smallfleet-trace-id"]
    found = [t for t in gw.traces() if t.id == tid]
    assert len(found) == 1, "every request leaves exactly one trace"
    return found[0]


@pytest.fixture(scope="module")
def gw(start_gateway: Any, upstream: ScriptedUpstream) -> Running:
    return start_gateway({"models": {"big": model_cfg(upstream.url), "spare": model_cfg(upstream.url)}})


def _ok(gw: Running, upstream: ScriptedUpstream) -> None:
    """A normal request afterwards is answered and recorded: the store still writes."""
    upstream.reset()
    upstream.push(Reply.text("fine"))
    r = post(gw, json.dumps({"model": "big", "messages": MSG}))
    assert r.status_code == 200, r.text
    assert trace_of(gw, r).status == "ok"
    assert gw.app.recorder.depth() == 0 and gw.app.recorder.healthy()
    assert httpx.get(gw.url.removesuffix("/v1") + "/healthz").status_code == 200


# ---------------------------------------------------------------- lone surrogates


SURROGATE_BODIES = {
    "content": '{"model": "big", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
    "model": '{"model": "big\\udfff", "messages": [{"role": "user", "content": "hi"}]}',
    "role": '{"model": "big", "messages": [{"role": "us\\ud800er", "content": "hi"}]}',
    "unknown-field": '{"model": "big", "messages": [{"role": "user", "content": "hi"}], '
    '"x\\ud83d": "\\udc00"}',
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("where", sorted(SURROGATE_BODIES))
def test_lone_surrogate_is_stored_replaced(
    gw: Running, upstream: ScriptedUpstream, where: str, stream: bool
) -> None:
    upstream.reset()
    body = SURROGATE_BODIES[where]
    if stream:
        body = body[:-1] + ', "stream": true}'
        upstream.push(Reply.stream(ChatResponse.of_text("upstream", "ok", Usage.of(3, 1))))
    else:
        upstream.push(Reply.text("ok"))
    r = post(gw, body)
    assert r.status_code < 500, r.text
    t = trace_of(gw, r)
    stored = json.dumps(t.request, ensure_ascii=False)
    assert "\ufffd" in stored and not any(0xD800 <= ord(c) <= 0xDFFF for c in stored)
    if where == "content":
        assert r.status_code == 200
        assert upstream.requests[-1]["messages"][0]["content"] == "a\ufffdb"  # forwarded replaced too
    _ok(gw, upstream)


def test_lone_surrogate_from_upstream_is_answered(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    raw = '{"id":"x","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,'
    raw += '"message":{"role":"assistant","content":"bad \\ud800 text"},"finish_reason":"stop"}]}'
    upstream.push(Reply(body=raw))
    r = post(gw, json.dumps({"model": "big", "messages": MSG}))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "bad \ud800 text"
    assert "\ud800" not in json.dumps(trace_of(gw, r).response, ensure_ascii=False)
    _ok(gw, upstream)


# ---------------------------------------------------------------- nesting, labels


@pytest.mark.parametrize("levels", [100, 900, 1500, 100_000])
def test_deep_nesting_is_a_400_and_what_came_is_kept(
    gw: Running, upstream: ScriptedUpstream, levels: int
) -> None:
    nested = "[" * levels + "]" * levels
    body = '{"model": "big", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + nested + "}"
    r = post(gw, body)
    error_of(r, 400, "too_deeply_nested")
    t = trace_of(gw, r)
    assert t.status == "error" and t.request["raw_body"].startswith('{"model": "big"')
    _ok(gw, upstream)


def test_nesting_within_the_limit_is_served(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("ok"))
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(20):
        schema = {"type": "object", "properties": {"a": schema}}
    body = {
        "model": "big",
        "messages": MSG,
        "response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}},
    }
    r = post(gw, json.dumps(body))
    assert r.status_code == 200, r.text
    assert trace_of(gw, r).request["response_format"]["json_schema"]["schema"]["type"] == "object"


@pytest.mark.parametrize("where", ["header", "model", "metadata"])
def test_long_labels_are_refused_and_stored_cut(gw: Running, upstream: ScriptedUpstream, where: str) -> None:
    long = "w" * 5000
    body: dict[str, Any] = {"model": "big", "messages": MSG}
    headers = dict(JSON)
    if where == "header":
        headers["x-smallfleet-workload"] = long
    elif where == "model":
        body["model"] = long
    else:
        body["metadata"] = {"workload": long}
    r = post(gw, json.dumps(body), headers)
    err = error_of(r, 400, "label_too_long")
    assert err["param"] == ("model" if where == "model" else "workload")
    t = trace_of(gw, r)
    label = t.model_requested if where == "model" else t.workload
    assert len(label) == 200 and label.endswith("…")
    assert gw.app.recorder.dead_lettered == 0
    _ok(gw, upstream)


# ---------------------------------------------------------------- content types, methods, types


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, b'{"model": "big", "messages": []}', 415, "unsupported_media_type"),
        ({"content-type": "text/plain"}, b'{"model": "big"}', 415, "unsupported_media_type"),
        ({"content-type": "application/x-www-form-urlencoded"}, b"model=big", 415, "unsupported_media_type"),
        ({"content-type": "multipart/form-data; boundary=x"}, b"--x--", 415, "unsupported_media_type"),
        ({"content-type": "application/json; charset=utf-16"}, b"{}", 415, "unsupported_media_type"),
        (JSON, json.dumps({"model": "big", "messages": MSG}).encode("utf-16"), 400, "invalid_encoding"),
        (
            JSON,
            b'{"model": "big", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
            400,
            "invalid_type",
        ),
        (
            JSON,
            b'{"model": "big", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"}',
            400,
            "invalid_type",
        ),
        (JSON, b"[1, 2]", 400, None),
    ],
    ids=[
        "none",
        "text",
        "form",
        "multipart",
        "utf16-charset",
        "utf16-bytes",
        "stream-yes",
        "str-int",
        "array",
    ],
)
def test_bad_bodies_are_4xx_with_one_trace(
    gw: Running,
    upstream: ScriptedUpstream,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str | None,
) -> None:
    upstream.reset()
    r = post(gw, body, headers)
    error_of(r, status, code)
    t = trace_of(gw, r)
    assert t.status == "error" and t.http_status == status and t.route == "rejected"
    assert upstream.requests == []  # nothing forwarded


def test_utf8_with_charset_is_served(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("ok"))
    r = post(
        gw, json.dumps({"model": "big", "messages": MSG}), {"content-type": "application/json; charset=UTF-8"}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_a_405_with_a_trace(gw: Running, method: str) -> None:
    r = httpx.request(method, gw.url + "/chat/completions", timeout=10)
    error_of(r, 405, "method_not_allowed")
    assert trace_of(gw, r).http_status == 405


# ---------------------------------------------------------------- upstream 4xx


def test_upstream_4xx_is_passed_through_once(
    gw: Running, upstream: ScriptedUpstream, start_gateway: Any
) -> None:
    cfg = model_cfg(upstream.url, max_retries=2, fallbacks=["spare"])
    g = start_gateway({"models": {"big": cfg, "spare": model_cfg(upstream.url)}})
    upstream.reset()
    body = {
        "error": {
            "message": "max_tokens is too large: key sk-live-abcdefghijklmnop1234",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "too_large",
        }
    }
    upstream.push(Reply(status=400, body=body))
    r = post(g, json.dumps({"model": "big", "messages": MSG}))
    assert r.status_code == 400 and r.json() == body  # the upstream's own answer, as is
    assert len(upstream.requests) == 1  # no retry, no fallback
    t = trace_of(g, r)
    assert t.http_status == 400 and t.route == "direct"
    assert "sk-live-abcdefghijklmnop1234" not in (t.error or "") and "<SECRET_" in (t.error or "")


@pytest.mark.parametrize("status", [408, 500])
def test_upstream_408_and_5xx_still_fall_back(
    upstream: ScriptedUpstream, start_gateway: Any, status: int
) -> None:
    g = start_gateway(
        {"models": {"big": model_cfg(upstream.url, fallbacks=["spare"]), "spare": model_cfg(upstream.url)}}
    )
    upstream.reset()
    upstream.push(Reply.error(status, "busy"))
    upstream.push(Reply.text("from spare"))
    r = post(g, json.dumps({"model": "big", "messages": MSG}))
    assert r.status_code == 200 and r.headers["x-smallfleet-route"] == "fallback:spare"


# ---------------------------------------------------------------- Host and Origin


def test_foreign_host_is_refused_everywhere(gw: Running) -> None:
    base = gw.url.removesuffix("/v1")
    evil = {"host": "attacker.example:8787"}
    r = post(gw, json.dumps({"model": "big", "messages": MSG}), {**JSON, **evil})
    error_of(r, 403, "host_not_allowed")
    assert trace_of(gw, r).http_status == 403
    for path in ("/ui/traces", "/v1/models", "/metrics", "/ui"):
        error_of(httpx.get(base + path, headers=evil), 403, "host_not_allowed")
    for host in ("localhost", "127.0.0.1:1234", "[::1]:8787"):
        assert httpx.get(base + "/v1/models", headers={"host": host}).status_code == 200


def test_cross_site_post_is_refused(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    body = json.dumps({"model": "big", "messages": MSG})
    for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
        r = post(gw, body, {**JSON, "origin": origin})
        error_of(r, 403, "origin_not_allowed")
    r = post(gw, body, {"content-type": "text/plain", "origin": "https://evil.example"})
    assert r.status_code == 403
    assert upstream.requests == []
    own = gw.url.removesuffix("/v1")  # the gateway's own origin (its dashboard) may post
    upstream.push(Reply.text("ok"))
    assert post(gw, body, {**JSON, "origin": own}).status_code == 200


def test_configured_hosts_and_origins(start_gateway: Any, upstream: ScriptedUpstream) -> None:
    g = start_gateway(
        {
            "models": {"big": model_cfg(upstream.url)},
            "gateway": {"allowed_hosts": ["gw.internal"], "allowed_origins": ["https://app.example"]},
        }
    )
    body = json.dumps({"model": "big", "messages": MSG})
    error_of(post(g, body), 403, "host_not_allowed")  # 127.0.0.1 is no longer in the list
    upstream.push(Reply.text("ok"))
    ok = post(g, body, {**JSON, "host": "gw.internal:443", "origin": "https://app.example"})
    assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------- metrics labels


def test_metrics_workload_labels_are_bounded(start_gateway: Any, upstream: ScriptedUpstream) -> None:
    g = start_gateway({"models": {"big": model_cfg(upstream.url)}, "gateway": {"metrics_max_workloads": 3}})
    body = json.dumps({"model": "big", "messages": MSG})
    for i in range(8):
        upstream.push(Reply.text("ok"))
        assert post(g, body, {**JSON, "x-smallfleet-workload": f"w{i}"}).status_code == 200
    text = g.app.metrics.render()
    workloads = {
        line.split('workload="')[1].split('"')[0] for line in text.splitlines() if 'workload="' in line
    }
    assert workloads == {"w0", "w1", "w2", "other"}
    g2 = start_gateway(
        {"models": {"big": model_cfg(upstream.url)}, "gateway": {"metrics_workloads": ["keep"]}}
    )
    for w in ("keep", "drop"):
        upstream.push(Reply.text("ok"))
        post(g2, body, {**JSON, "x-smallfleet-workload": w})
    text = g2.app.metrics.render()
    assert 'workload="keep"' in text and 'workload="other"' in text and 'workload="drop"' not in text
