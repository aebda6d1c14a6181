"""The packages' imports run one way and keep private names private.

Every ``import``/``from ... import`` in ``bids_usb`` and ``usb_model`` is read with ``ast``,
function-local ones included (they hid the old cycles): the graph of package modules must have
no cycle, ``usb_model`` must not import ``bids_usb``, and no module imports another module's
``_private`` name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bids_usb", "usb_model")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(modules: dict[str, Path]):
    """(importer, imported module, names) for every import of a package module."""
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        yield name, alias.name, []
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                if target.split(".")[0] not in PACKAGES:
                    continue
                names = [a.name for a in node.names]
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
                yield name, target, [n for n in names if f"{target}.{n}" not in modules]
                for sub in submodules:
                    yield name, sub, []


def _graph():
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for importer, target, _ in _imports(modules):
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        if target and target != importer:
            graph[importer].add(target)
    return graph


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ importing its own submodules is how packages expose names; the
    # cycles that matter are between sibling modules.
    for module in graph:
        graph[module] = {
            t
            for t in graph[module]
            if not (module.startswith(t + ".") and graph.get(t) is not None and _modules()[t].name == "__init__.py")
        }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_usb_model_does_not_import_the_app():
    graph = _graph()
    offenders = sorted(
        m
        for m, targets in graph.items()
        if m.startswith("usb_model") and any(t.startswith("bids_usb") for t in targets)
    )
    assert offenders == []


def test_no_private_name_is_imported_across_modules():
    modules = _modules()
    private = sorted(
        f"{importer} imports {target}.{n}"
        for importer, target, names in _imports(modules)
        for n in names
        if n.startswith("_") and not n.startswith("__") and target != importer
    )
    assert private == []
