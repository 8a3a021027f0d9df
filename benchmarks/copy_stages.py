"""Where a warm install with copies spends its time, stage by stage, in every process.

Usage: `python benchmarks/copy_stages.py [--workload large] [--repeat 5] [--scratch /dev/shm]`
(run it with a Python that imports safepip, e.g. the dev venv's; the benchmark's wheelhouse
must exist: `python benchmarks/run.py` builds it).

The workload's lock is installed once into a scratch cache, then `--repeat` times into a fresh
venv with `--link-mode copy`, each time by a new process that runs the `safepip` command
(`fastpath.run`, as the console script does) with a clock around each stage of the install.
Printed for each stage and process (the installing process, the child that checks half the
cache, the helper that copies half the files), medians over the repetitions: when it started
and ended (seconds since the command was started) and its wall and CPU seconds, summed over
its calls. The imports are timed before the command runs (so the command itself imports
nothing), with the collector off and the modules frozen as `cli.main` imports them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = (
    ("safepip.pipeline", None, "resolve_target", "probe the target"),
    ("safepip.pipeline", None, "_parse_inputs", "parse the requirements"),
    ("safepip.pipeline", None, "installed_distributions", "read the installed"),
    ("safepip.pipeline", None, "_safepip_records", "check the installed seals"),
    ("safepip.pipeline", None, "plan_install", "plan"),
    ("safepip.pipeline", None, "audit_gate", "audit"),
    ("safepip.fetch", None, "check_unpacked_many", "cache check (all wheels)"),
    ("safepip.fetch", None, "check_unpacked", "  check of one wheel"),
    ("safepip.pipeline", None, "check_dependencies", "dependency check"),
    ("safepip.install", None, "_layout_wheel", "layout"),
    ("safepip.install", "Transaction", "begin", "journal: begin"),
    ("safepip.install", "Transaction", "prepare", "journal: set aside, folders"),
    ("safepip.install", "Transaction", "write", "write RECORD, seals, launchers"),
    ("safepip.linking", "Linker", "_take", "copy files"),
    ("safepip.linking", None, "_read_to_end", "wait for the copying helper"),
    ("safepip.install", "Transaction", "commit", "commit"),
    ("safepip.fastpath", None, "_check_after_install", "no-op check after the install"),
)


def child(out: str, argv: list[str]) -> None:
    """Run the command with a clock around each stage; every process appends its records to
    `out` (the forked ones just before they exit)."""
    import atexit
    import gc
    import importlib

    t0 = float(os.environ["COPY_STAGES_T0"])
    records: dict[str, list[float]] = {}
    within: list[str] = []  # "after: " while the no-op check after the install runs

    def flush() -> None:
        lines = [
            json.dumps(
                {
                    "pid": os.getpid(),
                    "label": k,
                    "start": v[0],
                    "end": v[1],
                    "wall": v[2],
                    "cpu": v[3],
                    "calls": v[4],
                }
            )
            for k, v in records.items()
        ]
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, ("\n".join(lines) + "\n").encode())
        os.close(fd)

    def wrap(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.time() - t0, time.process_time()
            key = "".join(within) + label
            if name == "_check_after_install":
                within.append("after: ")
            try:
                return real(*args, **kwargs)
            finally:
                if name == "_check_after_install":
                    within.pop()
                end = time.time() - t0
                r = records.setdefault(key, [start, end, 0.0, 0.0, 0])
                r[1] = end
                r[2] += end - start
                r[3] += time.process_time() - cpu
                r[4] += 1

        setattr(owner, name, timed)

    started = time.time() - t0
    gc.disable()
    import safepip.cli.install  # noqa: F401 - what an install imports
    from safepip import fastpath

    gc.freeze()
    gc.enable()
    records["imports"] = [
        started,
        time.time() - t0,
        time.time() - t0 - started,
        time.process_time(),
        1,
    ]
    for module, owner, name, label in STAGES:
        target = importlib.import_module(module)
        wrap(getattr(target, owner) if owner else target, name, label)
    real_exit = os._exit
    main = os.getpid()

    def exiting(code: int) -> None:  # the forked processes end with os._exit
        if os.getpid() != main:
            flush()
        real_exit(code)

    os._exit = exiting  # type: ignore[assignment]
    os.register_at_fork(after_in_child=records.clear)
    atexit.register(flush)
    sys.argv = ["safepip", *argv]
    fastpath.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="large")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scratch", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import serve

    house = HERE / ".cache" / "wheelhouse"
    lock = HERE / "workloads" / f"{args.workload}.txt"
    scratch = Path(tempfile.mkdtemp(dir=args.scratch, prefix="copy-stages-"))
    server = serve.start(house, scratch / "server", "asyncio")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE="/dev/null", HOME=str(scratch / "home"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    (scratch / "home").mkdir()
    python = sys.executable
    try:
        url = f"{server.base_url}/{args.workload}/simple/"
        cache = scratch / "cache"

        def install(venv: Path, *extra: str) -> list[str]:
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
            return [
                "install",
                "-r",
                str(lock),
                "--python",
                str(venv),
                "--index-url",
                url,
                "--cache-dir",
                str(cache),
                "--link-mode",
                "copy",
                "-q",
                *extra,
            ]

        subprocess.run([python, "-m", "safepip", *install(scratch / "cold")], env=env, check=True)
        runs: list[tuple[float, list[dict[str, Any]]]] = []
        for rep in range(args.repeat):
            out = scratch / f"stages-{rep}.jsonl"
            command = install(scratch / "warm")
            t0 = time.time()
            subprocess.run(
                [python, __file__, "--child", str(out), "--", *command],
                env={**env, "COPY_STAGES_T0": repr(t0)},
                check=True,
            )
            wall = time.time() - t0
            runs.append((wall, [json.loads(x) for x in out.read_text().splitlines() if x]))
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    report(runs, args)


def report(runs: list[tuple[float, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, records in runs:
        main_pid = min(r["pid"] for r in records if r["label"] == "imports")
        for r in records:
            if r["pid"] == main_pid:
                role = "install"
            elif "one wheel" in r["label"]:
                role = "check child"
            else:
                role = "copy helper"
            rows.setdefault((role, r["label"]), []).append(r)
    walls = [wall for wall, _ in runs]
    print(
        f"{args.workload}, --link-mode copy, {args.repeat} runs, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}: whole command {statistics.median(walls):.3f} s "
        f"({min(walls):.3f}-{max(walls):.3f}); medians, seconds since the command started"
    )
    print(f"  {'process':<12} {'stage':<32} {'start':>6} {'end':>6} {'wall':>6} {'CPU':>6} calls")
    order = sorted(rows.items(), key=lambda kv: statistics.median(r["start"] for r in kv[1]))
    for (role, label), found in order:

        def med(key: str, found: list[dict[str, Any]] = found) -> float:
            return statistics.median(r[key] for r in found)

        cpu = f"{med('cpu'):6.3f}"
        print(
            f"  {role:<12} {label:<32} {med('start'):6.3f} {med('end'):6.3f} "
            f"{med('wall'):6.3f} {cpu:>6} {int(med('calls'))}"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # one timed command: --child OUT -- ARGS
        child(sys.argv[2], sys.argv[4:])
    else:
        main()
