"""The tool_caller specialist, trained in the test on generated traffic.

Train and test use different wordings; the held-out tools (flights, calendars,
stocks, translation) never appear in training, with other names, parameters and
descriptions than the training tools (orders, weather, e-mail, currencies).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from smallfleet.errors import UserError
from smallfleet.specialists.base import Example, load_specialist
from smallfleet.types import ChatRequest, ChatResponse

pytest.importorskip("torch")

from smallfleet.specialists._params import Param
from smallfleet.specialists._spans import EncoderEngine, Span, SpanResult
from smallfleet.specialists._values import extend_name, trim_run_on
from smallfleet.specialists.tool_caller import ToolCaller, _span_value


def fn(name: str, desc: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": desc,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


S = {"type": "string"}
TRAIN_TOOLS = {
    "get_weather": fn(
        "get_weather",
        "Get the current weather for a city.",
        {
            "location": {**S, "description": "The city, e.g. Paris"},
            "unit": {**S, "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
        },
        ["location"],
    ),
    "lookup_order": fn(
        "lookup_order",
        "Look up the status of a customer's order.",
        {"order_id": {**S, "description": "The order identifier, like ORD-1234"}},
        ["order_id"],
    ),
    "issue_refund": fn(
        "issue_refund",
        "Refund money to the customer for an order.",
        {
            "order_id": {**S, "description": "The order to refund"},
            "amount": {"type": "number", "description": "Amount to refund in dollars"},
            "reason": {
                **S,
                "enum": ["damaged", "late", "wrong_item"],
                "description": "Why the refund is given",
            },
        },
        ["order_id", "amount", "reason"],
    ),
    "send_email": fn(
        "send_email",
        "Send an e-mail message.",
        {
            "to": {**S, "description": "Recipient e-mail address"},
            "subject": {**S, "description": "Subject line of the message"},
        },
        ["to", "subject"],
    ),
    "convert_currency": fn(
        "convert_currency",
        "Convert an amount of money from one currency to another.",
        {
            "amount": {"type": "number", "description": "How much money"},
            "source": {**S, "description": "Currency code to convert from, e.g. USD"},
            "target": {**S, "description": "Currency code to convert to, e.g. EUR"},
        },
        ["amount", "source", "target"],
    ),
    "set_reminder": fn(
        "set_reminder",
        "Create a reminder on a given day.",
        {
            "note": {**S, "description": "What to be reminded of"},
            "date": {**S, "description": "The day, in YYYY-MM-DD format"},
            "urgent": {"type": "boolean", "description": "Whether the reminder is urgent"},
        },
        ["note", "date"],
    ),
    "ship_package": fn(
        "ship_package",
        "Send a parcel by courier.",
        {
            "sender_city": {**S, "description": "City the parcel is sent from"},
            "recipient_city": {**S, "description": "City the parcel goes to"},
            "weight": {"type": "integer", "description": "Weight in kilograms"},
        },
        ["sender_city", "recipient_city"],
    ),
    "post_message": fn(
        "post_message",
        "Post a chat message to a team channel.",
        {
            "channel": {**S, "description": "Channel name, like #general"},
            "message": {**S, "description": "The text to post"},
        },
        ["channel", "message"],
    ),
}
HELD_OUT_TOOLS = {
    "book_flight": fn(
        "book_flight",
        "Book a plane ticket between two airports.",
        {
            "origin": {**S, "description": "City the flight departs from"},
            "destination": {**S, "description": "City the flight arrives in"},
            "passengers": {"type": "integer", "description": "Number of travellers"},
        },
        ["origin", "destination"],
    ),
    "create_event": fn(
        "create_event",
        "Add a meeting or event to the user's calendar.",
        {
            "title": {**S, "description": "Name of the event"},
            "day": {**S, "description": "Date of the event, YYYY-MM-DD"},
        },
        ["title", "day"],
    ),
    "get_stock_price": fn(
        "get_stock_price",
        "Get the latest share price of a listed company.",
        {"ticker": {**S, "description": "The stock ticker symbol, like AAPL"}},
        ["ticker"],
    ),
    "translate": fn(
        "translate",
        "Translate a sentence into another language.",
        {
            "text": {**S, "description": "The sentence to translate"},
            "language": {**S, "enum": ["french", "german", "spanish"], "description": "Target language"},
        },
        ["text", "language"],
    ),
}

CITIES = ["Paris", "London", "Tokyo", "New York", "Berlin", "Madrid", "Oslo", "Lima", "Cairo", "Sydney",
          "Toronto", "Rome", "Dublin", "Vienna", "Seoul", "Denver"]  # fmt: skip
EMAILS = ["ana.lopez@example.com", "Bob.Stone@mail.org", "c.wu@shop.io", "dee@corp.net", "E.Vance@firm.co"]
SUBJECTS = ["Invoice for March", "Meeting notes", "Your refund", "Welcome aboard", "Quarterly report"]
NOTES = ["call the bank", "renew my passport", "water the plants", "pay rent", "book a dentist visit"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip
TITLES = ["Team standup", "Budget review", "Lunch with Sam", "Design sync", "Board meeting"]
TICKERS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "IBM"]
CHANNELS = ["#general", "#random", "#sales-team", "#dev"]
MESSAGES = [
    "Happy Friday everyone!",
    "The build is green again.",
    "Lunch is on me today.",
    "Who has the keys?",
]
SENTENCES = ["Where is the station?", "I love this song.", "The meeting is at noon.", "Thank you very much!"]

# Wordings: index 0 half for training, the other half for testing.
WORDING: dict[str, list[str]] = {
    "get_weather": ["What's the weather like in {location}?", "Is it raining in {location} right now?",
                    "Weather report for {location}, please.", "How hot is it in {location} today?",
                    "Tell me the forecast for {location}.", "Do I need an umbrella in {location}?"],
    "get_weather_unit": ["Weather in {location} in {unit} please.",
                         "Give me {location}'s temperature in {unit}.",
                         "How warm is {location}? Answer in {unit}.", "{location} temperature, {unit}."],
    "get_weather_two": ["Weather in {location} and {location2}?",
                        "Is it sunny in {location} or in {location2}?",
                        "Compare the weather of {location} and {location2}.",
                        "How's the weather in {location} and also in {location2}?"],
    "lookup_order": ["Where is my order {order_id}?", "Status of {order_id} please.",
                     "Has {order_id} shipped yet?", "Can you check order {order_id} for me?",
                     "I'm still waiting on {order_id}, what's going on?", "Track {order_id}."],
    "issue_refund": ["Refund {amount_s} on {order_id}, it arrived {reason_s}.",
                     "Please give back {amount_s} for order {order_id}; it came {reason_s}.",
                     "Order {order_id} was {reason_s}, refund {amount_s}.",
                     "I want {amount_s} back for {order_id} because it was {reason_s}."],
    "send_email": ["Email {to} with the subject {subject}.", "Send a mail to {to} titled {subject}.",
                   "Write to {to}, subject: {subject}.", "Drop {to} a message called {subject}."],
    "convert_currency": ["Convert {amount_s} {source} to {target}.",
                         "How much is {amount_s} {source} in {target}?",
                         "Change {amount_s} {source} into {target} please.",
                         "{amount_s} {source} to {target}?"],
    "set_reminder": ["Remind me to {note} on {date_s}.", "Set a reminder: {note}, {date_s}.",
                     "On {date_s} I need to {note}.", "Don't let me forget to {note} on {date_s}."],
    "set_reminder_urgent": ["Urgent: remind me to {note} on {date_s}!",
                            "Important reminder to {note} on {date_s}, urgent."],
    "ship_package": ["Ship a parcel from {sender_city} to {recipient_city}.",
                     "Send this box from {sender_city} over to {recipient_city}.",
                     "Courier: {sender_city} to {recipient_city}, please.",
                     "I need a package moved from {sender_city} to {recipient_city}."],
    "ship_package_w": ["Ship {weight_s} kg from {sender_city} to {recipient_city}.",
                       "A {weight_s} kilo parcel, {sender_city} to {recipient_city}."],
    "post_message": ["Post '{message}' in {channel}.", "Tell {channel}: '{message}'",
                     "Write '{message}' to the {channel} channel.", "Say '{message}' on {channel}."],
    "chitchat": ["Thanks, that's all!", "Who are you?", "Tell me a joke.", "Good morning!",
                 "What can you do?", "How are you today?"],
    "book_flight": ["Book me a flight from {origin} to {destination}.",
                    "I need to fly {origin} to {destination}.",
                    "Get me a plane ticket from {origin} to {destination}.",
                    "Fly me out of {origin} to {destination} please."],
    "book_flight_n": ["Book {passengers_s} seats from {origin} to {destination}.",
                      "Flight for {passengers_s} people, {origin} to {destination}."],
    "create_event": ["Put {title} on my calendar for {day_s}.", "Schedule {title} on {day_s}.",
                     "Add an event called {title} on {day_s}.", "Calendar: {title}, {day_s}."],
    "get_stock_price": ["What is {ticker} trading at?", "Share price of {ticker}?",
                        "How much is one {ticker} share now?", "Quote for {ticker}, please."],
    "translate": ["Translate '{text}' into {language}.", "How do you say '{text}' in {language}?",
                  "Say '{text}' in {language}.", "'{text}' in {language} please."],
}  # fmt: skip
REASONS = {
    "damaged": ["damaged", "broken"],
    "late": ["late", "too late"],
    "wrong_item": ["as the wrong item"],
}
NUM_WORDS = {2: "two", 3: "three", 4: "four"}


def _date(rng: random.Random) -> tuple[str, str]:
    y, m, d = rng.choice([2025, 2026]), rng.randint(1, 12), rng.randint(1, 28)
    iso = f"{y}-{m:02d}-{d:02d}"
    said = rng.choice([f"{MONTHS[m - 1]} {d}, {y}", f"{d} {MONTHS[m - 1]} {y}", iso, f"{m}/{d}/{y}"])
    return iso, said


def _call(name: str, rng: random.Random) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A (wording key, teacher arguments, template values) for one call of ``name``."""
    if name == "get_weather":
        loc = rng.choice(CITIES)
        if rng.random() < 0.4:
            unit = rng.choice(["celsius", "fahrenheit"])
            return "get_weather_unit", {"location": loc, "unit": unit}, {"location": loc, "unit": unit}
        return name, {"location": loc}, {"location": loc}
    if name == "lookup_order":
        oid = f"ORD-{rng.randint(1000, 99999)}"
        return name, {"order_id": oid}, {"order_id": oid}
    if name == "issue_refund":
        oid, amount = f"ORD-{rng.randint(1000, 99999)}", rng.choice([5, 12.5, 19.99, 40, 120, 1200])
        reason = rng.choice(list(REASONS))
        shown = rng.choice([f"${amount:,}", f"{amount} dollars"])
        args = {"order_id": oid, "amount": amount, "reason": reason}
        return name, args, {"order_id": oid, "amount_s": shown, "reason_s": rng.choice(REASONS[reason])}
    if name == "send_email":
        to, subject = rng.choice(EMAILS), rng.choice(SUBJECTS)
        return name, {"to": to, "subject": subject}, {"to": to, "subject": subject}
    if name == "convert_currency":
        amount = rng.choice([10, 25, 100, 250, 1000, 75.5])
        src, tgt = rng.sample(CURRENCIES, 2)
        return name, {"amount": amount, "source": src, "target": tgt}, {
            "amount_s": f"{amount:,}", "source": src, "target": tgt}  # fmt: skip
    if name == "set_reminder":
        note = rng.choice(NOTES)
        iso, said = _date(rng)
        if rng.random() < 0.3:
            return (
                "set_reminder_urgent",
                {"note": note, "date": iso, "urgent": True},
                {"note": note, "date_s": said},
            )
        return name, {"note": note, "date": iso}, {"note": note, "date_s": said}
    if name == "ship_package":
        a, b = rng.sample(CITIES, 2)
        if rng.random() < 0.4:
            w = rng.randint(2, 4)
            shown = rng.choice([str(w), NUM_WORDS[w]])
            return "ship_package_w", {"sender_city": a, "recipient_city": b, "weight": w}, {
                "sender_city": a, "recipient_city": b, "weight_s": shown}  # fmt: skip
        return name, {"sender_city": a, "recipient_city": b}, {"sender_city": a, "recipient_city": b}
    if name == "post_message":
        ch, msg = rng.choice(CHANNELS), rng.choice(MESSAGES)
        return name, {"channel": ch, "message": msg}, {"channel": ch, "message": msg}
    if name == "book_flight":
        a, b = rng.sample(CITIES, 2)
        if rng.random() < 0.4:
            n = rng.randint(2, 4)
            shown = rng.choice([str(n), NUM_WORDS[n]])
            return "book_flight_n", {"origin": a, "destination": b, "passengers": n}, {
                "origin": a, "destination": b, "passengers_s": shown}  # fmt: skip
        return name, {"origin": a, "destination": b}, {"origin": a, "destination": b}
    if name == "create_event":
        title = rng.choice(TITLES)
        iso, said = _date(rng)
        return name, {"title": title, "day": iso}, {"title": title, "day_s": said}
    if name == "get_stock_price":
        t = rng.choice(TICKERS)
        return name, {"ticker": t}, {"ticker": t}
    if name == "translate":
        text, lang = rng.choice(SENTENCES), rng.choice(["french", "german", "spanish"])
        return (
            name,
            {"text": text, "language": lang},
            {"text": text, "language": rng.choice([lang, lang.title()])},
        )
    raise AssertionError(name)


