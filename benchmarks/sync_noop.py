"""`safepip sync` of an environment already equal to its lock, against a no-op `safepip install`.

Usage: `python benchmarks/sync_noop.py [--packages 100] [--files 20] [--repeat 20]
[--lock FILE --find-links DIR] [--safepip PYTHON] [--no-fastpath]`.

Builds `--packages` wheels of `--files` modules each (or uses `--lock` and the wheels in
`--find-links`, e.g. a workload of `benchmarks/run.py` and its wheelhouse), writes a hash-pinned
lock, installs it into a fresh venv, then times, interleaved and with no network (`--no-index
-f DIR`), `safepip install -r LOCK` and `safepip sync -r LOCK` into that venv, where everything
is already installed: both must change nothing. Prints the median wall time of each (with the
spread) and the median of the paired ratios sync / install. Every run is a fresh interpreter.
By default both may replay the no-op stamp of `safepip.fastpath`; `--no-fastpath` times the
full pipeline of each instead.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def _record_digest(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(folder: Path, name: str, files: int) -> Path:
    """A pure-Python wheel `name` 1.0 with `files` modules and a correct RECORD."""
    dist_info = f"{name}-1.0.dist-info"
    members = {
        f"{name}/__init__.py": b"VALUE = 1\n",
        **{f"{name}/mod{i}.py": f"X = {i}\n".encode() * 20 for i in range(files - 1)},
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    rows = [f"{path},{_record_digest(data)},{len(data)}" for path, data in members.items()]
    members[f"{dist_info}/RECORD"] = ("\n".join([*rows, f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return path


def synthetic_lock(folder: Path, packages: int, files: int) -> Path:
    wheels = folder / "wheels"
    wheels.mkdir()
    lines = []
    for i in range(packages):
        wheel = build_wheel(wheels, f"bench_pkg{i:03d}", files)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"bench-pkg{i:03d}==1.0 --hash=sha256:{digest}")
    lock = folder / "requirements.txt"
    lock.write_text("\n".join(lines) + "\n")
    return lock


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=100)
    parser.add_argument("--files", type=int, default=20, help="modules per synthetic wheel")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--lock", type=Path, help="a hash-pinned lock instead of synthetic wheels")
    parser.add_argument("--find-links", type=Path, help="the wheels of `--lock`")
    parser.add_argument(
        "--safepip", default=sys.executable, help="the Python that runs safepip (`-m safepip`)"
    )
    parser.add_argument(
        "--no-fastpath",
        action="store_true",
        help="time the full pipeline (`SAFEPIP_NO_FASTPATH=1`), not the replay of a no-op stamp",
    )
    options = parser.parse_args()
    if (options.lock is None) != (options.find_links is None):
        parser.error("`--lock` and `--find-links` go together")
    with tempfile.TemporaryDirectory(prefix="sync-noop-") as tmp:
        scratch = Path(tmp)
        if options.lock is None:
            lock = synthetic_lock(scratch, options.packages, options.files)
            links = scratch / "wheels"
        else:
            lock, links = options.lock.resolve(), options.find_links.resolve()
        venv = scratch / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        os.environ.pop("PIP_INDEX_URL", None)
        os.environ["PIP_CONFIG_FILE"] = os.devnull
        os.environ["SAFEPIP_CACHE_DIR"] = str(scratch / "cache")
        if options.no_fastpath:
            os.environ["SAFEPIP_NO_FASTPATH"] = "1"
        common = ["-r", str(lock), "--python", str(venv), "--no-index", "-f", str(links), "-q"]
        install = [options.safepip, "-m", "safepip", "install", *common]
        sync = [options.safepip, "-m", "safepip", "sync", *common]
        subprocess.run(install, check=True)
        # A sync first: it must leave nothing to do for either command (no extras in the venv).
        subprocess.run(sync, check=True)
        timed(install)
        timed(sync)  # warm-up, not counted
        installs, syncs, ratios = [], [], []
        for i in range(options.repeat):
            # Alternate which goes first, so that neither always runs on a warmer machine.
            if i % 2:
                a = timed(sync)
                b = timed(install)
            else:
                b = timed(install)
                a = timed(sync)
            syncs.append(a)
            installs.append(b)
            ratios.append(a / b)
        packages = sum(1 for line in lock.read_text().splitlines() if "==" in line)
        print(f"{packages} packages installed, {options.repeat} paired runs each:")
        for label, values in (("no-op install", installs), ("sync", syncs)):
            print(
                f"  {label}: median {statistics.median(values):.3f} s "
                f"(min {min(values):.3f}, max {max(values):.3f})"
            )
        print(
            f"  sync / install, paired: median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
