"""The router on the real PostgreSQL: routes read by the gateway, guard checks, a demotion, feedback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from routekit import ALIAS, SCRIPTED_KIND, ScriptedToolCaller, key_matcher, start_gateway

from smallfleet.routing.routes import Route
from smallfleet.specialists.base import KINDS
from smallfleet.testing import Reply, ScriptedUpstream

pytestmark = pytest.mark.postgres

SYSTEM = "You plan trips. Call get_weather for the city the traveller names."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Tokyo", "Cairo"]


@pytest.fixture
def scripted_kind() -> Iterator[None]:
    KINDS[SCRIPTED_KIND] = "routekit:ScriptedToolCaller"
    yield
    KINDS.pop(SCRIPTED_KIND, None)


def test_guard_demotes_on_postgres(tmp_path: Path, pg_schema: str, scripted_kind: None) -> None:
    script = {f"weather in {c}": ("get_weather", {"city": c}, 0.9) for c in CITIES}
    spec = ScriptedToolCaller(script).save(tmp_path / "weather")
    route = Route(
        name="weather",
        kind="tool_caller",
        specialist_path=str(spec),
        threshold=0.5,
        mode="on",
        matcher=key_matcher(SYSTEM, TOOLS),
        metrics={"target_accuracy": 0.9},
    )
    with ScriptedUpstream() as up:
        agreeing = True

        def answer(body: dict[str, Any]) -> Reply:
            city = body["messages"][-1]["content"].removeprefix("weather in ")
            return Reply.tool_call("get_weather", {"city": city if agreeing else "Atlantis"})

        up.set_responder(answer)
        gw = start_gateway(
            tmp_path,
            up.url,
            [route],
            db_url=pg_schema,
            guard_fraction=1.0,
            guard_window=3,
            guard_min_checks=3,
        )
        try:
            client = gw.client()

            def ask(city: str) -> tuple[str, str]:
                raw = client.chat.completions.with_raw_response.create(
                    model=ALIAS,
                    messages=[
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"weather in {city}"},
                    ],
                    tools=TOOLS,
                )
                return raw.headers["x-smallfleet-route"], raw.headers["x-smallfleet-trace-id"]

            def wait(check: Any) -> None:
                deadline = time.monotonic() + 15
                while not check():
                    assert time.monotonic() < deadline, "condition not met in time"
                    time.sleep(0.05)

            for city in CITIES[:3]:
                assert ask(city)[0] == "specialist:weather"
            wait(lambda: gw.routes.agreement("weather", kind="guard") == (1.0, 3))
            assert gw.routes.get("weather").mode == "on"

            agreeing = False
            header, trace_id = ask(CITIES[3])
            assert header == "specialist:weather"
            wait(lambda: gw.routes.get("weather").mode == "shadow")
            assert [e.actor for e in gw.routes.events("weather") if e.action == "guard-demote"] == ["guard"]
            wait(lambda: ask(CITIES[4])[0] == "escalated:shadow")
            wait(lambda: gw.routes.agreement("weather", kind="shadow")[1] >= 1)

            rec = gw.trace(trace_id)
            assert rec.route == "specialist:weather" and rec.confidence == pytest.approx(0.9)
            r = httpx.post(f"{gw.url}/feedback", json={"trace_id": trace_id, "score": -1, "comment": "wrong"})
            assert r.status_code == 200, r.text
            assert [f["score"] for f in gw.store.get_feedback(trace_id)] == [-1.0]
        finally:
            gw.stop()
