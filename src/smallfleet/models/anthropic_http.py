"""Anthropic's Messages API as a :class:`ChatModel` (``backend: anthropic``).

Speaks ``POST {base_url}/messages`` with ``x-api-key`` and ``anthropic-version``,
translating chat ↔ messages at the seam (:mod:`smallfleet.gateway.messages_api`),
streaming included, so a chat-completions or a Messages request through the
gateway can be served by Claude or anything that speaks its API. The connection
(pooled client, retries with backoff on 429, 5xx and 529, typed errors) is
:class:`~smallfleet.models.openai_http.OpenAICompatible`'s; only the wire format
differs. Like it, two layers: ``complete_raw`` / ``stream_raw`` take a chat
body as a dict and give chat dicts; ``complete`` / ``stream`` the wire types.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from smallfleet.errors import ConfigError, UpstreamError
from smallfleet.models.openai_http import OpenAICompatible, _dumps

if TYPE_CHECKING:
    import httpx

    from smallfleet.config import AnthropicModelConfig, Settings

__all__ = ["ANTHROPIC_VERSION", "AnthropicMessages"]

#: The ``anthropic-version`` header sent unless the config names another.
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicMessages(OpenAICompatible):
    """A chat model behind Anthropic's Messages API.

    ``max_tokens`` is required by that API: ``default_max_tokens`` is sent when a
    request sets none. ``response_format`` is refused (400), not dropped.
    """

    supports_json_schema = False

    def __init__(
        self,
        base_url: str = "https://api.anthropic.com/v1",
        model: str = "claude-sonnet-4-5",
        api_key: str | None = None,
        anthropic_version: str = ANTHROPIC_VERSION,
        default_max_tokens: int = 4096,
        **kw: Any,
    ) -> None:
        super().__init__(base_url, model, api_key, **kw)
        self.url = f"{self.base_url}/messages"
        self.anthropic_version = anthropic_version
        self.default_max_tokens = default_max_tokens

    @classmethod
    def from_config(  # type: ignore[override]
        cls, alias: str, cfg: AnthropicModelConfig, settings: Settings | None = None
    ) -> AnthropicMessages:
        """Build from a ``models.<alias>`` entry; the key comes from the env var it names."""
        api_key = None
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"Model {alias!r} reads its API key from the environment variable {cfg.api_key_env}, "
                    f"which is not set. Export it first: export {cfg.api_key_env}=..."
                )
        return cls(
            base_url=cfg.base_url,
            model=cfg.model or alias,
            api_key=api_key,
            anthropic_version=cfg.anthropic_version,
            default_max_tokens=cfg.max_tokens,
            headers=cfg.headers,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            max_retries=cfg.max_retries,
            backoff_base=cfg.backoff_base,
            backoff_max=cfg.backoff_max,
            max_connections=cfg.max_connections,
            name=alias,
        )

    def __repr__(self) -> str:  # never shows the key
        return f"AnthropicMessages(base_url={self.base_url!r}, model={self.model!r})"

    def _http(self) -> httpx.AsyncClient:
        """The shared client, with Anthropic's headers (``x-api-key``, not a bearer token)."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is loop and not self._client.is_closed:
            return self._client
        import httpx

        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": self.anthropic_version,
        }
        headers.update(self._extra_headers)
        if self._api_key:
            headers["x-api-key"] = self._api_key
        timeout = self.read_timeout
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(connect=self.connect_timeout, read=timeout, write=timeout, pool=timeout),
            limits=httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            ),
            follow_redirects=False,
            trust_env=False,
            transport=self.transport_factory(self.max_connections) if self.transport_factory else None,
        )
        self._client_loop = loop
        return self._client

    def _messages_body(self, body: Mapping[str, Any] | bytes) -> dict[str, Any]:
        """The Messages API body of a chat body (a dict, or its JSON bytes)."""
        from smallfleet.gateway.messages_api import chat_request_to_messages

        chat = json.loads(body) if isinstance(body, bytes) else dict(body)
        chat["model"] = self.model
        return chat_request_to_messages(chat, self.default_max_tokens)

    # ------------------------------------------------------------ complete

    async def complete_raw(self, body: Mapping[str, Any] | bytes) -> dict[str, Any]:
        """POST a chat body, translated, to ``/messages``; the answer as a chat completion dict."""
        import httpx

        payload = self._messages_body(body)
        payload.pop("stream", None)
        content = _dumps(payload)
        client = self._http()

        async def attempt(n: int) -> dict[str, Any]:
            try:
                resp = await client.post(self.url, content=content)
            except httpx.HTTPError as e:
                raise self._transport_error(e) from None
            if resp.status_code >= 400:
                raise self._status_error(resp.status_code, resp.text, resp.headers, n)
            return self._decode(resp.content, resp.status_code)

        return await self._with_retries(attempt)

    def _decode(self, raw: bytes, status: int) -> dict[str, Any]:
        from smallfleet.gateway.messages_api import messages_response_to_chat

        try:
            data = json.loads(raw)
        except ValueError as e:
            problem = f"a body that is not JSON ({e})"
        else:
            if isinstance(data, dict) and isinstance(data.get("content"), list):
                return messages_response_to_chat(data)
            problem = "an error" if isinstance(data, dict) and "error" in data else "no 'content' list"
        text = raw.decode("utf-8", "replace")
        raise UpstreamError(
            f"{self.url} answered with {problem}: {self._snippet(text)}", status=status, body=text
        )

    # ------------------------------------------------------------ stream

    async def stream_raw(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a chat body, translated, with ``stream: true``; yield chat chunks as dicts.

        The usage chunk (no choices) comes last when ``stream_options.include_usage``
        asks for it. Retries happen only before the first byte; a stream that stops
        before ``message_stop`` raises :class:`UpstreamError`, and so does an
        ``error`` event.
        """
        import httpx

        from smallfleet.gateway.messages_api import MessagesToChatStream

        payload = self._messages_body(body)
        payload["stream"] = True
        content = _dumps(payload)
        client = self._http()
        headers = {"accept": "text/event-stream"}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def attempt(n: int) -> httpx.Response:
            req = client.build_request("POST", self.url, content=content, headers=headers)
            try:
                resp = await client.send(req, stream=True)
            except httpx.HTTPError as e:
                raise self._transport_error(e) from None
            if resp.status_code >= 400:
                try:
                    raw = await resp.aread()
                except httpx.HTTPError:
                    raw = b""
                finally:
                    await resp.aclose()
                raise self._status_error(resp.status_code, raw.decode("utf-8", "replace"), resp.headers, n)
            return resp

        resp: httpx.Response = await self._with_retries(attempt)
        try:
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                # One JSON body instead of a stream: chunk it.
                from smallfleet.types import ChatResponse, response_to_chunks

                data = self._decode(await self._read_all(resp), resp.status_code)
                chunks = response_to_chunks(ChatResponse.model_validate(data), include_usage=include_usage)
                for chunk in chunks:
                    yield chunk.to_dict()
                return
            translate = MessagesToChatStream(include_usage=include_usage)
            events = self._events(resp)  # each SSE event's data, parsed; an error event raises
            try:
                async for event in events:
                    for chunk in translate.feed(event):
                        yield chunk
                    if translate.stopped:
                        break
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            if not translate.stopped:
                raise UpstreamError(f"The stream from {self.url} ended early, before message_stop.")
        finally:
            await resp.aclose()
