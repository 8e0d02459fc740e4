"""``POST /v1/feedback`` on a real gateway over real HTTP: stored for curation, bad input refused."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from routekit import ALIAS, RoutedGateway, start_gateway

from smallfleet.testing import Reply, ScriptedUpstream


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoutedGateway]:
    with ScriptedUpstream() as up:
        up.set_responder(lambda body: Reply.text("fine"))
        running = start_gateway(tmp_path_factory.mktemp("feedback"), up.url, [])
        yield running
        running.stop()


def _answered(gw: RoutedGateway) -> str:
    raw = gw.client().chat.completions.with_raw_response.create(
        model=ALIAS, messages=[{"role": "user", "content": "hello"}]
    )
    return raw.headers["x-smallfleet-trace-id"]


def test_feedback_on_a_fresh_trace_is_stored(gw: RoutedGateway) -> None:
    trace_id = _answered(gw)  # not necessarily written yet: the gateway flushes before looking
    r = httpx.post(f"{gw.url}/feedback", json={"trace_id": trace_id, "score": -1, "comment": "wrong intent"})
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "feedback", "trace_id": trace_id, "score": -1.0, "comment": "wrong intent"}
    r = httpx.post(f"{gw.url}/feedback", json={"trace_id": trace_id, "score": 1})
    assert r.status_code == 200
    stored = gw.store.get_feedback(trace_id)
    assert [(f["score"], f["comment"]) for f in stored] == [(-1.0, "wrong intent"), (1.0, None)]


def test_unknown_trace_is_404(gw: RoutedGateway) -> None:
    r = httpx.post(f"{gw.url}/feedback", json={"trace_id": "f" * 32, "score": 1})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "trace_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"score": 1}', "trace_id"),
        (b'{"trace_id": "", "score": 1}', "trace_id"),
        (b'{"trace_id": "abc"}', "score"),
        (b'{"trace_id": "abc", "score": "good"}', "score"),
        (b'{"trace_id": "abc", "score": true}', "score"),
        (b'{"trace_id": "abc", "score": NaN}', "score"),
        (b'{"trace_id": "abc", "score": 1, "comment": 5}', "comment"),
        (b'{"trace_id": "abc", "score": 1, "rating": 5}', "rating"),
    ],
)
def test_bad_feedback_is_a_clear_400(gw: RoutedGateway, body: bytes, param: str | None) -> None:
    r = httpx.post(f"{gw.url}/feedback", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_feedback_needs_post(gw: RoutedGateway) -> None:
    r = httpx.get(f"{gw.url}/feedback")
    assert r.status_code == 405