def _example(rng: random.Random, tools: dict[str, Any], name: str | None, split: str) -> Example:
    def wording(key: str) -> str:
        options = WORDING[key]
        half = (len(options) + 1) // 2
        return rng.choice(options[:half] if split == "train" else options[half:])

    offered = [name] if name else []
    offered += rng.sample([t for t in tools if t != name], min(2, len(tools) - 1))
    rng.shuffle(offered)
    if name == "get_weather" and rng.random() < 0.25:  # parallel calls: one per city
        a, b = rng.sample(CITIES, 2)
        text = wording("get_weather_two").format(location=a, location2=b)
        response = ChatResponse.of_tool_calls("teacher", [(name, {"location": a}), (name, {"location": b})])
    elif name is None:
        text = wording("chitchat")
        response = ChatResponse.of_text("teacher", "I can help with orders, weather, e-mail and reminders.")
    else:
        key, args, values = _call(name, rng)
        text = wording(key).format(**values)
        response = ChatResponse.of_tool_calls("teacher", [(name, args)])
    request = ChatRequest(
        model="big", messages=[{"role": "user", "content": text}], tools=[tools[t] for t in offered]
    )
    return Example(request, response)


def make(n: int, tools: dict[str, Any], split: str, seed: int, none_share: float = 0.0) -> list[Example]:
    rng = random.Random(seed)
    names = list(tools)
    return [
        _example(rng, tools, None if rng.random() < none_share else names[i % len(names)], split)
        for i in range(n)
    ]


