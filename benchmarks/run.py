"""Benchmark safepip against uv and pip on the same jobs, interleaved, against a loopback index.

Usage: `python benchmarks/run.py [--quick] [--workload large] [--repeat 5] [--tools uv,pip]`.
See benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import serve  # noqa: E402
import tools as tools_mod  # noqa: E402
import wheelhouse as wh  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import InvalidVersion, Version  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Sequence

    from packaging.utils import NormalizedName

REPO = HERE.parent
WORKLOADS_DIR = HERE / "workloads"
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
LOCK_INPUT = "medium"
RESULTS_FORMAT = 1
# The large workload's venvs and caches for three tools at once: 1.7 GB at the peak, measured.
SCRATCH_NEEDED = 5 * 2**29


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    key: str
    title: str
    goal: str
    goal_ratio: float | None = None
    """Goal as a maximum of safepip/uv (None: see `goal_seconds`, or no goal)."""
    goal_seconds: float | None = None


ROWS = (
    Row(
        key="cold",
        title="cold install (empty cache, fresh venv, no .pyc)",
        goal="≤ 1.5 × uv",
        goal_ratio=1.5,
    ),
    Row(
        key="warm",
        title="warm-cache install into a fresh venv (no .pyc)",
        goal="≤ 2 × uv",
        goal_ratio=2.0,
    ),
    Row(
        key="reinstall",
        title="re-install, everything already installed (the first no-op after the install)",
        goal="≤ 1.5 × uv",
        goal_ratio=1.5,
    ),
    Row(
        key="noop",
        title="the same re-install again (a repeated no-op: safepip replays its stamp)",
        goal="≤ 1.5 × uv",
        goal_ratio=1.5,
    ),
    Row(
        key="compile",
        title="cold install with bytecode (pip: default, uv: `--compile-bytecode`, "
        "safepip: `--compile`)",
        goal="—",
    ),
    Row(
        key="lock",
        title=f"lock `{LOCK_INPUT}.in`, cold (pip: pip-compile)",
        goal="≤ 2 × uv",
        goal_ratio=2.0,
    ),
    Row(
        key="audit",
        title="audit the lock from the local database (wall, with interpreter start)",
        goal="≤ 0.3 s",
        goal_seconds=0.3,
    ),
)
ROW_BY_KEY = {r.key: r for r in ROWS}


@dataclass(kw_only=True, slots=True)
class Measurement:
    row: str
    rep: int
    tool: str
    wall: float | None = None
    cpu_user: float | None = None
    cpu_system: float | None = None
    server_cpu: float | None = None
    peak_rss_mb: float | None = None
    """The largest resident set of any one process of the command (its own or a worker's)."""
    valid: bool = False
    reason: str = ""
    detail: dict[str, object] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- running one timed command ---------------------------------------------------------------


def become_subreaper() -> bool:
    """Make this process the one that orphaned descendants of a timed command are re-parented
    to (Linux `PR_SET_CHILD_SUBREAPER`), so that their CPU time can be collected: a worker pool's
    fork server is not waited for by the tool itself, and `RUSAGE_CHILDREN` alone misses it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _children(exclude: set[int]) -> list[int]:
    """This process's child processes (from /proc), but `exclude` (the index server)."""
    me = os.getpid()
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{me}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return [p for p in found if p not in exclude]


def _reap_orphans(exclude: set[int], deadline: float) -> tuple[float, float, int]:
    """Wait for every descendant of a finished command that was re-parented here; their summed
    user and system time and the largest `ru_maxrss` (KiB) among them."""
    user = system = 0.0
    peak = 0
    while True:
        pending = _children(exclude)
        if not pending:
            return user, system, peak
        for pid in pending:
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                _, _, usage = os.wait4(pid, 0)
            except ChildProcessError:
                continue
            user += usage.ru_utime
            system += usage.ru_stime
            peak = max(peak, usage.ru_maxrss)


def timed(
    cmd: list[str],
    *,
    env: dict[str, str],
    server: serve.Server,
    out: Path,
    timeout: float,
    m: Measurement,
) -> bool:
    """Run `cmd` once, filling in wall, CPU (the command, its children and any worker processes
    it left to this process), peak memory and server CPU; False (with a reason) on failure."""
    exclude = {server.process.pid}
    with out.open("w") as sink:
        server_before = server.cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        m.wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        m.server_cpu = server.cpu_seconds() - server_before
        user, system, peak = _reap_orphans(exclude, time.monotonic() + 60)
    m.cpu_user = usage.ru_utime + user
    m.cpu_system = usage.ru_stime + system
    m.peak_rss_mb = max(usage.ru_maxrss, peak) / 1024
    if not server.alive():
        raise SystemExit(f"the index server died; see {server.run_dir}")
    if proc.returncode == -signal.SIGKILL and m.wall >= timeout:
        m.reason = f"timed out after {timeout:.0f} s"
        return False
    if proc.returncode != 0:
        text = out.read_text(errors="replace").strip().splitlines()
        m.reason = f"exit code {proc.returncode}: {text[-1][:300] if text else 'no output'}"
        return False
    return True


def fresh_venv(python: Path, venv: Path) -> None:
    """An empty venv (no pip, nothing in site-packages); not timed."""
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True)


