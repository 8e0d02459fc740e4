"""The generator specialist on a tiny causal LM built here: it trains, constrains, exports and reloads."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smallfleet.errors import UserError
from smallfleet.specialists.base import Example, SpecialistChatModel, load_specialist
from smallfleet.types import ChatRequest, ChatResponse

torch = pytest.importorskip("torch")
jsonschema = pytest.importorskip("jsonschema")

from smallfleet.specialists.generator import Generator, answer_text, output_kind  # noqa: E402

CITIES = ["paris", "london", "berlin", "tokyo", "madrid", "rome"]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": CITIES},
        "people": {"type": "integer", "minimum": 1, "maximum": 20},
        "note": {"type": "string", "maxLength": 10},
    },
    "required": ["city", "people", "note"],
    "additionalProperties": False,
}
TEMPLATES = [
    "Book a table in {c} for {n} people",
    "Table for {n} in {c} please",
    "We are {n}, find us a place in {c}",
    "Reserve {c}, party of {n}",
]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "book",
            "description": "Book a table.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": CITIES},
                    "people": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                "required": ["city", "people"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "cancel",
            "description": "Cancel a booking.",
            "parameters": {
                "type": "object",
                "properties": {"booking_id": {"type": "string", "maxLength": 8}},
                "required": ["booking_id"],
            },
        },
    },
]


def json_examples(n: int, seed: int, schema_in_request: bool = True) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        city, people = rng.choice(CITIES), rng.randrange(1, 13)
        body: dict[str, Any] = {
            "model": "teacher",
            "messages": [
                {"role": "system", "content": "Extract the booking."},
                {"role": "user", "content": rng.choice(TEMPLATES).format(c=city, n=people)},
            ],
        }
        if schema_in_request:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "booking", "schema": SCHEMA},
            }
        # the teacher writes keys in its own order and spacing; the specialist learns the canonical form
        answer = json.dumps({"note": "ok", "people": people, "city": city}, indent=1)
        out.append(Example(ChatRequest.parse(body), ChatResponse.of_text("teacher", answer)))
    return out


def tool_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        city, people = rng.choice(CITIES), rng.randrange(1, 13)
        body = {
            "model": "teacher",
            "messages": [{"role": "user", "content": rng.choice(TEMPLATES).format(c=city, n=people)}],
            "tools": TOOLS,
        }
        resp = ChatResponse.of_tool_calls("teacher", [("book", {"people": people, "city": city})])
        out.append(Example(ChatRequest.parse(body), resp))
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core box: thread hand-offs cost more than they give
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smallfleet.testing.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("gen") / "tiny", seed=1)


@pytest.fixture(scope="module")
def json_gen(tiny: Path) -> Generator:
    gen = Generator(str(tiny), epochs=6, lr=1e-2, rank=8, dropout=0.0, batch_size=8, max_length=256)
    return gen.fit(json_examples(32, seed=0), validation=json_examples(8, seed=1))


@pytest.fixture(scope="module")
def saved(json_gen: Generator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return json_gen.save(tmp_path_factory.mktemp("saved") / "gen")


def test_output_kind_and_answer_rendering() -> None:
    assert output_kind(json_examples(3, 0)) == "json"
    assert output_kind(tool_examples(3, 0)) == "tool_call"
    text = Example(json_examples(1, 0)[0].request, ChatResponse.of_text("t", "Sure, booked."))
    assert output_kind([*json_examples(2, 0), text]) == "text"
    ex = json_examples(1, 5)[0]
    answer = json.loads(ex.response.text)
    rendered = answer_text(ex, "json")
    assert list(json.loads(rendered)) == ["city", "people", "note"]  # schema order, not the teacher's
    assert rendered == json.dumps({k: answer[k] for k in ("city", "people", "note")})
    tool = tool_examples(1, 0)[0]
    assert answer_text(tool, "tool_call").startswith('<tool_call>\n{"name": "book", "arguments": {"city": ')
    # in a mixed (text) dataset, calls are still written as calls, after any text
    tool.response.choices[0].message.content = "On it."
    assert answer_text(tool, "text").startswith('On it.\n<tool_call>\n{"name": "book"')


def test_training_loss_falls(json_gen: Generator) -> None:
    losses = json_gen.losses
    assert len(losses) == 6 * 4  # epochs × batches
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, losses
    assert json_gen.meta.metrics["val_loss"] < losses[0]
    assert json_gen.output == "json"
    assert json_gen.meta.n_train == 32 and json_gen.meta.data_hash


def test_constrained_json_always_validates(json_gen: Generator) -> None:
    requests = [ex.request for ex in json_examples(10, seed=7)]
    # without a schema in the request the answer is still constrained to a JSON object
    requests += [ex.request for ex in json_examples(4, seed=8, schema_in_request=False)]
    for request, pred in zip(requests, json_gen.predict(requests), strict=True):
        assert pred.response.choices[0].finish_reason == "stop"
        value = json.loads(pred.response.text)
        if request.json_schema:
            jsonschema.validate(value, SCHEMA)
        else:
            assert isinstance(value, dict)
        assert 0.0 < pred.confidence <= 1.0
        assert pred.response.model == "teacher"


def test_cut_answer_gets_zero_confidence(json_gen: Generator) -> None:
    request = json_examples(1, seed=3)[0].request.model_copy(update={"max_completion_tokens": 3})
    (pred,) = json_gen.predict([request])
    assert pred.response.choices[0].finish_reason == "length"
    assert pred.confidence == 0.0


def test_tool_call_generator_validates(tiny: Path) -> None:
    gen = Generator(
        str(tiny), epochs=1, lr=1e-2, rank=4, dropout=0.0, batch_size=8, max_length=512, progress=False
    )
    gen.fit(tool_examples(8, seed=0))
    assert gen.output == "tool_call" and len(gen.losses) == 1
    requests = [ex.request for ex in tool_examples(4, seed=9)]  # tool_choice unset: auto → required
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for pred in gen.predict(requests):
        choice = pred.response.choices[0]
        assert choice.finish_reason == "tool_calls", choice.message.content
        for call in choice.message.tool_calls or []:
            jsonschema.validate(json.loads(call.function.arguments), params[call.function.name])
        assert pred.confidence > 0


def test_free_text_generator(tiny: Path) -> None:
    examples = [
        Example(
            ex.request.model_copy(update={"response_format": None}),
            ChatResponse.of_text("t", "Booked, see you!"),
        )
        for ex in json_examples(8, seed=2)
    ]
    gen = Generator(str(tiny), epochs=2, lr=1e-2, rank=4, dropout=0.0, batch_size=8, progress=False)
    gen.fit(examples)
    assert gen.output == "text"
    request = json_examples(1, seed=13, schema_in_request=False)[0].request
    (pred,) = gen.predict([request.model_copy(update={"max_completion_tokens": 6})])
    assert pred.response.message.tool_calls is None
    assert pred.response.usage is not None and pred.response.usage.completion_tokens <= 6
    if pred.response.choices[0].finish_reason == "length":
        assert pred.confidence == 0.0  # a cut answer is not a confident one
    else:
        assert pred.confidence > 0.0


def test_export_is_a_plain_peft_adapter(saved: Path, tiny: Path, json_gen: Generator) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert {"adapter_config.json", "adapter_model.safetensors", "specialist.json"} <= {
        p.name for p in saved.iterdir()
    }
    cfg = json.loads((saved / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny)
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8
    base = AutoModelForCausalLM.from_pretrained(tiny)
    ids = torch.tensor([json_gen.lm.prompt_ids(json_examples(1, seed=4)[0].request)])  # type: ignore[union-attr]
    with torch.inference_mode():
        plain = base(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(base, str(saved)).eval()
        adapted = peft_model(input_ids=ids).logits
        ours = json_gen.lm.model(input_ids=ids).logits  # type: ignore[union-attr]
    assert torch.allclose(adapted, ours, atol=1e-5)
    assert not torch.allclose(adapted, plain, atol=1e-3)


def test_save_load_gives_identical_predictions(saved: Path, json_gen: Generator) -> None:
    loaded = load_specialist(saved)
    assert isinstance(loaded, Generator)
    assert loaded.output == "json" and loaded.lm is not None and not loaded.lm.loaded  # lazy
    requests = [ex.request for ex in json_examples(5, seed=11)]
    before = json_gen.predict(requests)
    after = loaded.predict(requests)
    assert [p.response.text for p in after] == [p.response.text for p in before]
    assert [p.confidence for p in after] == pytest.approx([p.confidence for p in before], rel=1e-4)


async def test_served_as_a_chat_model(json_gen: Generator) -> None:
    model = SpecialistChatModel(json_gen, name="booking-gen")
    request = json_examples(1, seed=12)[0].request
    pred = await model.predict_one(request)
    assert pred.response.model == "booking-gen"
    jsonschema.validate(json.loads(pred.response.text), SCHEMA)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        Generator("x").fit([])
    with pytest.raises(UserError, match="not trained"):
        Generator("x").predict([json_examples(1, 0)[0].request])
    with pytest.raises(UserError, match="base model"):
        Generator(str(tmp_path / "missing"), progress=False).fit(json_examples(2, 0))
    with pytest.raises(UserError):
        Generator.load(tmp_path)
