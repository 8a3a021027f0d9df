"""Tests for the link modes and for placing many files at once in threads (issue 14)."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from safepip import linking, signals
from safepip.linking import Linker, LinkMode

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


@pytest.fixture(autouse=True)
def every_file_is_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test files, shared among threads as large ones are."""
    monkeypatch.setattr(linking, "PARALLEL_SIZE", 1000)


def with_sizes(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[int]]:
    return pairs, [os.stat(source).st_size for source, _ in pairs]


def make_sources(folder: Path, count: int) -> list[tuple[str, bytes, bool]]:
    folder.mkdir()
    made = []
    for i in range(count):
        data = (f"file {i}\n" * (i % 7 + 1)).encode() + os.urandom(i % 3 * 70_000)
        path = folder / f"f{i}"
        path.write_bytes(data)
        executable = i % 5 == 0
        if executable:
            path.chmod(0o755)
        made.append((str(path), data, executable))
    return made


@pytest.mark.parametrize("mode", list(LinkMode))
def test_place_many_puts_every_file_in_place(tmp_path: Path, mode: LinkMode) -> None:
    sources = make_sources(tmp_path / "src", 150)
    out = tmp_path / "out"
    out.mkdir()
    pairs = [(src, str(out / f"d{i}")) for i, (src, _, _) in enumerate(sources)]
    # One destination exists already (put there earlier in the install): it is replaced.
    (out / "d3").write_bytes(b"earlier")
    with Linker(mode) as linker:
        linker.place_many(*with_sizes(pairs))
    for (src, data, executable), (_, dest) in zip(sources, pairs, strict=True):
        with open(dest, "rb") as fh:
            assert fh.read() == data
        assert bool(os.stat(dest).st_mode & 0o111) == executable
        shared = os.stat(dest).st_ino == os.stat(src).st_ino
        assert shared == (mode is LinkMode.HARDLINK)
    assert linker.linked == (mode is LinkMode.HARDLINK)


def test_sizes_and_executable_bits_given_are_used_without_an_fstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the sources' sizes and executable bits given (an install has them from the cache's
    manifests, checked against each file just before), each file is copied with them, without
    an `fstat` of its own (issue 14): here the bits given are the opposite of the files'."""
    sources = make_sources(tmp_path / "src", 60)
    out = tmp_path / "out"
    out.mkdir()
    pairs, sizes = with_sizes([(s, str(out / f"d{i}")) for i, (s, _, _) in enumerate(sources)])
    fstats: list[int] = []
    real_fstat = os.fstat

    def counting(fd: int) -> os.stat_result:
        fstats.append(fd)
        return real_fstat(fd)

    monkeypatch.setattr(os, "fstat", counting)
    with Linker(LinkMode.COPY) as linker:
        linker.workers = 3
        linker.place_many(pairs, sizes, [not x for _, _, x in sources])
    assert fstats == []
    monkeypatch.undo()
    for (_, data, x), (_, dest) in zip(sources, pairs, strict=True):
        with open(dest, "rb") as fh:
            assert fh.read() == data
        assert bool(os.stat(dest).st_mode & 0o111) is not x


def test_many_files_are_placed_by_several_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = make_sources(tmp_path / "src", 200)
    out = tmp_path / "out"
    out.mkdir()
    seen: set[str] = set()
    real = Linker.place

    def recording(self: Linker, source: str, dest: str, *known: Any) -> None:
        seen.add(threading.current_thread().name)
        time.sleep(0.001)  # long enough for every thread to take some
        real(self, source, dest, *known)

    monkeypatch.setattr(Linker, "place", recording)
    with Linker(LinkMode.COPY) as linker:
        linker.workers = 3
        linker.place_many(
            *with_sizes([(s, str(out / f"d{i}")) for i, (s, _, _) in enumerate(sources)])
        )
    assert len(seen) == 3
    assert len(os.listdir(out)) == 200


def test_a_destination_named_twice_is_placed_in_order(tmp_path: Path) -> None:
    """Two files for one destination: the later one wins, as when wheels are installed one
    after the other, so such a batch is not shared among threads."""
    sources = make_sources(tmp_path / "src", 100)
    out = tmp_path / "out"
    out.mkdir()
    pairs = [(s, str(out / f"d{i}")) for i, (s, _, _) in enumerate(sources)]
    pairs.append((sources[7][0], pairs[3][1]))
    with Linker(LinkMode.COPY) as linker:
        linker.place_many(*with_sizes(pairs))
    assert (out / "d3").read_bytes() == sources[7][1]


