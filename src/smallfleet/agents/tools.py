"""Tools an agent or a skill can call: Python callables and the tools of MCP servers.

A :class:`FunctionTool` gets its JSON schema from the callable's type hints and its
docstring (the first paragraph is the description; Google ``Args:`` or NumPy
``Parameters`` sections describe each parameter)::

    @tool
    def convert(amount: float, currency: Literal["EUR", "USD"] = "EUR") -> str:
        \"\"\"Convert an amount.

        Args:
            amount: How much, in the source currency.
            currency: The target currency.
        \"\"\"

Every tool's :meth:`Tool.call` validates the arguments against the schema
(``jsonschema``) before the call and never raises: invalid arguments, an unknown
tool or a failing tool all come back as a string ``"Error: …"``, which the
orchestrator reads like any other result and can correct.

:class:`MCPServer` starts an MCP server over stdio with the official ``mcp`` SDK
(the ``mcp`` extra) and offers its tools, with their input schemas, as
:class:`MCPTool` objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smallfleet.types import FunctionDefinition
from smallfleet.types import Tool as WireTool

__all__ = [
    "FunctionTool",
    "MCPServer",
    "MCPTool",
    "Tool",
    "as_tools",
    "format_result",
    "parse_docstring",
    "schema_of",
    "schema_problem",
    "tool",
]

#: Longest tool result, in characters, handed back to a model (the rest is cut and marked).
MAX_RESULT_CHARS = 20_000


class Tool:
    """Something a model can call by name with JSON arguments; :meth:`call` gives a string."""

    name: str
    description: str
    parameters: dict[str, Any]

    def spec(self) -> WireTool:
        """The OpenAI ``tools[]`` entry for this tool."""
        fn = FunctionDefinition(name=self.name, description=self.description, parameters=self.parameters)
        return WireTool(function=fn)

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Run the tool on validated arguments (may raise; :meth:`call` catches)."""
        raise NotImplementedError

    async def call(self, arguments: dict[str, Any] | str | None) -> str:
        """Validate ``arguments``, run the tool, and give its result as text, or ``"Error: …"``."""
        args, problem = self.check_arguments(arguments)
        if problem is not None:
            return f"Error: invalid arguments for {self.name}: {problem}"
        try:
            result = await self.invoke(args)
        except Exception as e:  # a failing tool is a message for the model, not a crash
            return f"Error: {self.name} failed: {type(e).__name__}: {e}"
        return format_result(result)

    def check_arguments(self, arguments: dict[str, Any] | str | None) -> tuple[dict[str, Any], str | None]:
        """The arguments as a dict and the first schema violation (None when valid)."""
        if arguments is None or arguments == "":
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError as e:
                return {}, f"the arguments are not valid JSON ({e})"
        if not isinstance(arguments, dict):
            return {}, "the arguments must be a JSON object"
        return arguments, schema_problem(arguments, self.parameters)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def schema_problem(instance: Any, schema: dict[str, Any]) -> str | None:
    """The most relevant way ``instance`` breaks ``schema`` (``path: message``), or None when it fits."""
    import jsonschema

    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except jsonschema.exceptions.SchemaError as e:
        return f"the tool's schema is invalid: {e.message}"
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def format_result(result: Any) -> str:
    """A tool's return value as the text a model reads (JSON for structured values)."""
    if isinstance(result, str):
        text = result
    elif hasattr(result, "model_dump"):
        text = json.dumps(result.model_dump(mode="json"), ensure_ascii=False)
    elif result is None:
        text = "null"
    else:
        text = json.dumps(result, ensure_ascii=False, default=_jsonable)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"… [cut: {len(text) - MAX_RESULT_CHARS} more characters]"
    return text


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # an Enum member
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    return str(value)