def site_packages(venv: Path) -> Path:
    found = list((venv / "lib").glob("python3*/site-packages"))
    if len(found) != 1:
        raise RuntimeError(f"cannot find the site-packages of {venv}")
    return found[0]


def installed(venv: Path) -> tuple[set[tuple[NormalizedName, Version]], int, int]:
    """Distributions found as `.dist-info` folders, the count of `.pyc` and of `.py` files."""
    sp = site_packages(venv)
    dists = set()
    for info in sp.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        try:
            dists.add((canonicalize_name(name), Version(version)))
        except InvalidVersion:
            dists.add((canonicalize_name(name), Version("0.dev0")))
    pyc = py = 0
    for _, _, files in os.walk(sp):
        for f in files:
            if f.endswith(".pyc"):
                pyc += 1
            elif f.endswith(".py"):
                py += 1
    return dists, pyc, py


def check_install(
    venv: Path, expected: frozenset[tuple[NormalizedName, Version]], compiled: bool, m: Measurement
) -> bool:
    """Whether the venv holds exactly the lock's distributions and bytecode only if asked for."""
    dists, pyc, py = installed(venv)
    m.detail.update({"dist_info": len(dists), "pyc_files": pyc, "py_files": py})
    missing = sorted(f"{n}=={v}" for n, v in expected - dists)
    extra = sorted(f"{n}=={v}" for n, v in dists - expected)
    if missing or extra:
        m.reason = (
            f"found {len(dists)} of {len(expected)} expected distributions"
            + (f"; missing {', '.join(missing[:5])}" if missing else "")
            + (f"; unexpected {', '.join(extra[:5])}" if extra else "")
        )
        return False
    if not compiled and pyc:
        m.reason = f"{pyc} `.pyc` files written although bytecode compilation was off"
        return False
    if compiled and pyc == 0:
        m.reason = "no `.pyc` file written although bytecode compilation was asked for"
        return False
    return True


