"""Tests for the link modes and for placing many files at once in threads (issue 14)."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

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


def test_many_files_are_placed_by_several_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = make_sources(tmp_path / "src", 200)
    out = tmp_path / "out"
    out.mkdir()
    seen: set[str] = set()
    real = Linker.place

    def recording(self: Linker, source: str, dest: str) -> None:
        seen.add(threading.current_thread().name)
        time.sleep(0.001)  # long enough for every thread to take some
        real(self, source, dest)

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

        def place(linker: Linker, source: str, dest: str) -> None:
            with self.lock:
                if self.closed:
                    self.late.append(dest)
                self.active += 1
            try:
                time.sleep(0.002)
                fail(dest)
                real(linker, source, dest)
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
