"""Every error smallfleet raises belongs to the tree drawn in ``smallfleet/errors.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import smallfleet
from smallfleet import errors

SRC = Path(smallfleet.__file__).parent

#: Exception classes defined outside errors.py, and why: private control-flow signals that never
#: leave their module (nothing is answered or raised to a caller with them).
OUTSIDE = {
    ("agents/agent.py", "_Stop"),  # control flow inside an agent run
    ("models/openai_http.py", "_Retry"),  # control flow inside the HTTP backend's retries
    ("gateway/app.py", "_ClientGone"),  # the client left before its body came: recorded, nothing sent
}

_EXCEPTION_BASES = {"Exception", "BaseException", *errors.__all__}


def _exception_classes() -> set[tuple[str, str]]:
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & _EXCEPTION_BASES or any(b.endswith(("Error", "Exception")) for b in bases):
                    found.add((rel, node.name))
    return found


def test_no_exception_class_lives_outside_the_tree_unless_listed() -> None:
    assert _exception_classes() <= OUTSIDE


def test_errors_moved_into_the_tree_are_still_importable_where_they_were() -> None:
    from smallfleet.dashboard.access import Forbidden
    from smallfleet.gateway.auth import BodyTooLarge, Unauthorized
    from smallfleet.store.jsonl import BadLine

    assert BadLine is errors.BadLine and issubclass(BadLine, errors.UserError)
    assert Forbidden is errors.Forbidden and Forbidden("no").status_code == 403
    assert Unauthorized is errors.Unauthorized and issubclass(Unauthorized, errors.UserError)
    assert BodyTooLarge is errors.BodyTooLarge and issubclass(BodyTooLarge, errors.UserError)


def test_the_gateways_errors_keep_their_status_and_body() -> None:
    assert errors.Unauthorized("no key").to_openai() == {
        "error": {
            "message": "no key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert errors.Unauthorized("x").status_code == 401
    assert (errors.BodyTooLarge("x").status_code, errors.BodyTooLarge("x").code) == (413, "request_too_large")
    internal = errors.InternalError("Internal error in the gateway (KeyError); trace id 1.")
    assert (internal.status_code, internal.error_type, internal.code) == (
        500,
        "server_error",
        "internal_error",
    )
    assert not issubclass(errors.InternalError, errors.UserError | errors.ModelError)
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), f"{name} is not drawn in the tree"
