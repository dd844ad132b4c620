"""The layers of docs/architecture.md, checked by parsing every import (function-level too).

A module may import only from its own layer or the layers below. ``KNOWN_UPWARD`` lists the
upward imports that exist today (issue 13 removes them); the test fails when a new one
appears, and when a listed one has gone, so the list only ever shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vaelab"

# From the bottom up (DESIGN.md "Layers"); the first matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("vaelab.errors", "vaelab.config", "vaelab.version", "vaelab.runs")),
    ("data", ("vaelab.data",)),
    ("parts", ("vaelab.nn", "vaelab.likelihoods", "vaelab.latents", "vaelab.priors")),
    ("models", ("vaelab.models",)),
    ("objectives", ("vaelab.objectives", "vaelab.estimators")),
    ("training", ("vaelab.training",)),
    (
        "evaluation",
        (
            "vaelab.evaluation",
            "vaelab.explore",
            "vaelab.generate",
            "vaelab.samplers",
            "vaelab.completion",
            "vaelab.completion_eval",
            "vaelab.chains",
            "vaelab.html_report",
            "vaelab.plots",
            "vaelab.pictures",
            "vaelab.aevae",
            "vaelab.classifier",
            "vaelab.labels",
            "vaelab.gradient_variance",
        ),
    ),
    (
        "api",
        (
            "vaelab.api",
            "vaelab.api_pictures",
            "vaelab.api_studies",
            "vaelab.api_tasks",
            "vaelab.api_tools",
        ),
    ),
    ("cli", ("vaelab.cli", "vaelab.web", "vaelab.__main__", "vaelab")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# (importer, imported) pairs that go up a layer today; issue 13 empties this list.
KNOWN_UPWARD: set[tuple[str, str]] = set()

# Cycles between top-level modules/packages (vaelab.X) today: none left (issue 13).
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports_of(source: str, me: str, is_package: bool) -> set[str]:
    """Every vaelab module named by an import anywhere in ``source`` (absolute or relative)."""
    package = me if is_package else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return {m for m in found if m == "vaelab" or m.startswith("vaelab.")}


def upward_imports(sources: dict[str, tuple[str, bool]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    found = set()
    for me, (source, is_package) in sources.items():
        for target in imports_of(source, me, is_package):
            if target in sources and RANK[layer_of(target)] > RANK[layer_of(me)]:
                found.add((me, target))
    return found


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in SRC.rglob("*.py")}


def test_every_module_has_a_layer() -> None:
    for path in SRC.rglob("*.py"):
        layer_of(module_name(path))


def test_no_new_upward_import_and_the_known_list_only_shrinks() -> None:
    found = upward_imports(package_sources())
    new = sorted(found - KNOWN_UPWARD)
    gone = sorted(KNOWN_UPWARD - found)
    assert not new, f"imports that go up a layer (see docs/architecture.md): {new}"
    assert not gone, f"fixed upward imports: remove them from KNOWN_UPWARD: {gone}"


def package_cycles(sources: dict[str, tuple[str, bool]]) -> set[frozenset[str]]:
    """Strongly connected components (> 1 member) of the graph between vaelab.X units."""

    def unit(module: str) -> str:
        return module.split(".")[1] if module.count(".") else "vaelab"

    graph: dict[str, set[str]] = {}
    for me, (source, is_package) in sources.items():
        for target in imports_of(source, me, is_package):
            if target in sources and unit(target) != unit(me):
                graph.setdefault(unit(me), set()).add(unit(target))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_new_import_cycle_and_the_known_list_only_shrinks() -> None:
    # The CLI package sits on top; `vaelab/__init__` re-exports the API (not a cycle member).
    found = {c for c in package_cycles(package_sources()) if "vaelab" not in c}
    assert found == KNOWN_CYCLES, f"cycles now: {sorted(map(sorted, found))}"


def test_the_checker_sees_function_level_and_relative_imports() -> None:
    # The checker must not be blind to the imports issue 13 is about.
    sources = package_sources()
    probe = "def f():\n    from vaelab.api import load\n    from ..training import loop\n"
    sources["vaelab.models._probe"] = (probe, False)
    assert {"vaelab.api", "vaelab.training", "vaelab.training.loop"} <= imports_of(
        probe, "vaelab.models._probe", False
    )
    found = upward_imports(sources)
    assert package_cycles(
        {
            "vaelab.a": ("import vaelab.b", False),
            "vaelab.b": ("def f():\n    import vaelab.a", False),
        }
    ) == {frozenset({"a", "b"})}
    assert {
        ("vaelab.models._probe", "vaelab.api"),
        ("vaelab.models._probe", "vaelab.training.loop"),
    } <= found
