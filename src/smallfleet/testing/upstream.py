"""A scripted OpenAI-compatible upstream: a real HTTP server on loopback.

This is the *far* side of the model seam, for tests, benchmarks and demos: it
speaks the OpenAI wire protocol over real HTTP and answers from a script (a list
of :class:`Reply`, or a function of the request), so the code under test makes
real connections, real retries and real streams.

    with ScriptedUpstream([Reply.text("hi")]) as up:
        model = OpenAICompatible(base_url=up.url, model="gpt-test")
        ...
    up.requests   # every JSON body it received
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from smallfleet.types import ChatResponse, Usage, response_to_chunks

__all__ = ["Reply", "ScriptedUpstream", "default_reply"]


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes → sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    chunks: list[dict[str, Any]] | None = None  # an SSE stream of these JSON chunks
    chunk_delay: float = 0.0
    cut_after: int | None = None  # drop the connection after this many chunks, no [DONE]

    @classmethod
    def of(cls, response: ChatResponse, **kw: Any) -> Reply:
        return cls(body=response.to_dict(), **kw)

    @classmethod
    def text(cls, content: str, model: str = "upstream", prompt_tokens: int = 10, **kw: Any) -> Reply:
        usage = Usage.of(prompt_tokens, max(1, len(content.split())))
        return cls.of(ChatResponse.of_text(model, content, usage), **kw)

    @classmethod
    def tool_call(
        cls, name: str, arguments: dict[str, Any], model: str = "upstream", prompt_tokens: int = 10, **kw: Any
    ) -> Reply:
        return cls.of(
            ChatResponse.of_tool_calls(model, [(name, arguments)], Usage.of(prompt_tokens, 12)), **kw
        )

    @classmethod
    def stream(cls, response: ChatResponse, piece: int = 4, include_usage: bool = True, **kw: Any) -> Reply:
        chunks = [c.to_dict() for c in response_to_chunks(response, include_usage=include_usage, piece=piece)]
        return cls(chunks=chunks, **kw)

    @classmethod
    def error(cls, status: int, message: str = "upstream failure", **kw: Any) -> Reply:
        body = {"error": {"message": message, "type": "server_error", "code": None}}
        return cls(status=status, body=body, **kw)


def _count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def default_reply(request: dict[str, Any]) -> Reply:
    """What the upstream answers when the script is empty: a short text, streamed if asked."""
    messages = request.get("messages") or []
    prompt = " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
    model = str(request.get("model") or "upstream")
    resp = ChatResponse.of_text(model, "ok", Usage.of(_count_tokens(prompt), 1))
    if request.get("stream"):
        include = bool((request.get("stream_options") or {}).get("include_usage"))
        return Reply.stream(resp, include_usage=include)
    return Reply.of(resp)


Script = Iterable[Reply] | Callable[[dict[str, Any]], Reply] | None


class ScriptedUpstream:
    """An OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script.

    ``script`` is a list of replies used in order (then :func:`default_reply`),
    or a function from the request body to a reply. It runs uvicorn in a thread.
    """

    def __init__(self, script: Script = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._fn: Callable[[dict[str, Any]], Reply] | None = script if callable(script) else None
        self._queue: deque[Reply] = deque() if callable(script) or script is None else deque(script)
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.host = host
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # ------------------------------------------------------------ control

    @property
    def port(self) -> int:
        assert self._sock is not None, "start() the upstream first"
        return self._sock.getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (ends in ``/v1``)."""
        return f"{self.base}/v1"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def set_responder(self, fn: Callable[[dict[str, Any]], Reply] | None) -> None:
        self._fn = fn

    def reset(self) -> None:
        """Forget the script, the responder and what was received (to reuse one server across tests)."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.headers.clear()
        self._fn = None

    def start(self) -> ScriptedUpstream:
        import uvicorn

        # IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections (no 40 ms Nagle stalls)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self._port))
        self._sock.listen(2048)
        config = uvicorn.Config(
            self._app,
            log_level="critical",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted upstream did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ serving

    def _next(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.popleft()
        if self._fn is not None:
            return self._fn(request)
        return default_reply(request)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            await _send_json(send, 200, {"object": "list", "data": [{"id": "upstream", "object": "model"}]})
            return
        if scope["method"] != "POST" or not path.endswith("/chat/completions"):
            await _send_json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = {"_raw": body.decode("utf-8", "replace")}
        with self._lock:
            self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        reply = self._next(request)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.chunks is not None:
            await self._send_stream(send, reply)
            return
        payload = reply.body
        if isinstance(payload, (dict, list)):
            data = json.dumps(payload).encode()
            ctype = "application/json"
        elif isinstance(payload, str):
            data, ctype = payload.encode(), "application/json"
        elif isinstance(payload, bytes):
            data, ctype = payload, "application/json"
        else:  # no body scripted: the default answer with the scripted status
            data, ctype = json.dumps(default_reply(request).body).encode(), "application/json"
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(data)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _send_stream(self, send: Any, reply: Reply) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        for i, chunk in enumerate(reply.chunks or []):
            if reply.cut_after is not None and i >= reply.cut_after:
                return  # leave the response unfinished: the connection drops
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            line = f"data: {json.dumps(chunk)}\n\n".encode()
            await send({"type": "http.response.body", "body": line, "more_body": True})
        if reply.cut_after is not None:
            return
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _send_json(send: Any, status: int, obj: Any) -> None:
    data = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
