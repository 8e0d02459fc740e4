"""Chat models: the :class:`ChatModel` seam, its backends, and the alias registry."""

from smallfleet.models.base import ChatModel
from smallfleet.models.registry import ModelRegistry

__all__ = ["ChatModel", "ModelRegistry"]
