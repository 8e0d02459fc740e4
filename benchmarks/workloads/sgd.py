"""Schema-Guided Dialogue as an agent's calls: at every assistant turn, call a tool or reply.

Google's SGD (DSTC8, CC BY-SA 4.0): dialogues between a user and a virtual assistant
that calls service APIs. ``train/`` is the recorded traffic, ``dev/`` the held-out one.

At every assistant (SYSTEM) turn the agent sends its large model the conversation so far
and the dialogue's services' methods as ``tools``: one function per method, its
parameters the method's required and optional slots (``schema.json``), categorical
slots as ``enum``, an optional slot's default as ``default``. The gold answer is the
turn's ``service_call`` as a tool call (method, parameters as JSON arguments) when it
has one, else the assistant's utterance as a text reply.

Earlier turns appear in the conversation as the agent saw them: a turn that called a
service is the assistant's tool call, the tool's result (the turn's
``service_results``) and the assistant's utterance.

Each pair's ``meta`` says the turn's ``service`` and whether that service is ``seen``
in the training dialogues (the caller decides which dialogues those are).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from .common import (
    BASE_TIME,
    REQUEST_MODEL,
    WEEK,
    Gold,
    Pair,
    spread_times,
    stable_id,
    text_response,
    tool_call_response,
)

__all__ = ["LICENCE", "WORKLOAD", "convert_dialogue", "load", "load_dialogues", "load_schema", "tools_for"]

WORKLOAD = "sgd"
LICENCE = "CC BY-SA 4.0"


def load_schema(split_dir: Path) -> dict[str, dict[str, Any]]:
    return {s["service_name"]: s for s in json.loads((split_dir / "schema.json").read_text())}


def load_dialogues(split_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(split_dir.glob("dialogues_*.json")):
        out += json.loads(path.read_text())
    return out


def _tool(service: dict[str, Any], intent: dict[str, Any]) -> dict[str, Any]:
    slots = {s["name"]: s for s in service["slots"]}
    props: dict[str, Any] = {}
    for name in [*intent["required_slots"], *intent["optional_slots"]]:
        slot = slots[name]
        prop: dict[str, Any] = {"type": "string", "description": slot["description"]}
        if slot["is_categorical"] and slot["possible_values"]:
            prop["enum"] = list(slot["possible_values"])
        default = intent["optional_slots"].get(name)
        if default is not None and default != "dontcare":
            prop["default"] = default
        props[name] = prop
    return {
        "type": "function",
        "function": {
            "name": intent["name"],
            "description": intent["description"],
            "parameters": {
                "type": "object",
                "properties": props,
                "required": list(intent["required_slots"]),
                "additionalProperties": False,
            },
        },
    }


def tools_for(services: list[str], schema: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The methods of ``services`` as OpenAI tools."""
    return [_tool(schema[s], intent) for s in services for intent in schema[s]["intents"]]


def system_prompt(services: list[str], schema: dict[str, dict[str, Any]]) -> str:
    what = "; ".join(schema[s]["description"].rstrip(".").lower() for s in services)
    return (
        f"You are a virtual assistant. You help the user to {what}. Use the tools to look things "
        "up and to make bookings and purchases. Call a tool only when you have every required "
        "argument from the user, and ask for what is missing; confirm the details with the user "
        "before any booking, purchase or transfer. Otherwise reply to the user briefly and helpfully."
    )


def convert_dialogue(
    dialogue: dict[str, Any], schema: dict[str, dict[str, Any]], split: str, seen: set[str] | None = None
) -> list[Pair]:
    """One request/response pair per assistant turn of ``dialogue``."""
    services = list(dialogue["services"])
    tools = tools_for(services, schema)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt(services, schema)}]
    pairs = []
    did = dialogue["dialogue_id"]
    for t, turn in enumerate(dialogue["turns"]):
        if turn["speaker"] == "USER":
            messages.append({"role": "user", "content": turn["utterance"]})
            continue
        frames = turn["frames"]
        calls = [f for f in frames if "service_call" in f]
        service = (calls or frames)[0]["service"] if frames else services[0]
        request = {"model": REQUEST_MODEL, "messages": [dict(m) for m in messages], "tools": tools}
        if calls:
            gold_calls = [(f["service_call"]["method"], dict(f["service_call"]["parameters"])) for f in calls]
            response = tool_call_response(request, gold_calls)
            gold = Gold("tool_call", gold_calls)
            task = "call"
        else:
            response = text_response(request, turn["utterance"])
            gold = Gold("text", turn["utterance"])
            task = "reply"
        pairs.append(
            Pair(
                id=stable_id(WORKLOAD, split, did, str(t)),
                request=request,
                response=response,
                gold=gold,
                task=task,
                meta={
                    "dialogue_id": did,
                    "turn": t,
                    "service": service,
                    "seen": None if seen is None else service in seen,
                },
            )
        )
        if calls:  # the agent's tool call and the tool's result come before the reply
            message = response["choices"][0]["message"]
            messages.append(message)
            for call, f in zip(message["tool_calls"], calls, strict=True):
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "content": json.dumps(f.get("service_results") or [], ensure_ascii=False),
                    }
                )
        messages.append({"role": "assistant", "content": turn["utterance"]})
    return pairs


def _take(dialogues: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """Whole dialogues, in order, until they hold ``limit`` assistant turns."""
    if limit is None:
        return dialogues
    out, n = [], 0
    for d in dialogues:
        if n >= limit:
            break
        out.append(d)
        n += sum(t["speaker"] == "SYSTEM" for t in d["turns"])
    return out


def load(
    data: str | Path, *, limit_train: int | None = None, limit_test: int | None = None, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """(train, test) pairs from ``train/`` and ``dev/``; ``limit_*`` count assistant turns, in
    whole dialogues drawn at random. A dev pair is ``seen`` when its service is one of the
    training dialogues' services."""
    data = Path(data)
    rng = random.Random(f"sgd:{seed}")
    train_d, test_d = load_dialogues(data / "train"), load_dialogues(data / "dev")
    rng.shuffle(train_d)
    rng.shuffle(test_d)
    train_d, test_d = _take(train_d, limit_train), _take(test_d, limit_test)
    seen = {s for d in train_d for s in d["services"]}
    train_schema, test_schema = load_schema(data / "train"), load_schema(data / "dev")
    train = [p for d in train_d for p in convert_dialogue(d, train_schema, "train", seen)]
    test = [p for d in test_d for p in convert_dialogue(d, test_schema, "dev", seen)]
    spread_times(train, BASE_TIME - WEEK, WEEK)
    spread_times(test, BASE_TIME, 86_400.0)
    return train[:limit_train], test[:limit_test]
