"""What ``import smallfleet`` does: nothing heavy, and oneDNN's kernel cache capped unless set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SNIPPET = (
    "import os, sys, smallfleet; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], 'torch' in sys.modules)"
)


@pytest.mark.parametrize(("given", "expected"), [(None, "64"), ("256", "256")])
def test_import_caps_the_onednn_kernel_cache_unless_set(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if given is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = given
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "False"]  # and torch is not imported
