"""LocalCausalLM on a tiny random model built here and loaded through ``from_pretrained``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smallfleet.errors import RequestInvalid
from smallfleet.models.local_hf import LocalCausalLM, parse_tool_calls, tool_call_text
from smallfleet.types import ChatRequest, chunks_to_response

torch = pytest.importorskip("torch")
jsonschema = pytest.importorskip("jsonschema")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tier": {"type": "string", "enum": ["gold", "silver", "bronze"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
    },
    "required": ["name", "age", "tier", "tags"],
    "additionalProperties": False,
}

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 12}, "safe": {"type": "boolean"}},
                "required": ["query", "safe"],
                "additionalProperties": False,
            },
        },
    },
]


PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Token-by-token decoding of a tiny model is dominated by thread hand-offs on a shared 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smallfleet.testing.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "qwen2")


@pytest.fixture(scope="module")
def adapters(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA adapters with random, non-zero weights (so each really changes the model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for i, name in enumerate(["alpha", "beta"]):
        torch.manual_seed(100 + i)
        base = AutoModelForCausalLM.from_pretrained(tiny)
        cfg = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
        path = tmp_path_factory.mktemp("adapters") / name
        get_peft_model(base, cfg).save_pretrained(path)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def lm(tiny: Path, adapters: dict[str, Path]) -> LocalCausalLM:
    return LocalCausalLM(tiny, name="tiny", adapters=adapters, max_new_tokens=64)


def req(**kw: Any) -> ChatRequest:
    body: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    body.update(kw)
    return ChatRequest.parse(body)


async def test_generation_counts_usage(lm: LocalCausalLM, tiny: Path) -> None:
    from transformers import AutoTokenizer

    r = req(max_tokens=7, temperature=0)
    a = await lm.complete(r)
    b = await lm.complete(r)
    tok = AutoTokenizer.from_pretrained(tiny)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Weather in Paris?"}], tokenize=False, add_generation_prompt=True
    )
    assert a.usage is not None
    assert a.usage.prompt_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
    assert 1 <= a.usage.completion_tokens <= 7
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    assert a.choices[0].finish_reason in ("stop", "length")
    assert a.text == b.text  # greedy is deterministic
    assert a.model == "tiny"


async def test_llama_architecture_works_too(tmp_path: Path) -> None:
    from smallfleet.testing.tiny import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path / "llama", arch="llama", seed=3)
    assert json.loads((path / "config.json").read_text())["model_type"] == "llama"
    resp = await LocalCausalLM(path).complete(req(max_tokens=5, response_format={"type": "json_object"}))
    assert resp.choices[0].finish_reason in ("stop", "length")


async def test_json_schema_samples_all_validate(lm: LocalCausalLM) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    texts = set()
    for seed in range(50):
        resp = await lm.complete(req(response_format=rf, temperature=1.0, seed=seed, max_tokens=120))
        assert resp.choices[0].finish_reason == "stop", resp.text
        obj = json.loads(resp.text)
        jsonschema.validate(obj, SCHEMA)
        texts.add(resp.text)
    assert len(texts) > 40  # really sampled, not one answer repeated


async def test_json_object_is_an_object(lm: LocalCausalLM) -> None:
    for seed in range(3):
        resp = await lm.complete(
            req(response_format={"type": "json_object"}, temperature=1.0, seed=seed, max_tokens=80)
        )
        assert resp.text.startswith("{")
        if resp.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(resp.text), dict)


async def test_token_limit_inside_json_is_marked_length(lm: LocalCausalLM) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    resp = await lm.complete(req(response_format=rf, temperature=1.0, seed=1, max_tokens=4))
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 4
    with pytest.raises(ValueError):
        json.loads(resp.text)


async def test_required_tool_calls_validate(lm: LocalCausalLM) -> None:
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    names = set()
    for seed in range(8):
        resp = await lm.complete(
            req(tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed, max_tokens=250)
        )
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls", choice.message.content
        for call in choice.message.tool_calls or []:
            names.add(call.function.name)
            jsonschema.validate(json.loads(call.function.arguments), params[call.function.name])
    assert names == {"get_weather", "search"}


async def test_named_tool_and_no_parallel(lm: LocalCausalLM) -> None:
    for seed in range(4):
        resp = await lm.complete(
            req(
                tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "search"}},
                parallel_tool_calls=False,
                temperature=1.0,
                seed=seed,
                max_tokens=200,
            )
        )
        calls = resp.choices[0].message.tool_calls or []
        assert len(calls) == 1 and calls[0].function.name == "search"
        args = json.loads(calls[0].function.arguments)
        jsonschema.validate(args, TOOLS[1]["function"]["parameters"])


async def test_auto_tool_choice_allows_text_then_constrains_calls(lm: LocalCausalLM) -> None:
    import xgrammar as xgr

    kind, spec = lm.constraint(req(tools=TOOLS))  # type: ignore[misc]
    assert kind == "tools_auto"
    grammar = lm._grammar(spec)
    call = '{"name": "search", "arguments": {"query": "x", "safe": true}}'
    good = f"Let me look. <tool_call>\n{call}\n</tool_call>"
    assert xgr.GrammarMatcher(grammar).accept_string(good)
    assert xgr.GrammarMatcher(grammar).accept_string("Just text, no call.")
    bad = '<tool_call>\n{"name": "search", "arguments": {"query": 5, "safe": true}}'
    assert not xgr.GrammarMatcher(grammar).accept_string(bad)
    # the added <tool_call> token triggers the constrained call too
    m = xgr.GrammarMatcher(grammar)
    assert m.accept_token(lm.tokenizer.convert_tokens_to_ids("<tool_call>"))
    assert not m.accept_string("oops")
    for seed in range(3):  # and real sampling through that grammar ends cleanly
        resp = await lm.complete(req(tools=TOOLS, temperature=1.0, seed=seed, max_tokens=24))
        for call in resp.choices[0].message.tool_calls or []:
            jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])


async def test_bad_requests_are_clear_errors(lm: LocalCausalLM) -> None:
    with pytest.raises(RequestInvalid, match="gamma") as e:
        await lm.complete(req(metadata={"adapter": "gamma"}))
    assert e.value.param == "metadata.adapter"
    with pytest.raises(RequestInvalid) as e:
        await lm.complete(req(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}))
    assert e.value.param == "tool_choice"
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object", "minProperties": "x"}},
    }
    with pytest.raises(RequestInvalid) as e:
        await lm.complete(req(response_format=bad))
    assert e.value.param == "response_format.json_schema.schema"


CUSTOM_TOOL: dict[str, Any] = {"type": "custom", "custom": {"name": "apply_patch"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "tools": TOOLS,
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "name": "search"}]},
                },
            },
            "tool_choice",
        ),
        (
            {"tools": [CUSTOM_TOOL], "tool_choice": {"type": "custom", "custom": {"name": "apply_patch"}}},
            "tools",  # the custom tool is named first: it alone is enough to refuse
        ),
        ({"tools": [*TOOLS, CUSTOM_TOOL]}, "tools"),
        (
            {
                "tools": TOOLS,
                "messages": [
                    {"role": "user", "content": "Fix it."},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "custom", "custom": {"name": "apply_patch", "input": "x"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "done"},
                ],
            },
            "messages",
        ),
    ],
)
async def test_passthrough_only_requests_are_a_400_naming_the_field(
    tiny: Path, body: dict[str, Any], param: str
) -> None:
    # Checked before the model loads: a fresh, never-loaded model refuses as fast as a warm one.
    m = LocalCausalLM(tiny, name="tiny")
    request = req(**body)
    assert request.passthrough_reason() is not None
    with pytest.raises(RequestInvalid, match="local model") as e:
        await m.complete(request)
    assert (e.value.param, e.value.status_code) == (param, 400)
    with pytest.raises(RequestInvalid) as e:
        _ = [c async for c in m.stream(request)]
    assert e.value.param == param
    assert not m.loaded


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', None, [("f", {"a": 1})]),
        (
            'Sure.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "g", "arguments": "{\\"q\\": \\"x\\"}"}</tool_call>',
            "Sure.",
            [("f", {}), ("g", {"q": "x"})],
        ),
        ('<tool_call>\n{"name": "f", "arguments": {"a": [1, 2]}}', None, [("f", {"a": [1, 2]})]),
        ('{"name": "f", "arguments": {"a": "b"}}', None, [("f", {"a": "b"})]),
        ('```json\n{"name": "g", "parameters": {"q": 1}}\n```', None, [("g", {"q": 1})]),
        (
            '[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"q": 2}}]',
            None,
            [("f", {}), ("g", {"q": 2})],
        ),
        ('{"name": "unknown", "arguments": {}}', '{"name": "unknown", "arguments": {}}', []),
        ("<tool_call>{not json}</tool_call>", "<tool_call>{not json}</tool_call>", []),
        ('{"city": "Paris"}', '{"city": "Paris"}', []),
        ("It is sunny.", "It is sunny.", []),
    ],
)
def test_parse_tool_calls(text: str, content: str | None, calls: list[Any]) -> None:
    assert parse_tool_calls(text, ["f", "g"]) == (content, calls)


def test_tool_call_text_roundtrips() -> None:
    text = tool_call_text("f", {"b": 2, "a": "x"}, {"properties": {"a": {}, "b": {}}})
    assert text == '<tool_call>\n{"name": "f", "arguments": {"a": "x", "b": 2}}\n</tool_call>'
    assert parse_tool_calls(text) == (None, [("f", {"a": "x", "b": 2})])


async def test_adapters_change_output_and_are_selectable(lm: LocalCausalLM) -> None:
    base = lm.generate(req(temperature=1.0, seed=5, max_tokens=12))
    alpha = lm.generate(req(temperature=1.0, seed=5, max_tokens=12), adapter="alpha")
    beta = lm.generate(req(temperature=1.0, seed=5, max_tokens=12), adapter="beta")
    assert base.logprobs[0] != pytest.approx(alpha.logprobs[0], abs=1e-3)
    assert alpha.logprobs[0] != pytest.approx(beta.logprobs[0], abs=1e-3)
    assert len({base.text, alpha.text, beta.text}) == 3
    # per request: metadata.adapter or the model field ALIAS:ADAPTER; neither → the base model
    by_meta = await lm.complete(req(temperature=1.0, seed=5, max_tokens=12, metadata={"adapter": "alpha"}))
    by_model = await lm.complete(req(model="tiny:beta", temperature=1.0, seed=5, max_tokens=12))
    plain = await lm.complete(req(temperature=1.0, seed=5, max_tokens=12))
    assert (by_meta.text, by_model.text, plain.text) == (alpha.text, beta.text, base.text)


async def test_concurrent_requests_are_served_one_at_a_time(lm: LocalCausalLM) -> None:
    import asyncio

    # adapters switch per request while other requests wait for the model
    rs = [
        req(temperature=1.0, seed=s, max_tokens=8, metadata={"adapter": a})
        for s, a in enumerate(["alpha", "beta"])
    ]
    together = await asyncio.gather(*(lm.complete(r) for r in rs * 2))
    alone = [await lm.complete(r) for r in rs * 2]
    assert [r.text for r in together] == [r.text for r in alone]


async def test_stream_matches_complete(lm: LocalCausalLM) -> None:
    r = req(temperature=1.0, seed=9, max_tokens=15, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in lm.stream(r)]
    whole = await lm.complete(r)
    assert len(chunks) > 4  # token by token, not one piece
    again = chunks_to_response(chunks)
    assert again.text == whole.text
    assert again.usage == whole.usage
    assert again.choices[0].finish_reason == whole.choices[0].finish_reason


async def test_stop_string_cuts_text(lm: LocalCausalLM) -> None:
    full = await lm.complete(req(temperature=1.0, seed=2, max_tokens=20))
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = await lm.complete(req(temperature=1.0, seed=2, max_tokens=20, stop=[stop]))
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = chunks_to_response(
        [c async for c in lm.stream(req(temperature=1.0, seed=2, max_tokens=20, stop=stop))]
    )
    assert streamed.text == cut.text


async def test_logprobs_in_openai_shape(lm: LocalCausalLM) -> None:
    resp = await lm.complete(req(max_tokens=3, logprobs=True, top_logprobs=2))
    content = resp.choices[0].logprobs["content"]  # type: ignore[index]
    assert len(content) == resp.usage.completion_tokens  # type: ignore[union-attr]
    assert all(item["logprob"] <= 0 and len(item["top_logprobs"]) == 2 for item in content)


def test_construction_is_lazy(tiny: Path) -> None:
    code = f"""
import sys
from smallfleet.config import load_settings
from smallfleet.models.registry import ModelRegistry
models = {{"tiny": {{"backend": "local", "model": {str(tiny)!r}}}}}
s = load_settings(env={{}}, overrides={{"models": models}})
reg = ModelRegistry(s)
m = reg.get("tiny")
assert type(m).__name__ == "LocalCausalLM" and not m.loaded
assert reg.capabilities("tiny") == {{"streams": True, "tools": True, "json_schema": True}}
heavy = [n for n in ("torch", "transformers", "peft", "xgrammar") if n in sys.modules]
print("heavy:", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout
