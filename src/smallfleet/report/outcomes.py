"""Why a flywheel run promoted what it did: one readable line per task type that got no route.

Used by the CLI's summary, the demo and the HTML report, so all three say the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["not_promoted_reasons", "nothing_promoted_hint"]


def _reason(cluster: Mapping[str, Any], min_examples: int | None) -> str:
    status = cluster.get("status") or ""
    size = int(cluster.get("size") or 0)
    if status == "too_small":
        if min_examples is not None and size < min_examples:
            return f"{size} calls, fewer than min_examples ({min_examples})"
        return f"{size} calls, too few to split into training, validation and test answers"
    if status == "no_candidate":
        return f"no specialist kind fits its {cluster.get('shape') or 'output'} answers"
    reasons = [
        f"{c.get('kind')}: {c.get('reason')}"
        for c in cluster.get("candidates") or []
        if c.get("reason") and not c.get("promoted")
    ]
    return "; ".join(reasons) or "no candidate met the target"


def not_promoted_reasons(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(task type, why) for every task type of the run that has no route, largest first."""
    min_examples = (summary.get("params") or {}).get("min_examples")
    return [
        (str(c.get("key") or c.get("name")), _reason(c, min_examples))
        for c in summary.get("clusters") or []
        if c.get("status") != "promoted"
    ]


def nothing_promoted_hint(summary: Mapping[str, Any]) -> str | None:
    """What to do when a run promoted nothing (None when something was promoted)."""
    clusters = summary.get("clusters") or []
    if any(c.get("status") == "promoted" for c in clusters):
        return None
    params = summary.get("params") or {}
    calls = int((summary.get("traffic") or {}).get("calls") or 0)
    if not clusters:
        return (
            f"no recurring task type was found in {calls:,} calls: the flywheel needs repeated "
            "calls of the same kind (same system prompt, tools or response format)."
        )
    statuses = {c.get("status") for c in clusters}
    if statuses <= {"too_small"}:
        return (
            f"every task type is smaller than min_examples ({params.get('min_examples')}): record more "
            "traffic, or lower flywheel.min_examples (--min-examples)."
        )
    return (
        f"no candidate kept answers that reach {float(params.get('target_accuracy') or 0.95):.0%} with "
        f"{float(params.get('confidence') or 0.95):.0%} confidence at coverage of at least "
        f"{float(params.get('min_coverage') or 0.0):.0%}: more traffic per task type narrows the bound; "
        "a lower --target-accuracy or flywheel.confidence asks for less."
    )