# ---------------------------------------------------------------- docstrings

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:?\s*$")
_OTHER_SECTION = re.compile(
    r"^\s*(Returns?|Yields?|Raises?|Examples?|Notes?|See Also|Attributes|References|Warnings?)\s*:?\s*$"
)
_GOOGLE_PARAM = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_PARAM = re.compile(r"^(\*{0,2}\w+)\s*(:\s*.*)?$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (first paragraph) and the per-parameter descriptions of a docstring.

    Understands Google style (``Args:`` then ``name (type): text``) and NumPy style
    (``Parameters`` underlined, then ``name : type`` with the text indented below).
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line) or _OTHER_SECTION.match(line):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    for start, line in enumerate(lines):
        if _SECTION.match(line):
            _parse_params(lines[start + 1 :], params)
    return " ".join(summary), {k: v for k, v in params.items() if v}


def _parse_params(lines: list[str], params: dict[str, str]) -> None:
    if lines and lines[0].strip() and set(lines[0].strip()) == {"-"}:  # NumPy underline
        lines = lines[1:]
    base: int | None = None
    current: str | None = None
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if base is None:
            base = indent
        if indent < base or (indent == base and (_OTHER_SECTION.match(line) or set(stripped) == {"-"})):
            return
        if indent > base:
            if current is not None:
                params[current] = (params[current] + " " + stripped).strip()
            continue
        google = _GOOGLE_PARAM.match(stripped)
        numpy = _NUMPY_PARAM.match(stripped)
        if google and " : " not in stripped:
            current = google.group(1).lstrip("*")
            params[current] = google.group(3).strip()
        elif numpy:
            current = numpy.group(1).lstrip("*")
            params.setdefault(current, "")
        else:
            current = None


# ---------------------------------------------------------------- schemas from type hints


