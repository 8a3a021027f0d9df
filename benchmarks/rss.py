"""Peak memory (max RSS) of safepip refusing a zip bomb, installing an honest big member, and
installing the benchmark's large lock.

Usage: `python benchmarks/rss.py [--size-mb 400] [--safepip PYTHON] [--lock large [--wheels DIR]]`.
Builds two wheels in a scratch folder: `bomb` (one member that declares 1 KB in RECORD and in the
archive but inflates to SIZE MB) and `big` (one honest member of SIZE MB), then runs `safepip
install` of each, hash-pinned, from a find-links folder into a fresh venv under `/usr/bin/time
-v`, and prints the exit code and the maximum resident set size, next to a baseline install of a
tiny wheel. With `--lock WORKLOAD` it also installs `workloads/WORKLOAD.txt` (every hash checked,
every RECORD validated) from a find-links folder of its wheels, cold (empty cache) and warm (a
second venv, same cache), and reports the same figures. The wheels come from `--wheels DIR`, or
from the benchmark's wheelhouse (`benchmarks/.cache`, downloaded once like `run.py` does). The
locks are for CPython 3.11: run this with a CPython 3.11 (`--safepip` is also the target).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _deflate(chunk: bytes, count: int) -> tuple[bytes, int, str]:
    """(raw deflate of `chunk` repeated `count` times, its CRC-32, its RECORD digest)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = 0
    digest = hashlib.sha256()
    out = bytearray()
    for _ in range(count):
        out += compressor.compress(chunk)
        crc = zlib.crc32(chunk, crc)
        digest.update(chunk)
    out += compressor.flush()
    b64 = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    return bytes(out), crc, f"sha256={b64}"


def _wheel(name: str, payload: tuple[bytes, int] | None) -> bytes:
    """A wheel of `name` 1.0; with `payload` (a chunk and a repeat count) it also has
    `name/data.bin`. For `bomb` that member declares 1 KB (RECORD and archive) whatever it
    inflates to."""
    dist_info = f"{name}-1.0.dist-info"
    plain = {
        f"{name}/__init__.py": b"",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    members: dict[str, tuple[bytes, int, int]] = {}  # path -> (deflated, crc, declared size)
    rows = [f"{path},{_digest(data)},{len(data)}" for path, data in plain.items()]
    for path, data in plain.items():
        deflated, crc, _ = _deflate(data, 1)
        members[path] = (deflated, crc, len(data))
    if payload is not None:
        chunk, count = payload
        deflated, crc, digest = _deflate(chunk, count)
        declared = 1024 if name == "bomb" else len(chunk) * count
        members[f"{name}/data.bin"] = (deflated, crc, declared)
        rows.append(f"{name}/data.bin,{digest},{declared}")
    record = ("\n".join([*rows, f"{dist_info}/RECORD,,"]) + "\n").encode()
    deflated, crc, _ = _deflate(record, 1)
    members[f"{dist_info}/RECORD"] = (deflated, crc, len(record))
    out = io.BytesIO()
    central = bytearray()
    for path, (data, crc, declared) in members.items():
        offset = out.tell()
        raw = path.encode()
        fields = (20, 0x800, 8, 0, 0x5021, crc, len(data), declared, len(raw), 0)
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + raw + data)
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 0x314, *fields, 0, 0, 0, 0o100644 << 16, offset
        )
        central += raw
    cd = out.tell()
    out.write(bytes(central))
    n = len(members)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), cd, 0))
    return out.getvalue()


def max_rss_kb(cmd: list[str]) -> tuple[int, int]:
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
        check=False,
    )
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    assert found, proc.stderr
    return proc.returncode, int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=400)
    parser.add_argument("--safepip", default=sys.executable, help="a Python with safepip")
    parser.add_argument("--lock", help="also install workloads/LOCK.txt (e.g. `large`)")
    parser.add_argument("--wheels", type=Path, help="a folder holding the lock's wheels")
    args = parser.parse_args()
    if args.lock:
        lock_rss(args.lock, args.wheels, args.safepip)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as scratch:
        base = Path(scratch)
        links = base / "links"
        links.mkdir()
        chunk = bytes(range(256)) * 4096  # 1 MB, compresses well but is not all zeros
        for name, payload in (
            ("tiny", None),
            ("bomb", (chunk, args.size_mb)),
            ("big", (chunk, args.size_mb)),
        ):
            (links / f"{name}-1.0-py3-none-any.whl").write_bytes(_wheel(name, payload))
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", base / "venv"], check=True)
        for name in ("tiny", "bomb", "big"):
            wheel = links / f"{name}-1.0-py3-none-any.whl"
            sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
            venv = base / f"venv-{name}"
            subprocess.run(["cp", "-a", base / "venv", venv], check=True)
            code, rss = max_rss_kb(
                [
                    args.safepip,
                    "-m",
                    "safepip",
                    "install",
                    f"{name}==1.0 --hash=sha256:{sha}",
                    "--no-index",
                    "-f",
                    str(links),
                    "--python",
                    str(venv),
                    "--cache-dir",
                    str(base / f"cache-{name}"),
                    "--no-audit",
                    "-q",
                ]
            )
            size = wheel.stat().st_size
            print(f"{name}: wheel {size / 1e6:.1f} MB, exit {code}, max RSS {rss / 1024:.0f} MB")


def lock_rss(workload: str, wheels: Path | None, python: str) -> None:
    here = Path(__file__).resolve().parent
    lock = here / "workloads" / f"{workload}.txt"
    if wheels is None:
        sys.path.insert(0, str(here))
        import wheelhouse

        house = wheelhouse.load_or_build(
            cache=here / ".cache",
            workloads_dir=here / "workloads",
            pip=[python, "-m", "pip"],
            env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"},
            log=print,
        )
        wheels = house.root / "packages"
    with tempfile.TemporaryDirectory(dir="/dev/shm") as scratch:
        base = Path(scratch)
        cache = base / "cache"
        for run in ("cold", "warm"):
            venv = base / f"venv-{run}"
            subprocess.run([python, "-m", "venv", "--without-pip", venv], check=True)
            code, rss = max_rss_kb(
                [
                    python, "-m", "safepip", "install", "-r", str(lock), "--no-index",
                    "-f", str(wheels), "--python", str(venv), "--cache-dir", str(cache),
                    "--no-audit", "-q",
                ]
            )  # fmt: skip
            files = sum(len(f) for _, _, f in os.walk(venv))
            dists = len(list(venv.glob("lib/python*/site-packages/*.dist-info")))
            print(
                f"{workload} lock, {run}: exit {code}, {dists} distributions, {files} files, "
                f"max RSS {rss >> 10} MB"
            )


if __name__ == "__main__":
    main()
