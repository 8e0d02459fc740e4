"""Novelty gate: how much unseen-intent traffic is served small, and how much seen traffic the gate costs.

banking77 (PolyAI, CC BY 4.0) as one agent step (a system prompt listing the 77 intents,
the customer's message, the intent as the large model's answer). ``--held-out`` intents
(drawn with ``--seed``) are taken out of the training traffic; a classifier specialist
is trained on the others (``--train`` messages, ``--epochs``), its route threshold picked
on a validation split for ``--target`` accuracy, and its novelty gate fitted as the
flywheel fits it at promotion (``fit_route_gate``). Then every test message goes through
``Router.decide`` twice, with the gate and without it (``Router(novelty=False)``), and the
script prints:

- held-out intents: share served small (each one a wrong answer: the specialist cannot know
  the intent), without and with the gate; target 0;
- seen intents: share served small without and with the gate, the share the gate escalated
  as ``novel`` (seen traffic lost), and the accuracy of what was served;
- the same two figures at other gate quantiles (scores computed once, thresholds swept).

Run:  python benchmarks/novelty.py DATA_DIR [--held-out 10] [--train 3000] [--epochs 1]

DATA_DIR holds banking77's ``train.csv`` and ``test.csv`` (``text,category``), e.g. the
committed slice ``tests/data/banking77`` (8 intents; use ``--held-out 2``) or the full set.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from smallfleet.encoders import embed_cached
from smallfleet.encoders import unseen as unseen_texts
from smallfleet.evals.coverage import threshold_for
from smallfleet.routing.matcher import static_key_of_dict
from smallfleet.routing.novelty import GATE_FILE, NoveltyGate, answer_key, fit_route_gate, request_text
from smallfleet.routing.router import Router
from smallfleet.routing.routes import Route
from smallfleet.specialists.base import Example
from smallfleet.specialists.classifier import Classifier, label_of
from smallfleet.types import ChatRequest, ChatResponse, Usage


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"].strip(), r["category"].strip()) for r in csv.DictReader(f)]


def system_prompt(intents: list[str]) -> str:
    listing = "\n".join(f"- {i}" for i in intents)
    return (
        "You are the triage step of a bank's customer-support assistant. Classify the customer's "
        "message into exactly one of the intents below. Answer with the intent name only.\n\n"
        f"Intents:\n{listing}"
    )


def example(system: str, text: str, intent: str) -> Example:
    request = ChatRequest.model_validate(
        {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
    )
    return Example(request, ChatResponse.of_text("gpt-4o", intent, Usage.of(0, 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="folder with banking77 train.csv and test.csv")
    ap.add_argument("--held-out", type=int, default=10, help="intents left out of training")
    ap.add_argument("--train", type=int, default=3000, help="training messages (seen intents)")
    ap.add_argument("--validation", type=int, default=600, help="validation messages (seen intents)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--trainable-layers", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.95, help="accuracy the route threshold is picked for")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    train_rows, test_rows = read_rows(args.data / "train.csv"), read_rows(args.data / "test.csv")
    intents = sorted({c for _, c in train_rows} | {c for _, c in test_rows})
    rng = random.Random(args.seed)
    held = set(rng.sample(sorted({c for _, c in train_rows}), args.held_out))
    system = system_prompt(intents)
    seen_rows = [r for r in train_rows if r[1] not in held]
    rng.shuffle(seen_rows)
    train = [example(system, t, c) for t, c in seen_rows[: args.train]]
    validation = [example(system, t, c) for t, c in seen_rows[args.train : args.train + args.validation]]
    print(f"held-out intents ({len(held)}): {', '.join(sorted(held))}")
    n_seen = len({c for _, c in seen_rows})
    print(f"training {len(train)} messages of {n_seen} intents, validation {len(validation)}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "classifier"
        t0 = time.perf_counter()
        clf = Classifier(progress=False, epochs=args.epochs, trainable_layers=args.trainable_layers, seed=0)
        clf.fit(train, validation).save(folder)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = fit_route_gate(folder, train, validation, shape="label")
        t_gate = time.perf_counter() - t0
        assert info is not None
        preds = clf.predict([ex.request for ex in validation])
        correct = [
            answer_key(p.response) == answer_key(ex.response) for p, ex in zip(preds, validation, strict=True)
        ]
        threshold = threshold_for([p.confidence for p in preds], correct, args.target) or 1.0
        print(
            f"classifier trained in {t_train:.0f} s (validation accuracy {sum(correct) / len(correct):.3f}, "
            f"route threshold {threshold:.3f} for {args.target:.0%}); gate fitted in {t_gate:.1f} s: "
            f"{info['rows']} rows, validation kept {info['validation_kept']:.3f}"
        )
        route = Route(
            name="banking-intent",
            kind="classifier",
            specialist_path=str(folder),
            threshold=threshold,
            mode="on",
            labels=clf.labels,
            matcher={"version": 1, "keys": [static_key_of_dict(train[0].request.to_dict())]},
            metrics={"novelty": info},
        )
        trained = {label_of(ex.response) for ex in train}
        tests = [(example(system, t, c), c not in trained) for t, c in test_rows]
        # the test messages embedded in batches first (as the flywheel's curation does for its
        # traffic); the gate's own cost on a fresh message is timed apart, below
        embed_cached([request_text(ex.request) for ex, _ in tests])
        router = Router([route], max_batch=32)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:  # concurrent decisions: the specialist answers in batches
            decisions = list(pool.map(lambda item: router.decide(item[0].request), tests))
        decide_s = time.perf_counter() - t0
        # the gate runs last: a request escalated `novel` is one the route would have served without it
        rows = [
            (unseen, d.action == "small" or d.reason == "novel", d.novelty, ex, d)
            for (ex, unseen), d in zip(tests, decisions, strict=True)
        ]
        gate = NoveltyGate.load(folder / GATE_FILE)
        print(f"{len(tests)} test messages decided in {decide_s:.0f} s")
        print(report(rows, gate.threshold, f"gate at quantile {gate.quantile:g}"))
        served = [(ex, d) for unseen, _, _, ex, d in rows if d.action == "small"]
        right = sum(answer_key(d.prediction.response) == answer_key(ex.response) for ex, d in served)
        plain = [(ex, d) for unseen, would, _, ex, d in rows if would and not unseen]
        right_plain = sum(answer_key(d.prediction.response) == answer_key(ex.response) for ex, d in plain)
        print(
            f"accuracy of seen-intent answers served: without gate {right_plain / max(len(plain), 1):.3f}; "
            f"of all answers served with gate {right / max(len(served), 1):.3f} ({len(served)} served)"
        )
        probe = [f"{ex.request.last_user_text()} (probe {i})" for i, (ex, _) in enumerate(tests[:20])]
        with unseen_texts(probe):
            t0 = time.perf_counter()
            for text in probe:
                gate.score(text, clf.labels[0])
        print(
            f"gate on a message not embedded before: {(time.perf_counter() - t0) / len(probe) * 1000:.1f} ms"
        )
        print("\nthe gate's quantile swept (scores as decided above, thresholds re-picked):")
        loo = gate.leave_one_out_scores()
        for q in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
            print(report(rows, float(np.quantile(loo, q)), f"quantile {q:g}"))


def report(rows: list[tuple[bool, bool, float | None, Example, Any]], threshold: float, name: str) -> str:
    """Held-out served, and seen lost to the gate, at ``threshold``."""
    out = [f"{name} (threshold {threshold:+.2f}):"]
    for unseen, label in ((True, "unseen intents"), (False, "seen intents")):
        mine = [(would, s) for u, would, s, _, _ in rows if u == unseen]
        would = [s for w, s in mine if w]
        passed = sum(1 for s in would if s is not None and s >= threshold)
        n = max(len(mine), 1)
        out.append(
            f"  {label:15s} n={len(mine):5d}  served small without gate {len(would) / n:6.1%}, "
            f"with gate {passed / n:6.1%}  (lost to the gate: {1 - passed / max(len(would), 1):6.1%} "
            "of what would be served)"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
