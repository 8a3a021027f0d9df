"""`safepip sync`, end to end: a loopback index, real venvs, real wheels."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from safepip.cli import main
from wheelbuild import sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from servers import StaticIndex
    from wheelbuild import WheelFactory

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "userdata"))
    monkeypatch.setenv("SAFEPIP_CACHE_DIR", str(tmp_path / "cache"))

    def invoke(*args: str) -> Result:
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, ANSI.sub("", captured.out), ANSI.sub("", captured.err))

    return invoke


def lock_line(path: Path) -> str:
    name, version = path.name.split("-")[:2]
    return f"{name}=={version} --hash=sha256:{sha256_file(path)}"


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def installed(venv: Path) -> list[str]:
    return sorted(
        p.name.removesuffix(".dist-info") for p in site_packages(venv).glob("*.dist-info")
    )


@dataclass
class Env:
    venv: Path
    index: StaticIndex
    wheels: dict[str, Path]
    lock: Path


@pytest.fixture
def env(
    tmp_path: Path,
    wheel_factory: WheelFactory,
    static_index: Callable[..., StaticIndex],
    venv_factory: Callable[..., Path],
    run: Callable[..., Result],
) -> Env:
    """A venv with `base==1.0`, `extra==1.0` (depends on `base`) and `setuptools==99.0`; a lock
    that wants `base==2.0` and `new==1.0` instead."""
    wheels = {
        "base1": wheel_factory("base", "1.0", files={"base/__init__.py": "V = 1\n"}),
        "base2": wheel_factory("base", "2.0", files={"base/__init__.py": "V = 2\n"}),
        "extra": wheel_factory("extra", "1.0", requires=["base"]),
        "new": wheel_factory("new", "1.0", requires=["base>=2"]),
        "setuptools": wheel_factory("setuptools", "99.0"),
    }
    index = static_index()
    for wheel in wheels.values():
        index.add(wheel)
    venv = venv_factory()
    first = [lock_line(wheels[k]) for k in ("base1", "extra", "setuptools")]
    result = run("install", *first, "--python", str(venv), "-i", index.url)
    assert result.code == 0, result.err
    lock = tmp_path / "requirements.txt"
    lock.write_text(f"{lock_line(wheels['base2'])}\n{lock_line(wheels['new'])}\n")
    return Env(venv=venv, index=index, wheels=wheels, lock=lock)


def test_sync_removes_extras_and_adds_missing(env: Env, run: Callable[..., Result]) -> None:
    result = run("sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 0, result.err
    # setuptools is kept: the lock does not pin it (pip-sync's rule).
    assert installed(env.venv) == ["base-2.0", "new-1.0", "setuptools-99.0"]
    assert "Removed 1 package" in result.err or "removed" in result.err.lower()
    proc = subprocess.run(
        [str(env.venv / "bin" / "python"), "-c", "import base, new; print(base.V)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "2"
    assert not (site_packages(env.venv) / "extra").exists()
    # Equal to the lock now: a second sync changes nothing.
    again = run("sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url)
    assert again.code == 0, again.err
    assert installed(env.venv) == ["base-2.0", "new-1.0", "setuptools-99.0"]


def test_dry_run_shows_plan(
    env: Env, run: Callable[..., Result], tree_snapshot: Callable[[Path], object]
) -> None:
    before = tree_snapshot(env.venv)
    result = run(
        "sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url, "--dry-run"
    )
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if line[:2] in ("+ ", "- ", "~ ")]
    assert lines == ["~ base 1.0 -> 2.0", "- extra==1.0", "+ new==1.0"]
    assert tree_snapshot(env.venv) == before


def test_failure_rolls_back(
    env: Env, run: Callable[..., Result], tree_snapshot: Callable[[Path], object]
) -> None:
    # A folder where `new` wants to write its module: the install fails after `extra` was
    # removed and `base` replaced; everything must come back.
    (site_packages(env.venv) / "new").mkdir()
    (site_packages(env.venv) / "new" / "__init__.py").mkdir()
    before = tree_snapshot(env.venv)
    result = run("sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 1, result.err
    assert "the environment was restored" in result.err or "folder is in the way" in result.err
    assert tree_snapshot(env.venv) == before


def test_error_unhashed_lock(
    env: Env, run: Callable[..., Result], tree_snapshot: Callable[[Path], object], tmp_path: Path
) -> None:
    loose = tmp_path / "requirements.in"
    loose.write_text("base==2.0\nnew==1.0\n")
    before = tree_snapshot(env.venv)
    result = run("sync", "-r", str(loose), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 2
    assert result.err.startswith(
        f"error: `safepip sync` needs a hash-pinned lock; `{loose}` is not one"
    )
    assert tree_snapshot(env.venv) == before


def test_error_incomplete_lock(
    env: Env, run: Callable[..., Result], tree_snapshot: Callable[[Path], object], tmp_path: Path
) -> None:
    partial = tmp_path / "partial.txt"
    partial.write_text(f"{lock_line(env.wheels['new'])}\n")
    before = tree_snapshot(env.venv)
    result = run("sync", "-r", str(partial), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 3, result.err
    assert "base" in result.err
    assert tree_snapshot(env.venv) == before


def test_sync_bundle(
    env: Env, run: Callable[..., Result], tmp_path: Path, tree_snapshot: Callable[[Path], object]
) -> None:
    out = tmp_path / "app.safepip"
    made = run(
        "bundle", "-r", str(env.lock), "-o", str(out), "--python", str(env.venv),
        "-i", env.index.url,
    )  # fmt: skip
    assert made.code == 0, made.err
    env.index.close()
    result = run("sync", "--bundle", str(out), "--python", str(env.venv))
    assert result.code == 0, result.err
    assert installed(env.venv) == ["base-2.0", "new-1.0", "setuptools-99.0"]
