"""smallfleet.gateway: the OpenAI-compatible (and Responses, and Anthropic Messages) HTTP gateway
that serves every call through the one chat path and records it as a trace.

    app = create_app(load_settings())       # an ASGI app
    serve(app, host="127.0.0.1", port=8787) # or: smallfleet gateway
    with BackgroundServer(app) as server:   # in-process, on a free loopback port (tests, notebooks)
        ...

The names below are imported on first use (module ``__getattr__``), so importing the package
does no work and ``smallfleet --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallfleet.gateway.app import Edge, Gateway, RouteDecision, create_app
    from smallfleet.gateway.auth import KeyRing, hash_key, new_key
    from smallfleet.gateway.openapi import openapi_document
    from smallfleet.gateway.recorder import Recorder
    from smallfleet.gateway.server import BackgroundServer, serve, uvicorn_config

_EXPORTS = {
    "BackgroundServer": "smallfleet.gateway.server",
    "Edge": "smallfleet.gateway.app",
    "Gateway": "smallfleet.gateway.app",
    "KeyRing": "smallfleet.gateway.auth",
    "Recorder": "smallfleet.gateway.recorder",
    "RouteDecision": "smallfleet.gateway.app",
    "create_app": "smallfleet.gateway.app",
    "hash_key": "smallfleet.gateway.auth",
    "new_key": "smallfleet.gateway.auth",
    "openapi_document": "smallfleet.gateway.openapi",
    "serve": "smallfleet.gateway.server",
    "uvicorn_config": "smallfleet.gateway.server",
}

__all__ = [
    "BackgroundServer",
    "Edge",
    "Gateway",
    "KeyRing",
    "Recorder",
    "RouteDecision",
    "create_app",
    "hash_key",
    "new_key",
    "openapi_document",
    "serve",
    "uvicorn_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smallfleet.gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
