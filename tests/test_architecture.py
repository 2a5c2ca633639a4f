"""The layering of ``engine/`` and ``flows/``, read from the source with ``ast`` (nothing imported).

Layers, arrows only downward: types/resources/registry/model_files/gguf_lm (0) < data (1) <
aus (2) < cot (3) < store (4) < pipeline (5); model (5, beside pipeline, not using it) <
evaluation (6);
``flows/`` above all, and never imported by ``engine/``. Every import counts, at the top of a
module or inside a function (for cycles, not those under ``if TYPE_CHECKING:``, which never
run). No import cycles between modules; no module over 400 lines.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "flows")
MAX_LINES = 400

#: Layer of each part of ``engine`` (the first dotted names of a module); longest prefix wins.
LAYERS = {
    "engine": 0,
    "engine.types": 0,
    "engine.resources": 0,
    "engine.registry": 0,
    "engine.model_files": 0,
    "engine.gguf_lm": 0,
    "engine.data": 1,
    "engine.aus": 2,
    "engine.cot": 3,
    "engine.store": 4,
    "engine.pipeline": 5,
    "engine.pipeline_config": 5,
    "engine.model": 5,
    "engine.evaluation": 6,
}
#: Parts on one layer that must not use each other (the dataset half and the model half).
SIBLINGS = {
    frozenset({"engine.pipeline", "engine.model"}),
    frozenset({"engine.pipeline_config", "engine.model"}),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every Python module of ``engine/`` and ``flows/`` by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _target(name: str, known: dict[str, Path]) -> str | None:
    """The most specific project module that importing ``name`` loads (None outside)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits under ``if TYPE_CHECKING:`` (type-only)."""
    found = []
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, type_only = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, type_only))
        for child in ast.iter_child_nodes(node):
            guarded = _is_type_checking(node) and child in node.body  # type: ignore[attr-defined]
            stack.append((child, type_only or guarded))
    return found


@cache
def graph(runtime_only: bool = False) -> dict[str, dict[str, int]]:
    """module -> {imported project module: line of the first such import}; ``runtime_only``
    leaves out the imports under ``if TYPE_CHECKING:``."""
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, type_only in _imports(tree):
            if runtime_only and type_only:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # ``from pkg import sub`` loads the submodule when there is one
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for target in targets:
                module = _target(target, known)
                if module is not None and module != name:
                    found[module] = min(found.get(module, node.lineno), node.lineno)
        edges[name] = found
    return edges


def layer_of(module: str) -> tuple[str, int] | None:
    """The part of ``engine`` that ``module`` belongs to and its layer (None for flows)."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in LAYERS:
            return prefix, LAYERS[prefix]
    return None


def _where(module: str, line: int) -> str:
    return f"{modules()[module].relative_to(REPO)}:{line}"


def test_every_engine_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if m.startswith("engine.") and layer_of(m)[0] == "engine"]
    assert not unplaced, f"modules of engine/ in no known layer: {unplaced}; add them to LAYERS"


def test_engine_never_imports_flows() -> None:
    wrong = [
        f"{_where(module, line)}: {module} imports {target} (engine must not use flows)"
        for module, targets in graph().items()
        if module.startswith("engine")
        for target, line in targets.items()
        if target.startswith("flows")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_upward_imports_between_layers() -> None:
    wrong = []
    for module, targets in sorted(graph().items()):
        here = layer_of(module)
        if here is None:
            continue
        for target, line in sorted(targets.items()):
            there = layer_of(target)
            if there is None:
                continue
            upward = there[1] > here[1]
            sideways = frozenset({here[0], there[0]}) in SIBLINGS
            if upward or sideways:
                wrong.append(
                    f"{_where(module, line)}: {module} ({here[0]}, layer {here[1]}) imports "
                    f"{target} ({there[0]}, layer {there[1]})"
                )
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    edges = graph(runtime_only=True)
    messages = []
    for component in _cycles(edges):
        members = set(component)
        arrows = [
            f"  {_where(m, line)}: {m} imports {t}"
            for m in component
            for t, line in sorted(edges[m].items())
            if t in members
        ]
        messages.append(f"cycle between {', '.join(component)}:\n" + "\n".join(arrows))
    assert not messages, "\n".join(messages)


def test_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}, "e": {}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_module_over_400_lines() -> None:
    long = [
        f"{path.relative_to(REPO)}: {lines} lines"
        for path in modules().values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, f"modules over {MAX_LINES} lines (split them by concept):\n" + "\n".join(long)
