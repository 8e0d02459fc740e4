"""One settings object, read from ``smallfleet.yaml`` with ``SMALLFLEET_*`` overrides.

Where the file is: ``--config PATH``, else ``$SMALLFLEET_CONFIG``, else
``./smallfleet.yaml`` when it exists, else the embedded defaults (SQLite in the
working directory, no models).

Environment overrides use ``__`` between levels and are parsed as YAML scalars::

    SMALLFLEET_STORE__URL=postgresql+psycopg://localhost/test
    SMALLFLEET_GATEWAY__PORT=9000
    SMALLFLEET_REDACTION__ENABLED=false

Every section forbids unknown keys, so a typo is an error that names the key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smallfleet.errors import ConfigError

__all__ = [
    "EXAMPLE_CONFIG",
    "AnthropicModelConfig",
    "FlywheelConfig",
    "GatewayConfig",
    "GatewayKey",
    "LocalModelConfig",
    "ModelConfig",
    "OpenAIModelConfig",
    "Price",
    "PricingConfig",
    "RedactionConfig",
    "RoutingConfig",
    "Settings",
    "SpecialistModelConfig",
    "StoreConfig",
    "TelemetryConfig",
    "load_settings",
]

ENV_PREFIX = "SMALLFLEET_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Price(_Section):
    """USD per one million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)


class _ModelBase(_Section):
    fallbacks: list[str] = Field(
        default_factory=list, description="Aliases tried in order when this one fails after its retries."
    )
    description: str | None = None


class OpenAIModelConfig(_ModelBase):
    """Any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, llama.cpp server, SGLang, LoRAX."""

    backend: Literal["openai"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    model: str | None = Field(None, description="The upstream model name; defaults to the alias.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the key.")
    headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0)
    backoff_base: float = Field(0.5, ge=0)
    backoff_max: float = Field(8.0, ge=0)
    max_connections: int = Field(256, ge=1)
    price: Price | None = None


class AnthropicModelConfig(OpenAIModelConfig):
    """Anthropic's Messages API (Claude), or any endpoint that speaks it; the key goes in x-api-key."""

    backend: Literal["anthropic"] = "anthropic"  # type: ignore[assignment]
    base_url: str = "https://api.anthropic.com/v1"
    anthropic_version: str = Field("2023-06-01", description="The anthropic-version header sent.")
    max_tokens: int = Field(4096, ge=1, description="Sent when a request sets none: the API requires it.")


class LocalModelConfig(_ModelBase):
    """A Hugging Face causal LM loaded in-process, with optional LoRA adapters."""

    backend: Literal["local"] = "local"
    model: str = Field(description="A Hugging Face model id or a local path.")
    device: str = "auto"
    dtype: str = "auto"
    adapters: dict[str, str] = Field(default_factory=dict, description="Adapter name → PEFT adapter path.")
    max_new_tokens: int = Field(512, ge=1)
    usd_per_hour: float | None = Field(None, ge=0, description="Hardware cost, for pricing by compute time.")


class SpecialistModelConfig(_ModelBase):
    """A trained specialist folder, served as a chat model."""

    backend: Literal["specialist"] = "specialist"
    path: str


ModelConfig = Annotated[
    OpenAIModelConfig | AnthropicModelConfig | LocalModelConfig | SpecialistModelConfig,
    Field(discriminator="backend"),
]


class StoreConfig(_Section):
    url: str = "sqlite:///./smallfleet.db"
    echo: bool = False


class GatewayKey(_Section):
    """An API key of the gateway; only its SHA-256 is kept (``smallfleet keys hash``)."""

    name: str
    sha256: str
    admin: bool = False
    daily_budget_usd: float | None = Field(None, ge=0)


class GatewayConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    flush_interval_ms: int = Field(200, ge=1)
    queue_size: int = Field(50_000, ge=1)
    batch_size: int = Field(500, ge=1)
    keys: list[GatewayKey] = Field(default_factory=list, description="Empty: no key needed.")
    default_model: str | None = Field(None, description="Alias used when a request names an unknown model.")
    reload_seconds: float = Field(
        5.0, gt=0, description="How often gateway.keys is re-read from the config file (revocations)."
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host header values served (name or name:port; '*' = any). "
        "Unset: loopback names when bound to a loopback address, else any.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Extra browser origins (scheme://host[:port]) allowed to send state-changing requests.",
    )
    max_json_depth: int = Field(64, ge=4, le=500, description="Deepest JSON nesting a request may have.")
    max_label_chars: int = Field(
        200, ge=8, le=200, description="Longest workload or model name taken (the store's label columns)."
    )
    metrics_workloads: list[str] | None = Field(
        None,
        description="Workload label values the metrics keep; others count as 'other'. "
        "Unset: the first metrics_max_workloads seen.",
    )
    metrics_max_workloads: int = Field(50, ge=1, description="Distinct workload labels when no allow-list.")
    dead_letter_path: str = Field(
        "./smallfleet-dead-letters.jsonl",
        description="Where traces the store refuses are written (JSON lines, redacted).",
    )
    session_secret: str | None = Field(
        None,
        description="Signs dashboard sessions and CSRF tokens; set the same value on every replica "
        "(SMALLFLEET_GATEWAY__SESSION_SECRET). Unset: a random one per process.",
    )
    budget_max_tokens: int = Field(
        4096,
        ge=1,
        description="Output tokens a budget reserves for a request that sets no max_tokens.",
    )


