"""What every command shares: the settings, the console, opening the store, and error reporting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console

    from smallfleet.config import Settings
    from smallfleet.store.trace_store import TraceStore

_state: dict[str, Any] = {"config": None}


def set_config_path(path: str | None) -> None:
    _state["config"] = path
    _state.pop("settings", None)


def settings() -> Settings:
    """The settings, read once per process from ``--config`` / env / ./smallfleet.yaml."""
    if "settings" not in _state:
        from smallfleet.config import load_settings
        from smallfleet.encoders import set_dtype

        _state["settings"] = load_settings(_state["config"])
        set_dtype(_state["settings"].flywheel.encoder_dtype)
    return _state["settings"]


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    key = "err_console" if stderr else "console"
    if key not in _state:
        _state[key] = Console(stderr=stderr)
    return _state[key]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr (one line, like every smallfleet error) and exit with ``code``."""
    import typer
    from rich.markup import escape

    console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def store_label(url: str) -> str:
    """Where a store is, for messages: the SQLite file's path, or the URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return url
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        return u.database
    return u.render_as_string(hide_password=True)


def missing_sqlite(url: str) -> Path | None:
    """The SQLite file ``url`` names when it does not exist (None: it exists, or it is not a file)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return None
    db = u.database
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or "mode=memory" in str(u):
        return None
    path = Path(db)
    return None if path.exists() else path


def existing_store() -> TraceStore | None:
    """The configured trace store, opened without creating it; None when its SQLite file does not exist.

    Read-only commands (``routes list``, ``report``, ``stats``) use this, so that looking
    never leaves an empty database behind.
    """
    from smallfleet.store.trace_store import TraceStore

    url = settings().store.url
    if missing_sqlite(url) is not None:
        return None
    return TraceStore(url, create=False)
