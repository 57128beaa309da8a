"""The shape check of ``make check``: no function over 60 lines, no import cycle.

Run over flows/ and tasks/. A function's length counts from its ``def`` line (decorators
excluded) to its last line, nested closures included, as a reader sees it. An import edge is
the module an ``import`` names (``from pkg import sub`` counts ``pkg.sub`` when ``sub`` is a
module), wherever the import sits, so an import hidden inside a function still counts.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 60
ROOTS = ("flows", "tasks")


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def long_functions(path: Path, tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES:
                found.append(
                    f"{path}:{node.lineno}: {node.name} is {length} lines (max {MAX_LINES})"
                )
    return found


def imports_of(name: str, tree: ast.AST, modules: set[str]) -> set[str]:
    edges: set[str] = set()
    package = name if name in modules and _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    edges.add(full)
                elif base in modules:
                    edges.add(base)
    edges.discard(name)
    return edges


_PACKAGES: set[str] = set()


def _is_package(name: str) -> bool:
    return name in _PACKAGES


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (iterative DFS with colours)."""
    colour = dict.fromkeys(graph, 0)
    for start in sorted(graph):
        if colour[start]:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        colour[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if colour.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, sorted(graph[nxt])))
                path.append(nxt)
    return None


def main() -> int:
    files = sorted(p for root in ROOTS for p in Path(root).rglob("*.py"))
    trees = {p: ast.parse(p.read_text(), filename=str(p)) for p in files}
    names = {p: module_name(p) for p in files}
    _PACKAGES.update(names[p] for p in files if p.name == "__init__.py")
    modules = set(names.values())
    problems = [line for p, tree in trees.items() for line in long_functions(p, tree)]
    graph = {names[p]: imports_of(names[p], tree, modules) for p, tree in trees.items()}
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    for line in problems:
        print(line)
    print(f"shape: {len(files)} modules, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