class RedactionConfig(_Section):
    enabled: bool = True
    kinds: list[str] | None = Field(None, description="Built-in detectors to use; all when unset.")
    patterns: dict[str, str] = Field(
        default_factory=dict, description="Extra detectors: placeholder name → regular expression."
    )


class PricingConfig(_Section):
    models: dict[str, Price] = Field(
        default_factory=dict, description="Overrides of the built-in price table."
    )
    local_usd_per_hour: float = Field(0.0, ge=0, description="What an hour of the local hardware costs.")


class RoutingConfig(_Section):
    enabled: bool = False
    workloads: list[str] = Field(default_factory=lambda: ["*"], description="Workloads the router may serve.")
    aliases: list[str] = Field(default_factory=lambda: ["*"], description="Requested aliases it may serve.")
    guard_fraction: float = Field(0.05, ge=0, le=1)
    guard_window: int = Field(200, ge=1)
    shadow_concurrency: int = Field(4, ge=1)
    guard_min_checks: int = Field(20, ge=1, description="Checks needed before the guard may demote a route.")
    reload_seconds: float = Field(5.0, gt=0, description="How often routes are re-read from the store.")
    seed: int | None = Field(None, description="Seed of the canary and guard draws (tests, benchmarks).")
    max_batch: int = Field(
        32,
        ge=1,
        description="Most concurrent requests to one specialist answered as one batch (1: alone).",
    )
    novelty: bool = Field(
        True, description="Escalate (as `novel`) answers unlike the route's training traffic."
    )


class FlywheelConfig(_Section):
    min_examples: int = Field(100, ge=1)
    target_accuracy: float = Field(0.95, gt=0, le=1)
    confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="How sure a promotion is that the kept answers reach target_accuracy (a lower bound).",
    )
    min_coverage: float = Field(0.2, ge=0, le=1)
    executor: Literal["local", "ray"] = "local"
    workers: int | None = Field(
        None, ge=1, description="Processes training task types at once (local executor); default: CPUs, ≤ 4."
    )
    memory_gb: float = Field(4.0, gt=0, description="Memory a run may use, training workers included (GiB).")
    specialists_dir: str = "./smallfleet-specialists"
    cpu_only: bool = True
    gpu_memory_gb: float = Field(0.0, ge=0)
    encoder: str | None = Field(
        None, description="Encoder id or path; the bundled all-MiniLM-L6-v2 when unset."
    )
    encoder_dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto",
        description=(
            "What embeddings are computed in: auto = bfloat16 where the CPU computes it natively, "
            "int8 on other x86 CPUs with AVX2, else float32."
        ),
    )


class TelemetryConfig(_Section):
    """OpenTelemetry export of every recorded call (``pip install 'smallfleet[otel]'``)."""

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector URL, e.g. http://127.0.0.1:4318 (/v1/traces is added when "
        "missing). Unset: nothing is exported.",
    )
    service_name: str = Field("smallfleet-gateway", min_length=1, description="The spans' service.name.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers of each export (e.g. authorization)."
    )
    export_content: bool = Field(
        False, description="Add the redacted messages and answer to each span (gen_ai.*.messages)."
    )
    batch_delay_ms: int = Field(1000, ge=1, description="Spans are sent in batches at least this often.")
    timeout_s: float = Field(5.0, gt=0, description="Seconds one export may take, retries included.")

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http:// or https:// URL (an OTLP/HTTP collector)")
        return v


