"""The gateway's API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

What it describes is what :mod:`smallfleet.gateway.app` does, so that clients,
code generators and API fuzzers (schemathesis) can work from it:

- the chat request body is the JSON schema of :class:`smallfleet.types.ChatRequest`
  (unknown fields are allowed and passed on to the model, as the OpenAI API does);
  the answers are the OpenAI ``chat.completion`` shapes;
- ``/v1/responses`` (OpenAI's Responses API) and ``/v1/messages`` (Anthropic's Messages API)
  are translated onto the chat path; their request and answer shapes are written here by hand
  at the level of the fields the translation reads (a Messages error has Anthropic's shape);
- every refusal is a 4xx with the OpenAI error body
  ``{"error": {"message", "type", "param", "code"}}`` (``/v1/messages``: Anthropic's
  ``{"type": "error", "error": {"type", "message"}}``);
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
exactly one trace. So do `/v1/responses` (OpenAI's Responses API) and `/v1/messages`
(Anthropic's Messages API), which are translated onto the same chat path. The OpenAI
paths are also served without the `/v1` prefix (`/chat/completions`, `/responses`,
`/models`, `/feedback`), as OpenAI clients configured with
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


# ---------------------------------------------------------------- the other APIs: Responses, Messages
#
# Hand-written at the level a client needs: the fields the edge reads (gateway/responses_api.py,
# gateway/messages_api.py), the shapes it answers. A body the schema allows can still be refused
# with a 400 that names the field (e.g. a tool's parameters the chat path cannot take).

_STR_OR_NULL = {"type": ["string", "null"]}
_METADATA = {"type": "object", "additionalProperties": {"type": "string"}}


def _responses_schemas() -> dict[str, Any]:
    ref = "#/components/schemas/{}".format
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"enum": ["input_text", "output_text"]}, "text": {"type": "string"}},
    }
    image_part = {
        "type": "object",
        "required": ["type", "image_url"],
        "properties": {
            "type": {"const": "input_image"},
            "image_url": {"type": "string"},
            "detail": {"enum": ["low", "high", "auto"]},
        },
    }
    return {
        "ResponsesInputItem": {
            "description": "A message, a function call the model made, or its output (the history is "
            "sent whole: this gateway keeps no server-side state).",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "type": {"const": "message"},
                        "role": {"enum": ["user", "system", "developer", "assistant"]},
                        "content": {
                            "anyOf": [
                                {"type": "string"},
                                {"type": "array", "items": {"anyOf": [text_part, image_part]}},
                            ]
                        },
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "call_id", "name", "arguments"],
                    "properties": {
                        "type": {"const": "function_call"},
                        "call_id": {"type": "string"},
                        "name": {"type": "string"},
                        "arguments": {"type": "string", "description": "A JSON object, as text."},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "call_id", "output"],
                    "properties": {
                        "type": {"const": "function_call_output"},
                        "call_id": {"type": "string"},
                        "output": {"type": "string"},
                    },
                },
            ],
        },
        "ResponsesFunctionTool": {
            "type": "object",
            "description": "A function tool (hosted tools run inside OpenAI's own service: a 400 here).",
            "required": ["type", "name"],
            "properties": {
                "type": {"const": "function"},
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
                "strict": {"type": "boolean"},
            },
        },
        "ResponsesRequest": {
            "type": "object",
            "description": "A Responses API request, translated to a chat completion (same routing, "
            "recording and pricing). `previous_response_id`, `conversation`, `background` and a stored "
            "`prompt` are refused with a 400: send the history as `input` items instead. `include`, "
            "`truncation`, `store`, `stream_options`, `prompt_cache_retention` and `max_tool_calls` "
            "are accepted and ignored; another field is a 400.",
            "required": ["model", "input"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string", "description": "A model alias of the gateway's configuration."},
                "input": {
                    "anyOf": [
                        {"type": "string", "description": "One user message."},
                        {"type": "array", "items": {"$ref": ref("ResponsesInputItem")}},
                    ]
                },
                "instructions": {**_STR_OR_NULL, "description": "The system prompt."},
                "tools": {"type": "array", "items": {"$ref": ref("ResponsesFunctionTool")}},
                "tool_choice": {
                    "anyOf": [
                        {"enum": ["none", "auto", "required"]},
                        {
                            "type": "object",
                            "required": ["type", "name"],
                            "properties": {"type": {"const": "function"}, "name": {"type": "string"}},
                        },
                    ]
                },
                "text": {
                    "type": "object",
                    "properties": {
                        "format": {
                            "type": "object",
                            "required": ["type"],
                            "description": "text (default), json_object, or json_schema with `name` "
                            "and `schema` (then the answer is JSON that validates).",
                            "properties": {
                                "type": {"enum": ["text", "json_object", "json_schema"]},
                                "name": {"type": "string"},
                                "schema": {"type": "object"},
                                "strict": {"type": ["boolean", "null"]},
                            },
                        }
                    },
                },
                "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "parallel_tool_calls": {"type": ["boolean", "null"]},
                "stream": {"type": ["boolean", "null"]},
                "metadata": _METADATA,
                "user": {"type": "string"},
                "store": {"type": ["boolean", "null"], "description": "Ignored: nothing is stored."},
                "previous_response_id": {"type": "null", "description": "Not supported (only null)."},
            },
        },
        "ResponsesObject": {
            "type": "object",
            "description": "The answer as a Responses object (`id`: `resp_` + the trace id). The "
            "request's own fields (instructions, tools, tool_choice, text, ...) are echoed too.",
            "required": ["id", "object", "created_at", "status", "model", "output", "usage"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "response"},
                "created_at": {"type": "integer"},
                "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]},
                "incomplete_details": {
                    "anyOf": [
                        {"type": "null"},
                        {"type": "object", "properties": {"reason": {"type": "string"}}},
                    ]
                },
                "model": {"type": "string"},
                "output": {"type": "array", "items": {"$ref": ref("ResponsesOutputItem")}},
                "usage": {
                    "anyOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["input_tokens", "output_tokens", "total_tokens"],
                            "properties": {
                                "input_tokens": {"type": "integer"},
                                "output_tokens": {"type": "integer"},
                                "total_tokens": {"type": "integer"},
                            },
                        },
                    ]
                },
                "store": {"const": False},
            },
        },
        "ResponsesOutputItem": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "id", "role", "content"],
                    "properties": {
                        "type": {"const": "message"},
                        "id": {"type": "string"},
                        "role": {"const": "assistant"},
                        "status": {"type": "string"},
                        "content": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["type"],
                                "properties": {
                                    "type": {"enum": ["output_text", "refusal"]},
                                    "text": {"type": "string"},
                                    "refusal": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "call_id", "name", "arguments"],
                    "properties": {
                        "type": {"const": "function_call"},
                        "id": {"type": "string"},
                        "call_id": {"type": "string"},
                        "name": {"type": "string"},
                        "arguments": {"type": "string"},
                        "status": {"type": "string"},
                    },
                },
            ]
        },
    }


def _messages_schemas() -> dict[str, Any]:
    ref = "#/components/schemas/{}".format
    text_block = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    }
    tool_use = {
        "type": "object",
        "required": ["type", "id", "name", "input"],
        "properties": {
            "type": {"const": "tool_use"},
            "id": {"type": "string"},
            "name": {"type": "string"},
            "input": {"type": "object"},
        },
    }
    tool_result = {
        "type": "object",
        "required": ["type", "tool_use_id"],
        "properties": {
            "type": {"const": "tool_result"},
            "tool_use_id": {"type": "string"},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": text_block}]},
            "is_error": {"type": "boolean"},
        },
    }
    return {
        "MessagesMessage": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": ["user", "assistant"]},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"anyOf": [text_block, tool_use, tool_result]}},
                    ],
                    "description": "Text, or content blocks: text and tool_use (assistant), text, "
                    "image and tool_result (user).",
                },
            },
        },
        "MessagesRequest": {
            "type": "object",
            "description": "An Anthropic Messages API request, translated to a chat completion (same "
            "routing, recording and pricing). Server tools, document blocks and extended thinking "
            "are refused with a 400; another field is a 400.",
            "required": ["model", "max_tokens", "messages"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string", "description": "A model alias of the gateway's configuration."},
                "max_tokens": {"type": "integer", "minimum": 1},
                "messages": {"type": "array", "minItems": 1, "items": {"$ref": ref("MessagesMessage")}},
                "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": text_block}]},
                "tools": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "input_schema"],
                        "properties": {
                            "type": {"const": "custom"},
                            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                            "description": {"type": "string"},
                            "input_schema": {"type": "object"},
                        },
                    },
                },
                "tool_choice": {
                    "type": "object",
                    "required": ["type"],
                    "description": "{type: auto | any | none}, or {type: tool, name}.",
                    "properties": {
                        "type": {"enum": ["auto", "any", "none", "tool"]},
                        "name": {"type": "string"},
                        "disable_parallel_tool_use": {"type": "boolean"},
                    },
                },
                "stop_sequences": {"type": "array", "items": {"type": "string"}},
                "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "top_k": {"type": "integer", "minimum": 0},
                "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
                "stream": {"type": "boolean"},
            },
        },
        "MessagesResponse": {
            "type": "object",
            "description": "The answer as an Anthropic message.",
            "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "model": {"type": "string"},
                "content": {"type": "array", "items": {"anyOf": [text_block, tool_use]}},
                "stop_reason": {
                    "anyOf": [
                        {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]},
                        {"type": "null"},
                    ]
                },
                "stop_sequence": _STR_OR_NULL,
                "usage": {
                    "type": "object",
                    "required": ["input_tokens", "output_tokens"],
                    "properties": {
                        "input_tokens": {"type": "integer"},
                        "output_tokens": {"type": "integer"},
                        "cache_read_input_tokens": {"type": "integer"},
                    },
                },
            },
        },
        "MessagesError": {
            "type": "object",
            "description": "The Messages API's error body.",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }


def _edge_operation(
    operation_id: str, summary: str, request: str, answer: str, error: str, events: str
) -> dict[str, Any]:
    """An API translated at the edge onto the chat path: the chat path's statuses, its own shapes."""

    def refusal(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "headers": _TRACE_HEADERS,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{error}"}}},
        }

    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": _chat_operation()["parameters"],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}},
        },
        "responses": {
            "200": {
                "description": f"The answer: JSON, or server-sent events when `stream` is true ({events}).",
                "headers": _TRACE_HEADERS,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}},
                    "text/event-stream": {"schema": _SSE_EVENT},
                },
            },
            "400": refusal("The body is not valid JSON, too deep, or a field is invalid or not supported."),
            "401": refusal("Keys are configured and none, or an unknown one, was given."),
            "403": refusal("The Host or the web Origin is not allowed."),
            "404": refusal("No model is configured under this name."),
            "405": refusal("Not a POST."),
            "413": refusal("The body is over gateway.max_body_bytes."),
            "415": refusal("The body is not application/json in UTF-8."),
            "429": refusal("The key's daily budget is spent, or the upstream is rate limiting."),
            "4XX": refusal("The upstream refused the request: its status and message, passed on."),
            "502": refusal("Every model of the alias's chain failed."),
            "504": refusal("The upstream did not answer in time."),
        },
    }


