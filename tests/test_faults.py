"""Faults that users meet every day, injected for real: a full or read-only disk (a small tmpfs),
leftovers of interrupted runs in the cache, worker processes of a killed run, a server that
compresses or stalls, and an environment deleted under a running install (issue 10)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from conftest import Cli, snapshot_tree
from servers import StaticIndex
from upgradecase import TXN_PREFIX, lock_for, site_packages
from wheelbuild import build_wheel

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


def _run(cli: Cli, *argv: str) -> tuple[int, str]:
    code, _, err = cli(*argv)
    assert "Traceback" not in err, err
    return code, err


def _install_args(lock: Path, venv: Path, cache: Path, *source: str) -> list[str]:
    return [
        "install",
        "-q",
        "--no-audit",
        "-r",
        str(lock),
        *source,
        "--python",
        str(venv),
        "--cache-dir",
        str(cache),
    ]


# --- full and read-only disks ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`small_disk(name, kib)`: a tmpfs of that size mounted at `tmp_path / name`; skips the test
    when this machine does not let the test mount one. Every mount is undone at teardown."""
    mounted: list[Path] = []

    def mount(name: str, kib: int) -> Path:
        point = tmp_path / name
        point.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0700", "tmpfs", str(point)],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def _read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)


def _venv_in(folder: Path, venv_factory: Callable[..., Path]) -> Path:
    venv = folder / "venv"
    shutil.copytree(venv_factory(), venv, symlinks=True)
    return venv


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """`small` (tiny), `noise` (3 MiB that do not compress) and `zeros` (a small archive that
    unpacks to 3 MiB)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    build_wheel(folder, "small", "1.0", files={"small/__init__.py": "X = 1\n"})
    build_wheel(folder, "noise", "1.0", files={"noise/data.bin": os.urandom(3 << 20)})
    build_wheel(folder, "zeros", "1.0", files={"zeros/data.bin": bytes(3 << 20)})
    return folder


def _lock(tmp_path: Path, wheels: Path, *names: str) -> Path:
    lines = []
    for name in names:
        wheel = next(wheels.glob(f"{name}-*.whl"))
        lines.append(lock_for(tmp_path / "one.txt", wheel).read_text())
    path = tmp_path / f"lock-{'-'.join(names)}.txt"
    path.write_text("".join(lines))
    return path


def _leftovers(folder: Path) -> list[str]:
    """Temporary files and folders an interrupted or failed run could leave in a cache."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            temporary = name.endswith((".part", ".tmp")) or name.startswith((".discard-", "dl-"))
            if temporary or re.fullmatch(r"\.[0-9a-f]{12}-.*", name):
                found.append(os.path.join(dirpath, name))
    return found