def _calls(resp: ChatResponse) -> list[tuple[str, dict[str, Any]]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in resp.message.tool_calls or []]


def _accuracy(model: ToolCaller, examples: list[Example]) -> float:
    preds = model.predict([ex.request for ex in examples])
    ok = 0
    for p, ex in zip(preds, examples, strict=True):
        ok += sorted(map(json.dumps, _calls(p.response))) == sorted(map(json.dumps, _calls(ex.response)))
    return ok / len(examples)


@pytest.fixture(scope="module")
def trained() -> ToolCaller:
    train = make(80, TRAIN_TOOLS, "train", seed=1, none_share=0.08)
    return ToolCaller(seed=0).fit(train)


def test_held_out_wording_on_training_tools(trained: ToolCaller) -> None:
    acc = _accuracy(trained, make(40, TRAIN_TOOLS, "test", seed=2))
    print(f"training tools, new wording: exact call accuracy {acc:.2f}")
    assert acc >= 0.5  # measured 0.62 (80 training examples, 4 epochs)


def test_tools_never_seen_in_training(trained: ToolCaller) -> None:
    acc = _accuracy(trained, make(40, HELD_OUT_TOOLS, "test", seed=3))
    print(f"unseen tools: exact call accuracy {acc:.2f}")
    assert acc >= 0.45  # measured 0.57: whole calls, every argument exact


