"""Any OpenAI-compatible endpoint as a :class:`ChatModel`.

OpenAI itself, vLLM, Ollama, the llama.cpp server, SGLang, LoRAX: anything that
answers ``POST {base_url}/chat/completions``. One pooled ``httpx.AsyncClient`` per
instance, built on first use; bounded retries with jittered exponential backoff
on connection errors, 429 and 5xx (honouring ``Retry-After``); typed errors that
carry the status and the body the endpoint sent.

Two layers, so the gateway can forward with as little parsing as possible:

- :meth:`OpenAICompatible.complete_raw` / :meth:`OpenAICompatible.stream_raw`
  take and give plain dicts (the JSON body; the parsed SSE chunks);
- :meth:`OpenAICompatible.complete` / :meth:`OpenAICompatible.stream` are the
  :class:`ChatModel` methods, built on them, with the pydantic wire types.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from smallfleet.errors import ConfigError, RateLimited, UpstreamError, UpstreamRejected, UpstreamTimeout
from smallfleet.models.base import ChatModel
from smallfleet.types import ChatChunk, ChatRequest, ChatResponse, response_to_chunks

if TYPE_CHECKING:
    import httpx

    from smallfleet.config import OpenAIModelConfig, Settings

__all__ = ["OpenAICompatible", "parse_retry_after"]

_BODY_SNIPPET = 500  # characters of an upstream body quoted in an error message
#: 4xx statuses that are not the client's fault: 408 (retried), and the gateway's own upstream
#: key, permissions or base_url/model name (401, 403, 404: a fallback may still answer).
_GATEWAY_SIDE = frozenset({401, 403, 404, 408, 429})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _retry_after(headers: httpx.Headers) -> float | None:
    # OpenAI also sends the finer-grained retry-after-ms; prefer it when present.
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


class _Retry(Exception):
    """One attempt failed in a way worth another try (internal)."""

    def __init__(self, error: Exception, wait: float | None = None) -> None:
        self.error = error
        self.wait = wait


class OpenAICompatible(ChatModel):
    """A chat model behind an OpenAI-compatible HTTP endpoint.

    Nothing is connected at construction: the client is built on the first call.
    ``model`` replaces the ``model`` field of every request; all other fields,
    unknown ones included, are passed on unchanged.
    """

    supports_streaming = True
    supports_tools = True
    supports_json_schema = True

    #: Builds the httpx transport from ``max_connections`` (None: httpx's own pool). The gateway sets
    #: :class:`smallfleet.gateway.transport.FastTransport`, a leaner pool for plain-HTTP upstreams.
    transport_factory: Any = None

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_connections: int = 256,
        name: str | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.name = name or model
        self._api_key = api_key or None
        self._extra_headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(
        cls, alias: str, cfg: OpenAIModelConfig, settings: Settings | None = None
    ) -> OpenAICompatible:
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
        return f"OpenAICompatible(base_url={self.base_url!r}, model={self.model!r})"

    # ------------------------------------------------------------ connection

    def _http(self) -> httpx.AsyncClient:
        """The shared client, built on first use (and again if the event loop changed)."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is loop and not self._client.is_closed:
            return self._client
        import httpx

        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(self._extra_headers)
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(
                connect=self.connect_timeout,
                read=self.read_timeout,
                write=self.read_timeout,
                pool=self.read_timeout,
            ),
            limits=httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            ),
            follow_redirects=False,
            trust_env=False,
            transport=self.transport_factory(self.max_connections) if self.transport_factory else None,
        )
        self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except RuntimeError:  # built on an event loop that is gone: nothing left to close
                pass

    # ------------------------------------------------------------ helpers

    def _scrub(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    def _snippet(self, body: str) -> str:
        body = self._scrub(body.strip())
        return body if len(body) <= _BODY_SNIPPET else body[:_BODY_SNIPPET] + "…"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        base = min(self.backoff_max, self.backoff_base * (2**attempt))
        return base * (0.5 + random.random() / 2)  # jitter: between half and all of it

    def body_for(self, request: ChatRequest | Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body sent upstream: the request with ``model`` set to the upstream name."""
        body = request.to_dict() if isinstance(request, ChatRequest) else dict(request)
        body["model"] = self.model
        return body

    def _status_error(self, status: int, text: str, headers: httpx.Headers, attempts: int) -> Exception:
        """The error for an error status; wrapped in _Retry when another attempt may help."""
        tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts > 1 else ""
        where = f"{self.url} answered HTTP {status}"
        if status == 429:
            wait = _retry_after(headers)
            return _Retry(
                RateLimited(
                    f"{where} (rate limited){tries}: {self._snippet(text)}",
                    status=429,
                    body=text,
                    retry_after=wait,
                ),
                wait,
            )
        hint = ""
        if status == 404 and not self.base_url.endswith("/v1"):
            hint = " (check base_url: OpenAI-compatible servers usually serve under /v1)"
        elif status == 401:
            hint = " (check the API key: " + (
                "the variable named by api_key_env)" if self._api_key else "none is set; add api_key_env)"
            )
        message = f"{where}{tries}{hint}: {self._snippet(text)}"
        if 400 <= status < 500 and status not in _GATEWAY_SIDE:
            # The client's own error (bad parameters, too many tokens...): no retry, no fallback.
            return UpstreamRejected(message, status=status, body=text)
        err = UpstreamError(message, status=status, body=text)
        if status >= 500 or status == 408:
            return _Retry(err, _retry_after(headers))
        return err

    def _transport_error(self, e: Exception) -> Exception:
        import httpx

        kind = type(e).__name__
        detail = self._scrub(str(e)) or kind
        if isinstance(e, httpx.ConnectTimeout):
            return _Retry(
                UpstreamTimeout(f"Connecting to {self.url} timed out after {self.connect_timeout}s.")
            )
        if isinstance(e, httpx.TimeoutException):
            return UpstreamTimeout(f"{self.url} did not answer within {self.read_timeout}s ({kind}).")
        if isinstance(e, httpx.ConnectError):
            return _Retry(UpstreamError(f"Could not connect to {self.url}: {detail}"))
        if isinstance(e, (httpx.NetworkError, httpx.RemoteProtocolError)):
            return _Retry(UpstreamError(f"The connection to {self.url} broke: {detail}"))
        return UpstreamError(f"Request to {self.url} failed: {kind}: {detail}")

    async def _with_retries(self, attempt_fn: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await attempt_fn(attempt + 1)
            except _Retry as r:
                if attempt >= self.max_retries:
                    raise r.error from None
                await asyncio.sleep(self._backoff(attempt, r.wait))
                attempt += 1

    # ------------------------------------------------------------ complete

    async def complete_raw(self, body: Mapping[str, Any] | bytes) -> dict[str, Any]:
        """POST ``body`` (a dict, or JSON bytes sent as they are) and give the decoded JSON answer.

        The fast path for forwarding: no pydantic on either side. The answer is
        checked to be a JSON object with a ``choices`` list; errors are typed as
        in :meth:`complete`.
        """
        import httpx

        content = body if isinstance(body, bytes) else _dumps(body)
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
        try:
            data = json.loads(raw)
        except ValueError as e:
            problem = f"a body that is not JSON ({e})"
        else:
            if not isinstance(data, dict):
                problem = "JSON that is not an object"
            elif isinstance(data.get("choices"), list):
                return data  # the fast path: nothing else is looked at
            elif "error" in data:
                problem = "an error"
            else:
                problem = "no 'choices' list"
        text = raw.decode("utf-8", "replace")
        raise UpstreamError(
            f"{self.url} answered with {problem}: {self._snippet(text)}", status=status, body=text
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        body = self.body_for(request)
        body.pop("stream", None)
        body.pop("stream_options", None)
        data = await self.complete_raw(body)
        return self._response(data)

    def _response(self, data: dict[str, Any]) -> ChatResponse:
        from pydantic import ValidationError

        fixed = data
        if data.get("object") != "chat.completion":
            fixed = {**data, "object": "chat.completion"}  # TGI/LoRAX say "text_completion"
        try:
            return ChatResponse.model_validate(fixed)
        except ValidationError as e:
            text = json.dumps(data, ensure_ascii=False)
            first = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UpstreamError(
                f"{self.url} answered with a body that is not a chat completion "
                f"({where}: {first['msg']}): {self._snippet(text)}",
                status=200,
                body=text,
            ) from None

    # ------------------------------------------------------------ stream

    async def stream_raw(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST ``body`` with ``stream: true`` and yield each SSE chunk as a dict.

        Retries happen only before the first byte of the stream. A stream that
        stops without ``data: [DONE]`` (and without a finish reason) raises
        :class:`UpstreamError` "stream ended early"; an ``{"error": …}`` event
        raises :class:`UpstreamError`.
        """
        import httpx

        payload = dict(body)
        payload["stream"] = True
        content = _dumps(payload)
        client = self._http()
        headers = {"accept": "text/event-stream"}

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
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                # Some servers ignore stream=true and answer with one JSON body: chunk it.
                raw = await self._read_all(resp)
                data = self._decode(raw, resp.status_code)
                include = bool((payload.get("stream_options") or {}).get("include_usage"))
                for chunk in response_to_chunks(self._response(data), include_usage=include):
                    yield chunk.to_dict()
                return
            async for chunk in self._events(resp):
                yield chunk
        finally:
            await resp.aclose()

    async def _read_all(self, resp: httpx.Response) -> bytes:
        import httpx

        try:
            return await resp.aread()
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"{self.url} stopped sending within {self.read_timeout}s.") from None
        except httpx.HTTPError as e:
            raise UpstreamError(f"The answer from {self.url} ended early: {self._scrub(str(e))}") from None

    async def _events(self, resp: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        import httpx

        data_lines: list[str] = []
        finished = False
        done = False
        try:
            async for line in resp.aiter_lines():
                if line:
                    if line.startswith(":"):
                        continue  # a comment / keep-alive
                    field, _, value = line.partition(":")
                    if field == "data":
                        data_lines.append(value[1:] if value.startswith(" ") else value)
                    continue  # event:, id:, retry: carry nothing we use
                if not data_lines:
                    continue
                data, data_lines = "\n".join(data_lines), []
                if data.strip() == "[DONE]":
                    done = True
                    break
                chunk = self._chunk(data)
                if any(c.get("finish_reason") for c in chunk.get("choices") or () if isinstance(c, dict)):
                    finished = True
                yield chunk
            else:
                if data_lines:  # a last event without its blank line
                    data = "\n".join(data_lines)
                    if data.strip() == "[DONE]":
                        done = True
                    else:
                        yield self._chunk(data)
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"The stream from {self.url} stalled: nothing for {self.read_timeout}s."
            ) from None
        except httpx.HTTPError as e:
            raise UpstreamError(
                f"The stream from {self.url} ended early: the connection broke ({self._scrub(str(e))})."
            ) from None
        if not done and not finished:
            raise UpstreamError(f"The stream from {self.url} ended early, without data: [DONE].")

    def _chunk(self, data: str) -> dict[str, Any]:
        try:
            obj = json.loads(data)
        except ValueError:
            raise UpstreamError(
                f"The stream from {self.url} sent an event that is not JSON: {self._snippet(data)}",
                status=200,
                body=data,
            ) from None
        if not isinstance(obj, dict):
            raise UpstreamError(
                f"The stream from {self.url} sent an event that is not a JSON object: {self._snippet(data)}",
                status=200,
                body=data,
            )
        if obj.get("error") is not None:
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise UpstreamError(
                f"The stream from {self.url} sent an error: {self._snippet(str(msg))}", status=200, body=data
            )
        return obj

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        from pydantic import ValidationError

        async for obj in self.stream_raw(self.body_for(request)):
            fixed = obj
            if obj.get("object") != "chat.completion.chunk":
                fixed = {**obj, "object": "chat.completion.chunk"}  # TGI/LoRAX say "text_completion"
            try:
                yield ChatChunk.model_validate(fixed)
            except ValidationError as e:
                text = json.dumps(obj, ensure_ascii=False)
                raise UpstreamError(
                    f"The stream from {self.url} sent a chunk that is not a chat completion chunk "
                    f"({e.errors(include_url=False)[0]['msg']}): {self._snippet(text)}",
                    status=200,
                    body=text,
                ) from None


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: only an escape can carry it
        return json.dumps(obj, separators=(",", ":")).encode()
