"""The import table of docs/architecture.md, enforced.

Every ``import`` in every module of ``simcompress/`` (lazy imports inside functions, relative imports and
``importlib.import_module("simcompress...")`` calls included) must be an edge the table allows.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT_MODULES = {"errors", "_config", "_registry", "_provenance", "_atomic", "_progress", "__version__"}


def import_table(doc: Path) -> dict[str, set[str]]:
    """``{subpackage: allowed targets}`` from the markdown table under 'Import table'."""
    text = doc.read_text()
    start = text.index("## Import table")
    end = text.find("\n## ", start + 1)
    table: dict[str, set[str]] = {}
    for line in text[start:end].splitlines():
        m = re.match(r"^\|\s*`([\w.]+)`[^|]*\|(.*)\|\s*$", line)
        if m:
            table[m.group(1)] = set(re.findall(r"`([\w.]+)`", m.group(2)))
    return table


@dataclass(frozen=True)
class Edge:
    source: str  # subpackage of the importing module ("root" for errors.py & co, "simcompress" for __init__.py)
    target: str  # dotted module path below simcompress ("generators.bundle", "errors")
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports simcompress.{self.target}"


def _module_name(path: Path, pkg_root: Path) -> tuple[str, bool]:
    rel = path.relative_to(pkg_root.parent).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def imports_of(pkg_root: Path) -> list[Edge]:
    """Every import of a ``simcompress`` module from a module under ``pkg_root`` (the ``simcompress`` folder)."""
    edges: list[Edge] = []
    for path in sorted(pkg_root.rglob("*.py")):
        mod, is_pkg = _module_name(path, pkg_root)
        parts = mod.split(".")
        if len(parts) == 1:
            source = "simcompress"
        elif len(parts) == 2 and not is_pkg:
            source = "root"
        else:
            source = parts[1]
        package = parts if is_pkg else parts[:-1]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from A import b`: b may be a module (`from simcompress import showers`), so the edge is A.b
                targets = [f"{stem}.{a.name}" for a in node.names]
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str) and getattr(node.func, "attr", getattr(node.func, "id", ""))
                  == "import_module"):
                targets = [node.args[0].value]
            for t in targets:
                tparts = t.split(".")
                if tparts[0] != "simcompress" or len(tparts) < 2:
                    continue
                edges.append(Edge(source, ".".join(tparts[1:]), f"{path.relative_to(pkg_root.parent)}:{node.lineno}"))
    return edges


def violations(pkg_root: Path, table: dict[str, set[str]]) -> list[Edge]:
    bad = []
    for e in imports_of(pkg_root):
        top = e.target.split(".")[0]
        if top in ROOT_MODULES or top == e.source:
            continue  # the root modules are for everyone; a subpackage may import itself
        if e.source == "root":
            bad.append(e)  # the root modules import no subpackage
            continue
        allowed = table.get(e.source)
        if allowed is None:
            bad.append(e)  # a subpackage the table does not know
            continue
        if not any(e.target == a or e.target.startswith(a + ".") for a in allowed):
            bad.append(e)
    return bad


def test_every_import_is_in_the_table() -> None:
    table = import_table(REPO / "docs" / "architecture.md")
    assert {"showers", "compress", "generators", "validation", "firmware", "batch", "interop", "cli"} <= set(table)
    assert table["compress"] == set(), "compress must import no physics subpackage"
    bad = violations(REPO / "simcompress", table)
    assert not bad, "imports outside docs/architecture.md's import table:\n" + "\n".join(map(str, bad))


def test_every_subpackage_has_a_row() -> None:
    table = import_table(REPO / "docs" / "architecture.md")
    subpackages = {p.parent.name for p in (REPO / "simcompress").glob("*/__init__.py")}
    assert subpackages <= set(table), f"subpackages without a row: {sorted(subpackages - set(table))}"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "simcompress"
    for name, body in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(body))
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return root


@pytest.mark.parametrize(
    ("body", "target"),
    [
        # the imports issue 15 listed, in the forms they took
        ("def f():\n    from simcompress.generators import build_generator\n", "generators.build_generator"),  # lazy
        ("def f():\n    from ...generators.bundle import load_generator\n", "generators.bundle.load_generator"),
        ("from ... import showers\n", "showers"),
        ("import simcompress.validation.core as core\n", "validation.core"),
        ("import importlib\nm = importlib.import_module('simcompress.showers.io')\n", "showers.io"),
    ],
)
def test_the_test_catches_a_forbidden_import(tmp_path: Path, body: str, target: str) -> None:
    table = import_table(REPO / "docs" / "architecture.md")
    root = _tree(tmp_path, {"compress/distill/students.py": body, "compress/base.py": "from ..errors import ConfigError\n"})
    bad = violations(root, table)
    assert [(e.source, e.target) for e in bad] == [("compress", target)]
    assert "simcompress/compress/distill/students.py:" in str(bad[0])


def test_the_test_allows_what_the_table_allows(tmp_path: Path) -> None:
    table = import_table(REPO / "docs" / "architecture.md")
    root = _tree(tmp_path, {
        "generators/bundle.py": "def f():\n    from ..compress.bundle import load_compressed\n",
        "firmware/graph.py": "from ..compress.fixed_point.record import PrecisionRecord\n",
        "firmware/hls.py": "from ..compress.fixed_point.modules import FixedPointNetwork\n",
        "errors.py": "from .showers import Geometry\n",
    })
    bad = sorted((e.source, e.target) for e in violations(root, table))
    assert bad == [("firmware", "compress.fixed_point.modules.FixedPointNetwork"), ("root", "showers.Geometry")]
