"""banking77 as an agent's calls: "classify the customer's message into one of these intents".

PolyAI's BANKING77 (CC BY 4.0): real customer messages to a bank, 77 intents;
``train.csv`` (10,003) is the recorded traffic, ``test.csv`` (3,080) the held-out one.
One agent step: a system prompt listing the 77 intents, the customer's message as the
user turn, the intent name as the large model's answer.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from .common import BASE_TIME, REQUEST_MODEL, WEEK, Gold, Pair, label_response, spread_times, stable_id

__all__ = ["LICENCE", "WORKLOAD", "convert", "intents", "load", "system_prompt"]

WORKLOAD = "banking77"
LICENCE = "CC BY 4.0"


def intents(data: Path) -> list[str]:
    return list(json.loads((Path(data) / "categories.json").read_text()))


def system_prompt(labels: list[str]) -> str:
    listing = "\n".join(f"- {label}" for label in labels)
    return (
        "You are the triage step of a bank's customer-support assistant. Classify the customer's "
        "message into exactly one of the intents below, the one that best says what the customer "
        "needs. Answer with the intent name only, exactly as written, and nothing else.\n\n"
        f"Intents:\n{listing}"
    )


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"].strip(), r["category"].strip()) for r in csv.DictReader(f)]


def convert(rows: list[tuple[str, str]], labels: list[str], split: str) -> list[Pair]:
    prompt = system_prompt(labels)
    pairs = []
    for i, (text, label) in enumerate(rows):
        request = {
            "model": REQUEST_MODEL,
            "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": text}],
            "temperature": 0,
        }
        pairs.append(
            Pair(
                id=stable_id(WORKLOAD, split, str(i), text),
                request=request,
                response=label_response(request, label),
                gold=Gold("label", label),
                task="classify_intent",
                meta={"intent": label},
            )
        )
    return pairs


def load(
    data: str | Path, *, limit_train: int | None = None, limit_test: int | None = None, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """(train, test) pairs; the training traffic shuffled over a week (the files are sorted by intent)."""
    data = Path(data)
    labels = intents(data)
    rng = random.Random(f"banking77:{seed}")
    train_rows, test_rows = _rows(data / "train.csv"), _rows(data / "test.csv")
    rng.shuffle(train_rows)
    rng.shuffle(test_rows)
    train = convert(train_rows[:limit_train], labels, "train")
    test = convert(test_rows[:limit_test], labels, "test")
    spread_times(train, BASE_TIME - WEEK, WEEK)
    spread_times(test, BASE_TIME, 86_400.0)
    return train, test
