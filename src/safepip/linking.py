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


class Linker:
    """Places files for one install, remembering what the file system turned out to support."""

    def __init__(self, mode: LinkMode) -> None:
        self.mode = mode
        self.reflink = mode is LinkMode.REFLINK and hasattr(os, "O_CLOEXEC")
        self.hardlink = mode is LinkMode.HARDLINK
        self.copy_range = hasattr(os, "copy_file_range")
        self.linked = False
        """Whether any file was hard-linked (the cache then shares inodes with the target)."""

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
