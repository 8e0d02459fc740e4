"""LLM-as-judge: any configured :class:`ChatModel` grades a free-text answer against the reference.

The judge is asked for a JSON verdict ``{"correct": bool, "score": 0..1, "reason": str}``
(``response_format`` json_object, code fences tolerated). A judge that answers
something else raises :class:`~smallfleet.errors.OutputInvalid` naming what it said.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from smallfleet.errors import OutputInvalid
from smallfleet.evals.metrics import parse_json
from smallfleet.types import ChatRequest

if TYPE_CHECKING:
    from smallfleet.models.base import ChatModel

__all__ = ["JUDGE_PROMPT", "Judge", "Verdict"]

JUDGE_PROMPT = """You grade an assistant's answer against a reference answer written by an expert.
The answer is correct when it means the same as the reference for the user's request: the same
facts, decision or label; wording, order and formatting may differ. Reply with JSON only:
{"correct": true or false, "score": a number from 0 to 1, "reason": "one short sentence"}"""


@dataclass(frozen=True)
class Verdict:
    correct: bool
    score: float
    reason: str = ""


class Judge:
    """Grades answers with ``model`` (e.g. the large model from the registry)."""

    def __init__(self, model: ChatModel, prompt: str = JUDGE_PROMPT, model_name: str | None = None) -> None:
        self.model = model
        self.prompt = prompt
        self.model_name = model_name or getattr(model, "name", "judge")

    def request(self, task: ChatRequest, answer: str, reference: str) -> ChatRequest:
        conversation = "\n".join(
            f"{m.role}: {m.content if isinstance(m.content, str) else task.last_user_text()}"
            for m in task.messages
            if m.role in ("system", "developer", "user")
        )
        user = (
            f"## The request\n{conversation}\n\n## Reference answer\n{reference}\n\n"
            f"## Answer to grade\n{answer}\n\nYour verdict as JSON:"
        )
        return ChatRequest(
            model=self.model_name,
            messages=[{"role": "system", "content": self.prompt}, {"role": "user", "content": user}],
            response_format={"type": "json_object"},
            temperature=0,
        )

    async def grade(self, task: ChatRequest, answer: str, reference: str) -> Verdict:
        """The judge's verdict on ``answer`` for ``task``, given the ``reference`` answer."""
        response = await self.model.complete(self.request(task, answer, reference))
        return parse_verdict(response.text)


def parse_verdict(text: str) -> Verdict:
    try:
        data = parse_json(text)
    except ValueError:
        raise OutputInvalid(f"The judge did not answer JSON: {text[:200]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("correct"), bool):
        raise OutputInvalid(f'The judge\'s JSON has no boolean "correct": {text[:200]!r}')
    raw = data.get("score", 1.0 if data["correct"] else 0.0)
    try:
        score = min(1.0, max(0.0, float(raw)))
    except (TypeError, ValueError):
        raise OutputInvalid(f'The judge\'s "score" is not a number: {raw!r}') from None
    return Verdict(correct=data["correct"], score=score, reason=str(data.get("reason", "")))
