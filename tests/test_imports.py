"""Every module of safepip imports on its own, in a fresh interpreter: no import cycles.

A cycle can hide behind the import order of a whole run (pip-tools' circular-import test does
the same); importing each module first, alone, exposes it.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

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
