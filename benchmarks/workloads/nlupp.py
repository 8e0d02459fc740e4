"""NLU++ as an agent's calls: extract the message's details as JSON, and say which intents apply.

PolyAI's NLU++ (CC BY 4.0): banking and hotel messages with multi-label intents and
slots whose values are normalised (the dataset's reference instant is 15 March 2022,
09:00). Folds 0-14 of each domain are the recorded traffic, folds 15-19 the held-out one.

Per domain, two agent steps for every message:

- ``slots``: a ``json_schema`` response format with the domain's slots (ontology.json), each
  in the canonical form a team would ask for: dates ``YYYY-MM-DD``, times ``HH:MM``,
  periods as ISO 8601 intervals or durations, counts as integers, money as
  ``{"amount", "currency"}``. The answer holds the fields the message gives; a value
  the dataset marks ambiguous (``some days ago``) or periodic (``the 4th of each month``)
  has no such form and is left out, as the prompt asks.
- ``intents``: the domain's intents as a label set: ``{"intents": [...]}``, in the order listed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from .common import BASE_TIME, REQUEST_MODEL, WEEK, Gold, Pair, json_response, spread_times, stable_id

__all__ = ["DOMAINS", "LICENCE", "TASKS", "WORKLOAD", "convert", "load", "slot_schema", "slot_value"]

WORKLOAD = "nlupp"
LICENCE = "CC BY 4.0"
DOMAINS = ("banking", "hotels")
TASKS = ("slots", "intents")
TRAIN_FOLDS = range(15)
TEST_FOLDS = range(15, 20)
_NOW = "Tuesday 15 March 2022, 09:00"

_DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_TIME = {"type": "string", "pattern": r"^\d{2}:\d{2}$"}
_FORMATS: dict[str, tuple[dict[str, Any], str]] = {
    "date": (_DATE, "YYYY-MM-DD"),
    "date_from": (_DATE, "YYYY-MM-DD"),
    "date_to": (_DATE, "YYYY-MM-DD"),
    "date_period": ({"type": "string"}, "an interval YYYY-MM-DD/YYYY-MM-DD, or a duration such as P3D"),
    "time": (_TIME, "HH:MM, 24-hour"),
    "time_from": (_TIME, "HH:MM, 24-hour"),
    "time_to": (_TIME, "HH:MM, 24-hour"),
    "time_period": ({"type": "string"}, "an interval HH:MM/HH:MM, or a duration such as PT30M"),
    "amount_of_money": (
        {
            "type": "object",
            "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
            "required": ["amount"],
            "additionalProperties": False,
        },
        'an object {"amount": number, "currency": ISO 4217 code, only if stated}',
    ),
    "number": ({"type": "integer"}, "an integer"),
    "people": ({"type": "integer"}, "an integer"),
    "adults": ({"type": "integer"}, "an integer"),
    "kids": ({"type": "integer"}, "an integer"),
    "rooms": ({"type": "integer"}, "an integer"),
}
_TEXT = ({"type": "string"}, "as written")


def _in_domain(entry: dict[str, Any], domain: str) -> bool:
    return bool({"general", domain} & set(entry.get("domain") or []))


def slot_schema(ontology: dict[str, Any], domain: str) -> dict[str, Any]:
    """The JSON Schema of the ``slots`` step's answer for ``domain``."""
    props = {}
    for name, entry in ontology["slots"].items():
        if _in_domain(entry, domain):
            schema, _ = _FORMATS.get(name, _TEXT)
            props[name] = {**schema, "description": entry["description"]}
    return {"type": "object", "properties": props, "additionalProperties": False}


def _slots_prompt(ontology: dict[str, Any], domain: str) -> str:
    lines = []
    for name, entry in ontology["slots"].items():
        if _in_domain(entry, domain):
            lines.append(f"- {name}: {entry['description']} ({_FORMATS.get(name, _TEXT)[1]})")
    place = "bank" if domain == "banking" else "hotel"
    return (
        f"You read messages sent to a {place}'s virtual assistant and extract the details they give. "
        f"It is now {_NOW}: resolve relative dates and times (today, next Friday, in 2 hours) "
        "against that; weekdays are the next one to come. Answer with a JSON object holding only "
        "the fields the message gives, in the formats below; leave out a field the message does "
        "not give or that cannot be put in its format (e.g. 'some days ago').\n\nFields:\n" + "\n".join(lines)
    )


def _intents(ontology: dict[str, Any], domain: str) -> list[str]:
    return [name for name, entry in ontology["intents"].items() if _in_domain(entry, domain)]


