"""The CPU floor of a cold install's unpacking, next to what safepip's unpacking costs.

Usage: `python benchmarks/cold_floor.py [--workload large] [--repeat 5] [--scratch /dev/shm]`
(run it with a Python that imports safepip, e.g. the dev venv's).

For every wheel of the workload's lock (from the benchmark's wheelhouse, `benchmarks/.cache`,
downloaded once as `run.py` does), in this one process, it times (CPU, min of `--repeat`):
reading and hashing the archives; inflating every member; inflating and hashing every member
with SHA-256; the same and writing every member to a file on the scratch folder (no checks of
any kind: the floor of unpacking into a cache); safepip's own `unpack_wheel` of every wheel into
an empty cache (ZIP structure, paths, RECORD, sizes and digests all checked, manifest written);
and placing the unpacked files into another folder by copying (`copy_file_range`, what the
default link mode does where there are no reflinks, as on tmpfs) and by hard links.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).resolve().parent


def wheels_of(workload: str) -> list[tuple[Path, str]]:
    """(path, sha256) of every wheel the workload's lock installs, from the wheelhouse."""
    sys.path.insert(0, str(HERE))
    import wheelhouse

    house = wheelhouse.load_or_build(
        cache=HERE / ".cache",
        workloads_dir=HERE / "workloads",
        pip=[sys.executable, "-m", "pip"],
        env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"},
        log=lambda text: print(text, file=sys.stderr),
    )
    return [(house.root / "packages" / a.filename, a.sha256) for a in house.artifacts[workload]]


def inflater() -> Callable[[bytes], bytes]:
    """Raw deflate, with the decoder safepip uses (ISA-L when installed)."""
    try:
        from isal import isal_zlib
    except ImportError:
        return lambda data: zlib.decompress(data, -15)
    return lambda data: isal_zlib.decompress(data, -15)


def members(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, method, compressed bytes) of every file member."""
    import io

    found = []
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        if info.is_dir():
            continue
        at = info.header_offset
        name_len, extra_len = struct.unpack_from("<2H", data, at + 26)
        start = at + 30 + name_len + extra_len
        found.append((info.filename, info.compress_type, data[start : start + info.compress_size]))
    return found


def floor(wheels: list[tuple[Path, str]], out: str | None, *, inflate: bool, digest: bool) -> None:
    decompress = inflater()
    for path, _ in wheels:
        data = path.read_bytes()
        hashlib.sha256(data).digest()
        if not inflate:
            continue
        made = {out} if out else set()
        for name, method, raw in members(data):
            body = decompress(raw) if method == zipfile.ZIP_DEFLATED else raw
            if digest:
                hashlib.sha256(body).digest()
            if out is None:
                continue
            dest = os.path.join(out, path.name, name)
            folder = os.path.dirname(dest)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            os.write(fd, body)
            os.close(fd)


def place(source: str, dest: str, *, link: bool) -> None:
    for folder, _, names in os.walk(source):
        target = dest + folder[len(source) :]
        os.makedirs(target, exist_ok=True)
        for name in names:
            src, dst = os.path.join(folder, name), os.path.join(target, name)
            if link:
                os.link(src, dst)
                continue
            fd_in = os.open(src, os.O_RDONLY)
            fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            size, offset = os.fstat(fd_in).st_size, 0
            while offset < size:
                done = os.copy_file_range(fd_in, fd_out, size - offset, offset, offset)
                if not done:
                    break
                offset += done
            os.close(fd_out)
            os.close(fd_in)


def best(repeat: int, scratch: str, work: Callable[[str], object]) -> float:
    """The smallest CPU time of `work(folder)` over `repeat` runs, each in an empty folder."""
    times = []
    for _ in range(repeat):
        folder = tempfile.mkdtemp(dir=scratch, prefix="cold-floor-")
        try:
            start = time.process_time()
            work(folder)
            times.append(time.process_time() - start)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="large")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scratch", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    from safepip.fetch import unpack_wheel

    wheels = wheels_of(args.workload)
    size = sum(p.stat().st_size for p, _ in wheels)
    print(
        f"{args.workload}: {len(wheels)} wheels, {size / 1e6:.1f} MB; CPU s, min of {args.repeat}"
    )
    rows: list[tuple[str, Callable[[str], object]]] = [
        (
            "read and sha256 the archives",
            lambda d: floor(wheels, None, inflate=False, digest=False),
        ),
        ("+ inflate every member", lambda d: floor(wheels, None, inflate=True, digest=False)),
        ("+ sha256 every member", lambda d: floor(wheels, None, inflate=True, digest=True)),
        ("+ write every member (the floor)", lambda d: floor(wheels, d, inflate=True, digest=True)),
        (
            "safepip unpack_wheel, all checks",
            lambda d: [unpack_wheel(p, sha, d) for p, sha in wheels],
        ),
    ]
    for label, work in rows:
        print(f"  {label:<36} {best(args.repeat, args.scratch, work):6.3f}")
    cache = tempfile.mkdtemp(dir=args.scratch, prefix="cold-floor-cache-")
    try:
        for path, sha in wheels:
            unpack_wheel(path, sha, cache)
        files = sum(len(names) for _, _, names in os.walk(cache))
        unpacked = os.path.join(cache, "unpacked")
        for label, link in (("copy_file_range", False), ("hard links", True)):

            def placing(folder: str, link: bool = link) -> None:
                place(unpacked, folder, link=link)

            took = best(args.repeat, args.scratch, placing)
            print(f"  {f'place {files} files: {label}':<36} {took:6.3f}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
