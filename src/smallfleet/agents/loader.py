"""Agents defined in YAML: ``load_agent("agent.yaml")`` gives an :class:`~smallfleet.agents.Agent`.

::

    name: support
    model: gpt-4o                      # the orchestrator: an alias of the settings' models
    system_prompt: You run Acme's support desk. Delegate triage to the triage skill.
    limits: {max_steps: 8, max_usd: 0.05, max_seconds: 120}
    models:                            # optional: more aliases, same keys as smallfleet.yaml's models
      triage-small: {backend: specialist, path: ./specialists/triage}
    tools:
      - python: acme_tools:lookup_order          # module:function (the YAML's folder is importable)
      - mcp: {command: python, args: [crm_server.py], prefix: "crm_"}
    skills:
      - name: triage
        description: Find the intent of a customer message.
        model: ./specialists/triage              # an alias, or a specialist folder
        system_prompt: Answer with exactly one intent.
        max_steps: 2
        output_schema: {type: object, properties: {intent: {type: string}}}
        context:
          - text: Intents are refund, order_status, …    # static text
            priority: 2
          - file: policies/refunds.md
          - retrieval: {folder: kb/, k: 3}
          - step: lookup_order                    # the output of an earlier step
        tools:
          - python: acme_tools:refund_policy

Relative paths (files, folders, specialists, an MCP server's working folder) are read
from the YAML file's folder. Every key is checked: a typo is an error naming it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smallfleet.errors import ConfigError

if TYPE_CHECKING:
    from smallfleet.agents.agent import Agent
    from smallfleet.agents.context import ContextSource
    from smallfleet.config import Settings

__all__ = ["AgentSpec", "load_agent"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsSpec(_Spec):
    max_steps: int = Field(10, ge=1)
    max_usd: float | None = Field(None, ge=0)
    max_seconds: float | None = Field(None, gt=0)


class MCPSpec(_Spec):
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    prefix: str = ""
    timeout: float = Field(60.0, gt=0)


class ToolSpec(_Spec):
    python: str | None = Field(None, description="module:function")
    mcp: MCPSpec | None = None
    name: str | None = None
    description: str | None = None


class RetrievalSpec(_Spec):
    folder: str
    k: int = Field(3, ge=1)
    chunk_chars: int = Field(800, ge=50)
    patterns: list[str] = Field(default_factory=lambda: ["*.md", "*.txt", "*.rst"])
    encoder: str | None = None
    min_score: float = 0.0


class ContextSpec(_Spec):
    text: str | None = None
    file: str | None = None
    retrieval: RetrievalSpec | None = None
    step: str | None = None
    name: str | None = None
    priority: int = 0


class SkillSpec(_Spec):
    name: str
    description: str
    model: str
    system_prompt: str = ""
    context: list[ContextSpec] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    max_steps: int = Field(4, ge=1)
    inputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    context_tokens: int | None = Field(2000, ge=1)


class AgentSpec(_Spec):
    name: str = "agent"
    model: str
    system_prompt: str = ""
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tools: list[ToolSpec] = Field(default_factory=list)
    skills: list[SkillSpec] = Field(default_factory=list)


def _explain(e: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in e.errors(include_url=False):
        key = ".".join(str(p) for p in err["loc"])
        lines.append(f"unknown key {key!r}" if err["type"] == "extra_forbidden" else f"{key}: {err['msg']}")
    return ConfigError(f"Invalid agent definition in {source}: " + "; ".join(lines))


def load_agent(
    path: str | Path,
    settings: Settings | None = None,
    *,
    store: Any = None,
    router: Any = None,
    on_step: Any = None,
) -> Agent:
    """Build the agent a YAML file defines (models by alias from ``settings``' registry)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Agent file {str(p)!r} does not exist.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping (name, model, skills, tools, …) at the top level.")
    try:
        spec = AgentSpec.model_validate(data)
    except ValidationError as e:
        raise _explain(e, str(p)) from None
    return build_agent(spec, p.resolve().parent, settings, store=store, router=router, on_step=on_step)


def build_agent(
    spec: AgentSpec,
    base: Path,
    settings: Settings | None = None,
    *,
    store: Any = None,
    router: Any = None,
    on_step: Any = None,
) -> Agent:
    """An :class:`Agent` from a validated spec; relative paths are read from ``base``."""
    from smallfleet.agents.agent import Agent, Limits
    from smallfleet.agents.skills import Skill
    from smallfleet.config import Settings

    settings = settings or Settings()
    if spec.models:
        for cfg in spec.models.values():
            if isinstance(cfg, dict) and cfg.get("backend") == "specialist" and "path" in cfg:
                cfg["path"] = str(_path(base, cfg["path"]))
        try:
            settings = Settings.model_validate(
                {**settings.model_dump(), "models": {**settings.model_dump()["models"], **spec.models}}
            )
        except ValidationError as e:
            raise _explain(e, "the agent's models") from None
    from smallfleet.errors import ModelNotFound

    if spec.model not in settings.models:
        raise ModelNotFound(spec.model, sorted(settings.models))
    for s in spec.skills:
        if not isinstance(_model(base, s.model, settings), Path) and s.model not in settings.models:
            raise ConfigError(
                f"Skill {s.name!r}: model {s.model!r} is neither an alias of the models "
                f"({', '.join(sorted(settings.models)) or 'none configured'}) nor a specialist folder."
            )
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))  # so `python: my_tools:fn` finds a module next to the YAML
    skills = [
        Skill(
            name=s.name,
            description=s.description,
            model=_model(base, s.model, settings),
            system_prompt=s.system_prompt,
            context=[_context(base, c) for c in s.context],
            tools=[_tool(base, t) for t in s.tools],
            output_schema=s.output_schema,
            max_steps=s.max_steps,
            inputs=s.inputs,
            context_tokens=s.context_tokens,
        )
        for s in spec.skills
    ]
    return Agent(
        spec.model,
        skills=skills,
        tools=[_tool(base, t) for t in spec.tools],
        system_prompt=spec.system_prompt,
        name=spec.name,
        limits=Limits(**spec.limits.model_dump()),
        settings=settings,
        store=store,
        router=router,
        on_step=on_step,
    )


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _model(base: Path, value: str, settings: Settings) -> str | Path:
    """An alias stays an alias; anything else that names a specialist folder becomes its path."""
    if value in settings.models:
        return value
    p = _path(base, value)
    return p if (p / "specialist.json").exists() else value


