"""``smallfleet keys``: the lines it prints are what the config and the gateway accept."""

from __future__ import annotations

import re

import yaml
from typer.testing import CliRunner

from smallfleet.cli import app
from smallfleet.config import load_settings
from smallfleet.gateway.auth import KeyRing, hash_key


def test_keys_hash() -> None:
    out = CliRunner().invoke(app, ["keys", "hash", "sk-secret"])
    assert out.exit_code == 0
    assert out.stdout.strip() == f'sha256: "{hash_key("sk-secret")}"'


def test_keys_new_prints_a_working_config_entry() -> None:
    out = CliRunner().invoke(app, ["keys", "new", "agent", "--daily-budget", "5", "--admin"])
    assert out.exit_code == 0, out.stdout
    key = re.search(r"^key: (\S+)$", out.stdout, re.M).group(1)  # type: ignore[union-attr]
    entry = yaml.safe_load(out.stdout.split("gateway.keys:")[1])
    settings = load_settings(env={}, overrides={"gateway": {"keys": entry}})
    (cfg,) = settings.gateway.keys
    assert (cfg.name, cfg.daily_budget_usd, cfg.admin) == ("agent", 5.0, True)
    assert KeyRing(settings.gateway.keys).authenticate(f"Bearer {key}") == cfg
