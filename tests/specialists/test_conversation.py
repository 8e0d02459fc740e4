"""Specialists that read the whole conversation: arguments given turns ago or revised since,
and turns where the right answer is a text reply, not a call.

The traffic is generated here, as an agent's multi-turn requests: the training and held-out
conversations use different restaurants, times and wordings.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from smallfleet.specialists._conversation import conversation_text, latest_mentions, prefer_latest
from smallfleet.specialists.base import Example
from smallfleet.types import ChatRequest, ChatResponse

pytest.importorskip("torch")

from smallfleet.specialists._spans import Span, SpanResult
from smallfleet.specialists.tool_caller import ToolCaller

BOOK = {
    "type": "function",
    "function": {
        "name": "book_table",
        "description": "Reserve a table at a restaurant.",
        "parameters": {
            "type": "object",
            "properties": {
                "restaurant": {"type": "string", "description": "Name of the restaurant"},
                "time": {"type": "string", "description": "Time of the reservation, e.g. 7 pm"},
                "party_size": {"type": "integer", "description": "Number of people"},
            },
            "required": ["restaurant", "time", "party_size"],
        },
    },
}
SYSTEM = {"role": "system", "content": "You book restaurant tables for the user. Ask for what is missing."}

TRAIN_PLACES = ["Sushi Ran", "Blue Door", "Casa Lupe", "Golden Wok", "Le Petit Bistro", "Olive Garden",
                "Red Lantern", "Tavern on Main", "Harbor Grill", "Mama Rosa"]  # fmt: skip
TEST_PLACES = ["Kin Khao", "The Copper Pot", "Saffron House", "Nopa", "Bella Vista"]
TRAIN_TIMES = ["6 pm", "7 pm", "8:30 pm", "noon", "6:15 pm", "9 pm", "1 pm", "7:45 pm"]
TEST_TIMES = ["5:30 pm", "8 pm", "12:30 pm", "10 pm", "6:45 pm"]
SIZES = [2, 3, 4, 5, 6]


def _request(turns: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "model": "big",
        "messages": [SYSTEM, *({"role": r, "content": c} for r, c in turns)],
        "tools": [BOOK],
    }


def _call(place: str, time: str, size: int) -> ChatResponse:
    return ChatResponse.of_tool_calls(
        "big", [("book_table", {"restaurant": place, "time": time, "party_size": size})]
    )


def conversations(
    rng: random.Random, places: list[str], times: list[str], n: int
) -> list[tuple[str, Example]]:
    """(kind, example) pairs: "call", "revised" (a value changed in a later turn) or "reply"."""
    out: list[tuple[str, Example]] = []
    for k in range(n):
        place, size = rng.choice(places), rng.choice(SIZES)
        t1, t2 = rng.sample(times, 2)
        kind = ("call", "revised", "reply")[k % 3]
        if kind == "call":  # given over two turns, the time last
            turns = [
                (
                    "user",
                    rng.choice(["I'd like a table at {p} for {n} people.", "Book {p} for {n}, please."]),
                ),
                ("assistant", "Sure, what time would you like?"),
                ("user", rng.choice(["{t}, please.", "Let's say {t}.", "At {t}."])),
            ]
            answer = _call(place, t1, size)
        elif kind == "revised":  # given, confirmed, then changed
            turns = [
                ("user", rng.choice(["Reserve {p} for {n} people at {t}.", "Table for {n} at {p}, {t}."])),
                ("assistant", "Please confirm: {p}, {n} people at {t}."),
                (
                    "user",
                    rng.choice(["Actually, make it {u} instead.", "No, change it to {u}.", "Can we do {u}?"]),
                ),
            ]
            answer = _call(place, t2, size)
        else:  # the time is missing: the large model asks for it
            turns = [("user", rng.choice(["I want to book a table at {p}.", "Can you reserve {p} for {n}?"]))]
            answer = ChatResponse.of_text("big", "Of course. What time would you like, and for how many?")
        filled = [(r, c.format(p=place, n=size, t=t1, u=t2)) for r, c in turns]
        out.append((kind, Example(ChatRequest.model_validate(_request(filled)), answer)))
    return out


@pytest.fixture(scope="module")
def held_out() -> list[tuple[str, Example]]:
    return conversations(random.Random(7), TEST_PLACES, TEST_TIMES, 60)


@pytest.fixture(scope="module")
def trained() -> ToolCaller:
    train = [ex for _, ex in conversations(random.Random(0), TRAIN_PLACES, TRAIN_TIMES, 60)]
    return ToolCaller(seed=0, max_steps=60, epochs=3).fit(train)


def test_the_conversation_is_read_newest_turns_kept() -> None:
    one = ChatRequest.model_validate(
        {"model": "m", "messages": [SYSTEM, {"role": "user", "content": "hi  there"}]}
    )
    assert conversation_text(one) == "hi  there"  # one message: its text, unchanged
    req = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [
                SYSTEM,
                {"role": "user", "content": "first " * 50},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "x" * 1000},
                {"role": "user", "content": "last"},
            ],
        }
    )
    text = conversation_text(req)
    lines = text.split("\n")
    assert lines[0].startswith("user: first") and lines[-1] == "user: last"
    assert "[called f a=1]" in lines[1] and len(lines[2]) < 200  # a tool result is shortened
    short = conversation_text(req, max_chars=200)
    assert short.split("\n")[-1] == "user: last" and "first" not in short  # the oldest turn dropped first


def test_a_value_said_twice_is_taught_at_its_latest_mention() -> None:
    text = "user: at 6 pm\nassistant: 6 pm it is\nuser: ok"
    assert latest_mentions([(6, 10), (25, 29)], text) == [(25, 29)]
    assert latest_mentions([(3, 7)], "at 6 pm") == [(3, 7)]
    res = SpanResult(
        [Span(6, 10, "6 pm", 0.5)], 0.1, None, [Span(6, 10, "6 pm", 0.5), Span(40, 44, "7 pm", 0.4)]
    )
    prefer_latest(res, "user: at 6 pm\nassistant: ok\nuser: make it 7 pm")
    assert res.spans[0].text == "7 pm" and res.spans[0].prob == 0.5


def test_an_argument_given_early_and_revised_later_is_filled_with_the_revised_value(
    trained: ToolCaller, held_out: list[tuple[str, Example]]
) -> None:
    revised = [ex for kind, ex in held_out if kind == "revised"]
    preds = trained.predict([ex.request for ex in revised])
    right = 0
    for p, ex in zip(preds, revised, strict=True):
        want = json.loads(ex.response.message.tool_calls[0].function.arguments)  # type: ignore[index]
        calls = p.response.message.tool_calls or []
        got = json.loads(calls[0].function.arguments) if calls else {}
        right += got.get("time") == want["time"]
        assert got.get("time") != _first_time(ex), "the value given first and changed since was called"
    assert right >= 0.8 * len(revised)


def _first_time(ex: Example) -> str:
    first = ex.request.messages[1].content
    assert isinstance(first, str)
    return next(t for t in TEST_TIMES if t in first)


def test_a_text_reply_turn_is_not_served_as_a_call(
    trained: ToolCaller, held_out: list[tuple[str, Example]]
) -> None:
    assert trained.learned["decides"]
    preds = trained.predict([ex.request for _, ex in held_out])
    kinds = [kind for kind, _ in held_out]
    call_conf = [
        p.confidence
        for p, k in zip(preds, kinds, strict=True)
        if k != "reply" and p.response.message.tool_calls
    ]
    reply_calls = [
        p.confidence
        for p, k in zip(preds, kinds, strict=True)
        if k == "reply" and p.response.message.tool_calls
    ]
    # the confidence separates the two: every call served on a reply turn is less sure than
    # the calls on the turns where a call was due, and most of those are called
    assert len(call_conf) >= 0.8 * kinds.count("call") + 0.8 * kinds.count("revised")
    if reply_calls:
        assert max(reply_calls) < sorted(call_conf)[len(call_conf) // 10]
    for p, k in zip(preds, kinds, strict=True):
        if k == "reply":
            assert not p.response.message.tool_calls or p.confidence < 0.5