def check_lock(
    output: Path, pins: frozenset[tuple[NormalizedName, Version]], source: Path, m: Measurement
) -> bool:
    """Whether `output` is a hashed lock of `source` using only versions the index holds."""
    if not output.is_file():
        m.reason = f"no lock written to `{output.name}`"
        return False
    try:
        written = wh.parse_lock(output)
    except (wh.WheelhouseError, ValueError) as exc:
        m.reason = f"unreadable lock: {exc}"
        return False
    got = {(p.name, p.version) for p in written}
    m.detail["pins"] = len(got)
    unknown = sorted(f"{n}=={v}" for n, v in got - pins)
    wanted = {
        canonicalize_name(line.split("[")[0].strip())
        for line in source.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    absent = sorted(wanted - {n for n, _ in got})
    if unknown or absent:
        m.reason = f"lock pins versions the index lacks: {unknown[:5]}; top-level missing: {absent}"
        return False
    return True


# --- the run ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Context:
    tools: tools_mod.Tools
    house: wh.Wheelhouse
    server: serve.Server
    workload: str
    scratch: Path
    timeout: float
    env: dict[str, str]
    skipped: dict[tuple[str, str], str]
    """(row, tool) → why the tool cannot do that row ("n/a")."""
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    """(row, tool) → why it was not run although it should work (shown as invalid)."""
    measurements: list[Measurement] = field(default_factory=list)
    unrecorded: list[Measurement] = field(default_factory=list)
    """Runs a later row depends on that were not asked for (a re-install before a no-op)."""
    link_mode: str | None = None
    """`--link-mode` given to uv and safepip (None: each tool's default)."""

    def url(self, workload: str) -> str:
        return self.server.base_url + self.house.index_path(workload)

    def lock(self, workload: str) -> Path:
        return WORKLOADS_DIR / f"{workload}.txt"

    def cmd_env(self, cache: Path) -> dict[str, str]:
        # Anything a tool caches outside its `--cache-dir` lands beside it, not in ~/.cache.
        return {**self.env, "XDG_CACHE_HOME": str(cache / "xdg"), "HOME": str(cache / "home")}


def run_install(
    ctx: Context,
    *,
    row: str,
    rep: int,
    tool: str,
    venv: Path,
    cache: Path,
    compiled: bool,
    workload: str | None = None,
) -> Measurement:
    workload = workload or ctx.workload
    m = Measurement(row=row, rep=rep, tool=tool)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "home").mkdir(exist_ok=True)
    cmd = ctx.tools.install(
        tool,
        lock=ctx.lock(workload),
        venv=venv,
        index_url=ctx.url(workload),
        cache=cache,
        compile_bytecode=compiled,
        link_mode=ctx.link_mode,
    )
    m.detail["command"] = cmd
    out = ctx.scratch / f"{row}-{tool}-{rep}.log"
    if timed(cmd, env=ctx.cmd_env(cache), server=ctx.server, out=out, timeout=ctx.timeout, m=m):
        m.valid = check_install(venv, ctx.house.expected(workload), compiled, m)
    keep_output(m, out)
    return m


def keep_output(m: Measurement, out: Path) -> None:
    """Keep the end of a failed command's output in the results (the scratch folder goes)."""
    if not m.valid and out.exists():
        m.detail["output_tail"] = out.read_text(errors="replace")[-3000:]


