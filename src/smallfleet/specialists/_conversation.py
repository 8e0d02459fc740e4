"""The text the tool caller and the extractor read: the conversation a request carries.

An agent's request holds the whole conversation so far. An argument may have been given
three turns ago, offered by the assistant and accepted with a "yes", or given and then
changed ("actually, make it 7 pm"). So the span specialists read the turns, one per line,
oldest first, each led by its role::

    user: Book a table for two at 6 pm.
    assistant: At which restaurant?
    user: Sushi Ran. Actually, make it 7 pm.

A request with a single user message (and nothing but system messages beside it) reads
as that message alone, exactly as before. A conversation longer than ``max_chars`` keeps
its newest turns: the oldest are dropped first (whole turns; the last turn is always
kept, and the encoder's own window then cuts its end). Tool results are shortened.

Where one value is said in several turns, training marks only its latest mention, and
:func:`prefer_latest` lets a later mention win over an earlier one the model finds about
as likely: a value is filled from where it stands now.
"""

from __future__ import annotations

import json
from typing import Any

from smallfleet.types import ChatRequest, content_text

__all__ = [
    "DECISION_CHARS",
    "MAX_CHARS",
    "conversation_text",
    "latest_mentions",
    "line_of",
    "prefer_latest",
]

#: About 256 tokens of English: what the encoder's window holds beside a query.
MAX_CHARS = 900
#: The tail the call-or-reply decision reads (the last few turns decide it).
DECISION_CHARS = 500
#: A tool result's share of the text.
TOOL_RESULT_CHARS = 160
#: A later mention replaces the model's pick when at least this share as probable.
LATEST_RATIO = 0.3


def _turn(message: Any) -> str | None:
    role = message.role
    if role in ("system", "developer"):
        return None
    if role == "assistant":
        parts = [content_text(message.content)] if message.content else []
        for tc in message.tool_calls or []:
            parts.append(f"[called {tc.function.name} {_short_args(tc.function.arguments)}]")
        text = " ".join(p for p in parts if p)
    elif role in ("tool", "function"):
        raw = message.content if isinstance(message.content, str) else content_text(message.content or "")
        text = raw if len(raw) <= TOOL_RESULT_CHARS else raw[: TOOL_RESULT_CHARS - 1] + "…"
    else:
        text = content_text(message.content)
    text = " ".join(text.split())
    return f"{role}: {text}" if text else None


def _short_args(arguments: str | None) -> str:
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return ""
    if not isinstance(args, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in args.items())


def conversation_text(request: ChatRequest, max_chars: int = MAX_CHARS) -> str:
    """The turns of ``request`` as ``role: text`` lines, newest kept within ``max_chars``.

    A request whose only turn is one user message gives that message's text, unchanged.
    """
    turns = [m for m in request.messages if m.role not in ("system", "developer")]
    if len(turns) == 1 and turns[0].role == "user":
        return content_text(turns[0].content)
    lines = [t for t in (_turn(m) for m in turns) if t]
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if kept and size + len(line) + 1 > max_chars:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


def line_of(text: str, position: int) -> int:
    """Which line (turn) of ``text`` the character at ``position`` is on."""
    return text.count("\n", 0, position)


def latest_mentions(spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """The spans of one value on the latest line (turn) that mentions it."""
    if len(spans) < 2 or "\n" not in text:
        return spans
    last = max(line_of(text, s) for s, _ in spans)
    return [(s, e) for s, e in spans if line_of(text, s) == last]


def prefer_latest(result: Any, text: str, ratio: float = LATEST_RATIO) -> None:
    """Let a later turn's mention replace the model's first span when nearly as probable.

    ``result`` is a :class:`~smallfleet.specialists._spans.SpanResult`; only its first span is
    replaced (by the latest candidate at least ``ratio`` times as probable, not overlapping
    another kept span), keeping the first span's probability as the confidence.
    """
    if "\n" not in text or not result.spans:
        return
    first = result.spans[0]
    here = line_of(text, first.start)
    later = [
        s
        for s in result.top
        if line_of(text, s.start) > here
        and s.prob >= ratio * first.prob
        and not any(s.start < o.end and o.start < s.end for o in result.spans[1:])
    ]
    if later:
        pick = max(later, key=lambda s: (line_of(text, s.start), s.prob))
        pick.prob = max(pick.prob, first.prob)
        result.spans[0] = pick
