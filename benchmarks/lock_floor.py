"""The start-up floor of `safepip lock`, next to a whole lock by safepip and by uv.

Usage: `python benchmarks/lock_floor.py [--python PY] [--repeat 15] [--index-url URL --uv UV]`
(PY: a Python that imports safepip, default this one; its bytecode is compiled first).

Each command runs `--repeat` times, all of them in turn (alternating, so that load changes hit
each alike), and the medians of CPU (user + system of the process) and wall time are printed:

- the interpreter alone (`-c pass`);
- importing httpx and making a client as safepip's network session does on its first request
  (no TLS file is read);
- that, with the packaging modules and resolvelib a lock uses: the third-party floor;
- that, with safepip's own modules of the lock command: everything a lock imports;
- with `--index-url` (the benchmark's `medium` index, e.g. from `python benchmarks/run.py
  --serve`): the third-party floor with the requests a lock of `medium.in` makes, and nothing
  else: every pinned project's page (JSON, decoded) and its wheel's `.metadata` file, one after
  another through that client (the projects are those of a lock made once beforehand,
  untimed);
- with `--index-url` and `--uv`: the whole lock of `workloads/medium.in` by safepip and by
  `uv pip compile --generate-hashes`, each with a fresh cache folder, as the `lock` row does.

Then where the imports' time goes (`--repeat` fresh processes, medians of thread CPU time): the
third-party floor's imports, then safepip's lock modules on top of them, each split into
creating dataclasses, compiling regular expressions, unmarshalling bytecode and the cyclic
garbage collector's passes (timed by wrapping `dataclasses._process_class`, `re._compile`,
importlib's `_compile_bytecode` and with `gc.callbacks`); the rest is running module bodies
(classes, enums, tables) and finding and reading files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT = "import httpx, ssl; httpx.Client(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))"
"""A client as safepip's session makes it: its context reads the CA bundle at the first TLS
connection (`httpx.Client()` alone would read one at once: 15-25 ms that no lock from a
plain-HTTP loopback index spends)."""
STACK = (
    "import packaging.requirements, packaging.markers, packaging.specifiers, "
    "packaging.tags, packaging.utils, packaging.version, resolvelib; " + CLIENT
)


def commands(
    python: str, index_url: str | None, uv: str | None, scratch: Path, projects: list[str]
) -> dict[str, list[str]]:
    found = {
        "interpreter (-c pass)": [python, "-c", "pass"],
        "import httpx; httpx.Client(verify=SSLContext)": [python, "-c", CLIENT],
        "+ packaging, resolvelib (third-party floor)": [python, "-c", STACK],
        "+ safepip's lock modules": [
            python,
            "-c",
            "import safepip.fastpath, safepip.cli, safepip.cli.lock, safepip.resolver; " + STACK,
        ],
    }
    source = HERE / "workloads" / "medium.in"
    if index_url is not None:
        found[f"+ {2 * len(projects)} requests (third-party floor of a lock)"] = [
            python, "-c", REQUESTS, index_url, *projects,
        ]  # fmt: skip
        found["safepip lock medium.in"] = [
            python, "-m", "safepip", "lock", str(source), "-o", str(scratch / "safepip.txt"),
            "--index-url", index_url, "--cache-dir", str(scratch / "cache-safepip"), "-q",
        ]  # fmt: skip
        if uv is not None:
            found["uv pip compile medium.in"] = [
                uv, "pip", "compile", str(source), "-o", str(scratch / "uv.txt"),
                "--generate-hashes", "--python", python, "--index-url", index_url,
                "--cache-dir", str(scratch / "cache-uv"), "-q",
            ]  # fmt: skip
    return found


BREAKDOWN = """
import gc, json, re, sys, time
import dataclasses
import importlib._bootstrap_external as external

spent = {"dataclasses": 0.0, "regular expressions": 0.0, "bytecode": 0.0, "garbage collector": 0.0}


def timed(key, function):
    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] += time.thread_time() - started

    return wrapper


dataclasses._process_class = timed("dataclasses", dataclasses._process_class)
re._compile = timed("regular expressions", re._compile)
external._compile_bytecode = timed("bytecode", external._compile_bytecode)
gc_started = [0.0]


