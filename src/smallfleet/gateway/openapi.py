"""The gateway's API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

What it describes is what :mod:`smallfleet.gateway.app` does, so that clients,
code generators and API fuzzers (schemathesis) can work from it:

- the chat request body is the JSON schema of :class:`smallfleet.types.ChatRequest`
  (unknown fields are allowed and passed on to the model, as the OpenAI API does);
  the answers are the OpenAI ``chat.completion`` shapes;
- every refusal is a 4xx with the OpenAI error body
  ``{"error": {"message", "type", "param", "code"}}``;
- a key is a bearer token, needed only when ``gateway.keys`` is configured.

The document is built on demand (the gateway keeps the first one it builds).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_ROLES = ("SystemMessage", "DeveloperMessage", "UserMessage", "AssistantMessage", "ToolMessage")

_DESCRIPTION = """\
An OpenAI-compatible gateway that records every chat completion as a trace.

Every response to `/v1/chat/completions`, refusals included, carries
`x-smallfleet-trace-id` and `x-smallfleet-route`, and every request there leaves
exactly one trace. The paths are also served without the `/v1` prefix
(`/chat/completions`, `/models`, `/feedback`), as OpenAI clients configured with
a base URL that lacks it expect. `/ui` is the web dashboard (HTML, not part of
this API).

