"""`safepip sync`, end to end: a loopback index, real venvs, real wheels."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from wheelbuild import sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import Cli, TreeSnapshot
    from servers import StaticIndex
    from wheelbuild import WheelFactory


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
    cli: Cli,
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
    result = cli("install", *first, "--python", str(venv), "-i", index.url)
    assert result.code == 0, result.err
    lock = tmp_path / "requirements.txt"
    lock.write_text(f"{lock_line(wheels['base2'])}\n{lock_line(wheels['new'])}\n")
    return Env(venv=venv, index=index, wheels=wheels, lock=lock)


def test_sync_removes_extras_and_adds_missing(env: Env, cli: Cli) -> None:
    result = cli("sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 0, result.err
    # setuptools is kept: the lock does not pin it (pip-sync's rule).
    assert installed(env.venv) == ["base-2.0", "new-1.0", "setuptools-99.0"]
    assert "Installed 2 packages, replaced 1, removed 1 in " in result.err
    proc = subprocess.run(
        [str(env.venv / "bin" / "python"), "-c", "import base, new; print(base.V)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "2"
    assert not (site_packages(env.venv) / "extra").exists()
    # Equal to the lock now: a second sync changes nothing.
    again = cli("sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url)
    assert again.code == 0, again.err
    assert "Installed 0 packages, kept 2 already installed in " in again.err
    assert installed(env.venv) == ["base-2.0", "new-1.0", "setuptools-99.0"]


def test_dry_run_shows_plan(
    env: Env, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot]
) -> None:
    before = tree_snapshot(env.venv)
    result = cli(
        "sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url, "--dry-run"
    )
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if line[:2] in ("+ ", "- ", "~ ")]
    assert lines == ["~ base 1.0 -> 2.0", "- extra==1.0", "+ new==1.0"]
    assert tree_snapshot(env.venv) == before


def test_failure_rolls_back(
    env: Env, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot]
) -> None:
    # A folder where `new` wants to write its module: the install fails after `extra` was
    # removed and `base` replaced; everything must come back.
    (site_packages(env.venv) / "new").mkdir()
    (site_packages(env.venv) / "new" / "__init__.py").mkdir()
    before = tree_snapshot(env.venv)
    result = cli("sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 1, result.err
    # `extra` and `base==1.0` were removed before the folder was met; both are back.
    in_the_way = site_packages(env.venv) / "new" / "__init__.py"
    assert f"error: Cannot install file `{in_the_way}`: a folder is in the way" in result.err
    assert tree_snapshot(env.venv) == before


def test_error_unhashed_lock(
    env: Env, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot], tmp_path: Path
) -> None:
    loose = tmp_path / "requirements.in"
    loose.write_text("base==2.0\nnew==1.0\n")
    before = tree_snapshot(env.venv)
    result = cli("sync", "-r", str(loose), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 2
    assert result.err.startswith(
        f"error: `safepip sync` needs a hash-pinned lock; `{loose}` is not one"
    )
    assert tree_snapshot(env.venv) == before


def test_error_incomplete_lock(
    env: Env, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot], tmp_path: Path
) -> None:
    partial = tmp_path / "partial.txt"
    partial.write_text(f"{lock_line(env.wheels['new'])}\n")
    before = tree_snapshot(env.venv)
    result = cli("sync", "-r", str(partial), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 3, result.err
    assert "base" in result.err
    assert tree_snapshot(env.venv) == before


def test_sync_bundle(
    env: Env, cli: Cli, tmp_path: Path, tree_snapshot: Callable[[Path], TreeSnapshot]
) -> None:
    out = tmp_path / "app.safepip"
    made = cli(
        "bundle", "-r", str(env.lock), "-o", str(out), "--python", str(env.venv),
        "-i", env.index.url,
    )  # fmt: skip
    assert made.code == 0, made.err
    env.index.close()
    result = cli("sync", "--bundle", str(out), "--python", str(env.venv))
    assert result.code == 0, result.err
    assert installed(env.venv) == ["base-2.0", "new-1.0", "setuptools-99.0"]


def test_signal_during_sync_rolls_back(
    env: Env, tree_snapshot: Callable[[Path], TreeSnapshot]
) -> None:
    """SIGTERM while the sync removes `extra` and replaces `base`: exit 143, the environment as
    it was (the same journaled transaction as `install`)."""
    import os
    import signal
    import sys
    import time

    before = tree_snapshot(env.venv)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    environ |= {"PIP_CONFIG_FILE": os.devnull, "SAFEPIP_TEST_SLOW_COMMIT": "0.05"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safepip",
            "sync",
            "-r",
            str(env.lock),
            "--python",
            str(env.venv),
            "-i",
            env.index.url,
        ],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    site = site_packages(env.venv)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".safepip-txn-") for p in site.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the install step never started"
        time.sleep(0.005)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().endswith(
        "error: interrupted by SIGTERM; the install was rolled back; the environment is as it was"
    ), err
    assert tree_snapshot(env.venv) == before


def test_error_vulnerable_pin_refused(
    env: Env,
    cli: Cli,
    tree_snapshot: Callable[[Path], TreeSnapshot],
    tmp_path: Path,
) -> None:
    """The audit gate applies to sync as to install: exit 5 and nothing removed."""
    import datetime as dt
    import json

    from safepip.audit.database import import_database

    osv = tmp_path / "osv"
    osv.mkdir()
    (osv / "PYSEC-2099-7.json").write_text(
        json.dumps(
            {
                "id": "PYSEC-2099-7",
                "modified": "2026-01-01T00:00:00Z",
                "affected": [
                    {"package": {"name": "new", "ecosystem": "PyPI"}, "versions": ["1.0"]}
                ],
            }
        )
    )
    import_database(osv, data_dir=tmp_path / "userdata", date=dt.date.today())
    before = tree_snapshot(env.venv)
    result = cli("sync", "-r", str(env.lock), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 5, result.err
    assert "error: Refusing `new==1.0`: 1 known vulnerability (PYSEC-2099-7)" in result.err
    assert tree_snapshot(env.venv) == before


def test_sync_pylock(env: Env, cli: Cli, tmp_path: Path) -> None:
    """A PEP 751 lock (written by `safepip lock`) is synced to like a requirements lock."""
    source = tmp_path / "requirements.in"
    source.write_text("new==1.0\n")
    pylock = tmp_path / "pylock.toml"
    made = cli(
        "lock", str(source), "-o", str(pylock), "--python", str(env.venv), "-i", env.index.url
    )
    assert made.code == 0, made.err
    dry = cli(
        "sync", "-r", str(pylock), "--python", str(env.venv), "-i", env.index.url, "--dry-run"
    )
    assert dry.code == 0, dry.err
    lines = [line for line in dry.err.splitlines() if line[:2] in ("+ ", "- ", "~ ")]
    assert lines == ["~ base 1.0 -> 2.0", "- extra==1.0", "+ new==1.0"]
    result = cli("sync", "-r", str(pylock), "--python", str(env.venv), "-i", env.index.url)
    assert result.code == 0, result.err
    assert installed(env.venv) == ["base-2.0", "new-1.0", "setuptools-99.0"]