def _responses_operation() -> dict[str, Any]:
    return _edge_operation(
        "createResponse",
        "OpenAI's Responses API, served through the chat path",
        "ResponsesRequest",
        "ResponsesObject",
        "Error",
        "typed events: response.created, response.output_text.delta, "
        "response.function_call_arguments.delta, ..., response.completed with usage",
    )


def _messages_operation() -> dict[str, Any]:
    op = _edge_operation(
        "createMessage",
        "Anthropic's Messages API, served through the chat path",
        "MessagesRequest",
        "MessagesResponse",
        "MessagesError",
        "message_start, content_block_start/delta/stop, message_delta with usage, message_stop",
    )
    op["parameters"] = [
        *op["parameters"],
        {
            "name": "anthropic-version",
            "in": "header",
            "required": False,
            "description": "Accepted; not needed.",
            "schema": {"type": "string"},
        },
    ]
    op["security"] = [{}, {"bearerAuth": []}, {"apiKeyHeader": []}]
    return op


def _paths() -> dict[str, Any]:
    no_key: list[dict[str, list[str]]] = []
    return {
        "/v1/chat/completions": {"post": _chat_operation()},
        "/v1/responses": {"post": _responses_operation()},
        "/v1/messages": {"post": _messages_operation()},
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
            "schemas": {
                **_wire_schemas(),
                **_hand_written_schemas(),
                **_responses_schemas(),
                **_messages_schemas(),
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A gateway key (gateway.keys); not needed when no keys are configured.",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "A gateway key as Anthropic clients send it (POST /v1/messages only).",
                },
            },
        },
        # Optional: {} (no key) or a bearer key.
        "security": [{}, {"bearerAuth": []}],
    }
