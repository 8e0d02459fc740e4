"""Each package's public surface: its ``__all__`` resolves, and importing the package does no work."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

LAZY = ["smallfleet.routing", "smallfleet.flywheel", "smallfleet.gateway"]


@pytest.mark.parametrize("package", LAZY)
def test_every_exported_name_resolves(package: str) -> None:
    mod = importlib.import_module(package)
    assert len(set(mod.__all__)) == len(mod.__all__)
    assert set(mod.__all__) == set(mod._EXPORTS)  # what is listed is what resolves lazily
    for name in mod.__all__:
        value = getattr(mod, name)
        assert value is not None
        home = getattr(value, "__module__", None)
        assert home is None or home.startswith(package), (name, home)  # defined in the package
        assert name in dir(mod)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mod.nope  # noqa: B018


@pytest.mark.parametrize("package", LAZY)
def test_importing_the_package_imports_none_of_its_modules(package: str) -> None:
    code = (
        f"import json, sys, {package}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith('{package}.') "
        "or m in ('torch', 'numpy', 'sqlalchemy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