def _request(text: str, tools: list[str], **kw: Any) -> ChatRequest:
    every = {**TRAIN_TOOLS, **HELD_OUT_TOOLS}
    return ChatRequest(
        model="big", messages=[{"role": "user", "content": text}], tools=[every[t] for t in tools], **kw
    )


def test_outputs_are_exact_openai_tool_calls_that_validate(trained: ToolCaller) -> None:
    examples = make(20, HELD_OUT_TOOLS, "test", seed=4) + make(20, TRAIN_TOOLS, "test", seed=5)
    preds = trained.predict([ex.request for ex in examples])
    for p, ex in zip(preds, examples, strict=True):
        resp = ChatResponse.model_validate(p.response.to_dict())  # survives the wire
        assert 0.0 <= p.confidence <= 1.0
        if not resp.message.tool_calls:
            assert resp.choices[0].finish_reason == "stop"
            continue
        assert resp.choices[0].finish_reason == "tool_calls"
        assert resp.message.content is None
        schemas = {t.function.name: t.function.parameters for t in ex.request.tools or []}
        for call in resp.message.tool_calls:
            assert call.type == "function" and call.id.startswith("call")
            assert call.function.name in schemas
            args = json.loads(call.function.arguments)  # a JSON string, as OpenAI sends
            if p.confidence > 0:
                jsonschema.validate(args, schemas[call.function.name])


