"""Development sessions: `nox -s lint typecheck tests` is what CI runs; `nox -s bench` measures."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"
# A Python the tests need but this machine lacks is an error, never a silent skip.
nox.options.error_on_missing_interpreters = True

# The oldest and newest Pythons that `requires-python` supports: the tests run on both.
TEST_PYTHONS = ["3.10", "3.13"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _clean_pip_env(session: nox.Session) -> dict[str, str]:
    """Tests must not see this machine's pip configuration (extra indexes, find-links)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@nox.session
def lint(session: nox.Session) -> None:
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "src", "tests", "noxfile.py", "benchmarks", "scripts")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py", "benchmarks", "scripts")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy", "src", "tests")


@nox.session(python=TEST_PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    args = session.posargs or ["-n", "2", "--cov=safepip", "--cov-report=term:skip-covered"]
    session.run("pytest", *args, env=_clean_pip_env(session))


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmark safepip against pip and uv (benchmarks/README.md); `-- --quick` for a short run.

    The harness installs safepip from this checkout, pip, uv and pip-tools into venvs of its own.
    """
    session.install("packaging")
    session.run("python", "benchmarks/run.py", *session.posargs, env=_clean_pip_env(session))
