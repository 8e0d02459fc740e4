"""``smallfleet gateway``: serve the OpenAI-compatible gateway."""

from __future__ import annotations

import typer

from smallfleet.commands._common import console, settings


def gateway(
    host: str | None = typer.Option(None, "--host", help="Interface to listen on [default: gateway.host]."),
    port: int | None = typer.Option(None, "--port", help="Port to listen on [default: gateway.port, 8787]."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the OpenAI-compatible gateway; every call is recorded in the trace store.

    Point any OpenAI client at http://HOST:PORT/v1. SIGTERM / Ctrl-C: stops
    accepting, lets in-flight requests finish, writes every queued trace, exits.
    """
    import logging

    from smallfleet.gateway.app import create_app
    from smallfleet.gateway.server import serve

    s = settings()
    host = host or s.gateway.host
    port = s.gateway.port if port is None else port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):  # one line per upstream call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app = create_app(s)
    aliases = ", ".join(app.registry.aliases()) or "none (add some under models: in smallfleet.yaml)"
    out = console()
    out.print(f"smallfleet gateway on [bold]http://{host}:{port}/v1[/]", highlight=False)
    out.print(f"  models: {aliases}", highlight=False)
    out.print(f"  traces: {_safe_url(s.store.url)}", highlight=False)
    out.print(f"  keys: {'required' if s.gateway.keys else 'off'}", highlight=False)
    serve(app, host, port, log_level=log_level)
    out.print(
        f"stopped; {app.recorder.written} traces written, {app.recorder.dropped} dropped", highlight=False
    )


def _safe_url(url: str) -> str:
    """The store URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def register(app: typer.Typer) -> None:
    app.command()(gateway)
