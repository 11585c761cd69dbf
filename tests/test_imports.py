"""Every module of src/resume imports, and the package has no import cycle.

    .venv/bin/pytest tests/test_imports.py -q

The cycle check reads the imports with `ast`, function-local ones included (a function-local import
hides a cycle from Python but not from a maintainer following the arrows); imports under
`if TYPE_CHECKING:` are left out, they never run.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted((SRC / "resume").rglob("*.py")):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = _modules()


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def import_graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    """module -> the resume modules it imports (at any depth of the file)."""

    def known(name: str) -> str | None:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules else None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        skip = _type_checking_lines(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if node.__class__ not in (ast.Import, ast.ImportFrom) or node.lineno in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            deps |= {m for t in targets if t.split(".")[0] == "resume" and (m := known(t)) and m != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "resume"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from resume.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from resume import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from resume.a import f\n")
    (pkg / "d.py").write_text("from . import c\n")
    mods = {"resume": pkg / "__init__.py", **{f"resume.{n}": pkg / f"{n}.py" for n in "abcd"}}
    graph = import_graph(mods)
    assert graph["resume.b"] == {"resume.a"} and graph["resume.c"] == set() and graph["resume.d"] == {"resume.c"}
    assert cycles(graph) == [["resume.a", "resume.b"]]


def test_no_import_cycle_in_src_resume():
    graph = import_graph()
    assert set(graph) >= {"resume.loop", "resume.report", "resume.tracking", "resume.serving.bundle"}
    found = cycles(graph)
    assert found == [], "import cycles in src/resume (function-local imports included): " + "; ".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)
