"""Test doubles for the far side of smallfleet's seams (never for smallfleet's own parts)."""

from smallfleet.testing.upstream import Reply, ScriptedUpstream, default_reply

__all__ = ["Reply", "ScriptedUpstream", "default_reply"]