def on_gc(phase, info):
    if phase == "start":
        gc_started[0] = time.thread_time()
    else:
        spent["garbage collector"] += time.thread_time() - gc_started[0]


gc.callbacks.append(on_gc)
phases = {}
for name, code in (("third-party", sys.argv[1]), ("safepip", sys.argv[2])):
    for key in spent:
        spent[key] = 0.0
    started = time.thread_time()
    exec(code)
    phases[name] = {"total": time.thread_time() - started, **spent}
print(json.dumps(phases))
"""
OWN_MODULES = "import safepip.fastpath, safepip.cli, safepip.cli.lock, safepip.resolver"
REQUESTS = (
    STACK.replace("httpx.Client(", "client = httpx.Client(")
    + """
import json, sys
index, accept = sys.argv[1], {"Accept": "application/vnd.pypi.simple.v1+json"}
for name in sys.argv[2:]:
    page = client.get(index + name + "/", headers=accept).raise_for_status()
    files = json.loads(page.content)["files"]
    wheel = next(f for f in files if f["filename"].endswith(".whl") and f.get("core-metadata"))
    client.get(page.url.join(wheel["url"] + ".metadata")).raise_for_status().read()
"""
)
"""The third-party floor with a lock's requests: a page and a `.metadata` file per project."""


def locked_projects(python: str, index_url: str, env: dict[str, str], scratch: Path) -> list[str]:
    """The projects a lock of `medium.in` pins (a lock made once, untimed)."""
    out = scratch / "projects.txt"
    subprocess.run(
        [python, "-m", "safepip", "lock", str(HERE / "workloads" / "medium.in"), "-o", str(out),
         "--index-url", index_url, "--cache-dir", str(scratch / "cache-safepip"), "-q"],
        env=env, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    pins = (line.split("==", 1)[0] for line in out.read_text().splitlines() if "==" in line)
    return sorted({pin.split("[", 1)[0].strip() for pin in pins if not pin.startswith("#")})


def breakdown(python: str, env: dict[str, str], repeat: int) -> None:
    """Where the imports of a lock go: see the module docstring."""
    found: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeat):
        done = subprocess.run(
            [python, "-c", BREAKDOWN, STACK, OWN_MODULES],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        for phase, values in json.loads(done.stdout).items():
            for key, value in values.items():
                found.setdefault(phase, {}).setdefault(key, []).append(value)
    print(f"imports in one thread, medians of {repeat} processes (thread CPU time)")
    for phase, values in found.items():
        total = statistics.median(values.pop("total"))
        parts = ", ".join(f"{k} {statistics.median(v) * 1000:.1f}" for k, v in values.items())
        print(f"{total * 1000:7.1f} ms  {phase} imports: {parts} ms")


def run(cmd: list[str], env: dict[str, str], scratch: Path) -> tuple[float, float]:
    for cache in ("cache-safepip", "cache-uv"):
        shutil.rmtree(scratch / cache, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--index-url", help="the medium workload's index, to time whole locks")
    parser.add_argument("--uv", help="the uv executable, to time uv's lock beside safepip's")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("SAFEPIP_CACHE_DIR", None)
    code = "import compileall, safepip, sys; compileall.compile_dir(safepip.__path__[0], quiet=1)"
    subprocess.run([args.python, "-c", code], env=env, check=True)
    with tempfile.TemporaryDirectory(prefix="lock-floor-") as folder:
        scratch = Path(folder)
        projects = (
            locked_projects(args.python, args.index_url, env, scratch) if args.index_url else []
        )
        found = commands(args.python, args.index_url, args.uv, scratch, projects)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in found}
        for cmd in found.values():
            run(cmd, env, scratch)  # once untimed: page the files in
        for _ in range(args.repeat):
            for name, cmd in found.items():
                times[name].append(run(cmd, env, scratch))
    print(f"medians of {args.repeat} alternating runs, load {os.getloadavg()[0]:.1f}")
    for name, values in times.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        print(f"{cpu * 1000:7.1f} ms CPU {wall * 1000:7.1f} ms wall  {name}")
    breakdown(args.python, env, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
