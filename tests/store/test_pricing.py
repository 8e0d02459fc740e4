"""Prices: hand-checked costs, where a price comes from, dated names, local compute."""

from __future__ import annotations

import re

import pytest

from smallfleet.config import AnthropicModelConfig, LocalModelConfig, OpenAIModelConfig, Price, PricingConfig
from smallfleet.store.pricing import BUILTIN_PRICES, PRICES_AS_OF, PriceTable, normalise_model_name


def test_hand_checked_costs() -> None:
    t = PriceTable()
    # gpt-4o: $2.50 in, $10 out, $1.25 cached in, per 1M.
    # 800 fresh in * 2.5 + 200 cached * 1.25 + 500 out * 10 = 2000 + 250 + 5000 = 7250 / 1e6
    assert t.cost("gpt-4o", 1000, 500, cached_tokens=200) == pytest.approx(0.00725)
    # gpt-4o-mini: 1M in + 1M out = 0.15 + 0.60
    assert t.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    # claude-3-5-haiku: 10k in * 0.80 + 2k out * 4.00 = 8000 + 8000 = 16000 / 1e6
    assert t.cost("claude-3-5-haiku-20241022", 10_000, 2_000) == pytest.approx(0.016)
    # No cached price: cached tokens cost the input price; cached > input is clamped.
    assert t.cost("gpt-4-turbo", 100, 0, cached_tokens=500) == pytest.approx(100 * 10 / 1e6)
    assert t.cost("gpt-4o", 0, 0) == 0.0


def test_unknown_model_costs_none() -> None:
    assert PriceTable().cost("my-finetune-xyz", 100, 100) is None
    assert PriceTable().price("") is None


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("GPT-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-4-0613", "gpt-4"),
        ("models/gemini-2.5-pro-preview-05-06", "gemini-2.5-pro"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama-3.3-70b-instruct-turbo"),
    ],
)
def test_dated_and_prefixed_names(name: str, canonical: str) -> None:
    assert normalise_model_name(name) == canonical
    assert canonical in BUILTIN_PRICES
    assert PriceTable().price(name) is not None


def test_mini_is_not_priced_as_its_big_sibling() -> None:
    t = PriceTable()
    assert t.price("gpt-4o-mini-2024-07-18").input == 0.15  # type: ignore[union-attr]
    assert t.price("gpt-4o-2024-05-13").input == 2.50  # type: ignore[union-attr]


def test_where_a_price_comes_from() -> None:
    models = {
        "fast": OpenAIModelConfig(model="gpt-4o-mini"),  # no own price: the upstream name's
        "mine": OpenAIModelConfig(model="gpt-4o", price=Price(input=1.0, output=2.0)),  # own price wins
        "local": LocalModelConfig(model="Qwen/Qwen2.5-0.5B-Instruct"),
    }
    cfg = PricingConfig(
        models={"gpt-4o-mini": Price(input=0.2, output=0.8), "custom": Price(input=3, output=3)}
    )
    t = PriceTable(cfg, models)
    assert t.cost("mine", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert t.cost("fast", 1_000_000, 0) == pytest.approx(0.2)  # pricing.models beats the built-in
    assert t.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.2)
    assert t.cost("custom", 0, 1_000_000) == pytest.approx(3.0)
    assert t.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert t.cost("local", 10, 10) is None


def test_a_claude_alias_is_priced_by_its_upstream_model() -> None:
    models = {
        "claude": AnthropicModelConfig(model="claude-3-5-haiku-20241022"),  # no own price
        "claude-own": AnthropicModelConfig(model="claude-3-5-haiku", price=Price(input=1.0, output=1.0)),
        "local": LocalModelConfig(model="claude-3-5-haiku"),  # a checkpoint's name, not a provider's
    }
    t = PriceTable(PricingConfig(), models)
    # claude-3-5-haiku: 10k in * 0.80 + 2k out * 4.00 = 16000 / 1e6
    assert t.cost("claude", 10_000, 2_000) == pytest.approx(0.016)
    assert t.cost("claude-own", 1_000_000, 0) == pytest.approx(1.0)
    assert t.cost("local", 10_000, 2_000) is None
    over = PriceTable(PricingConfig(models={"claude-3-5-haiku": Price(input=2.0, output=2.0)}), models)
    assert over.cost("claude", 1_000_000, 0) == pytest.approx(2.0)  # pricing.models beats the built-in


def test_local_cost_by_compute_time() -> None:
    t = PriceTable(PricingConfig(local_usd_per_hour=1.8))
    assert t.local_cost(3600) == pytest.approx(1.8)
    assert t.local_cost(2.0) == pytest.approx(0.001)
    assert t.local_cost(2.0, usd_per_hour=36.0) == pytest.approx(0.02)
    assert t.local_cost(-1.0) == 0.0
    assert PriceTable().local_cost(100.0) == 0.0


def test_prices_are_dated() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", PRICES_AS_OF)
