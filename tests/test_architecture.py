"""The package's floors (docs/architecture.md): no module imports one on a higher floor, and no import circle.

Read from the source (every ``import`` and ``from ... import``, at module level or inside a function), so an import
added anywhere is seen without running it. Fast: parsing, no imports.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cxrgan"

# Lowest first. The ground floor holds the small shared modules every floor may use (errors, atomic files, devices,
# processes, claims, numbered run directories and their configs, the provenance of a run). ``report`` renders tables,
# figures and the HTML page from a run directory's files: it sits below the engine, which writes reports, and knows
# no engine or recipe.
FLOORS = ("ground", "data", "generators", "balance", "classify", "evaluate", "report", "engine", "recipes", "cli")
# The modules at the package's top level and their floors: the shared ground; ``plugins`` (installed packages'
# generators and methods) registers into the balance floor's registries; ``testing`` (the contract checks for
# plugin authors, on the recipes' default data) and ``__main__`` stand on top, with the command line.
TOP_LEVEL = {"__init__": "ground", "errors": "ground", "io": "ground", "device": "ground", "distributed": "ground",
             "claims": "ground", "runs": "ground", "memory": "ground", "provenance": "ground", "plugins": "balance",
             "testing": "cli", "__main__": "cli"}


def floor(module: str) -> str:
    """The floor of a module ``cxrgan.x.y``: its package, or its entry in ``TOP_LEVEL``."""
    parts = module.split(".")[1:]
    if not parts:
        return "ground"
    return TOP_LEVEL.get(parts[0], parts[0])


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (``from a import b`` counts as a.b when a.b is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import cxrgan.a.b` of a name inside a module
                target = target.rpartition(".")[0]
            if target.startswith("cxrgan") and target != name:
                out.add(target)
    return out


@functools.lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_floors_are_known():
    assert {floor(m) for m in modules()} <= set(FLOORS), {m: floor(m) for m in modules() if floor(m) not in FLOORS}


def test_no_module_imports_upward():
    edges = graph()
    upward = sorted(f"{a} ({floor(a)}) -> {b} ({floor(b)})" for a, targets in edges.items() for b in targets
                    if FLOORS.index(floor(b)) > FLOORS.index(floor(a)))
    assert not upward, "imports across floors upward:\n" + "\n".join(upward)


def test_no_import_circle():
    edges = graph()  # read-only below
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_no_module_matches_method_names():
    """Recipes, the engine and the audits ask a balancer what it needs (``generators``, ``planned_images``,
    ``control``, ``stages``) instead of matching method names: no prefix, suffix or substring test on a method's
    name anywhere (the shape of the old ``method.startswith("cdcgan")`` lists)."""
    import re

    shape = re.compile(r"\bmethods?\w*\.(startswith|endswith)\(|[\"'][\w-]+[\"']\s+(not\s+)?in\s+(str\()?method\b")
    found = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}" for path in modules().values()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if shape.search(line)]
    assert not found, "\n".join(found)
