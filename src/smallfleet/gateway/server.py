"""Serving the gateway app with uvicorn: in the foreground (the CLI) or in a thread (tests, notebooks).

Shutdown order on SIGTERM / SIGINT (uvicorn's, then ours): stop accepting
connections, let in-flight requests finish, then the lifespan shutdown drains
the trace queue into the store before the process exits.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallfleet.gateway.app import Gateway

__all__ = ["BackgroundServer", "serve", "uvicorn_config"]


def _fast(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def uvicorn_config(app: Any, host: str = "127.0.0.1", port: int = 8787, **kw: Any) -> Any:
    """A uvicorn config for the gateway: uvloop and httptools when installed (the ``fast`` extra)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop" if _fast("uvloop") else "asyncio",
        http="httptools" if _fast("httptools") else "h11",
        lifespan="on",
        access_log=False,
        log_level=kw.pop("log_level", "warning"),
        timeout_keep_alive=kw.pop("timeout_keep_alive", 30),
        backlog=kw.pop("backlog", 4096),
        **kw,
    )


def serve(
    app: Any, host: str, port: int, log_level: str = "info", tune: bool = True, offload: bool = False
) -> None:
    """Serve in the foreground until SIGTERM / SIGINT, then shut down gracefully and return.

    uvicorn re-raises the signal after its graceful shutdown (so the process dies
    of it); we return instead, so the caller can report and exit with status 0.
    ``tune``: the process serves this app alone, so tune it for the tail latency
    (:meth:`Gateway.tune_for_serving`: ``gc.freeze``, and with
    ``offload`` redaction in a child process); False is the untuned baseline of
    ``benchmarks/gateway_overhead.py``.
    """
    import uvicorn

    if tune and hasattr(app, "tune_for_serving"):
        app.tune_for_serving(offload=offload)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    _Server(uvicorn_config(app, host, port, log_level=log_level)).run()


class BackgroundServer:
    """Serve an ASGI app on 127.0.0.1 in a daemon thread; ``with`` it, or ``start()``/``stop()``.

    ``url`` is the OpenAI base URL (ends in ``/v1``). Stopping runs the app's
    lifespan shutdown, so the gateway drains its traces before :meth:`stop` returns.
    """

    def __init__(self, app: Gateway | Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._sock is not None, "start() the server first"
        return self._sock.getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        import uvicorn

        # IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections (no 40 ms Nagle stalls)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._sock = sock
        config = uvicorn_config(self.app, self.host, self.port)
        config.loop = "asyncio"  # a thread of its own; uvloop's policy is process-wide
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[sock])),
            name="smallfleet-gateway",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The gateway did not start.")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
