"""Public datasets as an agent's LLM traffic, run through smallfleet's whole loop.

Each converter (``banking77``, ``nlupp``, ``sgd``) turns a dataset into the OpenAI chat
request/response pairs an agent would send its large model, the large model's answer
being the dataset's gold annotation; ``run.py`` imports the training split, runs the
flywheel, and replays the held-out split through the real gateway.
"""

from __future__ import annotations

__all__ = ["DATASETS"]

#: dataset name → module of its converter (each has ``WORKLOAD``, ``load`` and ``LICENCE``)
DATASETS = ("banking77", "nlupp", "sgd")
