"""How a verified file in the unpacked cache becomes a file in the target: the link modes.

`reflink` (the default) and `copy` give the target its own inode, so an edit in one
environment never reaches another environment or the cache. `hardlink` shares the cache's
inode with every environment that installed the file: fastest, but an edit anywhere changes it
everywhere; the cache notices the change (its ctime moves) and unpacks the wheel again before
using it for another install (see `fetch.check_unpacked`).
"""

from __future__ import annotations

import enum
import errno
import os
import threading
from typing import TYPE_CHECKING

from safepip import signals

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
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

    def __enter__(self) -> Linker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def place_many(self, pairs: Sequence[tuple[str, str]], sizes: Sequence[int]) -> None:
        """`place` each `(source, dest)` (`sizes`: the sources' sizes); a `dest` that exists is
        replaced (the caller vouches that nothing there is anyone else's).

        When copying, large files go to a few helper threads (the copy system calls release
        the GIL) while this thread places the small ones, then helps with the large; unless
        two pairs share a destination, whose order then matters. Before this returns or
        raises every thread has stopped, also on SIGINT or SIGTERM (held back meanwhile), so
        the caller's rollback never races a thread still creating files. The first error is
        raised, with `failed` naming its destination.
        """
        self.failed = ""
        large = (
            [pair for pair, size in zip(pairs, sizes, strict=True) if size >= PARALLEL_SIZE]
            if self.workers > 1 and not self.hardlink
            else []
        )
        if not large or len({dest for _, dest in pairs}) != len(pairs):
            self._place_each(iter(pairs), None)
            return
        small = [pair for pair, size in zip(pairs, sizes, strict=True) if size < PARALLEL_SIZE]
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

    def _place_each(self, pairs: Iterator[tuple[str, str]], stop: threading.Event | None) -> None:
        place = self.place
        dest = ""
        try:
            for source, dest in pairs:
                try:
                    place(source, dest)  # never writes through: O_EXCL, or a new link
                except FileExistsError:
                    os.unlink(dest)
                    place(source, dest)
                if stop is not None and stop.is_set():
                    return
        except BaseException:
            if not self.failed:
                self.failed = dest
            if stop is not None:
                stop.set()
            raise

    def place(self, source: str, dest: str) -> None:
        """Create `dest` (which must not exist) with `source`'s bytes and executable bit."""
        if self.hardlink:
            try:
                os.link(source, dest)
                self.linked = True
                return
            except OSError as exc:
                if exc.errno in _DISK_ERRORS or isinstance(exc, FileExistsError):
                    raise
                self.hardlink = False  # another file system, or links not allowed: copy
        src = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(src)
            dst = os.open(
                dest,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                0o777 if info.st_mode & 0o111 else 0o666,
            )
            try:
                self._copy(src, dst, info.st_size)
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
