"""Every ``>>>`` example in ``simcompress/`` runs (a module with examples that fail, or that are all skipped, fails)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "simcompress"
# the TensorFlow-side scripts run in .venv-qkeras, not here
EXCLUDED = ("interop/_tf_scripts/",)


def _modules_with_examples() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).as_posix()
        if any(x in rel for x in EXCLUDED) or ">>>" not in path.read_text():
            continue
        out.append(rel[:-3].replace("/", ".").removesuffix(".__init__"))
    return out


MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    assert len(MODULES) >= 20
    assert "simcompress.compress.base" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module) if t.examples]
    assert tests, f"{name}: has '>>>' in its text but no doctest was found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see output above)"
    assert result.attempted > 0, f"{name}: every example is skipped"