def _context(base: Path, c: ContextSpec) -> ContextSource:
    from smallfleet.agents.context import FileSource, Retrieval, StaticText, StepOutput

    given = [k for k in ("text", "file", "retrieval", "step") if getattr(c, k) is not None]
    if len(given) != 1:
        raise ConfigError(f"A context source takes exactly one of text, file, retrieval, step (got {given}).")
    extra: dict[str, Any] = {"priority": c.priority}
    if c.name:
        extra["name"] = c.name
    if c.text is not None:
        return StaticText(c.text, **extra)
    if c.file is not None:
        return FileSource(_path(base, c.file), **extra)
    if c.step is not None:
        return StepOutput(c.step, **extra)
    assert c.retrieval is not None
    r = c.retrieval.model_dump()
    r["folder"] = _path(base, r["folder"])
    return Retrieval(**r, **extra)


def _tool(base: Path, t: ToolSpec) -> Any:
    from smallfleet.agents.tools import FunctionTool, MCPServer

    if (t.python is None) == (t.mcp is None):
        raise ConfigError("A tool takes exactly one of python (module:function) or mcp ({command, args}).")
    if t.mcp is not None:
        m = t.mcp
        cwd = str(_path(base, m.cwd)) if m.cwd else str(base)
        return MCPServer(m.command, m.args, env=m.env, cwd=cwd, prefix=m.prefix, timeout=m.timeout)
    assert t.python is not None
    module_name, _, attr = t.python.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"tools.python {t.python!r}: write it as module:function.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"tools.python {t.python!r}: cannot import {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"tools.python {t.python!r}: {module_name!r} has no {attr!r}.")
    if isinstance(fn, FunctionTool):
        return fn
    if not callable(fn):
        raise ConfigError(f"tools.python {t.python!r} is not callable.")
    return FunctionTool(fn, name=t.name or "", description=t.description or "")
