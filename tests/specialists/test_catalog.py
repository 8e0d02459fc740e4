"""Catalog, task profiling and candidate selection."""

from __future__ import annotations

import json

import jsonschema
import pytest

from smallfleet.config import load_settings
from smallfleet.errors import ConfigError
from smallfleet.specialists.base import Example
from smallfleet.specialists.catalog import (
    BUILTIN_CATALOG,
    Budget,
    catalog,
    infer_schema,
    profile_task,
    select,
)
from smallfleet.testing.intents import support_desk_examples
from smallfleet.types import ChatRequest, ChatResponse


def _ex(user: str, response: ChatResponse) -> Example:
    return Example(ChatRequest(model="m", messages=[{"role": "user", "content": user}]), response)


def _text(user: str, text: str) -> Example:
    return _ex(user, ChatResponse.of_text("t", text))


ORDERS = [
    {"name": "Ada", "qty": 2, "size": "M", "gift": False, "date": "2024-03-05"},
    {"name": "Bob", "qty": 1, "size": "L", "gift": True, "date": "2024-03-06", "note": "ring twice"},
    {"name": "Cy", "qty": 3, "size": "M", "gift": False, "date": "2024-04-01"},
    {"name": "Di", "qty": 1.5, "size": "L", "gift": False, "date": "2024-05-01", "note": None},
]


def test_builtin_catalog_covers_the_named_models() -> None:
    names = {e.name for e in BUILTIN_CATALOG}
    for expected in [
        "all-MiniLM-L6-v2",
        "Qwen2.5-0.5B-Instruct",
        "Qwen3-4B",
        "SmolLM2-135M-Instruct",
        "Llama-3.2-3B-Instruct",
        "Phi-4-mini-instruct",
        "xLAM-2-1b-fc-r",
        "Hammer2.1-3b",
    ]:
        assert expected in names
    enc = next(e for e in BUILTIN_CATALOG if e.name == "all-MiniLM-L6-v2")
    assert set(enc.kinds) == {"classifier", "extractor", "tool_caller"} and enc.cpu_ok


def test_catalog_extends_from_settings() -> None:
    extra = {
        "name": "my-slm",
        "hf_id": "org/my-slm",
        "kinds": ["generator"],
        "params_m": 50,
        "context_length": 2048,
    }
    entries = catalog(load_settings(env={}, overrides={"catalog": [extra]}))
    assert entries[-1].name == "my-slm" and len(entries) == len(BUILTIN_CATALOG) + 1
    with pytest.raises(ConfigError, match="params_mb"):
        catalog(load_settings(env={}, overrides={"catalog": [{**extra, "params_mb": 1}]}))


def test_profile_labels() -> None:
    p = profile_task(support_desk_examples(60))
    assert p.shape == "label" and len(p.labels or []) == 6 and p.n_examples == 60
    assert p.mean_input_tokens > 10
    assert profile_task(support_desk_examples(60, json_labels=True)).shape == "label"


def test_profile_json_with_inferred_schema() -> None:
    exs = [_text(f"order {i}", json.dumps(o)) for i, o in enumerate(ORDERS * 3)]
    p = profile_task(exs)
    assert p.shape == "json"
    schema = p.json_schema
    assert schema is not None
    assert schema["properties"]["qty"]["type"] == "number"  # int + float
    assert schema["properties"]["gift"]["type"] == "boolean"
    assert schema["properties"]["size"]["enum"] == ["L", "M"]
    assert schema["properties"]["date"]["format"] == "date"
    assert schema["properties"]["note"]["type"] == ["string", "null"]
    assert set(schema["required"]) == {"name", "qty", "size", "gift", "date"}  # note is optional
    for o in ORDERS:
        jsonschema.validate(o, schema)


