"""The package's import graph: no cycle between modules, and no import from a lower layer of the library into a
higher one. Function-level (lazy) imports count like top-level ones; only ``lenssample/__init__.py`` and
``__main__.py``, which re-export or start everything, stand outside the layering."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lenssample"

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS = [
    {"validation", "specs", "stats"},
    {"model"},
    {"data"},
    {"lens"},
    {"strategies"},
    {"decoding", "scoring"},
    {"schedules"},
    {"api", "hf"},
    {"analysis"},
    {"plotting"},
    {"eval"},
    {"integrations"},
    {"cli"},
]
EXEMPT = {"lenssample", "lenssample.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lenssample modules that ``name`` imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" for alias in node.names] + [source]
        else:
            continue
        for target in targets:
            if target in known:
                found.add(target)
            elif target.rpartition(".")[0] in known:  # a name imported from a module
                found.add(target.rpartition(".")[0])
    found.discard(name)
    return {t for t in found if t.startswith("lenssample")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, group in enumerate(LAYERS) if top in group)


def test_every_module_has_a_layer():
    unplaced = sorted(
        m for m in _modules() if m not in EXEMPT and not any(m.split(".")[1] in g for g in LAYERS)
    )
    assert not unplaced, f"modules outside the layering (add them to LAYERS): {unplaced}"


def test_no_upward_import():
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        if module not in EXEMPT
        for target in targets
        if target not in EXEMPT and _layer(target) > _layer(module)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))
    importers_of_root = [m for m, targets in _graph().items() if "lenssample" in targets and m not in EXEMPT]
    assert not importers_of_root, f"modules importing the top-level package: {importers_of_root}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_cycle_between_packages():
    """Collapsed to top-level parts (``model``, ``lens``, ``decoding``...), the graph is still acyclic."""
    collapsed: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if module in EXEMPT:
            continue
        top = module.split(".")[1]
        collapsed.setdefault(top, set()).update(t.split(".")[1] for t in targets if t not in EXEMPT)
        collapsed[top].discard(top)
    cycles = _cycles(collapsed)
    assert not cycles, "cycles between packages:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_is_read():
    """The checks above would pass vacuously on an empty graph: pin a few edges that must be there."""
    graph = _graph()
    assert "lenssample.model.adapters" in graph["lenssample.model.capture"]
    assert "lenssample.lens.passes" in graph["lenssample.scoring"]
    assert "lenssample.api" in graph["lenssample.hf"]
    assert (
        _layer("lenssample.cli.generate")
        > _layer("lenssample.eval.speed")
        > _layer("lenssample.model.loading")
    )
