"""The forked child that checks half of the cache's unpacked trees (fetch.check_unpacked_many)
is killed at once when this process is interrupted while it waits for the child's answers, not
waited for (issue 14, review)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from safepip.fetch import Cache, unpack_wheel
from wheelbuild import build_wheel, sha256_file

if TYPE_CHECKING:
    from pathlib import Path

SCRIPT = """
import os, sys, time
from pathlib import Path
from types import SimpleNamespace
from safepip import fetch, signals

root, log = sys.argv[1:3]
shas = sys.argv[3:]
fetch.SHARE_CHECK_FILES = 1
parent = os.getpid()
real = fetch.check_unpacked

def check(unpacked):
    if os.getpid() != parent:  # the child: a slow check (a tree being hashed again, slow disk)
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(60)
    return real(unpacked)

fetch.check_unpacked = check
items = [SimpleNamespace(sha256=s) for s in shas]
try:
    with signals.handled():
        fetch.check_unpacked_many(items, fetch.Cache(Path(root)))
except signals.Interrupted as exc:
    print(exc.signum)
"""


def test_sigterm_while_waiting_for_the_child_kills_and_reaps_it(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    shas = []
    for i in range(4):
        files = {f"p{i}/m{j}.py": f"x = {i * 10 + j}\n" for j in range(5)}
        wheel = build_wheel(tmp_path / "w" / str(i), f"p{i}", "1.0", files=files)
        shas.append(unpack_wheel(wheel, sha256_file(wheel), str(cache.root)).sha256)
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    log = tmp_path / "log"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cache.root), str(log), *shas],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().strip()):
            assert time.monotonic() < deadline, "the child never started checking"
            time.sleep(0.02)
        child = int(log.read_text().split()[0])
        time.sleep(0.3)  # this process has checked its own half and waits on the pipe
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip() == str(int(signal.SIGTERM))
    assert took < 10, f"waited {took:.1f} s for the checking child instead of killing it"
    try:
        os.kill(child, 0)
    except ProcessLookupError:
        pass
    else:  # pragma: no cover - the failure being tested for
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the checking child was left running")
