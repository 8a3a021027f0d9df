"""A package upgrade to inject faults into: `pkg` 1.0 installed in a venv, a lock for 2.0, and
snapshots of the environment before and after (see `test_journal`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conftest import snapshot_tree
from safepip.cli import main
from safepip.journal import TXN_PREFIX
from wheelbuild import build_wheel, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import TreeSnapshot

STEP_DELAY = "0.002"
"""`SAFEPIP_TEST_SLOW_COMMIT`: seconds before each file operation of the install step."""

__all__ = ["TXN_PREFIX", "Upgrade", "lock_for", "make_upgrade", "site_packages"]


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


@dataclass
class Upgrade:
    """`pkg` 1.0 installed in `venv`; `v2` upgrades it (files changed, added and removed)."""

    venv: Path
    pristine: Path
    wheels: Path
    cache: Path
    v1: Path
    v2: Path
    old: TreeSnapshot
    new: TreeSnapshot

    def reset(self) -> None:
        shutil.rmtree(self.venv)
        shutil.copytree(self.pristine, self.venv, symlinks=True)

    def start(self, lock: Path, *, delay: str = STEP_DELAY) -> subprocess.Popen[str]:
        env = {**os.environ, "SAFEPIP_TEST_SLOW_COMMIT": delay}
        return subprocess.Popen(
            [sys.executable, "-m", "safepip", *self.install_args(lock)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def install_args(self, lock: Path) -> list[str]:
        return [
            "install",
            "-q",
            "--no-audit",
            "-r",
            str(lock),
            "--no-index",
            "-f",
            str(self.wheels),
            "--python",
            str(self.venv),
            "--cache-dir",
            str(self.cache),
        ]

    def wait_for_install_step(self, proc: subprocess.Popen[str]) -> None:
        """Block until the install step has begun (its journal folder exists)."""
        site = site_packages(self.venv)
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(TXN_PREFIX) for p in site.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the install step never started"
            time.sleep(0.005)


def lock_for(path: Path, wheel: Path) -> Path:
    name, version = wheel.name.split("-")[:2]
    path.write_text(f"{name}=={version} --hash=sha256:{sha256_file(wheel)}\n")
    return path


def make_upgrade(tmp_path: Path, venv_factory: Callable[..., Path]) -> Upgrade:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    one = build_wheel(
        wheels,
        "pkg",
        "1.0",
        files={
            "pkg/__init__.py": "VERSION = 1\ndef main():\n    print(1)\n",
            **{f"pkg/m{i:03}.py": f"X = {i}\n" for i in range(200)},
        },
        entry_points={"console_scripts": {"pkg-cli": "pkg:main"}},
    )
    two = build_wheel(
        wheels,
        "pkg",
        "2.0",
        files={
            "pkg/__init__.py": "VERSION = 2\ndef main():\n    print(2)\n",
            **{f"pkg/m{i:03}.py": f"X = {i}  # 2.0\n" for i in range(100, 300)},
            **{f"pkg/sub/s{i:03}.py": "" for i in range(20)},
        },
        entry_points={"console_scripts": {"pkg-cli": "pkg:main"}},
    )
    case = Upgrade(
        venv=venv_factory(),
        pristine=tmp_path / "pristine",
        wheels=wheels,
        cache=tmp_path / "cache",
        v1=lock_for(tmp_path / "v1.txt", one),
        v2=lock_for(tmp_path / "v2.txt", two),
        old={},
        new={},
    )
    assert main(case.install_args(case.v1)) == 0
    case.old = snapshot_tree(case.venv)
    shutil.copytree(case.venv, case.pristine, symlinks=True)
    assert main(case.install_args(case.v2)) == 0
    case.new = snapshot_tree(case.venv)
    assert case.old != case.new
    case.reset()
    return case