def run_rep(ctx: Context, rep: int, rows: Sequence[str], order: Sequence[str]) -> None:
    """One repetition: each row in turn, each tool once per row, in `order`."""
    base = ctx.scratch / f"rep{rep}"
    base.mkdir()
    caches = {t: base / f"cache-{t}" for t in order}
    warm_venvs = {t: base / f"warm-{t}" for t in order}
    cold_ok: dict[str, bool] = {}

    def record(m: Measurement) -> None:
        ctx.measurements.append(m)
        status = "ok" if m.valid else f"INVALID: {m.reason}"
        wall = f"{m.wall:8.3f} s" if m.wall is not None else "       — "
        log(f"  rep {rep + 1}  {m.row:9} {m.tool:8} {wall}  {status}")

    def runnable(row: str, tool: str) -> bool:
        return (row, tool) not in ctx.skipped and (row, tool) not in ctx.failed

    if any(r in rows for r in ("cold", "warm", "reinstall", "noop")):
        # The cold row fills each tool's cache; the warm row reuses it with a fresh venv; the
        # re-install row runs the same command again into the warm row's venv, and the no-op
        # row once more.
        for tool in order:
            if not runnable("cold", tool):
                continue
            venv = base / f"cold-{tool}"
            fresh_venv(ctx.tools.python, venv)
            m = run_install(
                ctx, row="cold", rep=rep, tool=tool, venv=venv, cache=caches[tool], compiled=False
            )
            cold_ok[tool] = m.valid
            if "cold" in rows:
                record(m)
            shutil.rmtree(venv)
        needed = {"warm": ("warm", "reinstall", "noop"), "reinstall": ("reinstall", "noop")}
        for row in ("warm", "reinstall", "noop"):
            if not any(r in rows for r in needed.get(row, (row,))):
                continue
            for tool in order:
                if not runnable(row, tool):
                    continue
                if not cold_ok.get(tool):
                    m = Measurement(row=row, rep=rep, tool=tool, reason="its cold install failed")
                    record(m)
                    continue
                venv = warm_venvs[tool]
                if row == "warm":
                    fresh_venv(ctx.tools.python, venv)
                elif not venv.exists():
                    record(
                        Measurement(row=row, rep=rep, tool=tool, reason="its warm install failed")
                    )
                    continue
                if row == "noop" and not any(
                    m.valid and m.row == "reinstall" and m.rep == rep and m.tool == tool
                    for m in ctx.unrecorded + ctx.measurements
                ):
                    record(Measurement(row=row, rep=rep, tool=tool, reason="its re-install failed"))
                    continue
                m = run_install(
                    ctx, row=row, rep=rep, tool=tool, venv=venv, cache=caches[tool], compiled=False
                )
                if row in rows:
                    record(m)
                else:
                    ctx.unrecorded.append(m)
                if not m.valid and row == "warm":
                    shutil.rmtree(venv)
        for tool in order:
            for path in (caches[tool], warm_venvs[tool]):
                if path.exists():
                    shutil.rmtree(path)

    if "compile" in rows:
        for tool in order:
            if not runnable("compile", tool):
                continue
            venv = base / f"compile-{tool}"
            cache = base / f"compile-cache-{tool}"
            fresh_venv(ctx.tools.python, venv)
            record(
                run_install(
                    ctx, row="compile", rep=rep, tool=tool, venv=venv, cache=cache, compiled=True
                )
            )
            shutil.rmtree(venv)
            shutil.rmtree(cache)

    if "lock" in rows:
        source = WORKLOADS_DIR / f"{LOCK_INPUT}.in"
        pins = ctx.house.expected(LOCK_INPUT)
        for tool in order:
            if not runnable("lock", tool):
                continue
            cache = base / f"lock-cache-{tool}"
            (cache / "home").mkdir(parents=True)
            output = base / f"lock-{tool}.txt"
            m = Measurement(row="lock", rep=rep, tool=tool)
            cmd = ctx.tools.lock(
                tool, source=source, output=output, index_url=ctx.url(LOCK_INPUT), cache=cache
            )
            m.detail["command"] = cmd
            out = base / f"lock-{tool}.log"
            ok = timed(
                cmd,
                env=ctx.cmd_env(cache),
                server=ctx.server,
                out=out,
                timeout=ctx.timeout,
                m=m,
            )
            m.valid = ok and check_lock(output, pins, source, m)
            keep_output(m, out)
            record(m)
            shutil.rmtree(cache)

    if "audit" in rows and "safepip" in order and runnable("audit", "safepip"):
        m = Measurement(row="audit", rep=rep, tool="safepip")
        cmd = ctx.tools.audit(lock=ctx.lock(ctx.workload))
        m.detail["command"] = cmd
        home = base / "audit-home"
        (home / "home").mkdir(parents=True)
        m.valid = timed(
            cmd,
            env=ctx.cmd_env(home),
            server=ctx.server,
            out=base / "audit.log",
            timeout=ctx.timeout,
            m=m,
        )
        keep_output(m, base / "audit.log")
        record(m)
    shutil.rmtree(base)


def warm_up(ctx: Context, order: Sequence[str], rows: Sequence[str]) -> None:
    """Install the small lock once with each tool (not timed): page in the tools, and catch a
    tool that cannot install at all before spending minutes timing its failures."""
    install_rows = [r for r in ("cold", "warm", "reinstall", "noop", "compile") if r in rows]
    if not install_rows:
        return
    for tool in order:
        if all((r, tool) in ctx.skipped or (r, tool) in ctx.failed for r in install_rows):
            continue
        venv = ctx.scratch / f"warmup-{tool}"
        cache = ctx.scratch / f"warmup-cache-{tool}"
        fresh_venv(ctx.tools.python, venv)
        m = run_install(
            ctx,
            row="warm-up",
            rep=0,
            tool=tool,
            venv=venv,
            cache=cache,
            compiled=False,
            workload="small",
        )
        shutil.rmtree(venv)
        shutil.rmtree(cache)
        if not m.valid:
            log(f"warm-up: {tool} failed to install small.txt: {m.reason}")
            for r in install_rows:
                if (r, tool) not in ctx.skipped:
                    ctx.failed[(r, tool)] = (
                        f"not run: warm-up install of small.txt failed: {m.reason}"
                    )


# --- reporting -------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s"