def test_slot_objects_that_recur_are_json_not_labels() -> None:
    # NLU++-like slots: most messages give nothing ({}), the others one or two short fields
    answers = [{}] * 12 + [{"people": 2}] * 3 + [{"time": "18:30"}] * 2 + [{"people": 3, "time": "09:05"}]
    p = profile_task([_text(f"m{i}", json.dumps(a)) for i, a in enumerate(answers)])
    assert p.shape == "json" and p.json_schema is not None
    assert p.json_schema["properties"]["time"]["pattern"] == r"^\d{2}:\d{2}$"  # 24-hour times
    # one field, the same one every time: a label in JSON clothing
    labels = [{"intent": "refund"}, {"intent": "cancel"}] * 6
    assert profile_task([_text(f"m{i}", json.dumps(a)) for i, a in enumerate(labels)]).shape == "label"


def test_infer_schema_nested_and_arrays() -> None:
    s = infer_schema(
        [{"items": [{"sku": "A", "n": 1}], "tags": ["x"]}, {"items": [{"sku": "B"}], "tags": []}]
    )
    assert s["properties"]["items"]["items"]["required"] == ["sku"]
    assert s["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert infer_schema([1, "a"]) == {"type": ["integer", "string"]}
    assert infer_schema([None]) == {"type": "null"}


def test_profile_tool_calls_and_text() -> None:
    calls = [
        _ex(f"weather in {c}", ChatResponse.of_tool_calls("t", [("get_weather", {"city": c})]))
        for c in ["Paris", "Oslo", "Rome"]
    ]
    p = profile_task(calls)
    assert p.shape == "tool_call" and p.tool_names == ["get_weather"]
    prose = [
        _text(f"q{i}", f"Here is a long and different answer number {i} about things.") for i in range(9)
    ]
    assert profile_task(prose).shape == "text"
    assert profile_task([]).shape == "text"


def _profile(shape: str, tokens: float = 40) -> object:
    from smallfleet.specialists.catalog import TaskProfile

    return TaskProfile(shape=shape, n_examples=200, mean_input_tokens=tokens)  # type: ignore[arg-type]


def test_select_cpu_only() -> None:
    assert [(c.kind, c.base.name) for c in select(_profile("label"))] == [("classifier", "all-MiniLM-L6-v2")]
    assert [c.kind for c in select(_profile("json"))] == ["extractor"]
    assert [c.kind for c in select(_profile("tool_call"))] == ["tool_caller"]
    assert select(_profile("text")) == []  # no generator without a GPU
    cpu_gen = select(_profile("text"), Budget(allow_cpu_generator=True))
    assert cpu_gen and all(c.base.params_m <= 600 for c in cpu_gen)
    assert cpu_gen[0].base.name == "SmolLM2-135M-Instruct"


def test_select_with_gpu_budget_orders_cheapest_first() -> None:
    cands = select(_profile("json"), Budget(cpu_only=False, gpu_memory_gb=8))
    assert cands[0].kind == "extractor"
    sizes = [c.base.params_m for c in cands[1:]]
    assert sizes == sorted(sizes) and max(sizes) <= 8 * 1024 / 2 / 1.5
    big = [c.base.name for c in select(_profile("json"), Budget(cpu_only=False, gpu_memory_gb=24))]
    assert "Qwen3-4B" in big and "Qwen3-4B" not in [c.base.name for c in cands]


def test_select_tool_calls_prefers_function_calling_models() -> None:
    cands = select(_profile("tool_call"), Budget(cpu_only=False, gpu_memory_gb=16))
    assert cands[0].kind == "tool_caller"
    gens = [c.base for c in cands[1:]]
    flags = [g.tool_calling for g in gens]
    assert flags == sorted(flags, reverse=True) and flags[0]
    assert gens[0].name == "Hammer2.1-0.5b"


def test_select_drops_short_context_generators() -> None:
    cands = select(_profile("text", tokens=20000), Budget(cpu_only=False, gpu_memory_gb=80))
    assert cands and all(c.base.context_length >= 20000 for c in cands)
    assert not any(c.base.name.startswith("SmolLM2") for c in cands)
    long_label = select(_profile("label", tokens=1000))
    assert long_label[0].notes and "truncated" in long_label[0].notes[0]
