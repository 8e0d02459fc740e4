"""What ``import smallfleet`` does: nothing heavy and nothing to the process; what the
``smallfleet`` command sets for its own process (oneDNN's kernel cache capped unless set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: smallfleet and the packages a library user imports; each compared to the process before it.
MODULES = [
    "smallfleet",
    "smallfleet.models",
    "smallfleet.store",
    "smallfleet.routing",
    "smallfleet.flywheel",
    "smallfleet.evals",
    "smallfleet.specialists",
    "smallfleet.agents",
    "smallfleet.encoders",
    "smallfleet.cli",
]

SNAPSHOT = r"""
import importlib, json, logging, os, signal, socket, sys, warnings

def snapshot():
    root = logging.getLogger()
    return {
        "environ": dict(os.environ),
        "warnings filters": [repr(f) for f in warnings.filters],
        "root logger": [root.level, [repr(h) for h in root.handlers]],
        "logging.disable": logging.root.manager.disable,
        "excepthook": repr(sys.excepthook),
        "SIGINT handler": repr(signal.getsignal(signal.SIGINT)),
        "SIGTERM handler": repr(signal.getsignal(signal.SIGTERM)),
        "socket timeout": socket.getdefaulttimeout(),
        "recursion limit": sys.getrecursionlimit(),
    }

changed = {}
for name in sys.argv[1:]:
    before = snapshot()
    importlib.import_module(name)
    after = snapshot()
    changed[name] = [k for k in before if before[k] != after[k]]
ours = {
    n: [l.level, len(l.handlers)]
    for n, l in logging.root.manager.loggerDict.items()
    if n.startswith("smallfleet") and isinstance(l, logging.Logger)
}
print(json.dumps({"changed": changed, "torch": "torch" in sys.modules, "loggers": ours}))
"""


def test_importing_smallfleet_changes_nothing_in_the_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    out = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, *MODULES], env=env, capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert got["changed"] == {name: [] for name in MODULES}
    assert not got["torch"]  # and nothing heavy is imported
    # smallfleet's loggers exist, but what they print and where is the application's choice
    assert all(level == 0 and handlers == 0 for level, handlers in got["loggers"].values())


CLI_SNIPPET = """
import os, sys
from smallfleet import cli
sys.argv = ["smallfleet", "--version"]
try:
    cli.main()
except SystemExit:
    pass
print(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], "torch" in sys.modules)
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "64"), ("256", "256")])
def test_the_command_caps_the_onednn_kernel_cache_unless_set(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if given is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = given
    out = subprocess.run(
        [sys.executable, "-c", CLI_SNIPPET], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-2:] == [expected, "False"]  # and torch is not imported
