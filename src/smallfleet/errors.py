"""The exceptions smallfleet raises.

Caller misuse is separated from runtime failures, and every runtime failure of a
model carries what the far side said::

    SmallfleetError
     ├── ConfigError            a config file or setting is wrong (names the key)
     ├── UserError              the caller asked for something impossible
     │    ├── RequestInvalid     a chat request failed validation (names the field) → 400
     │    │    ├── MethodNotAllowed      the wrong HTTP method for the path → 405
     │    │    └── UnsupportedMediaType  a body that is not UTF-8 JSON → 415
     │    ├── Unauthorized       no key, or a key the gateway does not know → 401
     │    ├── Forbidden          a Host, Origin or key that may not do this → 403
     │    ├── BodyTooLarge       a request body over gateway.max_body_bytes → 413
     │    ├── ModelNotFound      an unknown model alias ("did you mean …") → 404
     │    ├── ExtraNotInstalled  an optional dependency is missing (names the extra)
     │    └── BadLine            a line of a traces file that cannot be imported (says why)
     ├── ModelError             a model failed to answer
     │    ├── UpstreamError      the endpoint answered with an error, or nonsense (status, body)
     │    │    └── UpstreamRejected  a 4xx (not 408/429): the client's own error, passed through as is
     │    ├── UpstreamTimeout    the endpoint did not answer in time
     │    ├── RateLimited        the endpoint said 429 after every retry (retry_after)
     │    └── OutputInvalid      the model's output did not parse or validate
     ├── BudgetExceeded         a key's spending limit is used up → 429
     ├── Unavailable            a part the gateway needs (the budget ledger's database) is down → 503
     ├── InternalError          an unexpected failure, answered without its internals → 500
     └── PluginError            an installed plugin's entry point does not load (names its distribution)

Each error knows the HTTP status and the OpenAI-style error ``type`` the gateway
answers with, so the mapping lives in one place.

Private control-flow signals that never leave the module raising them (an agent run's
``_Stop``, the HTTP backend's ``_Retry``, the gateway's ``_ClientGone``) are not errors, and
stay beside their code.
"""

from __future__ import annotations

__all__ = [
    "BadLine",
    "BodyTooLarge",
    "BudgetExceeded",
    "ConfigError",
    "ExtraNotInstalled",
    "Forbidden",
    "InternalError",
    "MethodNotAllowed",
    "ModelError",
    "ModelNotFound",
    "OutputInvalid",
    "PluginError",
    "RateLimited",
    "RequestInvalid",
    "SmallfleetError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UserError",
]


class SmallfleetError(Exception):
    """Base of every error smallfleet raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_openai(self) -> dict[str, object]:
        """The OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": getattr(self, "param", None),
                "code": self.code,
            }
        }


class ConfigError(SmallfleetError):
    """A configuration file or setting is invalid; the message names the key."""

    error_type = "configuration_error"


class UserError(SmallfleetError):
    """The caller asked for something that cannot work as asked."""

    status_code = 400
    error_type = "invalid_request_error"


class RequestInvalid(UserError):
    """A chat request failed validation. ``param`` names the offending field."""

    code = "invalid_value"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code is not None:
            self.code = code


class MethodNotAllowed(RequestInvalid):
    """The path exists, but not for this HTTP method."""

    status_code = 405
    code = "method_not_allowed"


class UnsupportedMediaType(RequestInvalid):
    """The body is not ``application/json`` in UTF-8."""

    status_code = 415
    code = "unsupported_media_type"


class Unauthorized(UserError):
    """No key, or a key the gateway does not know → 401."""

    status_code = 401
    code = "invalid_api_key"


class Forbidden(UserError):
    """The request may not be served: a Host or Origin not allowed, a key without the right."""

    status_code = 403
    error_type = "permission_error"
    code = "forbidden"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class BodyTooLarge(UserError):
    """The request body is over ``gateway.max_body_bytes`` → 413."""

    status_code = 413
    code = "request_too_large"


class ModelNotFound(UserError):
    """No model is configured under this alias."""

    status_code = 404
    code = "model_not_found"

    def __init__(self, alias: str, known: list[str]) -> None:
        import difflib

        self.alias = alias
        close = difflib.get_close_matches(alias, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(sorted(known)) if known else "none configured"
        super().__init__(f"Unknown model {alias!r}.{hint} Known models: {listing}.")
        self.param = "model"


class ExtraNotInstalled(UserError, ImportError):
    """An optional dependency is missing; the message says which extra installs it."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{module!r} is not installed. It comes with the {extra!r} extra: "
            f"pip install 'smallfleet[{extra}]'"
        )


class BadLine(UserError):
    """A line of a traces file (``smallfleet traces import``) that cannot be imported; the
    message says why. Raised by :mod:`smallfleet.store.jsonl`, which re-exports it."""


class ModelError(SmallfleetError):
    """A model failed to produce an answer."""

    status_code = 502
    error_type = "upstream_error"


class UpstreamError(ModelError):
    """The endpoint answered with an error status, broke the connection, or sent nonsense."""

    code = "upstream_error"

    def __init__(self, message: str, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class UpstreamRejected(UpstreamError):
    """The endpoint refused the request with a 4xx other than 408 or 429: the client's own error.

    The gateway answers with the same status and the upstream's error body, and
    neither retries nor falls back (another model would refuse it too).
    """

    error_type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, message: str, status: int, body: str | None = None) -> None:
        super().__init__(message, status=status, body=body)
        self.status_code = status

    def to_openai(self) -> dict[str, object]:
        """The upstream's own error body when it is one; else the OpenAI shape around its text."""
        import json

        try:
            data = json.loads(self.body or "")
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return data
        return super().to_openai()


class UpstreamTimeout(ModelError):
    """The endpoint did not answer in time."""

    status_code = 504
    code = "upstream_timeout"

    def __init__(self, message: str, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class RateLimited(ModelError):
    """The endpoint kept answering 429 after every retry."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        status: int | None = 429,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class OutputInvalid(ModelError):
    """A model's output did not parse, or did not validate against the requested schema."""

    code = "output_invalid"

    def __init__(self, message: str, output: str | None = None) -> None:
        super().__init__(message)
        self.output = output


class BudgetExceeded(SmallfleetError):
    """A key has spent its budget for the period."""

    status_code = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"


class Unavailable(SmallfleetError):
    """Something the request needs (e.g. the database behind budgets) is down for now: retry."""

    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"


class InternalError(SmallfleetError):
    """An unexpected failure (a bug, a store that threw): the client gets a 500 that says so,
    with the trace id, never the internals; the traceback goes to the log where it was caught."""

    status_code = 500
    error_type = "server_error"
    code = "internal_error"


class PluginError(SmallfleetError):
    """An installed plugin (an entry point another distribution declares) does not load, or
    is not what its group expects; the message names the entry point and its distribution."""

    error_type = "configuration_error"
