"""Settings: defaults, the YAML file, typo'd keys named, env overrides, where the file is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from smallfleet.config import (
    EXAMPLE_CONFIG,
    LocalModelConfig,
    OpenAIModelConfig,
    Settings,
    SpecialistModelConfig,
    load_settings,
)
from smallfleet.errors import ConfigError


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory, so no ./smallfleet.yaml is picked up by accident."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "smallfleet.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults() -> None:
    s = load_settings(env={})
    assert s.source is None
    assert s.models == {}
    assert s.store.url == "sqlite:///./smallfleet.db"
    assert (s.gateway.host, s.gateway.port) == ("127.0.0.1", 8787)
    assert s.redaction.enabled is True
    assert s.routing.enabled is False
    assert s.flywheel.executor == "local"
    assert s == Settings()


def test_yaml_file(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
models:
  big:
    backend: openai
    base_url: http://127.0.0.1:8000/v1
    model: Qwen/Qwen2.5-7B-Instruct
    api_key_env: VLLM_KEY
    read_timeout: 30
    price: {input: 0.2, output: 0.6}
    fallbacks: [small]
  small:
    backend: local
    model: ./models/tiny
    adapters: {support: ./adapters/support}
  triage:
    backend: specialist
    path: ./smallfleet-specialists/triage
store:
  url: postgresql+psycopg://postgres@127.0.0.1:5432/test
gateway:
  port: 9999
  keys:
    - {name: agent, sha256: abc, daily_budget_usd: 5}
""",
    )
    s = load_settings(p, env={})
    assert s.source == str(p)
    big, small, triage = s.models["big"], s.models["small"], s.models["triage"]
    assert isinstance(big, OpenAIModelConfig)
    assert big.model == "Qwen/Qwen2.5-7B-Instruct" and big.read_timeout == 30.0 and big.fallbacks == ["small"]
    assert big.price is not None and big.price.output == 0.6
    assert isinstance(small, LocalModelConfig) and small.adapters == {"support": "./adapters/support"}
    assert isinstance(triage, SpecialistModelConfig)
    assert s.store.url.startswith("postgresql+psycopg://")
    assert s.gateway.port == 9999 and s.gateway.keys[0].daily_budget_usd == 5


def test_example_config_is_valid(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, EXAMPLE_CONFIG), env={})
    assert set(s.models) == {"gpt-4o-mini", "local-qwen"}
    assert s.models["gpt-4o-mini"].fallbacks == ["local-qwen"]


@pytest.mark.parametrize(
    ("yaml_text", "key", "suggestion"),
    [
        ("stor:\n  url: x\n", "stor", "store"),
        ("store:\n  ulr: sqlite:///x.db\n", "store.ulr", "url"),
        ("gateway:\n  prot: 1\n", "gateway.prot", "port"),
        (
            "models:\n  big:\n    backend: openai\n    base_ulr: http://x/v1\n",
            "models.big.base_ulr",
            "base_url",
        ),
        ("models:\n  big:\n    backend: openai\n    max_retrys: 3\n", "models.big.max_retrys", "max_retries"),
        (
            "models:\n  local:\n    backend: local\n    model: m\n    adapter: {}\n",
            "models.local.adapter",
            "adapters",
        ),
        ("models:\n  big:\n    backend: openai\n    price: {inptu: 1}\n", "models.big.price.inptu", "input"),
        ("pricing:\n  models:\n    gpt: {outptu: 1}\n", "pricing.models.gpt.outptu", "output"),
        ("gateway:\n  keys:\n    - {name: a, sha256: x, admn: true}\n", "gateway.keys.0.admn", "admin"),
    ],
)
def test_typo_is_named_with_a_suggestion(tmp_path: Path, yaml_text: str, key: str, suggestion: str) -> None:
    p = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env={})
    msg = ei.value.message
    assert f"unknown key {key!r}" in msg
    assert f"did you mean {suggestion!r}" in msg
    assert str(p) in msg


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("gateway:\n  port: lots\n", "gateway.port"),
        ("gateway:\n  port: 70000\n", "gateway.port"),
        ("models:\n  big:\n    base_url: http://x/v1\n", "missing 'backend'"),
        ("models:\n  big:\n    backend: grpc\n", "models.big"),
        ("models:\n  big:\n    backend: local\n", "models.big.model"),
        ("flywheel:\n  executor: spark\n", "flywheel.executor"),
        ("flywheel:\n  workers: 0\n", "flywheel.workers"),
        ("- a\n- b\n", "mapping"),
        ("store: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, yaml_text), env={})
    assert fragment in ei.value.message


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "store:\n  url: sqlite:///file.db\ngateway:\n  port: 8000\n  host: 0.0.0.0\n")
    env = {
        "SMALLFLEET_STORE__URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "SMALLFLEET_GATEWAY__PORT": "9000",
        "SMALLFLEET_REDACTION__ENABLED": "false",
        "SMALLFLEET_FLYWHEEL__TARGET_ACCURACY": "0.9",
        "OTHER_VARIABLE": "ignored",
    }
    s = load_settings(p, env=env)
    assert s.store.url == "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert s.gateway.port == 9000 and isinstance(s.gateway.port, int)
    assert s.gateway.host == "0.0.0.0"  # untouched keys of the same section stay
    assert s.redaction.enabled is False
    assert s.flywheel.target_accuracy == 0.9