def test_parallel_calls_of_one_function(trained: ToolCaller) -> None:
    assert trained.learned["multi_call"]
    cases = [("Compare the weather of Lima and Oslo.", {"Lima", "Oslo"}),
             ("How's the weather in Tokyo and also in Berlin?", {"Tokyo", "Berlin"}),
             ("Is it sunny in Madrid or in Dublin?", {"Madrid", "Dublin"})]  # fmt: skip
    preds = trained.predict([_request(t, ["get_weather", "lookup_order"]) for t, _ in cases])
    hits = 0
    for p, (_, cities) in zip(preds, cases, strict=True):
        calls = _calls(p.response)
        hits += {a.get("location") for _, a in calls} == cities and len(calls) == 2
    assert hits >= 2
    # parallel_tool_calls=false: at most one call
    (single,) = trained.predict([_request(cases[0][0], ["get_weather"], parallel_tool_calls=False)])
    assert len(_calls(single.response)) == 1


def test_tool_choice_is_respected(trained: ToolCaller) -> None:
    tools = ["get_weather", "lookup_order", "send_email"]
    weather = {"type": "function", "function": {"name": "get_weather"}}
    none, named, required = trained.predict(
        [
            _request("Where is my order ORD-5521?", tools, tool_choice="none"),
            _request("Where is my order ORD-5521?", tools, tool_choice=weather),
            _request("Good morning!", tools, tool_choice="required"),
        ]
    )
    assert not none.response.message.tool_calls
    assert [n for n, _ in _calls(named.response)] == ["get_weather"]
    assert len(_calls(required.response)) >= 1
    with pytest.raises(UserError, match="not among the tools"):
        trained.predict(
            [_request("hi", tools, tool_choice={"type": "function", "function": {"name": "nope"}})]
        )


def test_no_tool_for_chitchat(trained: ToolCaller) -> None:
    examples = make(30, TRAIN_TOOLS, "test", seed=6, none_share=1.0)
    preds = trained.predict([ex.request for ex in examples])
    no_call = sum(not p.response.message.tool_calls for p in preds) / len(preds)
    print(f"chitchat answered without a tool: {no_call:.2f}")
    assert no_call >= 0.6  # measured 0.73


def test_save_load_gives_identical_predictions(trained: ToolCaller, tmp_path: Path) -> None:
    trained.save(tmp_path / "tc")
    loaded = load_specialist(tmp_path / "tc")
    assert isinstance(loaded, ToolCaller)
    reqs = [ex.request for ex in make(10, HELD_OUT_TOOLS, "test", seed=7)]
    a, b = trained.predict(reqs), loaded.predict(reqs)
    assert [_calls(p.response) for p in a] == [_calls(p.response) for p in b]
    assert [round(p.confidence, 5) for p in a] == [round(p.confidence, 5) for p in b]


@pytest.mark.parametrize(("slots", "dtype", "tol"), [(False, "float32", 1e-4), (True, "float32", 1e-4),
                                                     (True, "bfloat16", 5e-3)])  # fmt: skip
def test_predictions_do_not_depend_on_the_batch_or_the_cached_query_states(
    trained: ToolCaller, tmp_path: Path, slots: bool, dtype: str, tol: float
) -> None:
    """Where the encoder's lower layers read the queries apart and cache their states, a request
    gets the same calls alone, in a batch, and with a cold or a warm cache (in bfloat16, where
    padding changes the rounding, the confidences to within 0.005: measured 0.0013)."""
    trained.save(tmp_path / "tc")
    cfg = json.loads((tmp_path / "tc" / "engine.json").read_text())
    cfg.update(separate_layers=3, query_slots=slots)  # the same weights read the separate way
    (tmp_path / "tc" / "engine.json").write_text(json.dumps(cfg))
    meta = json.loads((tmp_path / "tc" / "specialist.json").read_text())
    meta["params"]["dtype"] = dtype
    (tmp_path / "tc" / "specialist.json").write_text(json.dumps(meta))
    model = load_specialist(tmp_path / "tc")
    assert isinstance(model, ToolCaller) and model.engine.separate_layers == 3
    assert model.engine.query_slots is slots and model.engine.dtype == dtype
    reqs = [ex.request for ex in make(12, HELD_OUT_TOOLS, "test", seed=7)]
    together = model.predict(reqs)
    model.engine._query_states.clear()
    alone = [model.predict([r])[0] for r in reqs]
    assert [_calls(p.response) for p in alone] == [_calls(p.response) for p in together]
    assert [p.confidence for p in alone] == pytest.approx([p.confidence for p in together], abs=tol)


