"""The gateway end to end on the real PostgreSQL store."""

from __future__ import annotations

from typing import Any

import pytest
from gwkit import PRICE, model_cfg

from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse, Usage


@pytest.mark.postgres
def test_gateway_on_postgres(start_gateway: Any, upstream: ScriptedUpstream, pg_url: str) -> None:
    upstream.reset()
    gw = start_gateway({"models": {"big": model_cfg(upstream.url)}}, store_url=pg_url)
    client = gw.client()
    upstream.push(Reply.text("plain answer to alice@example.com", prompt_tokens=11))
    upstream.push(Reply.stream(ChatResponse.of_text("upstream", "streamed", Usage.of(5, 2))))
    raw = client.chat.completions.with_raw_response.create(
        model="big", messages=[{"role": "user", "content": "mail alice@example.com"}]
    )
    with client.chat.completions.with_streaming_response.create(
        model="big", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as s:
        list(s.parse())
    bad = client.chat.completions.with_raw_response  # a rejected request is traced too
    with pytest.raises(Exception, match="Unknown model"):
        bad.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    gw.traces()  # flush
    t = gw.store.get_trace(raw.headers["x-smallfleet-trace-id"])
    assert t is not None and t.status == "ok" and (t.input_tokens, t.output_tokens) == (11, 4)
    assert t.cost_usd == pytest.approx((11 * PRICE["input"] + 4 * PRICE["output"]) / 1e6)
    # redacted before it was stored; the upstream still got the original
    assert "alice@example.com" not in str(t.request) + str(t.response)
    assert "<EMAIL_1>" in t.request["messages"][0]["content"]
    assert upstream.requests[0]["messages"][0]["content"] == "mail alice@example.com"
    s_trace = gw.store.get_trace(s.headers["x-smallfleet-trace-id"])
    assert s_trace is not None and s_trace.stream and (s_trace.input_tokens, s_trace.output_tokens) == (5, 2)