class Tracker:
    """Counts places in progress, and records any that starts after `closed` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Callable[[str], None]) -> None:
        self.active = 0
        self.lock = threading.Lock()
        self.closed = False
        self.late: list[str] = []
        real = Linker.place

        def place(linker: Linker, source: str, dest: str, *known: Any) -> None:
            with self.lock:
                if self.closed:
                    self.late.append(dest)
                self.active += 1
            try:
                time.sleep(0.002)
                fail(dest)
                real(linker, source, dest, *known)
            finally:
                with self.lock:
                    self.active -= 1

        monkeypatch.setattr(Linker, "place", place)


def test_an_error_in_one_thread_stops_them_all_before_it_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = make_sources(tmp_path / "src", 300)
    out = tmp_path / "out"
    out.mkdir()
    pairs = [(s, str(out / f"d{i}")) for i, (s, _, _) in enumerate(sources)]
    bad = pairs[40][1]

    def fail(dest: str) -> None:
        if dest == bad:
            raise OSError(errno.ENOSPC, "No space left on device")

    tracker = Tracker(monkeypatch, fail)
    linker = Linker(LinkMode.COPY)
    linker.workers = 3
    with pytest.raises(OSError, match="No space left"):
        linker.place_many(*with_sizes(pairs))
    tracker.closed = True
    assert tracker.active == 0
    assert linker.failed == bad
    placed = len(os.listdir(out))
    assert placed < 100  # the others stopped at their next file
    time.sleep(0.05)
    assert tracker.late == []
    assert len(os.listdir(out)) == placed
    linker.close()


def test_a_signal_stops_every_thread_before_it_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT while files are placed in threads: when `Interrupted` leaves `place_many`, no
    thread is still creating files (the rollback that follows must not race one)."""
    sources = make_sources(tmp_path / "src", 300)
    out = tmp_path / "out"
    out.mkdir()
    pairs = [(s, str(out / f"d{i}")) for i, (s, _, _) in enumerate(sources)]
    trigger = pairs[60][1]

    def fail(dest: str) -> None:
        if dest == trigger:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread's handler

    tracker = Tracker(monkeypatch, fail)
    linker = Linker(LinkMode.COPY)
    linker.workers = 3

    def place_and_wait() -> None:
        linker.place_many(*with_sizes(pairs))
        time.sleep(1)  # the signal must have arrived by now

    with signals.handled(), pytest.raises(signals.Interrupted):
        place_and_wait()
    tracker.closed = True
    assert tracker.active == 0
    placed = len(os.listdir(out))
    time.sleep(0.05)
    assert tracker.late == []
    assert len(os.listdir(out)) == placed
    linker.close()


