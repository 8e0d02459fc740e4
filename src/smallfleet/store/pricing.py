"""What a call cost: a price table per model (USD per 1M tokens) and compute-time pricing for local models.

Where a model's price comes from, first match wins:

1. the model alias's own ``price:`` in the config (``models.<alias>.price``);
2. ``pricing.models`` in the config (by alias, then by the upstream model name);
3. the built-in table below, dated :data:`PRICES_AS_OF` (list prices, standard tier,
   short context), matched tolerantly: provider prefixes (``openai/``,
   ``anthropic.``), dated suffixes (``-2024-08-06``, ``-20241022``, ``@20240620``),
   ``-latest`` and ``-v2:0`` are ignored.

An unknown model costs ``None`` (not 0): the trace records cost as null.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallfleet.config import Price, PricingConfig

__all__ = ["BUILTIN_PRICES", "PRICES_AS_OF", "PriceTable", "normalise_model_name"]

#: When the built-in prices were last checked against the providers' price pages.
PRICES_AS_OF = "2025-08-15"

#: name → (input, output, cached input) in USD per 1M tokens.
BUILTIN_PRICES: dict[str, tuple[float, float, float | None]] = {
    # OpenAI
    "gpt-5": (1.25, 10.00, 0.125),
    "gpt-5-mini": (0.25, 2.00, 0.025),
    "gpt-5-nano": (0.05, 0.40, 0.005),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4-turbo": (10.00, 30.00, None),
    "gpt-4": (30.00, 60.00, None),
    "gpt-3.5-turbo": (0.50, 1.50, None),
    "o1": (15.00, 60.00, 7.50),
    "o1-mini": (1.10, 4.40, 0.55),
    "o3": (2.00, 8.00, 0.50),
    "o3-mini": (1.10, 4.40, 0.55),
    "o3-pro": (20.00, 80.00, None),
    "o4-mini": (1.10, 4.40, 0.275),
    # Anthropic (cached = cache read)
    "claude-opus-4-1": (15.00, 75.00, 1.50),
    "claude-opus-4": (15.00, 75.00, 1.50),
    "claude-3-opus": (15.00, 75.00, 1.50),
    "claude-sonnet-4-5": (3.00, 15.00, 0.30),
    "claude-sonnet-4": (3.00, 15.00, 0.30),
    "claude-3-7-sonnet": (3.00, 15.00, 0.30),
    "claude-3-5-sonnet": (3.00, 15.00, 0.30),
    "claude-haiku-4-5": (1.00, 5.00, 0.10),
    "claude-3-5-haiku": (0.80, 4.00, 0.08),
    "claude-3-haiku": (0.25, 1.25, 0.03),
    # Google
    "gemini-2.5-pro": (1.25, 10.00, 0.31),
    "gemini-2.5-flash": (0.30, 2.50, 0.075),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.025),
    "gemini-2.0-flash": (0.10, 0.40, 0.025),
    "gemini-2.0-flash-lite": (0.075, 0.30, None),
    "gemini-1.5-pro": (1.25, 5.00, None),
    "gemini-1.5-flash": (0.075, 0.30, None),
    # DeepSeek, Mistral
    "deepseek-chat": (0.27, 1.10, 0.07),
    "deepseek-reasoner": (0.55, 2.19, 0.14),
    "mistral-large": (2.00, 6.00, None),
    "mistral-small": (0.10, 0.30, None),
    # Open models on common hosts (Groq, Together)
    "llama-3.1-8b-instant": (0.05, 0.08, None),
    "llama-3.3-70b-versatile": (0.59, 0.79, None),
    "llama-3.3-70b-instruct-turbo": (0.88, 0.88, None),
    "meta-llama-3.1-8b-instruct-turbo": (0.18, 0.18, None),
    "meta-llama-3.1-70b-instruct-turbo": (0.88, 0.88, None),
    "meta-llama-3.1-405b-instruct-turbo": (3.50, 3.50, None),
    "qwen2.5-72b-instruct-turbo": (1.20, 1.20, None),
    "qwen2.5-7b-instruct-turbo": (0.30, 0.30, None),
}

# Other spellings of the same models.
_ALIASES = {
    "claude-4-opus": "claude-opus-4",
    "claude-4-sonnet": "claude-sonnet-4",
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
    "chatgpt-4o": "gpt-4o",
    "gpt-4o-mini-search-preview": "gpt-4o-mini",
    "gemini-2.0-flash-001": "gemini-2.0-flash",
}

# Backends whose alias's upstream model name is a provider's model (so the tables apply);
# a local or specialist model's name is a checkpoint, priced by compute time instead.
_PRICED_BACKENDS = frozenset({"openai", "anthropic"})

_PREFIX = re.compile(r"^(?:[a-z]{2}\.)?(?:anthropic|meta|mistral|amazon|cohere|google)\.")
_SUFFIXES = [
    re.compile(p)
    for p in (
        r"-v\d+$",  # Bedrock: -v2:0 (":0" is cut before)
        r"-\d{4}-\d{2}-\d{2}$",  # gpt-4o-2024-08-06
        r"-\d{8}$",  # claude-3-5-sonnet-20241022
        r"-\d{4}$",  # gpt-4-0613
        r"-\d{2}-\d{4}$",  # gemini-2.5-pro-preview-05-2025
        r"-\d{2}-\d{2}$",  # gemini-2.5-pro-preview-05-06
        r"-latest$",
        r"-preview$",
        r"-exp$",
    )
]


def normalise_model_name(name: str) -> str:
    """Canonical name: ``openai/gpt-4o-2024-08-06`` → ``gpt-4o`` (no prefix, date, ``-latest``)."""
    n = name.strip().lower()
    n = n.rsplit("/", 1)[-1]
    n = _PREFIX.sub("", n)
    n = n.split("@", 1)[0].split(":", 1)[0]
    changed = True
    while changed:
        changed = False
        for rx in _SUFFIXES:
            m = rx.sub("", n)
            if m != n and m:
                n, changed = m, True
    return _ALIASES.get(n, n)


class PriceTable:
    """Prices of the configured and the common API models; ``cost`` is USD, ``None`` when unknown."""

    def __init__(self, config: PricingConfig | None = None, models: Mapping[str, Any] | None = None) -> None:
        from smallfleet.config import Price, PricingConfig

        self._Price = Price
        self.config = config if config is not None else PricingConfig()
        self.models = dict(models or {})
        self._overrides = {normalise_model_name(k): v for k, v in self.config.models.items()}
        self._cache: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        """The price of ``model`` (an alias or an upstream model name), or None when unknown."""
        if model in self._cache:
            return self._cache[model]
        found = self._lookup(model)
        self._cache[model] = found
        return found

    def _lookup(self, model: str) -> Price | None:
        cfg = self.models.get(model)
        own = getattr(cfg, "price", None)
        if own is not None:
            return own
        names = [model]
        upstream = getattr(cfg, "model", None)
        if (
            isinstance(upstream, str)
            and upstream != model
            and getattr(cfg, "backend", None) in _PRICED_BACKENDS
        ):
            names.append(upstream)
        for n in names:
            if n in self.config.models:
                return self.config.models[n]
            norm = normalise_model_name(n)
            if norm in self._overrides:
                return self._overrides[norm]
        for n in names:
            builtin = BUILTIN_PRICES.get(normalise_model_name(n))
            if builtin is not None:
                i, o, c = builtin
                return self._Price(input=i, output=o, cached_input=c)
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float | None:
        """USD for one call; cached input tokens (a part of ``input_tokens``) at the cached price."""
        p = self.price(model)
        if p is None:
            return None
        cached = max(0, min(cached_tokens, input_tokens))
        cached_price = p.input if p.cached_input is None else p.cached_input
        usd = (input_tokens - cached) * p.input + cached * cached_price + output_tokens * p.output
        return usd / 1_000_000

    def local_cost(self, seconds: float, usd_per_hour: float | None = None) -> float:
        """USD for ``seconds`` of local compute, at ``usd_per_hour`` or ``pricing.local_usd_per_hour``."""
        rate = self.config.local_usd_per_hour if usd_per_hour is None else usd_per_hour
        return max(0.0, seconds) / 3600.0 * rate
