"""A lean httpx transport for plain-HTTP upstreams: keep-alive HTTP/1.1 on asyncio + httptools.

httpx's own pool (httpcore + h11, pure Python) costs about a millisecond of CPU
per request at high concurrency, most of it scanning its connection list; that
alone would cap the gateway far below its throughput target when the upstream is
on the same network (vLLM, SGLang, llama.cpp on loopback or in the rack). This
transport keeps a deque of idle connections per host and parses responses with
``httptools`` (C). Everything above the transport (headers, timeouts, decoding,
streaming, the error types) stays httpx, so a model backend does not change.

``https://`` (and anything it does not handle) goes to httpx's own transport.
Errors are httpx's: :class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout`,
:class:`httpx.ReadTimeout`, :class:`httpx.RemoteProtocolError`, :class:`httpx.PoolTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["FastTransport", "available"]


def available() -> bool:
    """Whether httptools is installed (the ``fast`` extra)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection; one response at a time."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: Exception | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.event = asyncio.Event()  # set on headers, body, completion, or loss
        self.headers_done = False
        self.framed = False  # a content-length or chunked body (else it ends with the connection)

    # protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        import httptools

        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - upstreams do not upgrade
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as e:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.framed and exc is None:
            self.complete = True  # a body delimited by the end of the connection
        if not self.complete:
            detail = f": {exc}" if exc else ""
            self.error = self.error or httpx.RemoteProtocolError(f"server closed the connection{detail}")
        self.event.set()

    def _fail(self, error: Exception) -> None:
        self.error = error
        self.close()
        self.event.set()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # parser callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        low = name.lower()
        if low == b"content-length" or (low == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.framed = True
        self.headers_done = True
        self.event.set()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))
        self.event.set()

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful inside the callback
        self.complete = True
        self.event.set()

    # use
    def start(self) -> None:
        self._reset()

    async def wait(self, timeout: float | None, request: httpx.Request) -> None:
        """Wait for the next event (headers, body, end, or loss)."""
        if timeout is None:
            await self.event.wait()
        else:  # a timer handle, not asyncio.wait_for: that costs a task per call
            expired = False

            def expire() -> None:
                nonlocal expired
                expired = True
                self.event.set()

            timer = asyncio.get_running_loop().call_later(timeout, expire)
            try:
                await self.event.wait()
            finally:
                timer.cancel()
            if expired:
                raise httpx.ReadTimeout(f"no answer within {timeout}s", request=request)
        self.event.clear()

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None


class _Body(httpx.AsyncByteStream):
    def __init__(self, conn: _Conn, pool: _Pool, timeout: float | None, request: httpx.Request) -> None:
        self.conn, self.pool, self.timeout, self.request = conn, pool, timeout, request
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        while True:
            while conn.chunks:
                yield conn.chunks.popleft()
            if conn.complete:
                break
            if conn.error is not None:
                raise httpx.RemoteProtocolError(str(conn.error), request=self.request)
            await conn.wait(self.timeout, self.request)
        await self.aclose()

    async def aclose(self) -> None:
        if self.released:
            return
        self.released = True
        self.pool.release(self.conn)


class _Pool:
    def __init__(self, host: str, port: int, limit: asyncio.Semaphore) -> None:
        self.host, self.port = host, port
        self.idle: deque[_Conn] = deque()
        self.limit = limit

    async def acquire(self, request: httpx.Request, timeouts: dict[str, float | None]) -> tuple[_Conn, bool]:
        """A connection (reused: True) with a slot of the limit held."""
        if not self.limit.locked():
            await self.limit.acquire()  # immediate
        else:
            try:
                await asyncio.wait_for(self.limit.acquire(), timeouts.get("pool"))
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection to the upstream", request=request) from None
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn, True
        try:
            return await self.connect(request, timeouts.get("connect")), False
        except BaseException:
            self.limit.release()
            raise

    async def connect(self, request: httpx.Request, timeout: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Conn, self.host, self.port), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting took over {timeout}s", request=request) from None
        except OSError as e:
            raise httpx.ConnectError(str(e) or type(e).__name__, request=request) from None
        return conn

    def release(self, conn: _Conn) -> None:
        if conn.reusable():
            self.idle.append(conn)
        else:
            conn.close()
        self.limit.release()


class FastTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP/1.1 keep-alive pooling with httptools; other schemes go to httpx's transport."""

    def __init__(self, max_connections: int = 256, fallback: httpx.AsyncBaseTransport | None = None) -> None:
        self.max_connections = max_connections
        self._fallback = fallback
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._limit: asyncio.Semaphore | None = None

    def _fallback_transport(self) -> httpx.AsyncBaseTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=self.max_connections), trust_env=False
            )
        return self._fallback

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            return await self._fallback_transport().handle_async_request(request)
        key = (url.host, url.port or 80)
        pool = self._pools.get(key)
        if pool is None:
            if self._limit is None:
                self._limit = asyncio.Semaphore(self.max_connections)
            pool = self._pools[key] = _Pool(key[0], key[1], self._limit)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        has_length = False
        for name, value in request.headers.raw:
            if name.lower() == b"content-length":
                has_length = True
            elif name.lower() == b"transfer-encoding":
                continue  # the body is sent whole, with a length
            head.append(b"%s: %s\r\n" % (name, value))
        if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
            head.append(b"content-length: %d\r\n" % len(body))
        payload = b"".join(head) + b"\r\n" + body

        for attempt in (0, 1):
            conn, reused = await pool.acquire(request, timeouts)
            conn.start()
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(timeouts.get("read"), request)
            except httpx.RemoteProtocolError as e:
                pool.release(conn)
                if reused and not conn.got_bytes and attempt == 0:
                    continue  # an idle connection the server had closed: once more on a fresh one
                raise httpx.RemoteProtocolError(str(e), request=request) from None
            except BaseException:
                conn.close()
                pool.release(conn)
                raise
            return httpx.Response(
                conn.status,
                headers=conn.headers,
                stream=_Body(conn, pool, timeouts.get("read"), request),
                extensions={"http_version": b"HTTP/1.1"},
                request=request,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
        self._pools.clear()
        if self._fallback is not None:
            with contextlib.suppress(Exception):
                await self._fallback.aclose()