def fmt_spread(median: float, low: float, high: float) -> str:
    """`1.19 s (1.15–1.30)`: the range in the median's unit."""
    if median < 0.1:
        return f"{median * 1000:.0f} ms ({low * 1000:.0f}–{high * 1000:.0f})"
    digits = 2 if median < 10 else 1
    return f"{median:.{digits}f} s ({low:.{digits}f}–{high:.{digits}f})"


def summarize(ctx: Context, rows: Sequence[str], tools: Sequence[str]) -> list[dict[str, object]]:
    summary: list[dict[str, object]] = []
    for key in rows:
        row = ROW_BY_KEY[key]
        cells: dict[str, object] = {}
        for tool in tools:
            ms = [m for m in ctx.measurements if m.row == key and m.tool == tool]
            walls = [m.wall for m in ms if m.valid and m.wall is not None]
            invalid = [m.reason for m in ms if not m.valid]
            if (key, tool) in ctx.failed:
                invalid.append(ctx.failed[(key, tool)])
            cell: dict[str, object] = {"valid": len(walls), "invalid": len(invalid)}
            if (key, tool) in ctx.skipped:
                cell["na"] = ctx.skipped[(key, tool)]
            elif walls:
                cell.update(
                    median=statistics.median(walls),
                    min=min(walls),
                    max=max(walls),
                    cpu_median=statistics.median(
                        (m.cpu_user or 0) + (m.cpu_system or 0) for m in ms if m.valid
                    ),
                    rss_median=statistics.median(m.peak_rss_mb or 0 for m in ms if m.valid),
                )
            if invalid:
                cell["invalid_reasons"] = sorted(set(invalid))
            details = [m.detail for m in ms if m.valid]
            for k in ("pins", "pyc_files", "dist_info"):
                values = {d[k] for d in details if k in d}
                if values:
                    cell[k] = sorted(values)  # type: ignore[type-var]
            cells[tool] = cell
        ratios: dict[str, object] = {}
        for other in ("uv", "pip"):
            per_rep = []
            for rep in sorted({m.rep for m in ctx.measurements if m.row == key}):
                a = _wall(ctx, key, rep, "safepip")
                b = _wall(ctx, key, rep, other)
                if a is not None and b is not None and b > 0:
                    per_rep.append(a / b)
            if per_rep:
                ratios[f"safepip/{other}"] = {
                    "median": statistics.median(per_rep),
                    "min": min(per_rep),
                    "max": max(per_rep),
                    "pairs": len(per_rep),
                }
        verdict = None
        sp = cells.get("safepip", {})
        assert isinstance(sp, dict)
        goal, goal_ratio = row.goal, row.goal_ratio
        if key == "warm" and ctx.link_mode == "copy":  # issue 14: copies within 1.5x of uv's
            goal, goal_ratio = "≤ 1.5 × uv", 1.5
        if goal_ratio is not None and "safepip/uv" in ratios:
            r = ratios["safepip/uv"]
            assert isinstance(r, dict)
            verdict = "met" if r["median"] <= goal_ratio else "missed"
        elif row.goal_seconds is not None and "median" in sp:
            verdict = "met" if sp["median"] <= row.goal_seconds else "missed"
        summary.append(
            {
                "row": key,
                "title": row.title,
                "goal": goal,
                "goal_verdict": verdict,
                "tools": cells,
                "ratios": ratios,
            }
        )
    return summary


def _wall(ctx: Context, row: str, rep: int, tool: str) -> float | None:
    for m in ctx.measurements:
        if m.row == row and m.rep == rep and m.tool == tool and m.valid:
            return m.wall
    return None


