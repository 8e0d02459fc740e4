"""Concurrent requests to one specialist are answered in batches, each with its own answer.

A real support-desk classifier (head only on the frozen encoder) behind a real
:class:`Router`; threads play the gateway's deciding threads. The scripted tool caller of
``routekit`` (the far side of the specialist seam) shows that a request the specialist
cannot answer fails alone, not with its batch.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from routekit import SCRIPTED_KIND, ScriptedToolCaller, train_triage

from smallfleet.routing.router import Router, SpecialistBatcher
from smallfleet.routing.routes import Route
from smallfleet.specialists.base import KINDS
from smallfleet.testing.intents import support_desk_examples
from smallfleet.types import ChatRequest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("specialists") / "triage"
    return out, train_triage(out)


def _route(path: Path, kind: str = "classifier") -> Route:
    return Route(name="triage", kind=kind, threshold=0.3, mode="on", specialist_path=str(path))


def _at_once(router: Router, route: Route, requests: list[ChatRequest]) -> list[Any]:
    """Every request from a thread of its own, released together."""
    start = threading.Barrier(len(requests))

    def one(req: ChatRequest) -> Any:
        start.wait()
        return router.predict(route, req)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


@pytest.mark.parametrize("max_batch", [32, 4])
def test_concurrent_requests_are_answered_in_batches_each_with_its_own_answer(
    trained: tuple[Path, Any], max_batch: int
) -> None:
    path, clf = trained
    requests = [ex.request for ex in support_desk_examples(32, split="test", seed=3)]
    alone = clf.predict(requests)  # one batch, in this thread
    router = Router([], max_batch=max_batch)
    route = _route(path)
    got = _at_once(router, route, requests)
    assert [p.response.message.content for p in got] == [p.response.message.content for p in alone]
    assert [p.confidence for p in got] == pytest.approx([p.confidence for p in alone], abs=5e-3)
    assert {p.response.model for p in got} == {"smallfleet:triage"}
    batcher = router._batchers[str(path)]
    print(f"max_batch {max_batch}: {batcher.requests} requests in {batcher.batches} batches")
    assert batcher.requests == len(requests)
    assert batcher.batches < len(requests)  # some waited for a running batch and went together
    assert batcher.largest <= max_batch


def test_one_by_one_without_batching(trained: tuple[Path, Any]) -> None:
    path, clf = trained
    requests = [ex.request for ex in support_desk_examples(6, split="test", seed=4)]
    router = Router([], max_batch=1)
    got = _at_once(router, _route(path), requests)
    assert [p.response.message.content for p in got] == [
        p.response.message.content for p in clf.predict(requests)
    ]
    assert not router._batchers


def test_a_request_the_specialist_cannot_answer_fails_alone(tmp_path: Path) -> None:
    KINDS[SCRIPTED_KIND] = "routekit:ScriptedToolCaller"
    try:
        script = {f"weather in city {i}": ("get_weather", {"city": f"city {i}"}, 0.9) for i in range(5)}
        spec = ScriptedToolCaller(script)
        texts = [*list(script)[:2], "a text the script does not know", *list(script)[2:]]
        batch = [(ChatRequest(model="m", messages=[{"role": "user", "content": t}]), Future()) for t in texts]
        SpecialistBatcher(spec, 8)._answer(batch)  # one batch, as its thread would run it
        for text, (_, fut) in zip(texts, batch, strict=True):
            if text in script:
                assert fut.result().response.message.tool_calls[0].function.name == "get_weather"
            else:
                with pytest.raises(KeyError):
                    fut.result()
        # and through the router: the thread that asked gets the error, the others their answers
        router = Router([])
        route = _route(spec.save(tmp_path / "scripted"), kind=SCRIPTED_KIND)
        results: dict[str, Any] = {}

        def ask(text: str) -> None:
            try:
                results[text] = router.predict(route, batch[texts.index(text)][0])
            except KeyError as e:
                results[text] = e

        threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert isinstance(results["a text the script does not know"], KeyError)
        assert all(not isinstance(results[t], Exception) for t in script)
    finally:
        KINDS.pop(SCRIPTED_KIND, None)


def test_the_gateway_routers_deciding_threads_end_with_the_gateway(tmp_path: Path) -> None:
    """``aclose`` (the gateway's shutdown) lets the router's pool of deciding threads go."""
    import asyncio

    from smallfleet.routing.gateway import GatewayRouter
    from smallfleet.routing.routes import RouteStore
    from smallfleet.store.trace_store import TraceStore

    store = TraceStore(f"sqlite:///{tmp_path / 'traces.db'}")
    gw = GatewayRouter(Router([]), RouteStore(store.engine), registry=None)  # type: ignore[arg-type]

    before = set(threading.enumerate())

    async def session() -> list[threading.Thread]:
        await gw.route(ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}]), "default")
        mine = [t for t in threading.enumerate() if t not in before and "smallfleet-router" in t.name]
        await gw.drain()
        await gw.aclose()
        return mine

    started = asyncio.run(session())
    assert started  # the decision ran in the router's own threads
    for t in started:
        t.join(5)
    assert not [t for t in started if t.is_alive()]
    store.close()


def test_a_tool_caller_that_would_reply_escalates(tmp_path: Path) -> None:
    """Where the step's answer is a reply (ask the user first), the router never serves it small."""
    KINDS[SCRIPTED_KIND] = "routekit:ScriptedToolCaller"
    try:
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        script = {
            "weather in Paris": ("get_weather", {"city": "Paris"}, 0.99),
            "weather please": ("", {}, 0.99),
        }
        path = ScriptedToolCaller(script).save(tmp_path / "scripted")
        router = Router([], max_batch=1)
        route = Route(name="weather", kind="tool_caller", threshold=0.3, mode="on", specialist_path=str(path))

        def decide(text: str) -> Any:
            req = ChatRequest(model="m", messages=[{"role": "user", "content": text}], tools=tools)
            return router._ask(route, req, 0.0, 0.0)

        assert decide("weather in Paris").action == "small"
        replied = decide("weather please")
        assert replied.action == "large" and replied.reason == "specialist_replied"
    finally:
        KINDS.pop(SCRIPTED_KIND, None)
