"""A full no-op run (the first after an install, or with the fast path off) imports only what
it uses: no build, lock, bundle or process-pool modules."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from safepip import fastpath
from test_fastpath import env  # noqa: F401 - the fixture

if TYPE_CHECKING:
    from test_fastpath import Env

UNUSED = {
    "safepip.build",
    "safepip.lock",
    "safepip.bundle",
    "safepip.resolver",
    "packaging.pylock",
    "concurrent.futures.process",
}


def test_full_noop_imports_nothing_it_does_not_use(env: Env) -> None:  # noqa: F811
    assert env.run(*env.argv()).code == 0  # installs alpha and beta
    command = [sys.executable, "-X", "importtime", "-m", "safepip", *env.argv()]
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        fastpath.DISABLE_ENV: "1",
    }
    run = subprocess.run(command, check=True, capture_output=True, text=True, env=environ)
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()}
    assert "kept 2 already installed" in run.stderr
    assert {"safepip.pipeline", "safepip.seal", "safepip.audit"} <= imported
    assert not UNUSED & imported
