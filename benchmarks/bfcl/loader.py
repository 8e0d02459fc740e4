"""Fetch the bfcl-eval wheel (data only, never installed) and load the benchmark's categories.

The wheel pins an old numpy, so it is downloaded with ``pip download --no-deps`` and
read as a zip by :mod:`smallfleet.evals.bfcl`; nothing from it is imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from smallfleet.evals.bfcl import BFCL_VERSION, BFCLEntry, BFCLSource, load_category

#: Trained on: BFCL's original (non-live), expert-written categories.
TRAIN_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple")
#: Evaluated on: real users' queries with tools never seen in training.
EVAL_CATEGORIES = ("live_simple", "live_multiple")

DEFAULT_CACHE = Path.home() / ".cache" / "smallfleet" / "bfcl"


def ensure_wheel(cache: Path = DEFAULT_CACHE, version: str = BFCL_VERSION) -> Path:
    """The path of ``bfcl_eval-VERSION-*.whl`` in ``cache``, downloading it the first time."""
    pattern = f"bfcl_eval-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"bfcl-eval=={version}", "--no-deps", "-d", str(cache)]
    print("fetching the BFCL data:", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob(pattern))
    if done.returncode != 0 or not found:
        raise SystemExit(
            f"Could not download bfcl-eval=={version} ({done.stderr.strip()[-300:]}).\n"
            f"Download it yourself and pass --wheel: {' '.join(cmd)}"
        )
    return found[0]


def load(wheel: Path, categories: tuple[str, ...], limit: int | None = None) -> list[BFCLEntry]:
    """The entries of ``categories``, in order; ``limit`` caps each category (for a quick run)."""
    source = BFCLSource(wheel)
    try:
        return [e for c in categories for e in load_category(source, c, limit=limit)]
    finally:
        source.close()


def tool_group(entry: BFCLEntry) -> str:
    """Live ids are ``live_simple_<n>-<group>-<k>``: entries of a group share their tools."""
    stem = entry.id.rsplit("_", 1)[-1]
    parts = stem.split("-")
    return f"{entry.category}:{parts[1] if len(parts) == 3 else stem}"