def test_env_override_into_a_model_and_overrides_win_over_env(tmp_path: Path) -> None:
    p = write(tmp_path, "models:\n  big:\n    backend: openai\n    max_retries: 1\n")
    s = load_settings(p, env={"SMALLFLEET_MODELS__BIG__MAX_RETRIES": "4"})
    assert s.models["big"].max_retries == 4  # type: ignore[union-attr]
    s = load_settings(p, env={"SMALLFLEET_GATEWAY__PORT": "9000"}, overrides={"gateway": {"port": 9100}})
    assert s.gateway.port == 9100


def test_env_typo_is_named() -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(env={"SMALLFLEET_GATEWAY__PROT": "9000"})
    assert "gateway.prot" in ei.value.message and "'port'" in ei.value.message


def test_smallfleet_config_env_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "gateway:\n  port: 7001\n", name="other.yaml")
    s = load_settings(env={"SMALLFLEET_CONFIG": str(p)})
    assert s.gateway.port == 7001 and s.source == str(p)
    # an explicit path wins over SMALLFLEET_CONFIG
    q = write(tmp_path, "gateway:\n  port: 7002\n", name="explicit.yaml")
    assert load_settings(q, env={"SMALLFLEET_CONFIG": str(p)}).gateway.port == 7002


def test_smallfleet_yaml_in_the_working_directory_is_found(tmp_path: Path) -> None:
    write(tmp_path, "gateway:\n  port: 7003\n")
    s = load_settings(env={})
    assert s.gateway.port == 7003 and s.source == "smallfleet.yaml"


@pytest.mark.parametrize("how", ["path", "env"])
def test_missing_file_says_how_to_make_one(tmp_path: Path, how: str) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as ei:
        if how == "path":
            load_settings(missing, env={})
        else:
            load_settings(env={"SMALLFLEET_CONFIG": missing})
    assert "nope.yaml" in ei.value.message and "smallfleet init" in ei.value.message


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "# nothing yet\n"), env={})
    assert s.store.url == Settings().store.url


def test_assignment_is_validated() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.gateway.port = "not a port"  # type: ignore[assignment]


def test_docs_name_every_key() -> None:
    """docs/config.md cannot drift: every section and key of the settings is in it."""
    from pydantic import BaseModel

    import smallfleet.config as config

    docs = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    sections = [
        cls
        for cls in vars(config).values()
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == config.__name__
    ]
    missing = []
    for cls in sections:
        for name, field in cls.model_fields.items():
            if field.exclude:
                continue
            if f"`{name}`" not in docs:
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, f"docs/config.md does not describe: {missing}"
