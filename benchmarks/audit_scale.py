"""Audit at scale: 10,000 pins from the bundled advisory data, and a table against JSON.

Writes `name==version` pins made from the project names of safepip's bundled database (at the
versions their advisories name, versions inside their affected ranges, and a recent-looking
version), then times `safepip audit` in a fresh interpreter (wall, with interpreter start;
safepip's bytecode compiled first, as installed) and reports its CPU time and peak RSS.
The pins are the worst case for an audit: nearly every one is affected by some advisory, so
10,000 pins give about 33,000 findings.

    python benchmarks/audit_scale.py [--pins 10000] [--vulnerable 200] [--repeat 5] [--large 97000]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from safepip.audit import database  # noqa: E402


def _is_pep440(text: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def _release(text: str) -> str | None:
    """The release part of a PEP 440 version (`1.2` of `1.2rc1`), `0` for `introduced: 0`."""
    from packaging.version import InvalidVersion, Version

    if text == "0":
        return "0"
    try:
        version = Version(text)
    except InvalidVersion:
        return None
    return None if version.epoch else ".".join(map(str, version.release))


def pins_from_bundled(count: int) -> tuple[list[str], list[str]]:
    """`count` distinct pins over all the bundled projects, and the projects sorted by how
    many advisories they have.

    Each project's versions are those its advisories name (range events and `versions`
    lists), then versions inside its affected ranges (`R.0.1`, `R.0.2`, ... above the release
    `R` of each `introduced` version, `0.0.k` for `introduced: 0`: the database leaves out
    the lists of released versions that its ranges cover), then `99.0`; pins are taken
    round-robin over the projects."""
    per_name: dict[str, list[str]] = {}
    advisories: dict[str, int] = {}
    with zipfile.ZipFile(database.SHIPPED) as zf:
        for member in zf.namelist():
            if not member.startswith("packages/"):
                continue
            name = member[len("packages/") : -len(".json")]
            records = json.loads(zf.read(member))
            advisories[name] = len(records)
            versions: dict[str, None] = {}
            introduced: dict[str, None] = {}
            for record in records:
                for entry in record.get("affected", ()):
                    for version in entry.get("versions", ()):
                        versions[version] = None
                    for rng in entry.get("ranges", ()):
                        for event in rng.get("events", ()):
                            for kind, value in event.items():
                                if kind == "introduced":
                                    introduced[value] = None
                                if value != "0":
                                    versions[value] = None
            named = [v for v in versions if _is_pep440(v)]
            bases = list(dict.fromkeys(r for v in introduced if (r := _release(v))))
            inside = [f"{base}.0.{k}" for k in range(1, 200) for base in bases]
            per_name[name] = [*named, *(v for v in inside if v not in versions), "99.0"]
    pins: list[str] = []
    depth = 0
    while len(pins) < count and depth < 10_000:
        for name in sorted(per_name):
            if depth < len(per_name[name]):
                pins.append(f"{name}=={per_name[name][depth]}")
                if len(pins) == count:
                    break
        depth += 1
    ranked = sorted(advisories, key=lambda n: -advisories[n])
    return pins, ranked


def vulnerable_pins(ranked: list[str], count: int) -> list[str]:
    """The most-advised projects at the lowest version their advisories' ranges start from
    (`0.0.1` when a range starts at `introduced: 0`): many findings each."""
    from packaging.version import Version

    pins = []
    with zipfile.ZipFile(database.SHIPPED) as zf:
        for name in ranked[:count]:
            records = json.loads(zf.read(f"packages/{name}.json"))
            starts = {
                "0.0.1" if value == "0" else value
                for r in records
                for e in r.get("affected", ())
                for rng in e.get("ranges", ())
                for event in rng.get("events", ())
                for kind, value in event.items()
                if kind == "introduced" and (value == "0" or _is_pep440(value))
            }
            pins.append(f"{name}=={min(starts, key=Version) if starts else '0.0.1'}")
    return pins


# Runs one command and prints its wall seconds, CPU seconds and peak RSS (KB). The command is
# started from this small process, not from the benchmark: Linux counts the memory of the
# process a child was forked from in the child's peak RSS, and the benchmark holds the pins.
_LAUNCHER = """
import json, os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps([wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code]))
"""


def run_once(args: list[str]) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds, peak RSS (KB) and exit code of one `safepip audit ARGS`."""
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "safepip", "audit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "COLUMNS": "160"},
        check=True,
    )
    wall, cpu, rss, code = json.loads(proc.stdout)
    return wall, cpu, rss, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pins", type=int, default=10_000)
    parser.add_argument("--vulnerable", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--large",
        type=int,
        default=97_000,
        metavar="N",
        help="also one JSON run of N pins, for its memory (0: skip)",
    )
    options = parser.parse_args()
    # Bytecode for safepip's modules first, as an installed safepip has: each timed run then
    # reads it (even with PYTHONDONTWRITEBYTECODE set) instead of compiling ~70 ms of source.
    compileall.compile_dir(Path(database.__file__).parent.parent, quiet=1)
    pins, ranked = pins_from_bundled(max(options.pins, options.large))
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "pins.txt"
        many.write_text("\n".join(pins[: options.pins]) + "\n")
        vulnerable = Path(tmp) / "vulnerable.txt"
        vulnerable.write_text("\n".join(vulnerable_pins(ranked, options.vulnerable)) + "\n")
        json_format = ["--format", "json"]
        rows = [
            (f"{options.pins:,} pins, table", ["-r", str(many)], options.repeat),
            (f"{options.pins:,} pins, JSON", ["-r", str(many), *json_format], options.repeat),
            (
                f"{options.vulnerable} vulnerable pins, table",
                ["-r", str(vulnerable)],
                options.repeat,
            ),
            (
                f"{options.vulnerable} vulnerable pins, JSON",
                ["-r", str(vulnerable), *json_format],
                options.repeat,
            ),
        ]
        if options.large:
            large = Path(tmp) / "large.txt"
            large.write_text("\n".join(pins[: options.large]) + "\n")
            label = f"{min(options.large, len(pins)):,} pins, JSON (once)"
            rows.append((label, ["-r", str(large), "--format", "json"], 1))
        # Interleaved: each repetition runs every row once, so drift hits all rows alike.
        measured: dict[str, list[tuple[float, float, int, int]]] = {r[0]: [] for r in rows}
        for repetition in range(options.repeat):
            for label, args, repeat in rows:
                if repetition < repeat:
                    measured[label].append(run_once(args))
        print("| audit | findings | wall median (min–max) | CPU median | exit | peak RSS |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, args, _ in rows:
            runs = measured[label]
            walls = [r[0] for r in runs]
            print(
                f"| {label} | {findings(args)} | {statistics.median(walls):.2f} s "
                f"({min(walls):.2f}–{max(walls):.2f}) | "
                f"{statistics.median(r[1] for r in runs):.2f} s | {runs[-1][3]} | "
                f"{max(r[2] for r in runs) / 1024:.0f} MB |"
            )
    return 0


def findings(args: list[str]) -> str:
    """The audit's own summary of what it found (one more run, not timed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "safepip", "audit", "-q", *args, "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
        check=False,
    )
    summary: str = json.loads(proc.stdout)["summary"]
    return summary.removeprefix("Found ")


if __name__ == "__main__":
    raise SystemExit(main())