def markdown(summary: list[dict[str, object]], tools: Sequence[str], workload: str) -> str:
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    header = ["work", *tools, "safepip/uv", "safepip/pip", "goal"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for s in summary:
        title = str(s["title"])
        if s["row"] in ("cold", "warm", "reinstall", "noop", "compile", "audit"):
            title = f"{title}, `{workload}.txt`"
        cells = [title]
        tool_cells = s["tools"]
        assert isinstance(tool_cells, dict)
        for tool in tools:
            c = tool_cells[tool]
            if "na" in c:
                cells.append("n/a " + note(f"{tool}: {c['na']}"))
            elif "median" in c:
                text = fmt_spread(c["median"], c["min"], c["max"])
                if "pins" in c:
                    text += ", " + "/".join(map(str, c["pins"])) + " pins"
                if c["invalid"]:
                    reasons = "; ".join(c["invalid_reasons"])
                    text += f" {c['invalid']} invalid " + note(f"{tool}: {reasons}")
                cells.append(text)
            elif c["invalid"]:
                reasons = "; ".join(c["invalid_reasons"])
                cells.append("invalid " + note(f"{tool}: {reasons}"))
            else:
                cells.append("—")
        ratios = s["ratios"]
        assert isinstance(ratios, dict)
        for other in ("uv", "pip"):
            r = ratios.get(f"safepip/{other}")
            cells.append(
                f"{r['median']:.2f}× ({r['min']:.2f}–{r['max']:.2f})" if r is not None else "—"
            )
        verdict = s["goal_verdict"]
        cells.append(f"{s['goal']}: **{verdict}**" if verdict else str(s["goal"]))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        lines.extend(f"[{i}] {text}" for i, text in enumerate(notes, 1))
    return "\n".join(lines)


def cpu_markdown(summary: list[dict[str, object]], tools: Sequence[str]) -> str:
    """Median CPU time (user + system of the tool, its children and any worker process it left
    behind) beside the wall time, and the median peak memory of its largest process: where CPU
    is well below wall, the tool waits; where it is above, it uses both cores."""
    lines = [
        "| CPU time and peak memory, medians | " + " | ".join(tools) + " |",
        "|" + " --- |" * (len(tools) + 1),
    ]
    for s in summary:
        tool_cells = s["tools"]
        assert isinstance(tool_cells, dict)
        cells = [str(s["row"])]
        for tool in tools:
            c = tool_cells[tool]
            cells.append(
                f"{fmt(c['cpu_median'])} of {fmt(c['median'])} wall, {c['rss_median']:.0f} MiB"
                if "cpu_median" in c
                else "—"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def server_cost(ctx: Context) -> str:
    """How much CPU the index server took, overall and for the (row, tool) where it took most."""
    timed_ms = [m for m in ctx.measurements if m.server_cpu is not None and m.wall]
    if not timed_ms:
        return f"index server ({ctx.server.kind}): no timed command"
    total_cpu = sum(m.server_cpu or 0 for m in timed_ms)
    total_wall = sum(m.wall or 0 for m in timed_ms)
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in timed_ms:
        groups.setdefault((m.row, m.tool), []).append(m)
    share, (row, tool) = max(
        (sum(m.server_cpu or 0 for m in ms) / sum(m.wall or 0 for m in ms), key)
        for key, ms in groups.items()
    )
    return (
        f"index server ({ctx.server.kind}) CPU: {total_cpu:.2f} s in {total_wall:.1f} s of timed "
        f"commands ({total_cpu / total_wall:.1%}); highest share {share:.1%} ({tool}, {row}); "
        "measured from /proc in 10 ms ticks"
    )


def machine_info(
    ctx: Context, scratch_kind: str, tools: Sequence[str], args: argparse.Namespace
) -> dict[str, object]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    files = ctx.house.artifacts[ctx.workload]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory": mem,
        "kernel": platform.release(),
        "harness_python": sys.version.split()[0],
        "target_python": ctx.tools.versions.get("python"),
        "tool_versions": dict(ctx.tools.versions),
        "server": f"{ctx.server.kind} {ctx.server.version}",
        "scratch": f"{ctx.scratch} ({scratch_kind})",
        "workload": ctx.workload,
        "workload_wheels": len(files),
        "workload_megabytes": round(sum(a.size for a in files) / 1e6, 1),
        "repetitions": args.repeat,
        "tools": ", ".join(tools),
        "link_mode": args.link_mode
        or "each tool's default (uv: hardlink; safepip: reflink, a copy on tmpfs; pip: copy)",
        "cpu_accounting": "user + system of the command, its children and the worker processes "
        "re-parented to the harness (PR_SET_CHILD_SUBREAPER); peak memory is the largest "
        "ru_maxrss among them"
        if args.subreaper
        else "getrusage of the command and the children it waited for (no subreaper here)",
    }


# --- setup -----------------------------------------------------------------------------------


def pick_scratch(requested: Path | None) -> tuple[Path, str]:
    """A fresh folder for venvs and caches: tmpfs (/dev/shm) unless told otherwise."""
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="safepip-bench-", dir=requested))
        return path, _fs_type(path)
    shm = Path("/dev/shm")
    why = "no writable tmpfs at /dev/shm"
    if shm.is_dir() and os.access(shm, os.W_OK) and _fs_type(shm) == "tmpfs":
        stat = os.statvfs(shm)
        free = stat.f_bavail * stat.f_frsize
        if free >= SCRATCH_NEEDED:
            return Path(tempfile.mkdtemp(prefix="safepip-bench-", dir=shm)), "tmpfs, /dev/shm"
        why = f"/dev/shm has only {free / 2**30:.1f} GiB free"
    path = Path(tempfile.mkdtemp(prefix="safepip-bench-"))
    return path, f"{_fs_type(path)}, the temp folder: {why}"


