"""How a verified file in the unpacked cache becomes a file in the target: the link modes.

`reflink` (the default) and `copy` give the target its own inode, so an edit in one
environment never reaches another environment or the cache. `hardlink` shares the cache's
inode with every environment that installed the file: fastest, but an edit anywhere changes it
everywhere; the cache notices the change (its ctime moves) and unpacks the wheel again before
using it for another install (see `fetch.check_unpacked`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, NoReturn

from safepip import signals

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from concurrent.futures import Future, ThreadPoolExecutor

FICLONE = 0x40049409
"""Linux `ioctl` that makes `dest` share `source`'s blocks copy-on-write (btrfs, XFS, bcachefs)."""

_NOT_SUPPORTED = {
    errno.EOPNOTSUPP,
    errno.ENOTTY,
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOSYS,
    errno.EPERM,
    errno.EBADF,
}


_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO}


class LinkMode(enum.Enum):
    """`--link-mode`, with uv's names."""

    REFLINK = "reflink"
    """Copy-on-write clone where the file system supports it, else a copy."""
    COPY = "copy"
    HARDLINK = "hardlink"


DEFAULT_LINK_MODE = LinkMode.REFLINK


PARALLEL_SIZE = 64 * 1024
"""Files this large are copied by helper threads while the calling thread copies the small
ones: a large copy releases the GIL for long, many small ones would only pass it around."""


SHARE_FILES = 200
"""An install that copies at least this many files shares them with one helper process
(`Linker.place_shared`): each file costs a few short system calls, and threads of one
interpreter pass its lock back and forth between such calls instead of running them side by
side (measured: two threads copy the large lock's 18,214 files no faster than one, two
processes in 55% of the time)."""

_CHUNK_FILES = 32
"""At most this many files per share of the work (`place_shared`)..."""
_CHUNK_BYTES = 1 << 20
"""...and about this many bytes: a larger file is a share of its own."""
_FILE_COST = 16 * 1024
"""What one file costs beyond its bytes, in bytes copied (opening, creating, closing)."""
_MAX_CHUNKS = 4096
"""Shares are handed out through a pipe, 4 bytes each, written before either process reads:
this many fit in any pipe's buffer (16 KiB; Linux gives 64 KiB)."""


_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class PlaceFailed(Exception):
    """The helper process of `Linker.place_shared` stopped without placing its files."""


