"""What every converter shares: a request/response pair, its gold answer, the JSONL line.

A :class:`Pair` is one call an agent makes to its large model: the OpenAI chat request,
the large model's chat.completion (the dataset's gold annotation), and what the
benchmark needs to score a served answer against the gold. ``to_line`` writes it in the
JSONL shape ``smallfleet traces import`` reads (``{"id", "request", "response", ...}``).

Tokens, latency and cost of the large model are modelled as in ``smallfleet demo``:
about four characters a token, gpt-4o list prices, a lognormal time to first token plus
14-28 ms per output token.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BASE_TIME",
    "PRICE_PER_M",
    "REQUEST_MODEL",
    "RESPONSE_MODEL",
    "Gold",
    "Pair",
    "agrees",
    "answer_of",
    "default_data_dir",
    "json_response",
    "label_response",
    "large_cost_usd",
    "large_latency_ms",
    "spread_times",
    "stable_id",
    "text_response",
    "tokens",
    "tool_call_response",
    "write_jsonl",
]

REPO = Path(__file__).resolve().parents[2]
REQUEST_MODEL = "gpt-4o"
RESPONSE_MODEL = "gpt-4o-2024-08-06"
#: gpt-4o list prices, USD per 1M tokens (input, output): the demo's, and the product's built-in table.
PRICE_PER_M = (2.50, 10.00)
#: Training traffic is spread over the week before this instant (2026-11-30 00:00 UTC).
BASE_TIME = 1_796_083_200.0
WEEK = 7 * 86_400.0

Kind = Literal["label", "json", "tool_call", "text"]


@dataclass(frozen=True)
class Gold:
    """The large model's (the dataset's) answer, in a form to compare served answers with."""

    kind: Kind
    value: Any  # label: str; json: dict; tool_call: list of (name, arguments); text: str


@dataclass
class Pair:
    """One call of the agent to its large model, with the gold answer."""

    id: str
    request: dict[str, Any]
    response: dict[str, Any]
    gold: Gold
    task: str  # the task type as the dataset knows it (for per-task figures)
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. service, seen, intent
    created_at: float = 0.0

    @property
    def usage(self) -> tuple[int, int]:
        u = self.response.get("usage") or {}
        return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)

    def to_line(self, workload: str) -> dict[str, Any]:
        """The line ``smallfleet traces import`` reads, with the large model's latency."""
        return {
            "id": self.id,
            "request": self.request,
            "response": self.response,
            "workload": workload,
            "created_at": self.created_at,
            "latency_ms": large_latency_ms(self),
        }


def default_data_dir(name: str) -> Path | None:
    """``../shared/data/NAME`` beside the repository, when it exists."""
    path = REPO.parent / "shared" / "data" / name
    return path if path.is_dir() else None


def stable_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def tokens(text: str) -> int:
    return max(1, round(len(text) / 4))


def _prompt_tokens(request: dict[str, Any]) -> int:
    n = 3
    for m in request["messages"]:
        n += tokens(str(m.get("content") or "")) + 4
        if m.get("tool_calls"):
            n += tokens(json.dumps(m["tool_calls"]))
    for key in ("tools", "response_format"):
        if key in request:
            n += tokens(json.dumps(request[key]))
    return n


def _completion(request: dict[str, Any], message: dict[str, Any], finish: str, output: str) -> dict[str, Any]:
    p = _prompt_tokens(request)
    c = tokens(output) + (6 if finish == "tool_calls" else 1)
    return {
        "id": "chatcmpl-" + stable_id(json.dumps(request, sort_keys=True), output)[:24],
        "object": "chat.completion",
        "created": 0,
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def text_response(request: dict[str, Any], text: str) -> dict[str, Any]:
    return _completion(request, {"role": "assistant", "content": text}, "stop", text)


label_response = text_response


def json_response(request: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    return text_response(request, json.dumps(obj, ensure_ascii=False))


def tool_call_response(request: dict[str, Any], calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    tool_calls = [
        {
            "id": f"call_{stable_id(name, json.dumps(args, sort_keys=True), str(i))[:16]}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
        }
        for i, (name, args) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return _completion(request, message, "tool_calls", json.dumps(tool_calls))


def large_latency_ms(pair: Pair) -> float:
    """The large model's modelled latency for this call (the demo's model), stable per call."""
    rng = random.Random(f"latency:{pair.id}")
    p, c = pair.usage
    ttft = rng.lognormvariate(6.45, 0.3) + 0.05 * p
    return round(ttft + c * rng.uniform(14, 28), 1)


def large_cost_usd(pair: Pair) -> float:
    p, c = pair.usage
    return (p * PRICE_PER_M[0] + c * PRICE_PER_M[1]) / 1e6


def spread_times(pairs: list[Pair], start: float, span: float) -> None:
    """Give ``pairs`` (in the order they happen) increasing times over ``span`` seconds from ``start``."""
    step = span / max(1, len(pairs))
    for i, p in enumerate(pairs):
        p.created_at = round(start + i * step, 3)


def write_jsonl(pairs: list[Pair], path: str | Path, workload: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p.to_line(workload), ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------- scoring served answers


def answer_of(response: dict[str, Any], kind: Kind) -> Any:
    """What a chat.completion answers, in the form of a :class:`Gold` of ``kind`` (None: unreadable).

    A tool call is ``[(name, arguments)]``; a text or label is the content; a JSON answer
    is the parsed object. An answer of another shape than the gold's is returned in its
    own shape (a tool call where text was due is a list), so it never agrees.
    """
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    calls = message.get("tool_calls") or []
    if calls:
        out = []
        for c in calls:
            fn = c.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = fn.get("arguments")
            out.append((fn.get("name"), args))
        return out
    content = message.get("content")
    if kind == "json" and isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content


def agrees(gold: Gold, served: Any) -> bool:
    """Labels and text exactly (surrounding blanks aside), JSON objects as whole objects,
    tool calls by exact name and arguments after JSON parsing (in order)."""
    if gold.kind in ("label", "text"):
        return isinstance(served, str) and served.strip() == str(gold.value).strip()
    if gold.kind == "json":
        return isinstance(served, dict) and served == gold.value
    if not isinstance(served, list) or len(served) != len(gold.value):
        return False
    return all(s[0] == g[0] and s[1] == g[1] for s, g in zip(served, gold.value, strict=True))