def _intents_prompt(ontology: dict[str, Any], domain: str) -> str:
    lines = [f"- {n}: {ontology['intents'][n]['description']}" for n in _intents(ontology, domain)]
    place = "bank" if domain == "banking" else "hotel"
    return (
        f"You read messages sent to a {place}'s virtual assistant and say which of the intents "
        'below the message expresses; several can apply. Answer with {"intents": [...]}, listing '
        "every intent that applies in the order they are listed here, or an empty list if none "
        "does.\n\nIntents:\n" + "\n".join(lines)
    )


def _date(v: dict[str, int]) -> str:
    return f"{v['year']:04d}-{v['month']:02d}-{v['day']:02d}"


def _time(v: dict[str, int]) -> str:
    return f"{v['hour']:02d}:{v['minute']:02d}"


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def slot_value(name: str, slot: dict[str, Any]) -> Any:
    """A slot's canonical value in the answer's format, or None when it has none (ambiguous, periodic)."""
    value = slot.get("value", slot.get("values"))
    if value == "ambiguous" or value is None:
        return None
    if name in ("date", "date_from", "date_to"):
        return _date(value)
    if name in ("time", "time_from", "time_to"):
        return _time(value)
    if name in ("date_period", "time_period"):
        fmt = _date if name == "date_period" else _time
        if value.get("type") == "absolute":
            return f"{fmt(value['from'])}/{fmt(value['to'])}"
        if value.get("type") == "relative":  # "days" counts days, or minutes for a time period
            n = _num(value["days"])
            return f"P{n}D" if name == "date_period" else f"PT{n}M"
        return None
    if name == "amount_of_money":
        out: dict[str, Any] = {"amount": _num(value["amount"])}
        if value.get("currency") not in (None, "ambiguous"):
            out["currency"] = value["currency"]
        return out
    if isinstance(value, float):
        return _num(value)
    return value


def _slots_answer(example: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, slot in (example.get("slots") or {}).items():
        value = slot_value(name, slot)
        if value is not None:
            out[name] = value
    return out


def convert(
    examples: list[tuple[str, dict[str, Any]]],
    ontology: dict[str, Any],
    split: str,
    tasks: tuple[str, ...] = TASKS,
) -> list[Pair]:
    """``(domain, example)`` → the agent's calls for each, in order (slots, then intents)."""
    prompts = {
        (d, t): (_slots_prompt if t == "slots" else _intents_prompt)(ontology, d)
        for d in DOMAINS
        for t in TASKS
    }
    pairs = []
    for i, (domain, ex) in enumerate(examples):
        for task in tasks:
            if task == "slots":
                schema = slot_schema(ontology, domain)
                answer = _slots_answer(ex)
            else:
                labels = _intents(ontology, domain)
                schema = {
                    "type": "object",
                    "properties": {
                        "intents": {"type": "array", "items": {"enum": labels}, "uniqueItems": True}
                    },
                    "required": ["intents"],
                    "additionalProperties": False,
                }
                given = set(ex.get("intents") or [])
                answer = {"intents": [n for n in labels if n in given]}
            request = {
                "model": REQUEST_MODEL,
                "messages": [
                    {"role": "system", "content": prompts[(domain, task)]},
                    {"role": "user", "content": ex["text"]},
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": f"{domain}_{task}", "schema": schema},
                },
                "temperature": 0,
            }
            pairs.append(
                Pair(
                    id=stable_id(WORKLOAD, split, domain, task, str(i), ex["text"]),
                    request=request,
                    response=json_response(request, answer),
                    gold=Gold("json", answer),
                    task=f"{domain}/{task}",
                    meta={"domain": domain},
                )
            )
    return pairs


def _examples(data: Path, folds: range) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for domain in DOMAINS:
        for k in folds:
            path = data / "data" / domain / f"fold{k}.json"
            out += [(domain, ex) for ex in json.loads(path.read_text())]
    return out


def load(
    data: str | Path,
    *,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    tasks: tuple[str, ...] = TASKS,
) -> tuple[list[Pair], list[Pair]]:
    """(train, test) pairs; ``limit_*`` count messages (each makes one call per task)."""
    data = Path(data)
    ontology = json.loads((data / "data" / "ontology.json").read_text())
    rng = random.Random(f"nlupp:{seed}")
    train_ex, test_ex = _examples(data, TRAIN_FOLDS), _examples(data, TEST_FOLDS)
    rng.shuffle(train_ex)
    rng.shuffle(test_ex)
    train = convert(train_ex[:limit_train], ontology, "train", tasks)
    test = convert(test_ex[:limit_test], ontology, "test", tasks)
    spread_times(train, BASE_TIME - WEEK, WEEK)
    spread_times(test, BASE_TIME, 86_400.0)
    return train, test