def schema_of(fn: Callable[..., Any]) -> tuple[str, dict[str, Any], Any]:
    """(description, JSON schema of the parameters, pydantic model that converts arguments) of ``fn``."""
    import pydantic

    description, docs = parse_docstring(inspect.getdoc(fn))
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in ("self", "cls"):
            continue
        annotation = hints.get(name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (annotation, pydantic.Field(default, description=docs.get(name) or None))
    model = pydantic.create_model(f"{getattr(fn, '__name__', 'tool')}_arguments", **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["type"] = "object"
    return description, schema, model


@dataclass(repr=False)
class FunctionTool(Tool):
    """A Python function (sync or async) as a tool; sync ones run in a worker thread."""

    fn: Callable[..., Any]
    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    _model: Any = None

    def __post_init__(self) -> None:
        description, schema, model = schema_of(self.fn)
        self.name = self.name or getattr(self.fn, "__name__", "tool")
        self.description = self.description or description or self.name
        self.parameters = self.parameters or schema
        self._model = model
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            from smallfleet.errors import UserError

            raise UserError(f"Tool name {self.name!r}: use 1-64 letters, digits, '_' or '-'.")

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        import pydantic

        try:
            values = self._model.model_validate(arguments)
        except pydantic.ValidationError as e:
            raise ValueError(_first_error(e)) from None
        kwargs = {k: getattr(values, k) for k in type(values).model_fields}
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        result = await asyncio.to_thread(self.fn, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def call(self, arguments: dict[str, Any] | str | None) -> str:
        args, problem = self.check_arguments(arguments)
        if problem is None:
            import pydantic

            try:
                self._model.model_validate(args)
            except pydantic.ValidationError as e:
                problem = _first_error(e)
        if problem is not None:
            return f"Error: invalid arguments for {self.name}: {problem}"
        return await super().call(args)


def _first_error(e: Any) -> str:
    err = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Make a :class:`FunctionTool` of ``fn``; usable as ``@tool`` or ``@tool(name=…)``."""
    if fn is None:
        return lambda f: FunctionTool(f, name=name or "", description=description or "")
    return FunctionTool(fn, name=name or "", description=description or "")


# ---------------------------------------------------------------- MCP


@dataclass(repr=False)
class MCPTool(Tool):
    """A tool of a running :class:`MCPServer`."""

    server: MCPServer
    name: str
    description: str
    parameters: dict[str, Any]

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        return await self.server.call_tool(self.name, arguments)


class MCPServer:
    """An MCP server started over stdio; its tools become :class:`MCPTool` objects.

    ``async with MCPServer(sys.executable, ["server.py"]) as server: server.tools``.
    The connection lives in one background task (the SDK's context managers must be
    entered and left by the same task), so tools can be called from any task.
    """

    def __init__(
        self,
        command: str,
        args: list[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
        prefix: str = "",
        timeout: float = 60.0,
        stderr: Any = None,
    ) -> None:
        self.command = command
        self.args = list(args or [])
        self.env = env
        self.cwd = cwd
        self.name = name or command.rsplit("/", 1)[-1]
        self.prefix = prefix
        self.timeout = timeout
        self.stderr = stderr
        self.tools: list[MCPTool] = []
        self._session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def started(self) -> bool:
        return self._session is not None

    async def start(self) -> MCPServer:
        """Start the server, initialise the session and list its tools."""
        if self.started:
            return self
        from smallfleet._extras import require

        require("mcp", "mcp")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._serve(ready), name=f"mcp:{self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.timeout)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _serve(self, ready: asyncio.Future[None]) -> None:
        import os

        from mcp import ClientSession, StdioServerParameters, stdio_client

        from smallfleet.errors import ConfigError

        params = StdioServerParameters(command=self.command, args=self.args, env=self.env, cwd=self.cwd)
        errlog = self.stderr or open(os.devnull, "w")  # noqa: SIM115 - closed below
        try:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                listing = await s.list_tools()
                self._session = s
                self.tools = [
                    MCPTool(
                        server=self,
                        name=self.prefix + t.name,
                        description=t.description or t.name,
                        parameters=dict(t.input_schema or {"type": "object", "properties": {}}),
                    )
                    for t in listing.tools
                ]
                ready.set_result(None)
                assert self._stop is not None
                await self._stop.wait()
        except Exception as e:
            if not ready.done():
                ready.set_exception(
                    ConfigError(
                        f"MCP server {self.name!r} ({self.command} {' '.join(self.args)}) "
                        f"did not start: {type(e).__name__}: {e}"
                    )
                )
        finally:
            self._session = None
            if errlog is not self.stderr:
                errlog.close()
            if not ready.done():
                ready.set_exception(ConfigError(f"MCP server {self.name!r} stopped before it was ready."))

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Call ``name`` (with or without the prefix); a tool-side error raises ``RuntimeError``."""
        if self._session is None:
            raise RuntimeError(f"MCP server {self.name!r} is not running")
        name = name.removeprefix(self.prefix) if self.prefix else name
        result = await self._session.call_tool(name, arguments, read_timeout_seconds=self.timeout)
        text = _mcp_text(result)
        if getattr(result, "is_error", False):
            raise RuntimeError(text or "the MCP tool reported an error")
        return text

    async def aclose(self) -> None:
        """Stop the server process and forget its tools."""
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
        self._task = None
        self._session = None
        self.tools = []

    async def __aenter__(self) -> MCPServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"MCPServer({self.command!r}, {self.args!r})"


def _mcp_text(result: Any) -> str:
    structured = getattr(result, "structured_content", None)
    parts = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        parts.append(text if text is not None else json.dumps(block.model_dump(mode="json")))
    if not parts and structured is not None:
        return json.dumps(structured, ensure_ascii=False)
    return "\n".join(parts)


# ---------------------------------------------------------------- helpers


def as_tools(items: typing.Iterable[Any]) -> list[Tool]:
    """Tools from tools, plain callables and started :class:`MCPServer` objects (their tools)."""
    out: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            out.append(item)
        elif isinstance(item, MCPServer):
            out.extend(item.tools)
        elif callable(item):
            out.append(FunctionTool(item))
        else:
            from smallfleet.errors import UserError

            raise UserError(f"{item!r} is not a tool: pass a function, a Tool or an MCPServer.")
    return out