class TestFullDisk:
    def test_error_environment_full(
        self,
        small_disk: Callable[..., Path],
        venv_factory: Callable[..., Path],
        wheels: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        """The environment's file system fills up during an upgrade: one message naming the
        file and the environment; the upgraded package's old files come back, no partial file."""
        disk = small_disk("env-disk", 1024)
        venv = _venv_in(disk, venv_factory)
        cache = tmp_path / "cache"
        source = ("--no-index", "-f", str(wheels))
        assert (
            _run(cli, *_install_args(_lock(tmp_path, wheels, "small"), venv, cache, *source))[0]
            == 0
        )
        before = snapshot_tree(venv)
        newer = tmp_path / "newer"
        newer.mkdir()
        build_wheel(newer, "small", "2.0", files={"small/__init__.py": "X = 2\n"})
        shutil.copy2(next(wheels.glob("noise-*.whl")), newer)
        lock = _lock(tmp_path, newer, "small", "noise")
        source = ("--no-index", "-f", str(newer))
        code, err = _run(cli, *_install_args(lock, venv, cache, *source))
        assert code == 1
        # Large files are copied by helper threads beside the small ones, so the file that
        # meets the full disk first is data.bin or one of the small files written meanwhile.
        site = re.escape(str(site_packages(venv)))
        assert re.search(
            "error: Install failed while installing `noise==1.0`: No space left on device: "
            f"`{site}/(noise/data\\.bin|noise-1\\.0\\.dist-info/[A-Za-z_.]+)` "
            f"\\(in the environment `{re.escape(str(venv))}`\\); the environment was restored\n\n"
            "hint: free some space on that file system and try again\n\\Z",
            err,
        ), err
        assert snapshot_tree(venv) == before

    @pytest.mark.parametrize("stage", ["download", "unpack"])
    @pytest.mark.parametrize("source", ["find-links", "index"])
    def test_error_cache_full(
        self,
        stage: str,
        source: str,
        small_disk: Callable[..., Path],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        wheels: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        """The cache's file system fills up while a wheel is downloaded (`noise`) or unpacked
        (`zeros`): one message naming the cache, never the find-links folder or the index;
        no traceback, nothing partial in the cache, the environment untouched."""
        disk = small_disk("cache-disk", 1024)
        cache = disk / "cache"
        venv = venv_factory()
        before = snapshot_tree(venv)
        name = "noise" if stage == "download" else "zeros"
        if source == "find-links":
            where: tuple[str, ...] = ("--no-index", "-f", str(wheels))
        else:
            index = static_index()
            for wheel in wheels.glob("*.whl"):
                index.add(wheel)
            where = ("-i", index.url)
        code, err = _run(cli, *_install_args(_lock(tmp_path, wheels, name), venv, cache, *where))
        assert code == 1
        first = err.strip().splitlines()[-3 if "hint:" in err else -1]
        assert re.fullmatch(
            rf"error: Cannot write `{re.escape(str(cache))}/[^`]+` in the cache "
            rf"`{re.escape(str(cache))}`: No space left on device",
            first,
        ), err
        assert err.endswith(
            "hint: free some space on that file system, or choose another cache folder with "
            "`--cache-dir` (or `--no-cache`)\n"
        ), err
        assert str(wheels) not in err
        assert _leftovers(cache) == []
        assert snapshot_tree(venv) == before

    def test_error_environment_read_only(
        self,
        small_disk: Callable[..., Path],
        venv_factory: Callable[..., Path],
        wheels: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        disk = small_disk("ro-env", 4096)
        venv = _venv_in(disk, venv_factory)
        before = snapshot_tree(venv)
        _read_only(disk)
        lock = _lock(tmp_path, wheels, "small")
        args = _install_args(lock, venv, tmp_path / "cache", "--no-index", "-f", str(wheels))
        code, err = _run(cli, *args)
        assert code == 1
        assert re.search(
            r"error: Install failed while starting the install: Read-only file system: "
            rf"`{re.escape(str(site_packages(venv)))}/{TXN_PREFIX}[0-9a-f]+` \(in the environment "
            rf"`{re.escape(str(venv))}`\); the environment was restored\n\n"
            r"hint: check that the environment is writable by this user\n$",
            err,
        ), err
        assert snapshot_tree(venv) == before

    def test_error_cache_read_only(
        self,
        small_disk: Callable[..., Path],
        venv_factory: Callable[..., Path],
        wheels: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        disk = small_disk("ro-cache", 1024)
        cache = disk / "cache"
        cache.mkdir(mode=0o700)
        _read_only(disk)
        venv = venv_factory()
        before = snapshot_tree(venv)
        lock = _lock(tmp_path, wheels, "small")
        code, err = _run(cli, *_install_args(lock, venv, cache, "--no-index", "-f", str(wheels)))
        assert code == 1
        assert re.search(
            rf"error: Cannot write `{re.escape(str(cache))}/[^`]+` in the cache "
            rf"`{re.escape(str(cache))}`: Read-only file system\n\n"
            r"hint: choose a cache folder this user can write with `--cache-dir` "
            r"\(or `--no-cache`\)\n$",
            err,
        ), err
        assert snapshot_tree(venv) == before

    def test_error_download_folder_full(
        self,
        small_disk: Callable[..., Path],
        wheels: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        """`safepip download -d DIR` onto a full disk: one message naming the file and the
        download folder, no partial file left there."""
        dest = small_disk("dl-disk", 1024) / "out"
        lock = _lock(tmp_path, wheels, "small", "noise")
        code, err = _run(
            cli,
            "download",
            "-q",
            "--no-audit",
            "-r",
            str(lock),
            "--no-index",
            "-f",
            str(wheels),
            "-d",
            str(dest),
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        assert code == 1
        name = next(wheels.glob("noise-*.whl")).name
        assert re.search(
            rf"error: Cannot write `{re.escape(str(dest))}/\.{re.escape(name)}\.\d+\.tmp` in the "
            rf"download folder `{re.escape(str(dest))}`: No space left on device\n\n"
            r"hint: free some space on that file system, or download to another folder with "
            r"`-d`\n$",
            err,
        ), err
        assert sorted(p.name for p in dest.iterdir()) == [next(wheels.glob("small-*.whl")).name]


# --- servers that compress, trickle or stall ---------------------------------------------------


class FaultyIndex(StaticIndex):
    """A `StaticIndex` whose file downloads misbehave on purpose, per filename:

    - `gzip`: the body is sent gzip-compressed (`Content-Encoding: gzip`, `Content-Length` of
      the compressed bytes), whatever the client asked for;
    - `stall[filename] = n`: `n` bytes of the body are sent, then nothing (until closed);
    - `trickle[filename] = seconds`: the body is sent in 64 KiB pieces, one every `seconds`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gzip: set[str] = set()
        self.stall: dict[str, int] = {}
        self.trickle: dict[str, float] = {}

    def _send(self, handler: Any, method: str, reply: Any) -> None:
        name = reply.filename
        if method != "GET" or name not in (self.gzip | set(self.stall) | set(self.trickle)):
            super()._send(handler, method, reply)
            return
        body = reply.body
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        if name in self.gzip:
            body = gzip.compress(body)
            handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            if name in self.stall:
                handler.wfile.write(body[: self.stall[name]])
                handler.wfile.flush()
                self._wait(30.0)
            elif name in self.trickle:
                for start in range(0, len(body), 1 << 16):
                    handler.wfile.write(body[start : start + (1 << 16)])
                    handler.wfile.flush()
                    if self._wait(self.trickle[name]):
                        break
            else:
                handler.wfile.write(body)
        except OSError:
            pass  # the client went away (it was killed, or gave up)
        handler.close_connection = True

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when the server is closing."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._closed:
                return True
            time.sleep(0.05)
        return self._closed


@pytest.fixture
def faulty_index() -> Iterator[FaultyIndex]:
    with FaultyIndex() as index:
        yield index


class TestServerFaults:
    def test_compressed_download_with_its_content_length(
        self,
        faulty_index: FaultyIndex,
        venv_factory: Callable[..., Path],
        wheels: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        """Issue 10 item 8: `Content-Length` of a gzip body is not the file's length; no false
        'cut short'. Downloads ask for the file's own bytes (`Accept-Encoding: identity`)."""
        faulty_index.add(next(wheels.glob("zeros-*.whl")))
        faulty_index.gzip.add(next(wheels.glob("zeros-*.whl")).name)
        venv = venv_factory()
        lock = _lock(tmp_path, wheels, "zeros")
        args = _install_args(lock, venv, tmp_path / "cache", "-i", faulty_index.url)
        code, err = _run(cli, *args)
        assert code == 0, err
        assert (site_packages(venv) / "zeros" / "data.bin").read_bytes() == bytes(3 << 20)
        downloads = [
            h
            for r, h in zip(faulty_index.requests, faulty_index.request_headers, strict=True)
            if r.path.endswith(".whl")
        ]
        assert [h.get("accept-encoding") for h in downloads] == ["identity"]

    def test_error_download_stalls(
        self,
        faulty_index: FaultyIndex,
        venv_factory: Callable[..., Path],
        wheels: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        """A server that stops sending mid-body: the message says it timed out and how far it
        got (it is retried once first); nothing partial stays in the cache."""
        wheel = next(wheels.glob("noise-*.whl"))
        faulty_index.add(wheel)
        faulty_index.stall[wheel.name] = 131_072
        venv = venv_factory()
        before = snapshot_tree(venv)
        lock = _lock(tmp_path, wheels, "noise")
        cache = tmp_path / "cache"
        args = _install_args(lock, venv, cache, "-i", faulty_index.url, "--timeout", "1")
        os.environ["SAFEPIP_NO_BACKOFF"] = "1"
        try:
            code, err = _run(cli, *args)
        finally:
            del os.environ["SAFEPIP_NO_BACKOFF"]
        assert code == 1
        size = wheel.stat().st_size
        assert err.endswith(
            f"error: Download of `{wheel.name}` timed out: the server stopped sending after "
            f"131072 of {size} bytes\n\n"
            "hint: retry, or raise `--timeout` for a slow server\n"
        ), err
        assert len([p for p in faulty_index.paths_requested() if p.endswith(".whl")]) == 2
        assert _leftovers(cache) == []
        assert snapshot_tree(venv) == before


# --- worker processes ------------------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _read_to_eof(streams: list[Any], out: list[bytes], seconds: float) -> bool:
    """Read the pipes until each reaches end-of-file; False if that takes over `seconds`."""
    import select

    fds = [s.fileno() for s in streams]
    deadline = time.monotonic() + seconds
    while fds:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select(fds, [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                out.append(chunk)
            else:
                fds.remove(fd)
    return True


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to find the workers")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="unpacking uses processes from 2 cores")
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGKILL", "SIGTERM", "Ctrl-C to the process group"],
)
def test_workers_never_outlive_safepip(
    signum: int,
    group: bool,
    faulty_index: FaultyIndex,
    venv_factory: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """Issue 10 item 7: safepip killed while its unpacking processes (and multiprocessing's fork
    server and resource tracker) run: all of them are gone within seconds, and the caller's
    captured stdout and stderr reach end-of-file (a CI step that captures them does not hang).
    Ctrl-C in a terminal signals the whole process group: the workers leave it to safepip (no
    traceback from them). After SIGTERM or SIGINT the download in flight stops at its next
    piece rather than running to its end (about 14 s at this server's pace)."""
    folder = tmp_path / "big"
    folder.mkdir()
    for name in ("b1", "b2", "b3", "slow"):
        wheel = build_wheel(folder, name, "1.0", files={f"{name}/data.bin": os.urandom(400_000)})
        faulty_index.add(wheel)
    faulty_index.trickle[next(folder.glob("slow-*.whl")).name] = 2.0
    lock = _lock(tmp_path, folder, "b1", "b2", "b3", "slow")
    venv = venv_factory()
    before = snapshot_tree(venv)
    args = _install_args(lock, venv, tmp_path / "cache", "-i", faulty_index.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safepip", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=group,
    )
    output: list[bytes] = []
    family: set[int] = set()
    try:
        # Wait for the fork server, the resource tracker and at least one unpacking process.
        deadline = time.monotonic() + 60
        while len(_descendants(proc.pid)) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the unpacking processes never started"
            time.sleep(0.05)
        time.sleep(0.3)
        family = _descendants(proc.pid)
        sent = time.monotonic()
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        streams = [proc.stdout, proc.stderr]
        assert _read_to_eof(streams, output, 20), "stdout/stderr still open 20 s after the kill"
        took = time.monotonic() - sent
        code = proc.wait(timeout=20)
        deadline = time.monotonic() + 10
        while (left := [p for p in family if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == [], "processes outlived safepip"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in family:  # only when the test failed: never leave them running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    text = b"".join(output).decode()
    assert "Traceback" not in text, text
    if signum != signal.SIGKILL:
        assert code == 128 + signum, text
        assert text.endswith(f"error: interrupted by {signal.Signals(signum).name}\n"), text
        assert took < 8, f"{took:.1f} s from the signal to the end of the output"
    assert snapshot_tree(venv) == before


def test_bytecode_compilers_never_outlive_safepip(
    venv_factory: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while `--compile` runs the target's `compileall` processes: they are stopped with
    safepip, which says the install itself was kept."""
    folder = tmp_path / "many"
    folder.mkdir()
    files = {f"many/m{i:04}.py": f"X = {i}\n" * 200 for i in range(3000)}
    build_wheel(folder, "many", "1.0", files=files)
    lock = _lock(tmp_path, folder, "many")
    venv = venv_factory()
    args = [*_install_args(lock, venv, tmp_path / "cache", "--no-index", "-f", str(folder))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "safepip", *args, "--compile"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while not family:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "compileall never started"
            family = {p for p in _descendants(proc.pid) if b"compileall" in _cmdline(p)}
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert [p for p in family if _alive(p)] == [], "compileall outlived safepip"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in family:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if proc.returncode == 0:
        pytest.skip("compiling finished before the signal")  # a very fast machine
    assert proc.returncode == 143, err
    assert err.endswith(
        "error: interrupted by SIGTERM; the install had already completed and was kept; not "
        "every file was compiled to bytecode\n"
    ), err
    assert (site_packages(venv) / "many-1.0.dist-info" / "RECORD").is_file()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


# --- the environment deleted under a running install ----------------------------------------


@pytest.mark.parametrize("when", ["while downloading", "during the install step"])
def test_error_environment_deleted_under_the_install(
    when: str,
    faulty_index: FaultyIndex,
    venv_factory: Callable[..., Path],
    wheels: Path,
    tmp_path: Path,
) -> None:
    """Issue 10 item 8: a venv deleted before or during the install step is reported, never
    recreated as a bare folder with the packages in it."""
    for wheel in wheels.glob("*.whl"):
        faulty_index.add(wheel)
    faulty_index.trickle[next(wheels.glob("noise-*.whl")).name] = 0.05
    venv = venv_factory()
    lock = _lock(tmp_path, wheels, "small", "noise")
    args = _install_args(lock, venv, tmp_path / "cache", "-i", faulty_index.url)
    env = {**os.environ, "SAFEPIP_TEST_SLOW_COMMIT": "0.01"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "safepip", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    site = site_packages(venv)

    def reached() -> bool:
        if when == "while downloading":
            return any(p.endswith(".whl") for p in faulty_index.paths_requested())
        return any(p.name.startswith(TXN_PREFIX) for p in site.iterdir())

    deadline = time.monotonic() + 60
    while not reached():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    for _ in range(50):  # safepip may be adding or removing files in it meanwhile
        shutil.rmtree(venv, ignore_errors=True)
        if not venv.exists():
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert err.endswith(
        f"error: The environment `{venv}` no longer exists (it was deleted during the install)"
        "\n\nhint: create it again and re-run the install\n"
    ), err
    assert not venv.exists()


def test_cache_write_error_survives_pickling() -> None:
    """Raised in unpacking processes, it crosses back to safepip whole."""
    import errno
    import pickle

    from safepip.fetch import CacheWriteError

    error = CacheWriteError("/c/tmp/x", "No space left on device", "/c", errno.ENOSPC)
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.hint) == (str(error), error.hint)


# --- leftovers and damaged entries in the cache ----------------------------------------------


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_leftovers_of_interrupted_runs_are_swept(
    faulty_index: FaultyIndex, venv_factory: Callable[..., Path], wheels: Path, tmp_path: Path
) -> None:
    """Issue 10 item 6: a run killed mid-download leaves a partial file; later runs remove such
    leftovers (and half-unpacked or half-removed folders) once they are older than two hours,
    and never one that a live run may still be writing."""
    wheel = next(wheels.glob("noise-*.whl"))
    faulty_index.add(wheel)
    faulty_index.trickle[wheel.name] = 0.2
    cache = tmp_path / "cache"
    lock = _lock(tmp_path, wheels, "noise")
    args = _install_args(lock, venv_factory(), cache, "-i", faulty_index.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safepip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not list((cache / "tmp").glob("dl-*.part")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    (partial,) = (cache / "tmp").glob("dl-*.part")
    shard = cache / "unpacked" / "v1" / "ab"
    shard.mkdir(parents=True)
    staging = shard / (".abcdef012345-" + "x1y2z3")
    (staging / "pkg").mkdir(parents=True)
    (staging / "pkg" / "m.py").write_text("")
    discard = shard / ".discard-ab12-999-1"
    discard.mkdir()
    fresh = cache / "tmp" / "dl-live.part"  # a concurrent run's download in progress
    fresh.write_bytes(b"x")
    page = cache / "http" / "index-pages" / ".tmp-abc.part"  # an index page being stored
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_bytes(b"<html")
    (cache / "tmp" / ".swept").touch()  # the last sweep: over an hour ago
    for old in (partial, staging, discard, page, cache / "tmp" / ".swept"):
        _age(old, 3 * 3600)
    faulty_index.trickle.clear()
    done = subprocess.run(
        [sys.executable, "-m", "safepip", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert not partial.exists()
    assert not staging.exists()
    assert not discard.exists()
    assert not page.exists()
    assert fresh.exists()


@pytest.mark.parametrize("damage", ["deleted", "garbled"])
def test_damaged_manifest_is_rebuilt_with_a_warning(
    damage: str,
    venv_factory: Callable[..., Path],
    wheels: Path,
    tmp_path: Path,
    cli: Cli,
) -> None:
    """Issue 10 item 6: an unpacked entry whose manifest is gone or garbled does not wedge later
    runs: it is discarded with a warning and unpacked again; the run after that is quiet."""
    cache = tmp_path / "cache"
    lock = _lock(tmp_path, wheels, "small")
    source = ("--no-index", "-f", str(wheels))
    assert _run(cli, *_install_args(lock, venv_factory(), cache, *source))[0] == 0
    (manifest,) = (cache / "unpacked").glob("v*/*/*/.safepip-manifest.json")
    if damage == "deleted":
        manifest.unlink()
    else:
        manifest.write_text('{"format": 1, "entries": [["small/__init__.py", ')
    venv = venv_factory()
    code, err = _run(cli, *_install_args(lock, venv, cache, *source))
    assert code == 0, err
    wheel = next(wheels.glob("small-*.whl")).name
    assert (
        f"warning: The unpacked cache entry for `{wheel}` is damaged (`{manifest.parent}`); "
        "unpacking it again from the verified archive\n"
    ) in err
    assert (site_packages(venv) / "small" / "__init__.py").read_text() == "X = 1\n"
    code, err = _run(cli, *_install_args(lock, venv_factory(), cache, *source))
    assert code == 0
    assert "warning: The unpacked" not in err


def test_two_runs_replace_one_damaged_entry_at_once(
    venv_factory: Callable[..., Path], wheels: Path, tmp_path: Path
) -> None:
    """Both runs find the same damaged tree and replace it: neither fails with `Directory not
    empty` (the rename race), repeated to catch the window."""
    cache = tmp_path / "cache"
    lock = _lock(tmp_path, wheels, "small", "zeros")
    source = ("--no-index", "-f", str(wheels))
    first = subprocess.run(
        [sys.executable, "-m", "safepip", *_install_args(lock, venv_factory(), cache, *source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    for _ in range(3):
        for manifest in (cache / "unpacked").glob("v*/*/*/.safepip-manifest.json"):
            manifest.write_text("{")
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "safepip",
                    *_install_args(lock, venv_factory(), cache, *source),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert "Traceback" not in err


def test_concurrent_runs_share_one_cache(
    venv_factory: Callable[..., Path], wheels: Path, tmp_path: Path
) -> None:
    """Issue 10: the cache stays safe for any number of concurrent runs. Four installs of one
    lock into four environments start together on an empty cache: each downloads, unpacks and
    publishes the same entries at the same time; all succeed, every environment verifies, and
    no temporary file is left."""
    cache = tmp_path / "cache"
    lock = _lock(tmp_path, wheels, "small", "noise", "zeros")
    venvs = [venv_factory() for _ in range(4)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "safepip",
                *_install_args(lock, venv, cache, "--no-index", "-f", str(wheels)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for venv in venvs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "warning: The unpacked" not in err
    for venv in venvs:
        check = subprocess.run(
            [sys.executable, "-m", "safepip", "verify", "--python", str(venv), "-r", str(lock)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
    assert _leftovers(cache) == []