Bodies are `application/json` in UTF-8 (another content type: 415), at most
`gateway.max_body_bytes` long (413) and `gateway.max_json_depth` levels deep (400);
lone UTF-16 surrogate escapes are replaced by U+FFFD. A request whose `Host` is
not served (`gateway.allowed_hosts`), or a state-changing request from another
web origin (`gateway.allowed_origins`), is refused with 403.
"""


#: One server-sent event of a stream (``data: <chunk JSON>``, or ``data: [DONE]`` last).
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_TRACE_HEADERS = {
    "x-smallfleet-trace-id": {
        "description": "The id of this request's trace (32 hex digits); give it to POST /v1/feedback.",
        "schema": {"type": "string"},
    },
    "x-smallfleet-route": {
        "description": "How the request was served: direct, fallback:<alias>, specialist:<name>, "
        "escalated:<reason>, rejected.",
        "schema": {"type": "string"},
    },
}


def _chat_error(description: str) -> dict[str, Any]:
    return {**_error_response(description), "headers": _TRACE_HEADERS}


def _hand_written_schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    return {
        "Error": {
            "type": "object",
            "description": "The OpenAI error body.",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": nullable_str,
                        "code": nullable_str,
                    },
                }
            },
        },
        "Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": {"type": "string", "description": "A model alias of the gateway's configuration."},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
            },
        },
        "Feedback": {
            "type": "object",
            "description": "A user's verdict on an answer, kept with its trace for curation.",
            "required": ["trace_id", "score"],
            "additionalProperties": False,
            "properties": {
                "trace_id": {
                    "type": "string",
                    "pattern": "^\\s*[A-Za-z0-9._:-]{1,64}\\s*$",
                    "description": "The x-smallfleet-trace-id header of the answer.",
                },
                "score": {"type": "number", "description": "Any finite number; negative: a bad answer."},
                "comment": {"type": ["string", "null"], "maxLength": 10000},
            },
        },
        "FeedbackResult": {
            "type": "object",
            "required": ["object", "trace_id", "score", "comment"],
            "properties": {
                "object": {"const": "feedback"},
                "trace_id": {"type": "string"},
                "score": {"type": "number"},
                "comment": nullable_str,
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "trace_queue_depth"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unhealthy"]},
                "trace_queue_depth": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Traces received and not yet written to the store.",
                },
                "reason": {"type": "string"},
            },
        },
    }


def _wire_schemas() -> dict[str, Any]:
    """The chat wire types, from the pydantic models the gateway validates with."""
    from pydantic.json_schema import models_json_schema

    from smallfleet.types import ChatChunk, ChatRequest, ChatResponse

    _, top = models_json_schema(
        [(ChatRequest, "validation"), (ChatResponse, "serialization"), (ChatChunk, "serialization")],
        ref_template=_REF,
    )
    defs: dict[str, Any] = copy.deepcopy(top["$defs"])
    # The role selects the message type, so it is required (pydantic lists it as defaulted).
    for name in (*_ROLES, "FunctionMessage"):
        schema = defs[name]
        schema["required"] = ["role", *[r for r in schema.get("required", []) if r != "role"]]
    # A validator, not a type, keeps n at 1: say so in the schema.
    defs["ChatRequest"]["properties"]["n"] = {
        "anyOf": [{"const": 1}, {"type": "null"}],
        "default": None,
        "description": "Only 1 is supported; send several requests for several choices.",
    }
    defs["ChatRequest"]["description"] = (
        "A chat completion request, as the OpenAI API takes it. Fields not listed here are "
        "passed on to the model unchanged. Types are strict: a boolean is true or false (not "
        '"yes" or 1), a number is not a string, and an integer is written without a fraction '
        "(2, not 2.0)."
    )
    defs["ChatResponse"]["description"] = "The model's answer, passed on as the upstream gave it."
    defs["ChatChunk"]["description"] = "One server-sent event of a streamed answer."
    return defs


def _chat_operation() -> dict[str, Any]:
    return {
        "operationId": "createChatCompletion",
        "summary": "Answer a chat (forwarded to the alias's model, or a promoted specialist)",
        "parameters": [
            {
                "name": "x-smallfleet-workload",
                "in": "header",
                "required": False,
                "description": "The task type this request belongs to (also taken from metadata.workload).",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
        },
        "responses": {
            "200": {
                "description": "The answer: JSON, or server-sent events when `stream` is true "
                "(each `data:` line a ChatChunk, then `data: [DONE]`).",
                "headers": {
                    **_TRACE_HEADERS,
                    "x-smallfleet-confidence": {
                        "description": "A specialist's confidence, when one answered.",
                        "schema": {"type": "string"},
                    },
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatResponse"}},
                    "text/event-stream": {"schema": _SSE_EVENT},  # OpenAPI 3.1: the schema of each event
                },
            },
            "400": _chat_error("The body is not valid JSON, too deep, or a field is invalid (`param`)."),
            "401": _chat_error("Keys are configured and none, or an unknown one, was given."),
            "403": _chat_error("The Host or the web Origin is not allowed."),
            "404": _chat_error("No model is configured under this name."),
            "405": _chat_error("Not a POST."),
            "413": _chat_error("The body is over gateway.max_body_bytes."),
            "415": _chat_error("The body is not application/json in UTF-8."),
            "429": _chat_error("The key's daily budget is spent, or the upstream is rate limiting."),
            "4XX": _chat_error("The upstream refused the request: its status and error body, passed on."),
            "502": _chat_error("Every model of the alias's chain failed."),
            "504": _chat_error("The upstream did not answer in time."),
        },
    }


def _paths() -> dict[str, Any]:
    no_key: list[dict[str, list[str]]] = []
    return {
        "/v1/chat/completions": {"post": _chat_operation()},
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The configured model aliases",
                "responses": {
                    "200": {
                        "description": "The aliases, in the OpenAI list shape.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}
                        },
                    },
                    "401": _error_response("Keys are configured and none, or an unknown one, was given."),
                    "403": _error_response("The Host is not allowed."),
                },
            }
        },
        "/v1/feedback": {
            "post": {
                "operationId": "createFeedback",
                "summary": "A user's verdict on an answer",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}}},
                },
                "responses": {
                    "200": {
                        "description": "Stored with the trace.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackResult"}}
                        },
                    },
                    "400": _error_response("The body is not valid JSON, or a field is invalid (`param`)."),
                    "401": _error_response("Keys are configured and none, or an unknown one, was given."),
                    "403": _error_response("The Host or the web Origin is not allowed."),
                    "404": _error_response("No trace with this id (or no trace store)."),
                    "405": _error_response("Not a POST."),
                    "413": _error_response("The body is over gateway.max_body_bytes."),
                    "415": _error_response("The body is not application/json in UTF-8."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness, and whether traces are being written",
                "security": no_key,
                "responses": {
                    "200": {
                        "description": "Serving, and traces are being written.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                    },
                    "403": _error_response("The Host is not allowed."),
                    "503": {
                        "description": "Traces are not being written (the store keeps failing).",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (an admin key when keys are configured)",
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _error_response("Keys are configured and none, or an unknown one, was given."),
                    "403": _error_response("The Host is not allowed."),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": no_key,
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document of this API.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "403": _error_response("The Host is not allowed."),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The gateway's API as an OpenAPI 3.1 document (a fresh dict on every call)."""
    from smallfleet.__about__ import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smallfleet gateway",
            "version": __version__,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": _paths(),
        "components": {
            "schemas": {**_wire_schemas(), **_hand_written_schemas()},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A gateway key (gateway.keys); not needed when no keys are configured.",
                }
            },
        },
        # Optional: {} (no key) or a bearer key.
        "security": [{}, {"bearerAuth": []}],
    }