def test_copy_without_copy_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = make_sources(tmp_path / "src", 40)

    def unsupported(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    out = tmp_path / "out"
    out.mkdir()
    with Linker(LinkMode.COPY) as linker:
        linker.place_many(
            *with_sizes([(s, str(out / f"d{i}")) for i, (s, _, _) in enumerate(sources)])
        )
        assert not linker.copy_range
    for i, (_, data, _) in enumerate(sources):
        assert (out / f"d{i}").read_bytes() == data


# --- sharing the files with a helper process (`Linker.place_shared`) -------------------------

SHARED_SCRIPT = """
import errno, json, os, signal, sys, time
from safepip import linking, signals
from safepip.linking import Linker, LinkMode

sources, out, log, fail_in, fail_how, delay, invert = sys.argv[1:8]
parent = os.getpid()
real = Linker.place
count = [0]

def place(linker, source, dest, *known):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{os.getpid()} {dest}\\n".encode())
    os.close(fd)
    here = "parent" if os.getpid() == parent else "helper"
    count[0] += 1
    if fail_in == here and count[0] == 5:  # this process's 5th file
        if fail_how == "SIGINT":
            os.kill(parent, signal.SIGINT)
        else:
            raise OSError(errno.ENOSPC, "No space left on device", dest)
    real(linker, source, dest, *known)

Linker.place = place
names = sorted(os.listdir(sources))
pairs = [(os.path.join(sources, n), os.path.join(out, n)) for n in names]
sizes = [os.stat(s).st_size for s, _ in pairs]

def first():
    with open(os.path.join(out, "written-first"), "x") as fh:
        fh.write(str(os.getpid()))
    if fail_in == "first":
        raise OSError(errno.EROFS, "Read-only file system", fh.name)

linker = Linker(LinkMode.COPY)
result = {"parent": parent, "can_share": linker.can_share(len(pairs))}
try:
    with signals.handled():
        given = [not os.access(s, os.X_OK) for s, _ in pairs] if invert else None
        linker.place_shared(pairs, sizes, first, executable=given, delay=float(delay))
except BaseException as exc:
    result["error"] = f"{type(exc).__name__}: {exc}"
    result["filename"] = getattr(exc, "filename", None)
    result["failed"] = linker.failed
result["placed"] = len(os.listdir(out))
try:
    os.waitpid(-1, os.WNOHANG)
    result["children"] = "left"
except ChildProcessError:
    result["children"] = "none"
time.sleep(0.2)
result["placed_later"] = len(os.listdir(out))
print(json.dumps(result))
"""


def run_shared(
    tmp_path: Path,
    count: int,
    *,
    fail_in: str = "",
    fail_how: str = "",
    delay: float = 0.0,
    invert: bool = False,
) -> tuple[dict[str, Any], list[tuple[int, str]], list[tuple[str, bytes, bool]]]:
    """`place_shared` in a fresh interpreter (a fork of this one would copy pytest): `count`
    files, failing in the `parent` or the `helper` at its 5th file (`fail_how`: an error, or
    SIGINT), or in `first`. `invert`: the executable bits given are the opposite of the
    files'."""
    import json
    import subprocess
    import sys

    sources = make_sources(tmp_path / "src", count)
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "log"
    script = tmp_path / "shared.py"
    script.write_text(SHARED_SCRIPT)
    argv = [str(script), str(tmp_path / "src"), str(out), str(log), fail_in, fail_how, str(delay)]
    argv.append("invert" if invert else "")
    done = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = log.read_text().splitlines() if log.exists() else []
    placed = [(int(pid), dest) for pid, dest in (line.split(" ", 1) for line in lines)]
    return json.loads(done.stdout), placed, sources


def test_place_shared_puts_every_file_in_place_from_two_processes(tmp_path: Path) -> None:
    # (a millisecond before each file: this process cannot take every share before the helper
    # has started, however busy the machine)
    result, placed, sources = run_shared(tmp_path, 400, delay=0.001)
    assert result["can_share"] is True
    assert "error" not in result
    assert result["children"] == "none"
    out = tmp_path / "out"
    for i, (_, data, executable) in enumerate(sources):
        dest = out / f"f{i}"
        assert dest.read_bytes() == data
        assert bool(dest.stat().st_mode & 0o111) == executable
        assert dest.stat().st_ino != os.stat(sources[i][0]).st_ino
    # `first` ran in the installing process; both processes placed files, each file once.
    assert (out / "written-first").read_text() == str(result["parent"])
    by = {pid for pid, _ in placed}
    assert len(by) == 2
    assert result["parent"] in by
    assert sorted(dest for _, dest in placed) == sorted(str(out / f"f{i}") for i in range(400))


def test_place_shared_uses_the_executable_bits_given(tmp_path: Path) -> None:
    """Both processes copy with the sizes and executable bits given (no `fstat` of each file):
    here bits opposite to the files' (issue 14)."""
    result, placed, sources = run_shared(tmp_path, 400, delay=0.001, invert=True)
    assert "error" not in result
    assert len({pid for pid, _ in placed}) == 2
    for i, (_, data, executable) in enumerate(sources):
        dest = tmp_path / "out" / f"f{i}"
        assert dest.read_bytes() == data
        assert bool(dest.stat().st_mode & 0o111) is not executable


def test_few_files_or_hard_links_are_not_shared(tmp_path: Path) -> None:
    assert not Linker(LinkMode.COPY).can_share(linking.SHARE_FILES - 1)
    assert not Linker(LinkMode.HARDLINK).can_share(linking.SHARE_FILES)
    one_core = Linker(LinkMode.COPY)
    one_core.workers = 1
    assert not one_core.can_share(linking.SHARE_FILES)
    # Another thread of this process: a fork would copy whatever that thread holds.
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not Linker(LinkMode.COPY).can_share(linking.SHARE_FILES)
    finally:
        release.set()
        other.join()


@pytest.mark.parametrize("where", ["helper", "parent", "first"])
def test_an_error_anywhere_stops_the_helper_before_it_is_raised(tmp_path: Path, where: str) -> None:
    """A full disk met by the helper, by this process or while writing its own files: the
    error names the file, and when it leaves `place_shared` the helper has exited (nothing is
    placed later, no child is left)."""
    result, placed, _ = run_shared(tmp_path, 300, fail_in=where, delay=0.002)
    if where == "first":
        written = tmp_path / "out" / "written-first"
        assert result["error"] == f"OSError: [Errno 30] Read-only file system: '{written}'"
        assert result["failed"] == ""
    else:
        pids = {pid for pid, _ in placed}
        failing = result["parent"] if where == "parent" else next(iter(pids - {result["parent"]}))
        bad = [dest for pid, dest in placed if pid == failing][4]
        assert result["error"] == f"OSError: [Errno 28] No space left on device: '{bad}'"
        assert result["failed"] == bad
        assert not os.path.exists(bad)
    assert result["children"] == "none"
    assert result["placed_later"] == result["placed"]
    assert result["placed"] < 300


def test_a_signal_stops_the_helper_before_it_is_raised(tmp_path: Path) -> None:
    result, _, _ = run_shared(tmp_path, 300, fail_in="parent", fail_how="SIGINT", delay=0.002)
    assert str(result.get("error", "")).startswith("Interrupted"), result
    assert result["children"] == "none"
    assert result["placed_later"] == result["placed"]
    assert result["placed"] < 300
