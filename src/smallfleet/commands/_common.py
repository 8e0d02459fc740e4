"""What every command shares: the settings, the console, and error reporting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from smallfleet.config import Settings

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
