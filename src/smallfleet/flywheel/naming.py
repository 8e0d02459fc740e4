"""Route names that say what a route does and can be read aloud: ``support-issue-refund``,
``support-extract-ticket-entities``, ``support-classify-intent``.

A name comes from what identifies the task type, in this order: the tool its answers call,
the response format's name (or its fields), the label set or what the system prompt asks
to classify, else the system prompt's most telling words; with the workload in front when
the traffic has one. It depends only on the traffic, never on the order clusters were
found in, so the same traffic gets the same name in every run (and a later run keeps the
name of the route whose matcher claims the task type, renamed or not).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["route_name", "slug", "workload_of"]

#: Verbs that ask for a label, and the words that may sit between one and its object.
_ASKS = re.compile(
    r"\b(classify|categori[sz]e|rate|label|tag|detect|identify|score|grade)\b"
    r"(?:\s+(?:the|its|their|this|each|how|whether|of|customer's|user's|message's))*\s+([a-z]+)",
    re.IGNORECASE,
)
_WORDS_SKIPPED = {"into", "one", "exactly", "message", "messages", "request", "text", "customer", "user"}
_MAX = 60


def slug(text: str, limit: int = _MAX) -> str:
    """``text`` as lower-case words joined by ``-`` (at most ``limit`` characters, cut at a word)."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(s) > limit:  # cut at a word: keep whole words only
        s = s[:limit] if s[limit] == "-" else s[:limit].rsplit("-", 1)[0]
    return s or "task"


def _system(requests: Sequence[Mapping[str, Any]]) -> str:
    for req in requests:
        for m in req.get("messages") or []:
            if m.get("role") in ("system", "developer") and isinstance(m.get("content"), str):
                return str(m["content"])
    return ""


def _labelled(system: str, labels: Sequence[str]) -> str:
    m = next((m for m in _ASKS.finditer(system) if m.group(2).lower() not in _WORDS_SKIPPED), None)
    if m is not None:
        return f"{m.group(1).lower()}-{m.group(2).lower()}"
    if 0 < len(labels) <= 4:
        return "label-" + "-".join(sorted(labels))
    return f"label-{len(labels)}-classes" if labels else "label"


def _format_name(formats: Sequence[str], requests: Sequence[Mapping[str, Any]]) -> str:
    named = next(
        (f.split(":", 1)[1] for f in formats if f.startswith("json_schema:") and f != "json_schema:"), ""
    )
    if named:
        return f"extract-{named}"
    for req in requests:
        spec = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
        keys = list((spec.get("properties") or {}).keys())[:3]
        if keys:
            return "extract-" + "-".join(keys)
    return "extract-json"


def _tools(shape: Mapping[str, Any], requests: Sequence[Mapping[str, Any]]) -> str:
    called = list(shape.get("tools") or [])
    if not called:  # a tool shape whose calls were not counted: the tools offered, most common first
        offered = Counter(
            str((t.get("function") or {}).get("name")) for req in requests for t in req.get("tools") or []
        )
        called = [name for name, _ in offered.most_common(2)]
    return "-or-".join(called[:2]) or "call-tool"


def route_name(
    shape: Mapping[str, Any],
    requests: Sequence[Mapping[str, Any]],
    *,
    formats: Sequence[str] = (),
    labels: Sequence[str] = (),
    keywords: Sequence[str] = (),
    workload: str | None = None,
) -> str:
    """The name of a task type's route (a slug; see the module docstring).

    ``shape``: the answers' output shape (``kind`` and, for tool calls, ``tools`` most called
    first); ``requests``: a sample of the task type's requests (dicts); ``labels``: the label
    set of a label task; ``keywords``: the cluster's telling words, used for free text.
    """
    kind = shape.get("kind")
    if kind == "tool_call":
        what = _tools(shape, requests)
    elif kind == "json":
        what = _format_name(formats, requests)
    elif kind == "label":
        what = _labelled(_system(requests), labels)
    else:
        what = "reply-" + "-".join(list(keywords)[:2]) if keywords else "reply"
    prefix = slug(workload, 24) + "-" if workload and workload != "default" else ""
    return slug(prefix + slug(what))


def workload_of(workloads: Sequence[str | None]) -> str | None:
    """The workload a task type's traffic comes from when it is one (None: several, or none)."""
    seen = {w for w in workloads if w}
    return next(iter(seen)) if len(seen) == 1 else None
