"""The gateway's OpenAPI document: valid OpenAPI 3.1, true to what the gateway answers, and a
bounded schemathesis run against a real gateway on loopback from it (no 5xx, responses as documented).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from gwkit import Running, model_cfg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from smallfleet.gateway.openapi import openapi_document
from smallfleet.testing import ScriptedUpstream

PATHS = {
    "/v1/chat/completions": {"post"},
    "/v1/responses": {"post"},
    "/v1/messages": {"post"},
    "/v1/models": {"get"},
    "/v1/feedback": {"post"},
    "/healthz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
}
MSG = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture(scope="module")
def gw(start_gateway: Any, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Running:
    dead = tmp_path_factory.mktemp("dead") / "dead-letters.jsonl"
    return start_gateway(
        {
            "models": {"big": model_cfg(upstream.url, model="gpt-upstream")},
            "gateway": {"dead_letter_path": str(dead)},
        }
    )


@pytest.fixture(scope="module")
def document(gw: Running) -> dict[str, Any]:
    resp = httpx.get(gw.server.base + "/openapi.json", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    return resp.json()


def _validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``#/components/schemas/<name>`` of ``document``, its $refs resolved in it."""
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openapi", resource)
    schema = {"$ref": f"urn:openapi#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_served_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    # Against the OpenAPI 3.1 meta-schema of the OpenAPI Initiative (schemathesis ships it; its own
    # validate() below checks the same, should this private path move).
    try:
        from schemathesis.specs.openapi.definitions import OPENAPI_31
    except ImportError:  # pragma: no cover - depends on the schemathesis version
        OPENAPI_31 = None
    if OPENAPI_31 is not None:
        jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    assert document["openapi"].startswith("3.1.")
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"], ref
    assert {p: set(ops) for p, ops in document["paths"].items()} == PATHS
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert {} in document["security"], "a key is optional (needed only when gateway.keys is set)"
    schemathesis.openapi.from_dict(document).validate()
    assert document == json.loads(json.dumps(openapi_document()))


def test_the_document_describes_what_the_gateway_answers(gw: Running, document: dict[str, Any]) -> None:
    http = httpx.Client(base_url=gw.server.base, timeout=15)
    chat = _validator(document, "ChatResponse")
    error = _validator(document, "Error")
    request = _validator(document, "ChatRequest")
    paths = document["paths"]

    def documented(resp: httpx.Response, path: str, method: str) -> None:
        responses = paths[path][method]["responses"]
        assert str(resp.status_code) in responses, (path, resp.status_code)
        ctype = resp.headers["content-type"].split(";")[0]
        assert ctype in responses[str(resp.status_code)]["content"], (path, resp.status_code, ctype)

    body = {"model": "big", "messages": MSG, "temperature": 0.2, "metadata": {"team": "support"}}
    request.validate(body)
    resp = http.post("/v1/chat/completions", json=body)
    documented(resp, "/v1/chat/completions", "post")
    chat.validate(resp.json())
    trace_id = resp.headers["x-smallfleet-trace-id"]

    resp = http.post("/v1/chat/completions", json={**body, "stream": True})
    documented(resp, "/v1/chat/completions", "post")
    chunk = _validator(document, "ChatChunk")
    events = [line.removeprefix("data: ") for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        chunk.validate(json.loads(event))

    for bad in (
        {"model": "big"},
        {"model": "nope", "messages": MSG},
        {"model": "big", "messages": MSG, "n": 2},
    ):
        assert list(request.iter_errors(bad)) or bad["model"] == "nope", bad  # the schema refuses it too
        resp = http.post("/v1/chat/completions", json=bad)
        documented(resp, "/v1/chat/completions", "post")
        error.validate(resp.json())
    resp = http.post("/v1/chat/completions", content=json.dumps(body), headers={"content-type": "text/plain"})
    documented(resp, "/v1/chat/completions", "post")

    # The APIs translated onto the chat path: their own shapes, answers and refusals.
    for path, answer, error_schema, good, bad in (
        (
            "/v1/responses",
            "ResponsesObject",
            "Error",
            {
                "model": "big",
                "input": "Where is my order?",
                "instructions": "Be brief.",
                "max_output_tokens": 50,
            },
            {"model": "big", "input": "hi", "previous_response_id": "resp_1"},
        ),
        (
            "/v1/messages",
            "MessagesResponse",
            "MessagesError",
            {"model": "big", "max_tokens": 50, "system": "Be brief.", "messages": MSG},
            {"model": "big", "messages": MSG},
        ),
    ):
        request_schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        asked = _validator(document, request_schema["$ref"].rsplit("/", 1)[1])
        asked.validate(good)
        resp = http.post(path, json=good)
        documented(resp, path, "post")
        assert resp.status_code == 200, resp.text
        _validator(document, answer).validate(resp.json())
        resp = http.post(path, json={**good, "stream": True})
        documented(resp, path, "post")
        assert resp.headers["content-type"].startswith("text/event-stream"), resp.text[:300]
        assert list(asked.iter_errors(bad)), bad  # the schema refuses it too
        resp = http.post(path, json=bad)
        documented(resp, path, "post")
        assert resp.status_code == 400, resp.text
        _validator(document, error_schema).validate(resp.json())

    resp = http.get("/v1/models")
    documented(resp, "/v1/models", "get")
    _validator(document, "ModelList").validate(resp.json())
    assert [m["id"] for m in resp.json()["data"]] == ["big"]

    gw.app.recorder.flush(10)
    resp = http.post("/v1/feedback", json={"trace_id": trace_id, "score": 1, "comment": "right"})
    documented(resp, "/v1/feedback", "post")
    _validator(document, "FeedbackResult").validate(resp.json())
    resp = http.post("/v1/feedback", json={"trace_id": "0" * 32, "score": 1})
    documented(resp, "/v1/feedback", "post")
    error.validate(resp.json())

    resp = http.get("/healthz")
    documented(resp, "/healthz", "get")
    _validator(document, "Health").validate(resp.json())
    resp = http.get("/metrics")
    documented(resp, "/metrics", "get")
    http.close()


# ---------------------------------------------------------------- schemathesis, from the live document


@pytest.fixture(scope="module")
def live_schema(gw: Running) -> Any:
    """The schema as schemathesis loads it from the running gateway (so requests go there, on loopback)."""
    return schemathesis.openapi.from_url(gw.server.base + "/openapi.json")


@pytest.fixture(scope="module")
def known_trace(gw: Running) -> str:
    resp = httpx.post(gw.server.base + "/v1/chat/completions", json={"model": "big", "messages": MSG})
    assert resp.status_code == 200, resp.text
    assert gw.app.recorder.flush(10)
    return resp.headers["x-smallfleet-trace-id"]


def _known_names(trace_id: str) -> Any:
    """Half the valid cases name the configured model and a stored trace, so they get past a 404."""

    def fix(drawn: tuple[Any, bool]) -> Any:
        case, fix_it = drawn
        if fix_it and isinstance(case.body, dict):
            if "model" in case.body:
                case.body["model"] = "big"
            if "trace_id" in case.body:
                case.body["trace_id"] = trace_id
        return case

    return fix


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
OPERATIONS = [
    *[(path, method, POSITIVE) for path, methods in PATHS.items() for method in sorted(methods)],
    ("/v1/chat/completions", "post", NEGATIVE),  # data the schema forbids (wrong types, missing fields)
    ("/v1/feedback", "post", NEGATIVE),
    ("/v1/responses", "post", NEGATIVE),
    ("/v1/messages", "post", NEGATIVE),
]


# schemathesis's own pytest integration (schema.parametrize, from_fixture) does not run under
# pytest 9; its strategies under a plain hypothesis test do the same.
@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS, ids=lambda v: str(v).strip("/"))
def test_schemathesis(live_schema: Any, known_trace: str, path: str, method: str, mode: Any) -> None:
    operation = live_schema[path][method.upper()]
    cases = operation.as_strategy(generation_mode=mode)
    if mode == POSITIVE:
        cases = st.tuples(cases, st.booleans()).map(_known_names(known_trace))

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=cases)
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    run()
