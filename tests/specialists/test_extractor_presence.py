"""An extractor is not sure of ``{}`` when the message gives a value it cannot read.

NLU++-like slots: most messages give nothing (the answer is ``{}``), some give an amount of
money the teacher writes as a nested object (``{"amount": 40, "currency": "GBP"}``), which the
extractor does not fill. Without a learned presence decision it answered ``{}`` to both,
confidently.
"""

from __future__ import annotations

import json
import random

import pytest

from smallfleet.specialists.base import Example
from smallfleet.types import ChatRequest, ChatResponse

pytest.importorskip("torch")

from smallfleet.specialists.extractor import Extractor

SCHEMA = {
    "type": "object",
    "properties": {
        "money": {
            "type": "object",
            "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
        },
        "people": {"type": "integer", "description": "how many people"},
    },
}
NOTHING = ["hi, can you help me with my booking?", "what is the wifi password", "is breakfast included",
           "I want to speak to someone", "thanks a lot", "how do I get to the hotel from the airport",
           "is there a gym", "can I pay by card", "do you allow pets", "where is the spa"]  # fmt: skip
MONEY_TRAIN = [("{n} pounds", "GBP"), ("£{n}", "GBP"), ("{n} euros", "EUR"), ("${n}", "USD")]
MONEY_TEST = [("{n} quid", "GBP"), ("EUR {n}", "EUR"), ("{n} dollars", "USD")]
ASK = ["refund me the {t} please", "I was charged {t} twice", "send {t} to my landlord"]
ASK_TEST = ["where is my {t} refund", "cancel the {t} payment"]


def _ex(text: str, obj: dict[str, object]) -> Example:
    req = ChatRequest.model_validate(
        {
            "model": "big",
            "messages": [
                {"role": "system", "content": "Extract the slots."},
                {"role": "user", "content": text},
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "slots", "schema": SCHEMA}},
        }
    )
    return Example(req, ChatResponse.of_text("big", json.dumps(obj)))


def _data(
    rng: random.Random, moneys: list[tuple[str, str]], asks: list[str], n: int
) -> list[tuple[str, Example]]:
    out = []
    for k in range(n):
        if k % 3 == 0:
            said, currency = rng.choice(moneys)
            amount = rng.choice([12, 40, 75, 300, 1250])
            obj = {"money": {"amount": amount, "currency": currency}}
            out.append(("money", _ex(rng.choice(asks).format(t=said.format(n=amount)), obj)))
        elif k % 3 == 1:
            people = rng.choice([2, 3, 4, 5])
            out.append(("people", _ex(f"a table for {people} people please", {"people": people})))
        else:
            out.append(("nothing", _ex(rng.choice(NOTHING), {})))
    return out


def test_an_empty_answer_is_not_confident_where_the_message_gives_an_unreadable_value() -> None:
    readable = [
        ex for _, ex in _data(random.Random(0), MONEY_TRAIN, ASK, 60) if "money" not in ex.response.text
    ]
    plain = Extractor(seed=0, max_steps=2, epochs=1).fit(readable)
    assert plain._presence_fields() == []  # every value readable: the fields' own heads learn presence
    train = [ex for _, ex in _data(random.Random(0), MONEY_TRAIN, ASK, 60)]
    model = Extractor(seed=0, max_steps=60, epochs=3).fit(train)
    assert [f["name"] for f in model._presence_fields()] == ["money", "people"]
    held = _data(random.Random(1), MONEY_TEST, ASK_TEST, 30)
    preds = model.predict([ex.request for _, ex in held])
    by_kind: dict[str, list[float]] = {}
    for (kind, ex), p in zip(held, preds, strict=True):
        right = p.response.text.replace(" ", "") == ex.response.text.replace(" ", "")
        by_kind.setdefault(kind, []).append(p.confidence if not right else 1.0 + p.confidence)
    wrong_money = [c for c in by_kind["money"] if c < 1.0]  # the object is not filled: never right
    assert wrong_money and max(wrong_money) < 0.5
    nothing = [c - 1.0 for c in by_kind["nothing"] if c >= 1.0]  # {} answered right, and sure of it
    assert len(nothing) >= 0.8 * len(by_kind["nothing"]) and min(nothing) > max(wrong_money)