class Settings(_Section):
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    store: StoreConfig = Field(default_factory=StoreConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    flywheel: FlywheelConfig = Field(default_factory=FlywheelConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    catalog: list[dict[str, Any]] = Field(default_factory=list, description="Extra specialist base models.")

    #: Where the settings were read from (None: embedded defaults).
    source: str | None = Field(None, exclude=True)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Environment variable {key} conflicts with another override.")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _known_keys(model: type[BaseModel] | None) -> list[str]:
    return list(model.model_fields) if model is not None else []


def _explain(e: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in e.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 3 and loc[0] == "models" and loc[2] in ("openai", "anthropic", "local", "specialist"):
            del loc[2]  # the backend tag pydantic adds, not a key
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            section = _section_for(loc[:-1])
            close = difflib.get_close_matches(loc[-1], _known_keys(section), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"unknown key {key!r}{hint}")
        elif err["type"] == "union_tag_not_found" and loc[:1] == ["models"]:
            lines.append(f"{key}: missing 'backend' (openai, anthropic, local or specialist)")
        else:
            lines.append(f"{key}: {err['msg']}")
    return ConfigError(f"Invalid configuration in {source}: " + "; ".join(lines))


def _section_for(loc: list[str]) -> type[BaseModel] | None:
    import typing

    model: type[BaseModel] | None = Settings
    i = 0
    while i < len(loc) and model is not None:
        part = loc[i]
        if model is Settings and part == "models":
            # models.<alias> → we cannot tell the backend here; offer every backend's keys.
            model, i = (_AnyModel, i + 2) if i + 1 < len(loc) else (None, i + 1)
            continue
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        i += 1
        # Price | None → Price; list[GatewayKey] and dict[str, Price] also skip the index or name.
        while ann is not None and not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            origin, args = typing.get_origin(ann), typing.get_args(ann)
            if origin in (list, dict):
                i += 1
                ann = args[-1] if args else None
            else:
                found = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
                ann = found[0] if found else None
        model = ann
    return model


class _AnyModel(BaseModel):
    """Every key any backend accepts, for 'did you mean' on a typo'd model key."""

    model_config = ConfigDict(extra="allow")


_AnyModel.model_fields.update(
    {
        **OpenAIModelConfig.model_fields,
        **AnthropicModelConfig.model_fields,
        **LocalModelConfig.model_fields,
        **SpecialistModelConfig.model_fields,
    }
)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the settings: file (if any), then ``SMALLFLEET_*`` env, then ``overrides``."""
    import yaml

    env = os.environ if env is None else env
    chosen = path or env.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    source = "the defaults"
    if chosen is None and Path("smallfleet.yaml").exists():
        chosen = "smallfleet.yaml"
    if chosen is not None:
        p = Path(chosen)
        if not p.exists():
            raise ConfigError(f"Config file {str(p)!r} does not exist. Create one with: smallfleet init")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of settings at the top level.")
        data, source = loaded, str(p)
    env_data = _env_overrides(env)
    if env_data:
        data = _merge(data, env_data)
    if overrides:
        data = _merge(data, overrides)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise _explain(e, source) from None
    settings.source = None if chosen is None else str(chosen)
    return settings


EXAMPLE_CONFIG = """\
# smallfleet.yaml — written by `smallfleet init`. Every key is optional.
# Environment variables override it: SMALLFLEET_STORE__URL, SMALLFLEET_GATEWAY__PORT, ...

# Models the gateway and agents can address by alias.
models:
  gpt-4o-mini:
    backend: openai                    # any OpenAI-compatible endpoint
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY        # the *name* of the variable holding the key
    read_timeout: 120
    max_retries: 2
    price: {input: 0.15, output: 0.60} # USD per 1M tokens (built-in table when unset)
    fallbacks: [local-qwen]            # tried in order when this one fails
  local-qwen:
    backend: openai                    # e.g. vLLM, Ollama or llama.cpp server on this machine
    base_url: http://127.0.0.1:8000/v1
    model: Qwen/Qwen2.5-1.5B-Instruct
  # tiny-local:
  #   backend: local                   # a Hugging Face causal LM in-process (pip install 'smallfleet[local]')
  #   model: Qwen/Qwen2.5-0.5B-Instruct
  #   adapters: {support: ./adapters/support}

# Where traces, clusters and routes are kept. PostgreSQL: postgresql+psycopg://user@host/db
store:
  url: sqlite:///./smallfleet.db

gateway:
  host: 127.0.0.1
  port: 8787
  max_body_bytes: 4194304
  flush_interval_ms: 200              # traces are written in batches at least this often
  # keys:                             # when set, every request needs one (smallfleet keys hash KEY)
  #   - {name: agent, sha256: "...", daily_budget_usd: 20}
  #   - {name: ops, sha256: "...", admin: true}

redaction:
  enabled: true                       # emails, phones, cards, IBANs, IPs, secrets never reach the store
  patterns: {}                        # extra: PLACEHOLDER_NAME: regular expression

pricing:
  local_usd_per_hour: 0.0             # what an hour of this machine costs, to price local models

routing:
  enabled: false                      # serve promoted specialists in the gateway

flywheel:
  min_examples: 100
  target_accuracy: 0.95
  min_coverage: 0.2
  executor: local                     # or ray (pip install 'smallfleet[ray]')

# telemetry:                          # one OpenTelemetry span per call (pip install 'smallfleet[otel]')
#   otlp_endpoint: http://127.0.0.1:4318
#   export_content: false             # true: also the redacted messages and answer
"""