def test_bfloat16_answers_agree_with_float32_and_the_saved_weights_stay_float32(
    trained: ToolCaller, tmp_path: Path
) -> None:
    """Answers in bfloat16 come from a cast copy of the encoder: what is saved after them is the
    float32 model, and on tools never seen the two dtypes make the same calls."""
    import torch
    from safetensors import safe_open

    reqs = [ex.request for ex in make(24, HELD_OUT_TOOLS, "test", seed=11)]
    trained.predict(reqs[:4])
    trained.save(tmp_path / "tc")
    with safe_open(str(tmp_path / "tc" / "encoder" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118
    got = {}
    for dtype in ("float32", "bfloat16"):
        meta = json.loads((tmp_path / "tc" / "specialist.json").read_text())
        meta["params"]["dtype"] = dtype
        (tmp_path / "tc" / "specialist.json").write_text(json.dumps(meta))
        model = load_specialist(tmp_path / "tc")
        assert isinstance(model, ToolCaller) and model.engine.dtype == dtype
        got[dtype] = model.predict(reqs)
    pairs = list(zip(got["float32"], got["bfloat16"], strict=True))
    same = [_calls(a.response) == _calls(b.response) for a, b in pairs]
    gap = max(abs(a.confidence - b.confidence) for a, b in pairs)
    print(f"bfloat16 calls as float32's: {sum(same)}/{len(same)}; largest confidence gap {gap:.3f}")
    assert sum(same) >= 0.9 * len(same)
    with pytest.raises(UserError, match="dtype"):
        ToolCaller(dtype="float16")


def test_bad_training_data_is_a_clear_error() -> None:
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(UserError, match="tools"):
        ToolCaller().fit([Example(req, ChatResponse.of_text("t", "hello"))])


def test_load_reads_older_saves_with_learned_values_among_params(trained: ToolCaller, tmp_path: Path) -> None:
    assert trained.learned["none_text"]  # trained with text answers too
    trained.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "specialist.json"
    meta = json.loads(meta_path.read_text())
    learned = meta["params"].pop("learned")
    # the layout an earlier version wrote: none_text etc. beside the constructor's params
    meta["params"].update(none_text=learned["none_text"], none_text_share=learned["none_text_share"])
    meta["params"]["retired_option"] = 1
    meta_path.write_text(json.dumps(meta))
    loaded = ToolCaller.load(tmp_path / "old")
    assert loaded.learned["none_text"] == trained.learned["none_text"]
    assert loaded.learned["none_text_share"] == trained.learned["none_text_share"]
    (chat,) = loaded.predict([_request("Good morning, how are you?", ["get_weather"], tool_choice="none")])
    assert chat.response.text == trained.learned["none_text"]


def _sp(text: str, part: str, prob: float, after: int = 0) -> Span:
    start = text.index(part, after)
    return Span(start, start + len(part), part, prob)


def test_a_comma_inside_one_value_never_splits_it_into_calls() -> None:
    prm = Param("location", {"type": "string"}, True, owner="get_weather")
    text = "Im at Riga, Latvia, Can you tell me the current temperature?"
    res = SpanResult([_sp(text, "Riga", 0.6), _sp(text, "Latvia", 0.4)], 0.1, None, [])
    assert _span_value(prm, res, text, True, []).values == ["Riga, Latvia"]
    # several values only when a list says so, and the model did not also read the run as one
    text = "Compare the weather of Lima and Oslo."
    lima, oslo = _sp(text, "Lima", 0.7), _sp(text, "Oslo", 0.5)
    assert _span_value(prm, SpanResult([lima, oslo], 0.1, None, []), text, True, []).values == [
        "Lima",
        "Oslo",
    ]
    assert _span_value(prm, SpanResult([lima, oslo], 0.1, None, []), text, False, []).values == ["Lima"]
    whole = Span(lima.start, oslo.end, text[lima.start : oslo.end], 0.8)  # the model's best reading
    one = _span_value(prm, SpanResult([lima, oslo], 0.1, None, [whole, lima, oslo]), text, True, [])
    assert len(one.values) == 1
    # unrelated mentions of one parameter are not a list: the most probable is kept
    text = "Details for the user with the ID 7890, who has black as their special request?"
    res = SpanResult([_sp(text, "black", 0.5), _sp(text, "7890", 0.3)], 0.1, None, [])
    assert _span_value(prm, res, text, True, []).values == ["black"]


def test_spans_are_widened_to_the_whole_address_and_cut_before_a_new_clause() -> None:
    prm = Param("loc", {"type": "string"}, True, owner="uber_ride")
    text = "A Comfort Uber ride from 2020 Addison Street, Berkeley, CA, USA, and I can wait 600 seconds."
    res = SpanResult([_sp(text, "Addison", 0.5)], 0.1, None, [])
    assert _span_value(prm, res, text, False, []).values == ["2020 Addison Street, Berkeley, CA, USA"]
    runon = text[text.index("2020") : text.index("600") + 3]
    res = SpanResult([_sp(text, runon, 0.5)], 0.1, None, [])
    assert _span_value(prm, res, text, False, []).values == ["2020 Addison Street, Berkeley, CA, USA"]
    text = "Find a hotel in New York, NY in December and will be staying for 5 nights."
    res = SpanResult([_sp(text, "New York, NY in December and will be staying for 5", 0.5)], 0.1, None, [])
    assert _span_value(prm, res, text, False, []).values == ["New York, NY"]
    # lower-case values are left as the model read them
    assert trim_run_on("send it to the blue box", 0, 23) == 23
    assert extend_name("the ID 7890, who", 7, 11) == (7, 11)


def test_a_required_number_falls_back_to_a_number_in_the_text() -> None:
    prm = Param("time", {"type": "integer"}, True, owner="uber_ride")
    text = "A ride from 221B Baker Street, and I can wait up to 600 seconds for it."
    loc = _sp(text, "221B Baker Street", 0.8)
    d = _span_value(prm, SpanResult([], 0.9, None, []), text, False, [loc])
    assert d.values == [600] and 0 < d.confidence < 0.5
    optional = Param("time", {"type": "integer"}, False, owner="uber_ride")
    assert _span_value(optional, SpanResult([], 0.9, None, []), text, False, [loc]).values == []


def test_a_message_embedded_before_is_not_embedded_again(trained: ToolCaller, monkeypatch) -> None:
    """The router's cluster matcher embeds the user's message; the tool caller it routes to
    reads that embedding from the shared cache instead of running the encoder again."""
    from smallfleet import encoders

    text = "Could you check the status of order ORD-88231 for me?"
    req = _request(text, ["get_weather", "lookup_order"])
    trained.predict([req])  # the tool set's descriptions are cached from here on
    encoders.clear_embedding_cache()
    trained.predict([_request("warm up the tool descriptions", ["get_weather", "lookup_order"])])
    ran: list[str] = []
    single, batched = encoders._embed_single, encoders.embed
    monkeypatch.setattr(encoders, "_embed_single", lambda t, e: ran.append(t) or single(t, e))
    monkeypatch.setattr(encoders, "embed", lambda ts, *a, **k: ran.extend(ts) or batched(ts, *a, **k))
    encoders.embed_one(text)  # what the matcher does
    (a,) = trained.predict([req])
    assert ran == [text]  # once, by the "matcher"
    with encoders.unseen([text]):
        (b,) = trained.predict([req])
    assert ran == [text, text]  # an unseen message is embedded again, with the same result
    assert _calls(a.response) == _calls(b.response)


def test_widening_puts_each_question_to_the_encoder_once(monkeypatch) -> None:
    train = make(40, TRAIN_TOOLS, "train", seed=11)
    tc = ToolCaller(seed=0, max_steps=2, epochs=1)
    asked: list[int] = []
    answer = EncoderEngine.answer
    monkeypatch.setattr(EncoderEngine, "answer", lambda s, *a, **k: asked.append(1) or answer(s, *a, **k))
    tc.fit(train)
    assert len(asked) == 1  # two predicts over the same sample, one pass of the encoder
    assert tc._answers is None and isinstance(tc.learned["widen"], dict)
