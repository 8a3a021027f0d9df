"""Every module of safepip imports on its own, in a fresh interpreter: no import cycles; and the
run-time imports go one way (README, Architecture).

A cycle can hide behind the import order of a whole run (pip-tools' circular-import test does
the same); importing each module first, alone, exposes it.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import safepip

MODULES = [
    "safepip",
    *sorted(info.name for info in pkgutil.walk_packages(safepip.__path__, prefix="safepip.")),
]


def test_every_module_is_listed() -> None:
    assert {"safepip.cli", "safepip.cli.options", "safepip.audit.fix", "safepip.urls"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "safepip", "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"safepip {safepip.__version__}")


def runtime_imports(module: str) -> set[str]:
    """The safepip modules `module` imports when it runs (anywhere in its code, functions
    included), leaving out imports under `if TYPE_CHECKING:`, which exist for hints only."""
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(Path(spec.origin).read_text("utf-8")))
    return {name for name in found if name in MODULES and name != module}


def test_nothing_but_the_entry_point_imports_the_cli() -> None:
    # fastpath is the console script: it replays a no-op or hands over to `cli.main`.
    importers = {
        m
        for m in MODULES
        if not m.startswith("safepip.cli")
        and any(i.startswith("safepip.cli") for i in runtime_imports(m))
    }
    assert importers == {"safepip.fastpath"}


def test_only_the_cli_imports_the_pipeline() -> None:
    importers = {
        m
        for m in MODULES
        if not m.startswith("safepip.cli") and "safepip.pipeline" in runtime_imports(m)
    }
    assert importers == set()


def test_command_modules_never_import_each_other() -> None:
    commands = {m for m in MODULES if m.startswith("safepip.cli.") and m != "safepip.cli.options"}
    for command in sorted(commands):
        assert runtime_imports(command) & commands == set(), command