class Linker:
    """Places files for one install, remembering what the file system turned out to support.

    Close it (or use it as a context manager) when done: `place_many` keeps a few threads.
    """

    def __init__(self, mode: LinkMode) -> None:
        self.mode = mode
        self.reflink = mode is LinkMode.REFLINK and hasattr(os, "O_CLOEXEC")
        self.hardlink = mode is LinkMode.HARDLINK
        self.copy_range = hasattr(os, "copy_file_range")
        self.linked = False
        """Whether any file was hard-linked (the cache then shares inodes with the target)."""
        self.failed = ""
        """The destination of the last failed `place_many`, for the error message."""
        self.workers = min(os.cpu_count() or 1, 4)
        self._pool: ThreadPoolExecutor | None = None
        self._at = -1
        """The index of the pair being placed by `_take`."""

    def __enter__(self) -> Linker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def place_many(
        self,
        pairs: Sequence[tuple[str, str]],
        sizes: Sequence[int],
        executable: Sequence[bool] | None = None,
    ) -> None:
        """`place` each `(source, dest)` (`sizes`: the sources' sizes; with `executable`, their
        executable bits, and both are used as `place`'s `size` and `executable`); a `dest` that
        exists is replaced (the caller vouches that nothing there is anyone else's).

        When copying, large files go to a few helper threads (the copy system calls release
        the GIL) while this thread places the small ones, then helps with the large; unless
        two pairs share a destination, whose order then matters. Before this returns or
        raises every thread has stopped, also on SIGINT or SIGTERM (held back meanwhile), so
        the caller's rollback never races a thread still creating files. The first error is
        raised, with `failed` naming its destination.
        """
        self.failed = ""
        items = (
            [(s, d, n, x) for (s, d), n, x in zip(pairs, sizes, executable, strict=True)]
            if executable is not None
            else [(s, d, -1, False) for s, d in pairs]
        )
        large = (
            [item for item, n in zip(items, sizes, strict=True) if n >= PARALLEL_SIZE]
            if self.workers > 1 and not self.hardlink
            else []
        )
        if not large or len({dest for _, dest in pairs}) != len(pairs):
            self._place_each(iter(items), None)
            return
        small = [item for item, n in zip(items, sizes, strict=True) if n < PARALLEL_SIZE]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(
                max_workers=self.workers - 1, thread_name_prefix="safepip-place"
            )
        pool = self._pool
        shared = iter(large)  # one iterator: each pair is taken by exactly one thread
        stop = threading.Event()
        helpers: list[Future[None]] = []
        try:
            with signals.deferred() as early:
                for _ in range(self.workers - 1):
                    helpers.append(pool.submit(self._place_each, shared, stop))
            if early:
                raise signals.Interrupted(early[0])
            self._place_each(iter(small), stop)
            self._place_each(shared, stop)
        except BaseException:
            # Stop the helpers and wait for every one of them, whatever arrives meanwhile.
            stop.set()
            with signals.deferred():
                self._pool = None
                pool.shutdown(wait=True)
            raise
        with signals.deferred() as arrived:
            errors = [helper.exception() for helper in helpers]  # waits for each
        for error in errors:
            if error is not None:
                raise error
        if arrived:
            raise signals.Interrupted(arrived[0])

    def can_share(self, count: int) -> bool:
        """Whether `place_shared` would share `count` files with a helper process: copies (not
        hard links) of many files, on a machine with more than one core, from a process with
        no other thread (a forked child gets only the forking thread; whatever another thread
        held would stay held there)."""
        return (
            count >= SHARE_FILES
            and not self.hardlink
            and self.workers > 1
            and hasattr(os, "fork")
            and threading.active_count() == 1
        )

    def place_shared(
        self,
        pairs: Sequence[tuple[str, str]],
        sizes: Sequence[int],
        first: Callable[[], None],
        *,
        executable: Sequence[bool] | None = None,
        delay: float = 0.0,
    ) -> None:
        """`place` each `(source, dest)`, shared with one forked helper process; this process
        runs `first` (which writes files of its own) and then takes its part. The destinations
        must be distinct (their order then does not matter) and must not exist.

        The work is cut into shares of a few files (largest first) that both processes take
        from one pipe as they go, so a process that gets less of the CPU takes fewer. The
        helper holds every file descriptor this process had, the environment's lock among
        them: when this process is killed (SIGKILL), the helper stops at its next share, and
        no other run gets the lock (to recover the install) until it has. Before this returns
        or raises, the helper has exited (it is killed on an error here, SIGINT or SIGTERM).
        The first error is raised, with `failed` naming its destination. `executable`: as
        for `place_many`. `delay`: seconds slept before each file (the fault tests'
        `SAFEPIP_TEST_SLOW_COMMIT`).
        """
        self.failed = ""
        chunks = _chunks(sizes)
        queue, feed = os.pipe()
        try:
            os.write(feed, b"".join(i.to_bytes(4, "little") for i in range(len(chunks))))
        finally:
            os.close(feed)
        results, report = os.pipe()
        parent = os.getpid()
        try:
            with signals.deferred() as early:  # held in this process; the helper resets them
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the helper process (covered via subprocesses)
                    os.close(results)
                    self._helper(pairs, sizes, executable, chunks, queue, report, parent, delay)
        except BaseException:
            for fd in (queue, results, report):
                os.close(fd)
            raise
        os.close(report)
        try:
            if early:
                raise signals.Interrupted(early[0])
            first()
            self._at = -1
            try:
                self._take(pairs, sizes, executable, chunks, queue, delay, 0)
            except BaseException:
                if self._at >= 0:
                    self.failed = pairs[self._at][1]
                raise
            message = _read_to_end(results)  # until the helper exits (or reports an error)
        except BaseException:
            with signals.deferred():
                os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still the helper's
                os.waitpid(pid, 0)
                os.close(queue)
                os.close(results)
            raise
        with signals.deferred() as arrived:
            _, status = os.waitpid(pid, 0)
            os.close(queue)
            os.close(results)
        if message:
            index, number, text = message.decode("utf-8", "surrogateescape").split("\0", 2)
            self.failed = pairs[int(index)][1] if int(index) >= 0 else ""
            if int(number):
                raise OSError(int(number), text, self.failed or None)
            raise PlaceFailed(text)
        if status:
            raise PlaceFailed(f"the helper process copying files stopped ({_status(status)})")
        if arrived:
            raise signals.Interrupted(arrived[0])

    def _helper(
        self,
        pairs: Sequence[tuple[str, str]],
        sizes: Sequence[int],
        executable: Sequence[bool] | None,
        chunks: Sequence[tuple[int, int]],
        queue: int,
        report: int,
        parent: int,
        delay: float,
    ) -> NoReturn:  # pragma: no cover - runs in the forked helper process
        """The forked helper of `place_shared`: takes shares until none is left, reports the
        first error on `report`, and exits without running any clean-up of the parent's."""
        code = 1
        try:
            for s in signals.HANDLED:
                signal.signal(s, signal.SIG_DFL)  # stop at once; the parent rolls back
            self._at = -1
            self._take(pairs, sizes, executable, chunks, queue, delay, parent)
            code = 0
        except BaseException as exc:
            number = exc.errno if isinstance(exc, OSError) and exc.errno else 0
            text = (exc.strerror if number and isinstance(exc, OSError) else None) or str(exc)
            with contextlib.suppress(BaseException):
                message = f"{self._at}\0{number}\0{text}"
                os.write(report, message.encode("utf-8", "surrogateescape"))
        finally:
            os._exit(code)

    def _take(
        self,
        pairs: Sequence[tuple[str, str]],
        sizes: Sequence[int],
        executable: Sequence[bool] | None,
        chunks: Sequence[tuple[int, int]],
        queue: int,
        delay: float,
        parent: int,
    ) -> None:
        """Place the pairs of each share read from `queue` until it is empty. `parent`: in the
        helper, the pid of the process that forked it; the helper exits once that is gone."""
        place = self.place
        read = os.read
        while claim := read(queue, 4):
            if parent and os.getppid() != parent:
                os._exit(1)  # the install's process was killed: stop writing its environment
            start, end = chunks[int.from_bytes(claim, "little")]
            for i in range(start, end):
                self._at = i
                source, dest = pairs[i]
                if delay:
                    time.sleep(delay)
                    if parent and os.getppid() != parent:
                        os._exit(1)
                size, x = (sizes[i], executable[i]) if executable is not None else (-1, False)
                try:
                    place(source, dest, size, x)  # never writes through: O_EXCL
                except FileExistsError:
                    os.unlink(dest)
                    place(source, dest, size, x)

    def _place_each(
        self, items: Iterator[tuple[str, str, int, bool]], stop: threading.Event | None
    ) -> None:
        place = self.place
        dest = ""
        try:
            for source, dest, size, x in items:
                try:
                    place(source, dest, size, x)  # never writes through: O_EXCL, or a new link
                except FileExistsError:
                    os.unlink(dest)
                    place(source, dest, size, x)
                if stop is not None and stop.is_set():
                    return
        except BaseException:
            if not self.failed:
                self.failed = dest
            if stop is not None:
                stop.set()
            raise

    def place(self, source: str, dest: str, size: int = -1, executable: bool = False) -> None:
        """Create `dest` (which must not exist) with `source`'s bytes and executable bit.

        With `size` (not -1), `size` and `executable` are the source's as the caller knows them
        (the cache's manifest, whose stamps were just checked against the file): copied
        without asking the file system again (one `fstat` less, of tens of thousands)."""
        if self.hardlink:
            try:
                os.link(source, dest)
                self.linked = True
                return
            except OSError as exc:
                if exc.errno in _DISK_ERRORS or isinstance(exc, FileExistsError):
                    raise
                self.hardlink = False  # another file system, or links not allowed: copy
        src = os.open(source, _READ)
        try:
            if size < 0:
                info = os.fstat(src)
                size, executable = info.st_size, bool(info.st_mode & 0o111)
            dst = os.open(dest, _CREATE, 0o777 if executable else 0o666)
            try:
                self._copy(src, dst, size)
            except BaseException:
                os.close(dst)
                dst = -1
                os.unlink(dest)
                raise
            finally:
                if dst >= 0:
                    os.close(dst)
        finally:
            os.close(src)

    def _copy(self, src: int, dst: int, size: int) -> None:
        if self.reflink:
            import fcntl

            try:
                fcntl.ioctl(dst, FICLONE, src)
                return
            except OSError as exc:
                if exc.errno not in _NOT_SUPPORTED:
                    raise
                self.reflink = False  # this file system has no reflinks: copy from now on
        offset = 0
        if self.copy_range and size:
            try:
                while offset < size:
                    done = os.copy_file_range(src, dst, size - offset, offset, offset)
                    if done == 0:
                        break
                    offset += done
            except OSError as exc:
                if exc.errno not in _NOT_SUPPORTED:
                    raise
                self.copy_range = False
        while offset < size or not size:
            chunk = os.pread(src, min(1 << 20, max(size - offset, 1 << 16)), offset)
            if not chunk:
                break
            os.pwrite(dst, chunk, offset)
            offset += len(chunk)


def _chunks(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Cut `range(len(sizes))` into consecutive shares of at most `_CHUNK_FILES` files and
    about `_CHUNK_BYTES` bytes, at most `_MAX_CHUNKS` of them, largest first (a file costs
    about as much as copying `_FILE_COST` bytes), so that the last shares taken are small and
    both processes finish together."""
    most = max(_CHUNK_FILES, -(-len(sizes) // _MAX_CHUNKS))
    chunks: list[tuple[int, int, int]] = []
    start = 0
    total = 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= most or total + size > _CHUNK_BYTES):
            chunks.append((start, i, total))
            start, total = i, 0
        total += size + _FILE_COST
    if start < len(sizes):
        chunks.append((start, len(sizes), total))
    while len(chunks) > _MAX_CHUNKS:  # many files of a megabyte or more: pair shares up
        merged = [
            (a[0], b[1], a[2] + b[2]) for a, b in zip(chunks[::2], chunks[1::2], strict=False)
        ]
        chunks = merged + chunks[len(merged) * 2 :]
    chunks.sort(key=lambda chunk: -chunk[2])
    return [(start, end) for start, end, _ in chunks]


def _read_to_end(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
