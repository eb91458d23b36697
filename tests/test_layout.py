"""The package's arrows point one way (README "Layout"): cli -> search -> training -> methods,
search -> tracking / results / pareto; nothing below imports what sits above it, and the
subpackages' import graph has no cycle.  Read from the source (every import statement,
module level or inside a function), so a lazy import that closes a cycle is caught too.

``data`` and ``tasks`` are one layer in two folders (README "Layout"): a data spec names its
task type and a source hands its rows to that task, while the tasks build on the data layer's
readers, splits and token arrays.  Both keep the data layer's rule: nothing above them."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import rayprune

PACKAGE = Path(rayprune.__file__).parent

#: folders that form one layer with another (see the module docstring).
SAME_LAYER = {"tasks": "data"}

#: what each layer may never import (directly or lazily).
FORBIDDEN = {
    "methods": {"training", "search", "tracking", "cli", "export", "config", "data"},
    "data": {"training", "search", "tracking", "cli", "export", "methods"},
    "config": {"training", "search", "tracking", "cli", "export"},
    "training": {"search", "tracking", "cli", "export"},
    "tracking": {"search", "training", "cli", "export", "methods"},
    "search": {"cli", "export"},
}


def import_graph() -> dict[str, set[str]]:
    """Top-level unit of rayprune (subpackage or module) -> the units it imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        source = SAME_LAYER.get(parts[0], parts[0])
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "rayprune":
                    targets = [f"rayprune.{alias.name}" for alias in node.names]
                else:
                    targets = [node.module]
            for target in targets:
                pieces = target.split(".")
                if pieces[0] == "rayprune" and len(pieces) > 1:
                    unit = SAME_LAYER.get(pieces[1], pieces[1])
                    if unit != source:
                        edges[source].add(unit)
    return edges


def test_no_layer_imports_what_sits_above_it():
    edges = import_graph()
    wrong = {unit: sorted(edges[unit] & banned) for unit, banned in FORBIDDEN.items() if edges[unit] & banned}
    assert not wrong, f"imports against the arrows: {wrong}"


def test_the_import_graph_of_the_subpackages_has_no_cycle():
    edges = import_graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for nxt in sorted(edges.get(unit, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [unit, nxt]
                                                                      if nxt in path else path + [unit, nxt]))
            if nxt not in state:
                visit(nxt, path + [unit])
        state[unit] = 2

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [])
