"""The package's folders follow a request, and its imports point one way (DESIGN.md).

Every import is counted, also those under `TYPE_CHECKING` and inside functions: a cycle
that only the type checker sees still ties two modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import llm_pgcache

PACKAGE = Path(llm_pgcache.__file__).parent

# Layers from the bottom up; a module may import its own layer and those below it.
FOUNDATION = (
    "errors",
    "config",
    "validation",
    "key_schema",
    "keys",
    "invalidation",
    "pricing",
    "entries",
    "breaker",
    "rounds",
    "singleflight",
)
LAYERS: tuple[tuple[str, ...], ...] = (
    FOUNDATION,
    ("postgres",),
    ("semantic",),
    ("tiers",),
    ("cache",),
    ("integrations",),
    ("server",),
    ("cli", "commands", "jobs", "demo", "evaluation"),
)


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of the package at `root` (dotted, without the package name), with the
    package's modules it imports."""
    modules = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for path in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        is_package = name.endswith("__init__") or name == "__init__"
        name = name.removesuffix(".__init__")
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    parts = name.split(".") if name != "__init__" else []
                    anchor = parts if is_package else parts[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([package, *anchor, *([base] if base else [])])
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target == package or not target.startswith(package + "."):
                    continue
                inner = target.removeprefix(package + ".")
                if inner in modules:
                    imported.add(inner)
        imported.discard(name)
        graph[name] = imported
    return graph


def layer_of(module: str) -> int:
    top = module.split(".", maxsplit=1)[0]
    for rank, layer in enumerate(LAYERS):
        if top in layer:
            return rank
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and DESIGN.md")


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports of a module from a layer above its own (the package's `__init__` aside)."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module != "__init__"
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle is not None:
            return cycle
    return None


def test_imports_point_down_the_layers() -> None:
    graph = module_graph(PACKAGE, "llm_pgcache")
    assert "cache.facade" in graph["__init__"]  # the walk sees the package's imports
    assert upward_imports(graph) == []


def test_no_import_cycle() -> None:
    assert find_cycle(module_graph(PACKAGE, "llm_pgcache")) is None


def test_every_folder_is_a_layer() -> None:
    for path in PACKAGE.iterdir():
        is_module = path.suffix == ".py" and path.stem != "__init__"
        if is_module or (path.is_dir() and (path / "__init__.py").exists()):
            layer_of(path.stem)


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_walk_finds_cycles_and_upward_imports(tmp_path: Path) -> None:
    """The checks above can fail: a TYPE_CHECKING cycle, a relative import, and an import
    from a higher layer are all found."""
    root = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "cache/__init__.py": "",
            "cache/facade.py": "from pkg.cache import opening\n",
            "cache/opening.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from .facade import Cache\n"
            ),
            "postgres/__init__.py": "",
            "postgres/store.py": "def f():\n    import pkg.cache.facade\n",
        },
    )
    graph = module_graph(root, "pkg")
    assert graph["cache.opening"] == {"cache.facade"}
    assert find_cycle(graph) == ["cache.facade", "cache.opening", "cache.facade"]
    assert upward_imports(graph) == ["postgres.store -> cache.facade"]


def test_public_names_stay_importable_from_the_package() -> None:
    missing = [name for name in llm_pgcache.__all__ if not hasattr(llm_pgcache, name)]
    assert missing == []
    assert {"Cache", "cached_openai", "CacheHit", "MemoryTier", "RedisTier"} <= set(
        llm_pgcache.__all__
    )


def test_the_lazy_exports_are_the_type_checking_imports() -> None:
    """`llm_pgcache` imports its names on first use: its table of where each lives, its
    TYPE_CHECKING imports (what type checkers see) and `__all__` name the same things."""
    tree = ast.parse(Path(llm_pgcache.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If))
    imported = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == llm_pgcache._EXPORTS
    assert set(llm_pgcache.__all__) == {*imported, "__version__"}
