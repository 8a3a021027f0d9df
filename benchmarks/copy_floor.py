"""The floor of a warm install's copies: placing a lock's unpacked files by copying, alone.

Usage: `python benchmarks/copy_floor.py [--workload large] [--repeat 7] [--scratch /dev/shm]`
(run it with a Python that imports safepip, e.g. the dev venv's).

Every wheel of the workload's lock (from the benchmark's wheelhouse, as `cold_floor.py` finds
them) is unpacked once into a scratch cache with safepip's `unpack_wheel`. Then, each time into
an empty folder whose sub-folders already exist, every unpacked file is copied (open, create,
`copy_file_range`, close: no checks, no journal, no RECORD) by a plain loop in one thread, in
two threads of one interpreter, and in two processes (this one and one forked child, half the
files each); and by safepip's `Linker` (`place_many`: one thread, large files in helper
threads; `place_shared`: one forked helper process). Printed: wall and CPU seconds (this
process and its children), the median and the smallest of `--repeat`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

HERE = Path(__file__).resolve().parent
Pairs = list[tuple[str, str]]


def copy_all(pairs: Sequence[tuple[str, str]]) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for source, dest in pairs:
        fd_in = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        size = os.fstat(fd_in).st_size
        fd_out = os.open(dest, flags, 0o666)
        offset = 0
        while offset < size:
            done = os.copy_file_range(fd_in, fd_out, size - offset, offset, offset)
            if not done:
                break
            offset += done
        os.close(fd_out)
        os.close(fd_in)


def two_threads(pairs: Pairs) -> None:
    half = len(pairs) // 2
    other = threading.Thread(target=copy_all, args=(pairs[half:],))
    other.start()
    copy_all(pairs[:half])
    other.join()


def two_processes(pairs: Pairs) -> None:
    half = len(pairs) // 2
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            copy_all(pairs[half:])
            code = 0
        finally:
            os._exit(code)
    copy_all(pairs[:half])
    _, status = os.waitpid(pid, 0)
    assert status == 0


def linker(shared: bool, size_of: dict[str, int]) -> Callable[[Pairs], None]:
    """safepip's placing, given the sizes (an install has them from the cache's manifests)."""
    from safepip.linking import Linker, LinkMode

    def place(pairs: Pairs) -> None:
        sizes = [size_of[source] for source, _ in pairs]
        with Linker(LinkMode.COPY) as placer:
            if shared:
                placer.place_shared(pairs, sizes, lambda: None)
            else:
                placer.place_many(pairs, sizes)

    return place


def cpu() -> float:
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def measure(
    files: list[str], unpacked: str, scratch: str, repeat: int, work: Callable[[Pairs], None]
) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        out = tempfile.mkdtemp(dir=scratch, prefix="copy-floor-")
        try:
            pairs = [(path, out + path[len(unpacked) :]) for path in files]
            for folder in sorted({dest.rpartition("/")[0] for _, dest in pairs}, key=len):
                os.makedirs(folder, exist_ok=True)
            start_cpu, start = cpu(), time.perf_counter()
            work(pairs)
            walls.append(time.perf_counter() - start)
            cpus.append(cpu() - start_cpu)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="large")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--scratch", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from cold_floor import wheels_of

    from safepip.fetch import MANIFEST, unpack_wheel

    wheels = wheels_of(args.workload)
    cache = tempfile.mkdtemp(dir=args.scratch, prefix="copy-floor-cache-")
    try:
        for path, sha in wheels:
            unpack_wheel(path, sha, cache)
        unpacked = os.path.join(cache, "unpacked")
        files = [
            os.path.join(folder, name)
            for folder, _, names in os.walk(unpacked)
            for name in names
            if name != MANIFEST
        ]
        size_of = {path: os.stat(path).st_size for path in files}
        size = sum(size_of.values())
        print(
            f"{args.workload}: {len(files)} files, {size / 1e6:.0f} MB, {os.cpu_count()} cores, "
            f"load {os.getloadavg()[0]:.1f}; seconds, median (min) of {args.repeat}"
        )
        rows: list[tuple[str, Callable[[Pairs], None]]] = [
            ("plain loop, one thread", copy_all),
            ("plain loop, two threads", two_threads),
            ("plain loop, two processes", two_processes),
            ("safepip place_many (threads)", linker(False, size_of)),
            ("safepip place_shared (processes)", linker(True, size_of)),
        ]
        for label, work in rows:
            walls, cpus = measure(files, unpacked, args.scratch, args.repeat, work)
            print(
                f"  {label:<34} wall {statistics.median(walls):.3f} ({min(walls):.3f})"
                f"  CPU {statistics.median(cpus):.3f} ({min(cpus):.3f})"
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
