"""The one seam every answering thing implements: :class:`ChatModel`.

A remote LLM, a local causal LM and every trained specialist answer the same
OpenAI-shaped request with the same response type, and declare what they can do
as class flags rather than being told apart with ``isinstance``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from smallfleet.types import ChatChunk, ChatRequest, ChatResponse, response_to_chunks

__all__ = ["ChatModel"]


class ChatModel(ABC):
    """Something that answers chat requests.

    Subclasses implement :meth:`complete` (abstract: a class without it cannot be
    instantiated); :meth:`stream` defaults to cutting the complete response into chunks,
    which is right for models that cannot stream token by token (specialists answer in
    milliseconds anyway).
    """

    #: The model streams tokens as they are produced.
    supports_streaming: bool = False
    #: The model can answer with ``tool_calls``.
    supports_tools: bool = False
    #: The model honours ``response_format`` json_schema.
    supports_json_schema: bool = False

    #: The name the model reports in responses.
    name: str = "model"

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """The answer to ``request``: the one method a backend must implement."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        response = await self.complete(request)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        for chunk in response_to_chunks(response, include_usage=include_usage):
            yield chunk

    async def aclose(self) -> None:  # noqa: B027 - a hook: most models hold nothing to release
        """Release connections or memory held by the model."""

    def capabilities(self) -> dict[str, bool]:
        return {
            "streams": self.supports_streaming,
            "tools": self.supports_tools,
            "json_schema": self.supports_json_schema,
        }
