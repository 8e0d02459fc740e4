"""Skills: subtasks the orchestrator delegates, each with its own model, prompt, context and tools.

The orchestrator sees a :class:`Skill` as one more tool (parameters: ``task`` and the
skill's optional ``inputs``). Calling it runs a small tool loop of its own: the skill's
model reads its system prompt and its rendered context, answers or calls the skill's
tools, until it answers or reaches ``max_steps``. The model is an alias of the
registry, a :class:`~smallfleet.models.base.ChatModel`, or the folder of a trained
specialist, so a routine subtask can move to a small model without the agent changing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from smallfleet.agents.context import ContextSource, build_context, render_parts
from smallfleet.agents.tools import Tool, as_tools, schema_problem
from smallfleet.types import (
    AssistantMessage,
    ChatRequest,
    ChatResponse,
    FunctionDefinition,
    JSONSchemaSpec,
    ResponseFormat,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from smallfleet.types import Tool as WireTool

if TYPE_CHECKING:
    from smallfleet.models.base import ChatModel

__all__ = ["Skill", "SkillRun"]


class SkillRun(Protocol):
    """What a skill needs from the run it is part of (:class:`smallfleet.agents.agent.Run`)."""

    outputs: Mapping[str, str]

    async def complete(
        self, request: ChatRequest, *, model: ChatModel, skill: str | None, parent: int | None
    ) -> ChatResponse: ...

    async def call_tools(
        self, calls: Sequence[Any], tools: Mapping[str, Any], parent: int | None
    ) -> list[str]: ...


@dataclass
class Skill:
    """A named subtask with its own model, system prompt, context sources, tools and output schema."""

    name: str
    description: str
    #: an alias of the registry, a ChatModel, or the folder of a trained specialist
    model: str | Path | ChatModel
    system_prompt: str = ""
    context: list[ContextSource] = field(default_factory=list)
    tools: list[Any] = field(default_factory=list)
    #: a JSON schema the answer must follow (sent as ``response_format`` json_schema)
    output_schema: dict[str, Any] | None = None
    max_steps: int = 4
    #: extra parameters the orchestrator may pass (JSON-schema properties), besides ``task``
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: token budget of the rendered context sources
    context_tokens: int | None = 2000
    tokenizer: Any = None

    def parameters(self) -> dict[str, Any]:
        props: dict[str, Any] = {"task": {"type": "string", "description": "What to do, in plain words."}}
        props.update(self.inputs)
        return {"type": "object", "properties": props, "required": ["task"]}

    def spec(self) -> WireTool:
        """The skill as the orchestrator sees it: a tool."""
        return WireTool(
            function=FunctionDefinition(
                name=self.name, description=self.description, parameters=self.parameters()
            )
        )

    def as_tool(self) -> Tool:
        """A :class:`Tool` with the skill's schema (for argument validation); running is the run's job."""
        t = Tool()
        t.name, t.description, t.parameters = self.name, self.description, self.parameters()
        return t

    def model_name(self) -> str:
        """The name the skill's requests carry in their ``model`` field."""
        if isinstance(self.model, (str, Path)):
            path = Path(self.model)
            return (
                path.name
                if isinstance(self.model, Path) or (path / "specialist.json").exists()
                else str(self.model)
            )
        return self.model.name

    # ------------------------------------------------------------ running

    def messages(self, task: str, inputs: Mapping[str, Any], outputs: Mapping[str, str]) -> list[Any]:
        """The skill's first messages: system prompt plus rendered context, then the task."""
        parts = build_context(
            self.context, task, outputs, max_tokens=self.context_tokens, tokenizer=self.tokenizer
        )
        system = "\n\n".join(x for x in (self.system_prompt, render_parts(parts)) if x)
        user = task if not inputs else f"{task}\n\nInputs:\n{json.dumps(dict(inputs), ensure_ascii=False)}"
        out: list[Any] = [SystemMessage(content=system)] if system else []
        out.append(UserMessage(content=user))
        return out

    def request(self, messages: list[Any], tools: Sequence[Tool]) -> ChatRequest:
        response_format = None
        if self.output_schema is not None:
            response_format = ResponseFormat(
                type="json_schema",
                json_schema=JSONSchemaSpec(name=f"{self.name}_output", schema=self.output_schema),
            )
        return ChatRequest(
            model=self.model_name(),
            messages=messages,
            tools=[t.spec() for t in tools] or None,
            response_format=response_format,
        )

    async def run(
        self, arguments: Mapping[str, Any], run: SkillRun, model: ChatModel, parent: int | None
    ) -> str:
        """Run the skill's loop for ``arguments`` and give its answer (or ``"Error: …"``)."""
        task = str(arguments.get("task", ""))
        inputs = {k: v for k, v in arguments.items() if k != "task"}
        tools = as_tools(self.tools)
        by_name = {t.name: t for t in tools}
        messages = self.messages(task, inputs, run.outputs)
        for _ in range(self.max_steps):
            response = await run.complete(
                self.request(messages, tools), model=model, skill=self.name, parent=parent
            )
            msg = response.message
            if not msg.tool_calls:
                return self._check_output(msg.content or "")
            messages.append(AssistantMessage(content=msg.content, tool_calls=msg.tool_calls))
            results = await run.call_tools(msg.tool_calls, by_name, parent)
            messages.extend(
                ToolMessage(content=r, tool_call_id=c.id)
                for c, r in zip(msg.tool_calls, results, strict=True)
            )
        return f"Error: skill {self.name} reached its max_steps ({self.max_steps}) without an answer."

    def _check_output(self, text: str) -> str:
        if self.output_schema is None:
            return text
        try:
            value = json.loads(text)
        except ValueError:
            return f"Error: skill {self.name} answered text that is not JSON: {text[:200]}"
        problem = schema_problem(value, self.output_schema)
        if problem is not None:
            return f"Error: skill {self.name}'s answer breaks its output schema ({problem}): {text[:200]}"
        return text
