"""Recognising a request's task type online, in well under a millisecond when it can be.

A route's matcher is a small JSON-able dict the flywheel builds from the cluster's
members (:func:`build_matchers`):

- ``keys``: the *static keys* the cluster owns. A static key is what an agent step
  sends every time: its system prompt (digits masked), its tool names, its response
  format. When the cluster holds nearly all of a key's traffic, a request with that
  key belongs to the cluster, and no embedding is needed (the common case: one agent
  step, one task type);
- ``cluster``: for everything else, the flywheel's own
  :class:`~smallfleet.flywheel.cluster.ClusterMatcher` for the cluster: the request's
  signature is embedded the way the flywheel clustered, and it matches when it is close
  enough to the centroid and its tool set and response format are ones the cluster had.

:class:`RouteMatcher` holds the matchers of every serving route and answers
``match(request) -> route name | None``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallfleet.flywheel.cluster import Clustering
    from smallfleet.types import ChatRequest

__all__ = ["RouteMatcher", "build_matchers", "static_key", "static_key_of_dict"]


_DIGITS = re.compile(r"\d+")
#: A key is owned by a cluster when the cluster holds at least this share of its traffic.
OWNED_SHARE = 0.98


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def static_key_of_dict(request: dict[str, Any]) -> str:
    """The static key of a request given as a JSON dict."""
    system = "\n".join(
        _content_text(m.get("content"))
        for m in request.get("messages") or []
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    )
    tools = sorted(
        str((t.get("function") or {}).get("name"))
        for t in request.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    )
    rf = request.get("response_format") or {}
    fmt = rf.get("type", "") if isinstance(rf, dict) else ""
    if isinstance(rf, dict) and isinstance(rf.get("json_schema"), dict):
        fmt += ":" + str(rf["json_schema"].get("name", ""))
    raw = _DIGITS.sub("#", system.strip()) + "\x00" + ",".join(tools) + "\x00" + fmt
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def static_key(request: ChatRequest) -> str:
    """What an agent step sends every time (system prompt with digits masked, tools, format), hashed."""
    return static_key_of_dict(request.to_dict())


def build_matchers(requests: Sequence[dict[str, Any]], clustering: Clustering) -> dict[int, dict[str, Any]]:
    """One matcher dict per cluster label of ``clustering`` (noise, ``-1``, gets none)."""
    keys = [static_key_of_dict(r) for r in requests]
    key_totals = Counter(keys)
    members: dict[int, Counter[str]] = {}
    for key, label in zip(keys, clustering.labels, strict=True):
        if label >= 0:
            members.setdefault(int(label), Counter())[key] += 1
    out: dict[int, dict[str, Any]] = {}
    for label, mine in members.items():
        owned = sorted(k for k, n in mine.items() if n / key_totals[k] >= OWNED_SHARE)
        out[label] = {"version": 1, "keys": owned, "cluster": clustering.matcher_for(label).to_dict()}
    return out


class RouteMatcher:
    """Which serving route, if any, a request belongs to."""

    def __init__(self, entries: Sequence[tuple[str, dict[str, Any]]], encoder: str | None = None) -> None:
        self.names = [name for name, _ in entries]
        self._owner: dict[str, str] = {}
        for name, spec in entries:
            for k in spec.get("keys") or []:
                self._owner.setdefault(k, name)
        clusters = [(name, spec["cluster"]) for name, spec in entries if spec.get("cluster")]
        self._clusters: Any = None
        if clusters:  # the embedding side loads only when a route needs it
            from smallfleet.flywheel.cluster import ClusterMatcher

            self._clusters = ClusterMatcher.combine(clusters)

    def match_dict(self, request: dict[str, Any]) -> str | None:
        """The route name for a request given as a JSON dict, or None."""
        owner = self._owner.get(static_key_of_dict(request))
        if owner is not None:
            return owner
        if self._clusters is None:
            return None
        return self._clusters.match(request)

    def match(self, request: ChatRequest) -> str | None:
        """The route name for ``request``, or None (the large model answers)."""
        return self.match_dict(request.to_dict())
