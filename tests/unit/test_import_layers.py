"""Imports point down: the project's packages form layers, and a module imports only from
its own layer's package or from the layers below it, so no import cycle between packages.

`elastickv_admin` is two layers: its foundation package `elastickv_admin.lib` (settings
reader, error envelope, metrics, crypto...), which every app uses, and the project shell on
top (settings, urls, ASGI app, command line, context processor...), which wires the apps
together. Imports inside functions count too: a lazy import that dodges a cycle at import
time is still a cycle.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Top to bottom; a layer may import from the layers after it, never from those before it.
LAYERS = [
    "elastickv_admin",  # the project shell: every elastickv_admin module outside .lib
    "demo",
    "keyviz",
    "cluster",
    "accounts",
    "audit",
    "devcluster",
    "elastickv_admin.lib",
    "proto",
]
# Imports that point up today (module -> module it imports), each a package cycle to untangle.
# A new one fails the test; so does an entry here that no longer exists (drop it).
KNOWN_UPWARD = {
    # cluster pages preview keys and read KeyViz history: key previews belong below both.
    ("cluster.serialize", "keyviz.keys"),
    ("cluster.services", "keyviz.keys"),
    ("cluster.services", "keyviz.store"),
    ("cluster.templatetags.cluster_format", "keyviz.keys"),
    # audit's viewer and prune command read the retention from accounts' site settings.
    ("audit.views", "accounts.models"),
    ("audit.management.commands.audit_prune", "accounts.models"),
}


def packages() -> list[str]:
    """The top-level packages the wheel ships (pyproject's packages.find include)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(pattern.rstrip("*") for pattern in include)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, own: str, names: set[str]) -> set[str]:
    """Modules of the project `path` imports, anywhere in the file; `from pkg import mod`
    names the submodule when there is one."""
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in names}


def layer_of(module: str) -> int:
    # The package's own __init__ is imported with every foundation module: it counts as one.
    if module == "elastickv_admin" or module.startswith("elastickv_admin.lib"):
        return LAYERS.index("elastickv_admin.lib")
    return LAYERS.index(module.partition(".")[0])


def project_imports() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in packages() for p in (ROOT / pkg).rglob("*.py")}
    names = set(files)
    return {module: imported_modules(path, module, names) for module, path in files.items()}


def upward_imports() -> set[tuple[str, str]]:
    return {
        (module, target)
        for module, targets in project_imports().items()
        for target in targets
        if module.split(".")[0] != target.split(".")[0] or layer_of(module) != layer_of(target)
        if layer_of(target) < layer_of(module)
    }


def test_every_shipped_package_has_a_layer():
    assert set(packages()) <= set(LAYERS)


def test_imports_point_down_the_layers_except_the_known_cycles():
    upward = upward_imports()
    new = sorted(upward - KNOWN_UPWARD)
    assert not new, f"imports pointing up the layers (import cycles between packages): {new}"
    gone = sorted(KNOWN_UPWARD - upward)
    assert not gone, f"fixed, drop them from KNOWN_UPWARD: {gone}"


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or around a loop (Tarjan's
    strongly connected components with more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph.get(module, ()):
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_around_a_loop():
    """No import cycle between modules at all, inside a package too (lazy imports count)."""
    assert import_cycles(project_imports()) == []


def test_the_cycle_finder_sees_a_loop_through_a_lazy_import():
    graph = {"a.client": {"a.token"}, "a.token": {"a.fanout"}, "a.fanout": {"a.client"}}
    assert import_cycles(graph) == [["a.client", "a.fanout", "a.token"]]
    assert import_cycles({"a.x": {"a.y"}, "a.y": set()}) == []


def test_the_checker_sees_lazy_relative_and_submodule_imports(tmp_path):
    """The checker itself: an import inside a function, `from . import x` and
    `from package import module` each name the module imported."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from . import sibling\n"
        "from elastickv_admin.lib import metrics\n"
        "def later():\n"
        "    import keyviz.store\n",
        encoding="utf-8",
    )
    names = {"cluster", "cluster.sibling", "elastickv_admin.lib", "elastickv_admin.lib.metrics"}
    names |= {"keyviz", "keyviz.store"}
    assert imported_modules(source, "cluster.mod", names) == {
        "cluster",
        "cluster.sibling",
        "elastickv_admin.lib",
        "elastickv_admin.lib.metrics",
        "keyviz.store",
    }
