"""Prints Beacon's import graph: edges between the parts of `service` and `workers`, and every
import cycle between those parts and between modules (strongly connected components). Run from the repository root:

    .venv/bin/python scripts/import_graph.py [SRC_DIR]

Imports made only for type checking count too; `make lint` enforces the layering with
import-linter (contracts in pyproject.toml)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import grimp


def part(module: str) -> str:
    """`service.domain.collection.runs` -> `service.domain`; `workers.runs` -> `workers.runs`."""
    pieces = module.split(".")
    return ".".join(pieces[:2])


def cycles(nodes: set[str], imported_by: Callable[[str], set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(imported_by(node) & nodes):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src").resolve()
    sys.path[:0] = [str(src), str(src.parent / "generated")]
    graph = grimp.build_graph("service", "workers", cache_dir=None)
    modules = {m for m in graph.modules if not m.startswith("service.db.migrations")}
    edges: dict[tuple[str, str], int] = {}
    for importer in modules:
        for imported in graph.find_modules_directly_imported_by(importer) & modules:
            key = (part(importer), part(imported))
            if key[0] != key[1]:
                edges[key] = edges.get(key, 0) + 1
    print("# edges between parts (importer -> imported: module imports)")
    for (importer, imported), count in sorted(edges.items()):
        print(f"{importer} -> {imported}: {count}")
    parts = {part(m) for m in modules}
    between = cycles(parts, lambda p: {b for a, b in edges if a == p})
    print(f"# cycles between parts: {len(between)}")
    for component in between:
        print("cycle: " + " <-> ".join(component))
    found = cycles(modules, graph.find_modules_directly_imported_by)
    print(f"# cycles between modules: {len(found)}")
    for component in found:
        print("cycle: " + " <-> ".join(component))


if __name__ == "__main__":
    main()
