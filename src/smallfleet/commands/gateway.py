"""``smallfleet gateway``: serve the OpenAI-compatible gateway."""

from __future__ import annotations

import typer

from smallfleet.commands._common import console, fail, settings, store_label


def gateway(
    host: str | None = typer.Option(None, "--host", help="Interface to listen on [default: gateway.host]."),
    port: int | None = typer.Option(
        None,
        "--port",
        min=0,
        max=65535,
        help="Port to listen on, 0-65535 (0: any free one) [default: gateway.port, 8787].",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the OpenAI-compatible gateway; every call is recorded in the trace store.

    Point any OpenAI client at http://HOST:PORT/v1; the dashboard is at http://HOST:PORT/ui.
    SIGTERM / Ctrl-C: stops accepting, lets in-flight requests finish, writes every queued
    trace, exits.
    """
    import logging

    s = settings()
    host = host or s.gateway.host
    port = _free_port(host, s.gateway.port if port is None else port)

    from smallfleet.gateway.app import create_app
    from smallfleet.gateway.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):  # one line per upstream call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app = create_app(s)
    aliases = ", ".join(app.registry.aliases()) or "none (add some under models: in smallfleet.yaml)"
    out = console()
    base = f"http://{_url_host(host)}:{port}"
    out.print(f"smallfleet gateway on [bold]{base}/v1[/]", highlight=False)
    out.print(f"  dashboard: {base}/ui", highlight=False)
    out.print(f"  models: {aliases}", highlight=False)
    out.print(f"  traces: {store_label(s.store.url)}", highlight=False)
    out.print(f"  keys: {'required' if s.gateway.keys else 'off'}", highlight=False)
    serve(app, host, port, log_level=log_level)
    out.print(
        f"stopped; {app.recorder.written} traces written, {app.recorder.dropped} dropped", highlight=False
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _free_port(host: str, port: int) -> int:
    """``port`` if ``host`` can listen on it (0: a free one, chosen here); else fail with one line.

    Checked before anything is built or announced, so a port in use is one line saying
    what to do, not a banner followed by uvicorn's error.
    """
    import errno
    import socket

    if not 0 <= port <= 65535:  # gateway.port from the environment is checked by the config
        fail(f"port {port} is not a TCP port: use 0-65535.", code=2)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        fail(
            f"cannot listen on {host!r}: {e.strerror}. "
            "Use --host with an address of this machine, e.g. 127.0.0.1."
        )
    family, _, proto, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM, proto) as sock:
        # SO_REUSEADDR as uvicorn sets it: a port in TIME_WAIT is free, a listening one is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                other = port + 1 if port < 65535 else 8788
                fail(
                    f"port {port} on {host} is already in use (another gateway?). Stop what listens "
                    f"there (see `lsof -i :{port}`), or choose another: smallfleet gateway --port {other}"
                )
            if e.errno == errno.EACCES:
                fail(f"no permission to listen on port {port} (ports below 1024 need root); use --port 8787.")
            fail(f"cannot listen on {host}:{port}: {e.strerror}.")
        return int(sock.getsockname()[1])


def register(app: typer.Typer) -> None:
    app.command()(gateway)
