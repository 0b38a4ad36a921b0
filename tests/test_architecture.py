"""The package's layering rules (docs/architecture.md), read from its source: every import
statement counts, at module level or inside a function."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "mirrorgan_jax"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names of what `node` imports: a package module where it names one."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".")
        if MODULES[module].name != "__init__.py":
            here = here[:-1]
        base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(module: str) -> set[str]:
    return {
        name
        for node in ast.walk(TREES[module])
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in _imported(module, node)
    }


IMPORTS = {m: _imports(m) for m in MODULES}
# Package-internal edges; a module's own package __init__ is not a dependency.
EDGES = {
    m: {d for d in deps if d in MODULES and d != m and not m.startswith(d + ".")}
    for m, deps in IMPORTS.items()
}


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_package_is_read_whole():
    assert {
        "mirrorgan_jax.run",
        "mirrorgan_jax.train.gan",
        "mirrorgan_jax.models.generator",
    } <= set(MODULES)
    assert "mirrorgan_jax.train.state" in EDGES["mirrorgan_jax.train.gan"]


def test_no_import_cycle():
    """Depth-first search for a back edge; the cycle is named if there is one."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(EDGES[m]):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in MODULES:
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


# (modules, what they must not import, why)
LAYERS = [
    (
        "mirrorgan_jax.models",
        (
            "mirrorgan_jax.losses",
            "mirrorgan_jax.train",
            "mirrorgan_jax.data",
            "mirrorgan_jax.configuration",
            "mirrorgan_jax.hyperparameters",
            "mirrorgan_jax.networks",
            "mirrorgan_jax.workdir",
            "configs",
            "ml_collections",
        ),
        "modules are built from typed fields and know no loss, training, data or config",
    ),
    (
        "mirrorgan_jax.losses",
        ("mirrorgan_jax",),
        "losses are pure functions of arrays",
    ),
    (
        "mirrorgan_jax.data",
        (
            "mirrorgan_jax.models",
            "mirrorgan_jax.train",
            "mirrorgan_jax.networks",
            "mirrorgan_jax.loop",
            "mirrorgan_jax.run",
            "mirrorgan_jax.checkpoints",
            "mirrorgan_jax.workdir",
        ),
        "data knows no model, training or checkpoint",
    ),
    (
        "mirrorgan_jax.train",
        (
            "mirrorgan_jax.configuration",
            "mirrorgan_jax.hyperparameters",
            "mirrorgan_jax.workdir",
            "mirrorgan_jax.checkpoints",
            "mirrorgan_jax.run",
            "configs",
            "ml_collections",
            "os",
            "pathlib",
        ),
        "training steps take typed hyperparameters, never a config or a path",
    ),
]


@pytest.mark.parametrize("layer, forbidden, why", LAYERS, ids=[rule[0] for rule in LAYERS])
def test_layer_rules(layer, forbidden, why):
    broken = [
        f"{m} imports {d}"
        for m, deps in IMPORTS.items()
        if _under(m, layer)
        for d in deps
        if _under(d, *forbidden) and not _under(d, layer)
    ]
    assert not broken, f"{why}: " + "; ".join(broken)


DRIVERS = (
    "mirrorgan_jax.data.prepare",
    "mirrorgan_jax.torch_import.import_all",
    "mirrorgan_jax.evaluation.evaluate",
    "mirrorgan_jax.sample",
)


def test_only_run_imports_the_drivers_and_only_main_imports_run():
    importers = {
        d: sorted(m for m, deps in EDGES.items() if d in deps)
        for d in (*DRIVERS, "mirrorgan_jax.run")
    }
    assert {d: ms for d, ms in importers.items() if d != "mirrorgan_jax.run"} == {
        d: ["mirrorgan_jax.run"] for d in DRIVERS
    }
    assert importers["mirrorgan_jax.run"] == ["mirrorgan_jax.main"]


def test_nothing_imports_tools_or_experiments():
    broken = [
        f"{m} imports {d}"
        for m, deps in IMPORTS.items()
        for d in deps
        if _under(d, "experiments", "mirrorgan_jax.tools") and not _under(m, "mirrorgan_jax.tools")
    ]
    assert not broken, "; ".join(broken)


def test_no_private_name_used_outside_its_module():
    """`from m import _x`, and `m._x` where m is an imported package module."""
    broken = []
    for m, tree in TREES.items():
        local = {
            a.asname or a.name.rsplit(".", 1)[-1]: name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for a, name in zip(node.names, _imported(m, node), strict=True)
            if name in MODULES
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _under(_imported(m, node)[0], PACKAGE):
                broken += [f"{m} imports {a.name}" for a in node.names if _private(a.name)]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in local
                and _private(node.attr)
            ):
                broken.append(f"{m} uses {local[node.value.id]}.{node.attr}")
    assert not broken, "; ".join(broken)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_only_parallel_builds_shardings():
    names = {"NamedSharding", "PartitionSpec", "Mesh", "make_mesh"}
    broken = []
    for m, tree in TREES.items():
        if m == "mirrorgan_jax.parallel":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jax.sharding"):
                broken.append(f"{m} imports from {node.module}")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("jax", "sharding")
                and node.attr in names | {"sharding"}
            ):
                broken.append(f"{m} uses {node.value.id}.{node.attr}")
    assert not broken, "; ".join(broken)