def _fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(
                mount
            ) >= len(best):
                best, kind = mount, parts[2]
    return kind


def target_python(requested: str | None) -> Path:
    """A CPython 3.11 (the locks are for 3.11), resolved past pyenv-style shims."""
    candidates = [requested] if requested else [sys.executable, "python3.11"]
    for candidate in candidates:
        exe = shutil.which(candidate) or candidate
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [
                    exe,
                    "-c",
                    "import sys, platform; print(platform.python_implementation(), "
                    "'%d.%d' % sys.version_info[:2], sys.executable)",
                ],
                capture_output=True,
                text=True,
                check=True,
                env=tools_mod.clean_env(),
            ).stdout.split(maxsplit=2)
            if out[0] == "CPython" and out[1] == "3.11":
                return Path(out[2].strip())
    raise SystemExit(
        "error: the workload locks are for CPython 3.11; run with CPython 3.11 or pass `--python`"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark safepip against uv and pip on a loopback index.",
    )
    p.add_argument("--quick", action="store_true", help="medium workload, 3 repetitions")
    p.add_argument("--workload", choices=wh.WORKLOADS, help="lock to install (default: large)")
    p.add_argument("--repeat", type=int, help="repetitions per row (default: 5; --quick: 3)")
    p.add_argument(
        "--tools",
        default=",".join(tools_mod.TOOLS),
        help="comma-separated subset of safepip,uv,pip (default: all three)",
    )
    p.add_argument(
        "--rows",
        default=",".join(r.key for r in ROWS),
        help=f"comma-separated subset of {','.join(r.key for r in ROWS)} (default: all)",
    )
    p.add_argument("--server", choices=("auto", "nginx", "asyncio"), default="auto")
    p.add_argument(
        "--link-mode",
        choices=("hardlink", "copy"),
        help="give uv and safepip this `--link-mode` (default: each tool's own default)",
    )
    p.add_argument("--python", help="CPython 3.11 for the target venvs (default: this one)")
    p.add_argument("--scratch", type=Path, help="where venvs and caches go (default: /dev/shm)")
    p.add_argument(
        "--safepip-source", type=Path, default=REPO, help="checkout to install safepip from"
    )
    p.add_argument("--upgrade-tools", action="store_true", help="upgrade pip, uv and pip-tools")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per command")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON results")
    p.add_argument(
        "--serve",
        action="store_true",
        help="only build the wheelhouse and serve it until interrupted",
    )
    args = p.parse_args(argv)
    args.workload = args.workload or ("medium" if args.quick else "large")
    args.repeat = args.repeat or (3 if args.quick else 5)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if bad := [t for t in tools if t not in tools_mod.TOOLS]:
        p.error(f"unknown tools: {bad}")
    if bad := [r for r in rows if r not in ROW_BY_KEY]:
        p.error(f"unknown rows: {bad}")
    args.tool_list = [t for t in tools_mod.TOOLS if t in tools]
    args.row_list = [r.key for r in ROWS if r.key in rows]
    return args


