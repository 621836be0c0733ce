"""The modules of simcompress.validation form a DAG, and compress.base is their only way into compress.

Every import counts (module level, inside functions, under ``TYPE_CHECKING``), as in docs/architecture.md.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "simcompress" / "validation"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module below ``simcompress``, line) of every import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["validation"][: 2 - node.level] if node.level <= 2 else []
                stem = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("simcompress."):
                stem = (node.module or "").removeprefix("simcompress.")
            else:
                continue
            out += [(f"{stem}.{a.name}" if stem else a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("simcompress."), node.lineno) for a in node.names if a.name.startswith("simcompress.")]
    return out


def _graph() -> dict[str, set[str]]:
    mods = {p.stem for p in PKG.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for p in PKG.glob("*.py"):
        deps = set()
        for target, _ in _imports(p):
            parts = target.split(".")
            if parts[0] == "validation" and len(parts) > 1 and parts[1] in mods:
                deps.add(parts[1])
        graph[p.stem] = deps - {p.stem}
    return graph


def test_validation_modules_form_a_dag() -> None:
    try:
        list(graphlib.TopologicalSorter(_graph()).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle in simcompress.validation: {' -> '.join(err.args[1])}")


def test_core_gate_and_report_do_not_import_each_other_back() -> None:
    g = _graph()
    for a, b in (("core", "gate"), ("core", "report"), ("gate", "report"), ("core", "spec"), ("report", "result")):
        assert not (b in g[a] and a in g[b]), (a, b)
    assert "result" not in g["report"] and "core" not in g["report"]
    assert not g["spec"], "the gate spec imports no other validation module"


def test_only_compress_base_from_compress() -> None:
    bad = [
        f"{p.name}:{line}: {t}"
        for p in sorted(PKG.glob("*.py"))
        for t, line in _imports(p)
        if t.split(".")[0] == "compress" and not (t == "compress.base" or t.startswith("compress.base."))
    ]
    assert not bad, bad


def test_the_walk_sees_lazy_and_type_checking_imports() -> None:
    g = _graph()
    assert "compress.base.GateResult" in {t for t, _ in _imports(PKG / "model_gate.py")}  # lazy, inside a method
    assert "evaluation" in g["checks"]  # under TYPE_CHECKING only
