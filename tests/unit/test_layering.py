"""Layering: the worker side never pulls in config, CLI, progress, storage or YAML code,
and the CLI never touches multiprocessing.

The import graph is read from the source with ``ast`` (every ``import`` statement,
including ones inside functions; ``if TYPE_CHECKING:`` blocks excluded as they never run)
and ``pipeline.*`` imports are followed transitively, parent packages included (importing
``pipeline.store.parts`` runs ``pipeline/store/__init__.py``). A runtime check in a fresh
interpreter backs it up.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"

WORKER_SIDE = (
    "pipeline.worker",
    "pipeline.readers",
    "pipeline.steps",
    "pipeline.aggregates",
    "pipeline.conditions",
    "pipeline.columns",
    "pipeline.fastpath",
    "pipeline.chunking",
    "pipeline.models",
    "pipeline.bundle",
    "pipeline.remote",  # a Dask worker's side
)
FORBIDDEN_FOR_WORKERS = (
    "pipeline.config",
    "pipeline.cli",
    "tqdm",
    "sqlite3",
    "_sqlite3",
    "yaml",
    "pydantic",
    "pydantic_core",
)


def module_file(name: str) -> Path | None:
    """The source file of a ``pipeline`` module or package, or None if it is not one."""
    parts = name.split(".")
    if parts[0] != "pipeline":
        return None
    base = REPO.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of_source(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules a module's source imports (directly)."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                if node.level > 1:
                    anchor = anchor[: -(node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            for alias in node.names:  # ``from pipeline import worker`` imports a module
                candidate = f"{base}.{alias.name}"
                if module_file(candidate) is not None:
                    found.add(candidate)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def direct_imports(module: str) -> frozenset[str]:
    path = module_file(module)
    assert path is not None, module
    names = imports_of_source(path.read_text("utf-8"), module, path.name == "__init__.py")
    return frozenset(names)


def transitive_imports(module: str) -> dict[str, str]:
    """Every module imported when ``module`` is, mapped to the pipeline module importing it."""
    seen: dict[str, str] = {}
    todo = [(m, "<root>") for m in with_parents(module)]
    while todo:
        name, via = todo.pop()
        if name in seen:
            continue
        seen[name] = via
        if module_file(name) is None:
            continue
        for imported in direct_imports(name):
            for step in with_parents(imported):
                if step not in seen:
                    todo.append((step, name))
    return seen


def is_forbidden(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def chain(graph: dict[str, str], name: str) -> str:
    path = [name]
    while graph.get(path[-1], "<root>") != "<root>":
        path.append(graph[path[-1]])
    return " <- ".join(path)


# --- the walker itself -----------------------------------------------------------------


def test_walker_resolves_import_forms() -> None:
    source = (
        "import os, json as j\n"
        "from typing import TYPE_CHECKING\n"
        "from . import units\n"
        "from .store import ledger\n"
        "from ..x import y\n"
        "from pipeline import worker, __version__\n"
        "def f():\n"
        "    import sqlite3\n"
        "    importlib.import_module('yaml')\n"
        "if TYPE_CHECKING:\n"
        "    import typer\n"
        "else:\n"
        "    import tqdm\n"
    )
    got = imports_of_source(source, "pipeline.store.merge", is_package=False)
    assert got >= {
        "os",
        "json",
        "pipeline.store",
        "pipeline.store.store",
        "pipeline.x",
        "pipeline",
        "pipeline.worker",
        "sqlite3",
        "yaml",
        "tqdm",
    }
    assert "typer" not in got
    assert "pipeline.store.units" not in got  # not a module: a name from the package
    relative = imports_of_source("from .. import worker", "pipeline.store.merge", False)
    assert relative == {"pipeline", "pipeline.worker"}


def test_walker_finds_known_violations() -> None:
    """The check can fail: modules that are allowed these imports are seen to have them."""
    runner = transitive_imports("pipeline.runner")
    assert "pipeline.config" in runner and "sqlite3" in runner
    cli = transitive_imports("pipeline.cli")
    assert {"typer", "yaml", "pipeline.config"} <= set(cli)
    # parent packages and ``from pipeline import x`` submodules are followed
    worker = transitive_imports("pipeline.worker")
    assert {"pipeline", "pipeline.store", "pipeline.store.parts", "pipeline.readers"} <= set(worker)


# --- the rules -------------------------------------------------------------------------


@pytest.mark.parametrize("module", WORKER_SIDE)
def test_worker_side_never_imports_config_cli_or_heavy_libraries(module: str) -> None:
    graph = transitive_imports(module)
    bad = sorted(name for name in graph if is_forbidden(name, FORBIDDEN_FOR_WORKERS))
    assert not bad, "forbidden imports:\n" + "\n".join(chain(graph, name) for name in bad)


def test_cli_never_imports_multiprocessing() -> None:
    imported = direct_imports("pipeline.cli")
    bad = sorted(n for n in imported if n == "multiprocessing" or n.startswith("multiprocessing."))
    assert not bad, f"pipeline/cli.py imports {bad}"
    # nor does anything it imports at module level (what `pipeline --help` loads)
    tree = ast.parse((PACKAGE / "cli.py").read_text("utf-8"))
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
    for name in sorted(n for n in top_level if n.startswith("pipeline")):
        graph = transitive_imports(name)
        assert not any(is_forbidden(n, ("multiprocessing",)) for n in graph), chain(
            graph, "multiprocessing"
        )


RUNTIME_CHECK = """
import json, sys
before = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("pipeline.worker", FORBIDDEN_FOR_WORKERS),
        ("pipeline.cli", ("multiprocessing",)),
        # dask is imported when a run uses a cluster, never for the other executors
        ("pipeline.runner", ("dask", "distributed")),
    ],
)
def test_runtime_imports_agree(module: str, forbidden: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUNTIME_CHECK, module],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert module in loaded
    assert [m for m in loaded if is_forbidden(m, forbidden)] == []