def skipped_cells(tools: tools_mod.Tools, selected: Sequence[str]) -> dict[tuple[str, str], str]:
    skipped: dict[tuple[str, str], str] = {}
    for row in ROWS:
        for tool in selected:
            if tool == "safepip" and "safepip" in tools.unavailable:
                skipped[(row.key, tool)] = tools.unavailable["safepip"]
    for row_key, reason in (
        ("lock", tools.unavailable.get("safepip lock")),
        ("audit", tools.unavailable.get("safepip audit")),
    ):
        if reason and (row_key, "safepip") not in skipped:
            skipped[(row_key, "safepip")] = reason
    if "pip lock" in tools.unavailable:
        skipped[("lock", "pip")] = tools.unavailable["pip lock"]
    skipped[("audit", "uv")] = "uv has no vulnerability audit"
    skipped[("audit", "pip")] = "pip-audit cannot audit offline (it queries an online service)"
    return skipped


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.subreaper = become_subreaper()
    # A plain `kill` must still stop the index server and remove the scratch folder.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    python = target_python(args.python)
    CACHE.mkdir(exist_ok=True)
    setup_log = Path(tempfile.mkdtemp(prefix="safepip-bench-setup-"))
    tools = tools_mod.setup(
        cache=CACHE,
        python=python,
        safepip_source=args.safepip_source if "safepip" in args.tool_list else None,
        upgrade=args.upgrade_tools,
        log=log,
    )
    env = tools_mod.clean_env()
    house = wh.load_or_build(
        cache=CACHE, workloads_dir=WORKLOADS_DIR, pip=tools.pip_cmd(), env=env, log=log
    )
    server = serve.start(house.root, setup_log / "server", args.server)
    log(f"server: {server.kind} {server.version} at {server.base_url}")
    scratch, scratch_kind = pick_scratch(args.scratch)
    try:
        if args.serve:
            for w in wh.WORKLOADS:
                log(f"  {w}: --index-url {server.base_url}{house.index_path(w)}")
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
            return 0
        ctx = Context(
            tools=tools,
            house=house,
            server=server,
            workload=args.workload,
            scratch=scratch,
            timeout=args.timeout,
            env=env,
            skipped=skipped_cells(tools, args.tool_list),
            link_mode=args.link_mode,
        )
        log(f"scratch: {scratch} ({scratch_kind})")
        for (row, tool), reason in sorted(ctx.skipped.items()):
            if row in args.row_list and tool in args.tool_list:
                log(f"n/a: {tool} {row}: {reason}")
        started = dt.datetime.now(dt.timezone.utc)
        t0 = time.monotonic()
        warm_up(ctx, args.tool_list, args.row_list)
        for rep in range(args.repeat):
            # Rotate the order so no tool always runs first (or right after another).
            order = (
                args.tool_list[rep % len(args.tool_list) :]
                + args.tool_list[: rep % len(args.tool_list)]
            )
            log(f"repetition {rep + 1}/{args.repeat}: order {', '.join(order)}")
            run_rep(ctx, rep, args.row_list, order)
        elapsed = time.monotonic() - t0
        summary = summarize(ctx, args.row_list, args.tool_list)
        machine = machine_info(ctx, scratch_kind, args.tool_list, args)
        server_note = server_cost(ctx)
        table = markdown(summary, args.tool_list, args.workload)
        print(
            f"\n## safepip benchmark: `{args.workload}` workload, medians of {args.repeat} "
            f"(min–max), {started:%Y-%m-%d %H:%M} UTC\n"
        )
        print(table)
        print()
        print(cpu_markdown(summary, args.tool_list))
        print()
        for key, value in machine.items():
            if key != "tool_versions":
                print(f"- {key}: {value}")
        print(
            "- tool versions: " + ", ".join(f"{k} {v}" for k, v in machine["tool_versions"].items())  # type: ignore[attr-defined]
        )
        print(f"- {server_note}")
        print(f"- run time: {elapsed:.0f} s")
        args.results.mkdir(parents=True, exist_ok=True)
        out = args.results / f"{started:%Y%m%dT%H%M%SZ}.json"
        out.write_text(
            json.dumps(
                {
                    "format": RESULTS_FORMAT,
                    "started": started.isoformat(),
                    "elapsed_seconds": elapsed,
                    "machine": machine,
                    "server_cpu": server_note,
                    "summary": summary,
                    "measurements": [asdict(m) for m in ctx.measurements],
                },
                indent=1,
            )
            + "\n"
        )
        print(f"- results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
        return 0
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(setup_log, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
