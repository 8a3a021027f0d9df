"""Audit at scale: 10,000 pins from the bundled advisory data, and a table against JSON.

Writes `name==version` pins made from the project names (and the versions their advisories
name, plus a recent-looking version) of safepip's bundled database, then times `safepip audit`
in a fresh interpreter (wall, with interpreter start) and reports its peak RSS.

    python benchmarks/audit_scale.py [--pins 10000] [--vulnerable 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
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


def pins_from_bundled(count: int) -> tuple[list[str], list[str]]:
    """`count` distinct pins over all the bundled projects (round-robin over each project's
    advisory versions, then `99.0`), and the projects sorted by how many advisories they have."""
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
            for record in records:
                for entry in record.get("affected", ()):
                    for version in entry.get("versions", ()):
                        versions[version] = None
                    for rng in entry.get("ranges", ()):
                        for event in rng.get("events", ()):
                            for value in event.values():
                                if value != "0":
                                    versions[value] = None
            per_name[name] = [*(v for v in versions if _is_pep440(v)), "99.0"]
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
    """The most-advised projects at their oldest listed version (many findings each)."""
    pins = []
    with zipfile.ZipFile(database.SHIPPED) as zf:
        for name in ranked[:count]:
            records = json.loads(zf.read(f"packages/{name}.json"))
            listed = [
                v
                for r in records
                for e in r.get("affected", ())
                for v in e.get("versions", ())
                if _is_pep440(v)
            ]
            pins.append(f"{name}=={listed[0] if listed else '0.0.1'}")
    return pins


def run(args: list[str], repeat: int) -> tuple[float, float, int, float]:
    """Median, min, max wall seconds of `safepip audit ARGS`, and the peak RSS in MB."""
    walls = []
    peak = 0
    code = 0
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "safepip", "audit", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "COLUMNS": "160"},
            check=False,
        )
        walls.append(time.perf_counter() - start)
        code = proc.returncode
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return statistics.median(walls), min(walls), max(walls), code, peak / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pins", type=int, default=10_000)
    parser.add_argument("--vulnerable", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    pins, ranked = pins_from_bundled(options.pins)
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "pins.txt"
        many.write_text("\n".join(pins) + "\n")
        vulnerable = Path(tmp) / "vulnerable.txt"
        vulnerable.write_text("\n".join(vulnerable_pins(ranked, options.vulnerable)) + "\n")
        rows = [
            (f"{len(pins):,} pins, table", ["-r", str(many)]),
            (f"{len(pins):,} pins, JSON", ["-r", str(many), "--format", "json"]),
            (f"{options.vulnerable} vulnerable pins, table", ["-r", str(vulnerable)]),
            (
                f"{options.vulnerable} vulnerable pins, JSON",
                ["-r", str(vulnerable), "--format", "json"],
            ),
        ]
        print("| audit | wall median (min–max) | exit | peak RSS of the slowest |")
        print("| --- | --- | --- | --- |")
        for label, args in rows:
            median, low, high, code, rss = run(args, options.repeat)
            print(f"| {label} | {median:.2f} s ({low:.2f}–{high:.2f}) | {code} | {rss:.0f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
