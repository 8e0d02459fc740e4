"""The hybrid agent: an orchestrator model that answers or delegates to skills and tools.

``await agent.run(task)`` loops: the orchestrator model reads the conversation and
either answers (the final answer) or calls skills and tools; independent calls of
one assistant message run concurrently; their results go back as tool messages. The
loop stops at the final answer or at a limit (``max_steps`` orchestrator turns,
``max_usd`` spent, ``max_seconds`` of wall time), saying which.

Every model call of a run, the orchestrator's and each skill's, becomes a
:class:`~smallfleet.store.TraceRecord` (workload ``"<agent>/<skill or orchestrator>"``,
the run id and the step, redacted and priced) written to the trace store when one is
given; with a :class:`~smallfleet.routing.router.Router`, each skill's call is first
offered to the router, so the flywheel sees an agent's subtasks as workloads and can
move them to specialists.

Each :class:`Step` is a dataclass and :class:`RunResult` has ``to_dict``: a run is a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallfleet.agents.skills import Skill
from smallfleet.agents.tools import MCPServer, Tool, as_tools
from smallfleet.errors import ModelError, ModelNotFound, UserError
from smallfleet.types import (
    AssistantMessage,
    ChatRequest,
    ChatResponse,
    SystemMessage,
    ToolMessage,
    UserMessage,
)

if TYPE_CHECKING:
    from smallfleet.config import Settings
    from smallfleet.models.base import ChatModel
    from smallfleet.models.registry import ModelRegistry
    from smallfleet.routing.router import Router
    from smallfleet.store import PriceTable, Redactor, TraceRecord

__all__ = ["Agent", "Limits", "RunResult", "Step"]

ORCHESTRATOR = "orchestrator"

log = logging.getLogger("smallfleet.agents")


@dataclass(frozen=True)
class Limits:
    """When a run stops without a final answer: orchestrator turns, USD spent, wall seconds."""

    max_steps: int = 10
    max_usd: float | None = None
    max_seconds: float | None = None


@dataclass
class Step:
    """One thing that happened in a run: a model call, a tool call, or a skill call."""

    index: int
    #: "model" | "tool" | "skill"
    kind: str
    #: the model's name for model steps, the tool's or skill's name otherwise
    name: str
    #: the orchestrator model step (or skill step) this one belongs to
    parent: int | None = None
    #: "orchestrator" or the skill's name, for model steps
    role: str | None = None
    arguments: dict[str, Any] | None = None
    output: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    trace_id: str | None = None
    #: for model steps: "direct", "specialist:<route>", "escalated:<reason>", …
    route: str | None = None
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """What a run produced: the answer (None when stopped early), the steps, cost and latency."""

    run_id: str
    task: str
    final_answer: str | None
    steps: list[Step]
    cost_usd: float
    latency_ms: float
    #: None, or why the run stopped early: "max_steps", "max_usd", "max_seconds", "model_error"
    stopped: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = [s.to_dict() for s in self.steps]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


class _Stop(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Agent:
    """An orchestrator model with skills and tools; see the module docs."""

    def __init__(
        self,
        model: str | ChatModel,
        skills: Sequence[Skill] = (),
        tools: Sequence[Any] = (),
        system_prompt: str = "",
        *,
        name: str = "agent",
        limits: Limits | None = None,
        settings: Settings | None = None,
        registry: ModelRegistry | None = None,
        store: Any = None,
        router: Router | None = None,
        prices: PriceTable | None = None,
        redactor: Redactor | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        from smallfleet.config import Settings

        self.model = model
        self.skills = list(skills)
        self.tools = list(tools)
        self.system_prompt = system_prompt
        self.name = name
        self.limits = limits or Limits()
        self.settings = settings or (registry.settings if registry is not None else Settings())
        self._registry = registry
        self.store = store
        self.router = router
        self._prices = prices
        self._redactor = redactor
        self.on_step = on_step
        self._models: dict[str, ChatModel] = {}
        names = [s.name for s in self.skills]
        if len(set(names)) != len(names):
            raise UserError(f"Agent {name!r}: two skills share a name ({', '.join(names)}).")

    # ------------------------------------------------------------ parts built on first use

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            from smallfleet.models.registry import ModelRegistry

            self._registry = ModelRegistry(self.settings)
        return self._registry

    @property
    def prices(self) -> PriceTable:
        if self._prices is None:
            from smallfleet.store import PriceTable

            self._prices = PriceTable(self.settings.pricing, self.settings.models)
        return self._prices

    @property
    def redactor(self) -> Redactor:
        if self._redactor is None:
            from smallfleet.store import Redactor

            self._redactor = Redactor(self.settings.redaction)
        return self._redactor

    async def resolve(self, model: str | Path | ChatModel) -> ChatModel:
        """A ChatModel for an alias of the registry, a specialist folder, or a ChatModel."""
        if not isinstance(model, (str, Path)):
            return model
        key = str(model)
        if key in self._models:
            return self._models[key]
        if isinstance(model, str) and model in self.registry:
            built = self.registry.get(model)
        elif (Path(model) / "specialist.json").exists():
            from smallfleet.specialists.base import SpecialistChatModel, load_specialist

            spec = await asyncio.to_thread(load_specialist, model)
            built = SpecialistChatModel(spec, name=Path(model).name)
        else:
            raise ModelNotFound(key, self.registry.aliases())
        self._models[key] = built
        return built

    # ------------------------------------------------------------ running

    async def run(self, task: str, *, run_id: str | None = None) -> RunResult:
        """Run the agent on ``task`` until a final answer or a limit."""
        run = Run(self, task, run_id or uuid.uuid4().hex)
        async with contextlib.AsyncExitStack() as stack:
            for item in [*self.tools, *(t for s in self.skills for t in s.tools)]:
                if isinstance(item, MCPServer) and not item.started:
                    await item.start()
                    stack.push_async_callback(item.aclose)
            tools = as_tools(self.tools)
            await run.execute(tools)
        return run.result()

    def run_sync(self, task: str) -> RunResult:
        """:meth:`run` from synchronous code."""
        return asyncio.run(self.run(task))

    async def aclose(self) -> None:
        for m in self._models.values():
            await m.aclose()
        if self._registry is not None:
            await self._registry.aclose()


class Run:
    """The state of one run: its steps, its spending, its clock, and the outputs of its steps."""

    def __init__(self, agent: Agent, task: str, run_id: str) -> None:
        self.agent = agent
        self.task = task
        self.run_id = run_id
        self.steps: list[Step] = []
        self.outputs: dict[str, str] = {}
        self.cost_usd = 0.0
        self.final_answer: str | None = None
        self.stopped: str | None = None
        self.message: str | None = None
        self._counter = itertools.count(1)
        self._t0 = time.perf_counter()
        self._turns = 0
        self._skills = {s.name: s for s in agent.skills}

    # ------------------------------------------------------------ the loop

    async def execute(self, tools: list[Tool]) -> None:
        agent, limits = self.agent, self.agent.limits
        by_name: dict[str, Any] = {t.name: t for t in tools}
        clash = set(by_name) & set(self._skills)
        if clash:
            raise UserError(f"Agent {agent.name!r}: a skill and a tool share the name(s) {sorted(clash)}.")
        by_name.update(self._skills)
        specs = [s.spec() for s in agent.skills] + [t.spec() for t in tools]
        messages: list[Any] = [SystemMessage(content=agent.system_prompt)] if agent.system_prompt else []
        messages.append(UserMessage(content=self.task))
        try:
            async with asyncio.timeout(limits.max_seconds):
                model = await agent.resolve(agent.model)
                while True:
                    if self._turns >= limits.max_steps:
                        raise _Stop(
                            "max_steps",
                            f"max_steps: {limits.max_steps} orchestrator steps without a final answer",
                        )
                    self._turns += 1
                    request = ChatRequest(model=_alias(agent.model), messages=messages, tools=specs or None)
                    response, step = await self._complete(request, model=model, skill=None, parent=None)
                    msg = response.message
                    if not msg.tool_calls:
                        self.final_answer = msg.content or ""
                        return
                    messages.append(AssistantMessage(content=msg.content, tool_calls=msg.tool_calls))
                    results = await self.call_tools(msg.tool_calls, by_name, step.index)
                    messages.extend(
                        ToolMessage(content=r, tool_call_id=c.id)
                        for c, r in zip(msg.tool_calls, results, strict=True)
                    )
        except TimeoutError:
            self.stopped = "max_seconds"
            self.message = f"max_seconds: the run took longer than {limits.max_seconds:g} s"
        except _Stop as s:
            self.stopped, self.message = s.code, s.message
        except ModelError as e:
            self.stopped, self.message = "model_error", f"the orchestrator model failed: {e.message}"

    def result(self) -> RunResult:
        return RunResult(
            run_id=self.run_id,
            task=self.task,
            final_answer=self.final_answer,
            steps=sorted(self.steps, key=lambda s: s.index),
            cost_usd=self.cost_usd,
            latency_ms=(time.perf_counter() - self._t0) * 1000,
            stopped=self.stopped,
            message=self.message,
        )

    def _check_budget(self) -> None:
        max_usd = self.agent.limits.max_usd
        if max_usd is not None and self.cost_usd >= max_usd:
            raise _Stop("max_usd", f"max_usd: spent ${self.cost_usd:.6f} of the ${max_usd:g} budget")

    def _add(self, step: Step) -> None:
        self.steps.append(step)
        if self.agent.on_step is not None:
            self.agent.on_step(step)

    # ------------------------------------------------------------ tools and skills

    async def call_tools(
        self, calls: Sequence[Any], tools: Mapping[str, Any], parent: int | None
    ) -> list[str]:
        """Run the calls of one assistant message concurrently; results in the calls' order."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._call_one(c, tools, parent)) for c in calls]
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        return [t.result() for t in tasks]

    async def _call_one(self, call: Any, tools: Mapping[str, Any], parent: int | None) -> str:
        name = call.function.name
        target = tools.get(name)
        kind = "skill" if isinstance(target, Skill) else "tool"
        step = Step(index=next(self._counter), kind=kind, name=name, parent=parent)
        t0 = time.perf_counter()
        raw = call.function.arguments
        try:
            step.arguments = json.loads(raw) if raw else {}
        except ValueError:
            step.arguments = {"_raw": raw}
        if target is None:
            result = (
                f"Error: there is no tool or skill named {name!r}; available: {', '.join(sorted(tools))}."
            )
        elif isinstance(target, Skill):
            result = await self._run_skill(target, raw, step)
        else:
            result = await target.call(raw)
        step.output = result
        step.latency_ms = (time.perf_counter() - t0) * 1000
        if result.startswith("Error:"):
            step.error = result
        else:
            self.outputs[name] = result
        self._add(step)
        return result

    async def _run_skill(self, skill: Skill, raw: str, step: Step) -> str:
        args, problem = skill.as_tool().check_arguments(raw)
        if problem is not None:
            return f"Error: invalid arguments for {skill.name}: {problem}"
        try:
            model = await self.agent.resolve(skill.model)
        except UserError as e:
            return f"Error: skill {skill.name} has no usable model: {e.message}"
        try:
            return await skill.run(args, self, model, parent=step.index)
        except _Stop:
            raise
        except Exception as e:  # a failing skill is a message for the orchestrator, not a crash
            return f"Error: skill {skill.name} failed: {type(e).__name__}: {getattr(e, 'message', e)}"

    # ------------------------------------------------------------ model calls

    async def complete(
        self, request: ChatRequest, *, model: ChatModel, skill: str | None, parent: int | None
    ) -> ChatResponse:
        """One model call of the run: limits checked, offered to the router (skills), recorded."""
        return (await self._complete(request, model=model, skill=skill, parent=parent))[0]

    async def _complete(
        self, request: ChatRequest, *, model: ChatModel, skill: str | None, parent: int | None
    ) -> tuple[ChatResponse, Step]:
        self._check_budget()
        agent = self.agent
        role = skill or ORCHESTRATOR
        workload = f"{agent.name}/{role}"
        step = Step(index=next(self._counter), kind="model", name=request.model, parent=parent, role=role)
        t0 = time.perf_counter()
        decision = await self._decide(request, workload) if skill is not None else None
        response: ChatResponse | None = None
        error: Exception | None = None
        try:
            if decision is not None and decision.action == "small" and decision.response is not None:
                response = decision.response
            else:
                response = await model.complete(request)
        except ModelError as e:
            error = e
        latency_ms = (time.perf_counter() - t0) * 1000
        served_small = response is not None and decision is not None and decision.action == "small"
        step.latency_ms = latency_ms
        step.route = decision.label if decision is not None else "direct"
        step.confidence = decision.confidence if decision is not None else None
        cached = 0
        if response is not None:
            usage = response.usage
            step.input_tokens = usage.prompt_tokens if usage else 0
            step.output_tokens = usage.completion_tokens if usage else 0
            cached = (
                (usage.prompt_tokens_details.cached_tokens or 0)
                if usage and usage.prompt_tokens_details
                else 0
            )
            step.cost_usd = 0.0 if served_small else self._cost(request.model, response, cached)
            msg = response.message
            step.output = msg.content
            if msg.tool_calls:
                step.tool_calls = [c.to_dict() for c in msg.tool_calls]
        else:
            step.error = f"{type(error).__name__}: {getattr(error, 'message', error)}"
        self.cost_usd += step.cost_usd
        record = await self._record(request, response, step, workload, decision, cached)
        step.trace_id = record.id if record is not None else None
        self._add(step)
        if error is not None:
            raise error
        assert response is not None
        return response, step

    async def _decide(self, request: ChatRequest, workload: str) -> Any:
        router = self.agent.router
        if router is None:
            return None
        try:
            return await asyncio.to_thread(router.decide, request, workload)
        except Exception as e:  # the router is an optimisation: without it the model answers
            log.warning("router failed for %s: %s", workload, e)
            return None

    def _cost(self, alias: str, response: ChatResponse, cached: int) -> float:
        usage = response.usage
        if usage is None:
            return 0.0
        prices = self.agent.prices
        for name in (alias, response.model):
            cost = prices.cost(name, usage.prompt_tokens, usage.completion_tokens, cached)
            if cost is not None:
                return cost
        return 0.0

    async def _record(
        self,
        request: ChatRequest,
        response: ChatResponse | None,
        step: Step,
        workload: str,
        decision: Any,
        cached: int,
    ) -> TraceRecord | None:
        store = self.agent.store
        if store is None:
            return None
        from smallfleet.store import TraceRecord

        record = TraceRecord(
            workload=workload,
            model_requested=request.model,
            model_served=response.model if response is not None else None,
            route=step.route or "direct",
            request=request.to_dict(),
            response=response.to_dict() if response is not None else None,
            tool_names=request.tool_names(),
            input_tokens=step.input_tokens,
            output_tokens=step.output_tokens,
            cached_tokens=cached,
            latency_ms=step.latency_ms,
            cost_usd=step.cost_usd,
            status="ok" if response is not None else "error",
            http_status=200 if response is not None else 502,
            error=step.error,
            run_id=self.run_id,
            step=step.index,
            confidence=step.confidence,
            escalation=decision.reason if decision is not None and decision.action != "small" else None,
            metadata={"agent": self.agent.name, "role": step.role or ORCHESTRATOR},
        )
        record = self.agent.redactor.redact_record(record)
        await asyncio.to_thread(store.write_traces, [record])
        return record


def _first(error: BaseException) -> BaseException:
    """The first leaf of an exception group, a :class:`_Stop` when there is one."""
    leaves: list[BaseException] = []
    todo = [error]
    while todo:
        e = todo.pop(0)
        if isinstance(e, BaseExceptionGroup):
            todo[:0] = list(e.exceptions)
        else:
            leaves.append(e)
    return next((e for e in leaves if isinstance(e, _Stop)), leaves[0])


def _alias(model: Any) -> str:
    return str(model) if isinstance(model, (str, Path)) else model.name
