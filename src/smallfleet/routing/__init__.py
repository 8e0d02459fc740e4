"""smallfleet.routing: serve a request small when a promoted specialist can, else escalate.

    router = Router(RouteStore(engine).active())   # the promoted routes
    decision = router.decide(request)              # serve small, or escalate with a reason

The names below are imported on first use (module ``__getattr__``), so importing the package
does no work and ``smallfleet --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallfleet.routing.gateway import GatewayRouter, build_gateway_router
    from smallfleet.routing.matcher import RouteMatcher, build_matchers
    from smallfleet.routing.novelty import NoveltyGate, fit_route_gate
    from smallfleet.routing.router import Decision, Router, SpecialistBatcher
    from smallfleet.routing.routes import Route, RouteEvent, RouteStore, parse_mode
    from smallfleet.routing.validate import check_response, schema_errors

_EXPORTS = {
    "Decision": "smallfleet.routing.router",
    "GatewayRouter": "smallfleet.routing.gateway",
    "NoveltyGate": "smallfleet.routing.novelty",
    "Route": "smallfleet.routing.routes",
    "RouteEvent": "smallfleet.routing.routes",
    "RouteMatcher": "smallfleet.routing.matcher",
    "RouteStore": "smallfleet.routing.routes",
    "Router": "smallfleet.routing.router",
    "SpecialistBatcher": "smallfleet.routing.router",
    "build_gateway_router": "smallfleet.routing.gateway",
    "build_matchers": "smallfleet.routing.matcher",
    "check_response": "smallfleet.routing.validate",
    "fit_route_gate": "smallfleet.routing.novelty",
    "parse_mode": "smallfleet.routing.routes",
    "schema_errors": "smallfleet.routing.validate",
}

__all__ = [
    "Decision",
    "GatewayRouter",
    "NoveltyGate",
    "Route",
    "RouteEvent",
    "RouteMatcher",
    "RouteStore",
    "Router",
    "SpecialistBatcher",
    "build_gateway_router",
    "build_matchers",
    "check_response",
    "fit_route_gate",
    "parse_mode",
    "schema_errors",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smallfleet.routing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
