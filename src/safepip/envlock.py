"""One safepip at a time per environment: the lock held from reading the installed state to the
commit, and the message a second run shows while it waits.

The lock file lives outside the environment (an install leaves nothing of safepip's behind), in
a per-user folder of the temporary directory that only its owner can write: a shared, writable
lock folder would let another user plant a symlink where safepip opens its lock file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from safepip.errors import SafepipError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from safepip.target import Target


class LockError(SafepipError):
    """The environment lock cannot be taken."""


# Locks this process holds, by key, with how to release each and how many times it entered
# them: the install takes the lock for the whole run and the install step or a recovery inside
# it enter it again.
_held: dict[str, tuple[Callable[[], None], int]] = {}


def environment_key(target: Target) -> str:
    """Which environment a lock is for: the real path of its site folder."""
    return os.path.realpath(target.paths.purelib)


def lock_folder() -> Path:
    """`<tmp>/safepip-<uid>/locks`, created private; refused when someone else owns it or can
    write it."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = Path(tempfile.gettempdir()) / f"safepip-{uid}"
    folder = base / "locks"
    for path in (base, folder):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        info = path.lstat()
        if hasattr(os, "getuid") and (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != uid
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise LockError(
                f"Refusing to use the lock folder `{path}`: it is not a private folder of this "
                "user",
                hint="delete it; safepip recreates it",
            )
    return folder


def _owner_file(lock_path: Path) -> Path:
    return lock_path.with_suffix(".owner")


@contextlib.contextmanager
def hold(target: Target, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the environment's lock; re-entrant within this process.

    When another process holds it, `on_wait` is told who (pid and command) and the lock is
    waited for without a time limit (an install can legitimately take long; Ctrl-C stops the
    wait).
    """
    key = environment_key(target)
    held = _held.get(key)
    if held is not None:
        _held[key] = (held[0], held[1] + 1)
        try:
            yield
        finally:
            release, count = _held[key]
            _held[key] = (release, count - 1)
        return
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    path = lock_folder() / f"{name}.lock"
    release = _acquire(path, target, on_wait)
    _held[key] = (release, 1)
    try:
        owner = _owner_file(path)
        tmp = owner.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(f"{os.getpid()}\n{_command()}\n", "utf-8")
            os.replace(tmp, owner)
        yield
    finally:
        _held.pop(key, None)
        with contextlib.suppress(OSError):
            _owner_file(path).unlink()
        release()


def _acquire(
    path: Path, target: Target, on_wait: Callable[[str], None] | None
) -> Callable[[], None]:
    """Lock `path` (flock), waiting for as long as another process holds it; returns how to
    let go. The descriptor is safepip's own: a helper process forked by an install
    (`linking.Linker.place_shared`) shares it, so a helper that outlives its install's process
    (killed by SIGKILL) holds the lock until it has exited, and the next run never recovers
    the environment while the helper still writes into it. Letting go closes the descriptor
    (no LOCK_UN, which would free the lock for such a helper too)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no fork, no helpers
        return _acquire_filelock(path, target, on_wait)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # a signal's exception ends the wait
            elif not _taken_while_owner_unknown(fd, path):
                on_wait(_waiting_message(path, target))
                fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError) and exc.errno in _NO_LOCKS:
            raise LockError(
                f"Cannot lock the environment through `{path}`: {exc.strerror}",
                hint="set TMPDIR to a folder on a local file system that supports locks",
            ) from exc
        raise
    return functools.partial(os.close, fd)


_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL})
"""What `flock` says where the lock folder's file system offers no locks."""


def _taken_while_owner_unknown(fd: int, path: Path) -> bool:
    """A run that has just taken the lock names itself in the owner file right after: for up
    to a second, wait for that file (so that the waiting message can name the holder) or for
    the lock, whichever comes first. Whether the lock was taken."""
    import fcntl

    deadline = time.monotonic() + 1.0
    while not _owner_file(path).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        return True
    return False


def _acquire_filelock(
    path: Path, target: Target, on_wait: Callable[[str], None] | None
) -> Callable[[], None]:  # pragma: no cover - Windows
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(_waiting_message(path, target))
        lock.acquire(timeout=-1, poll_interval=0.1)
    return lock.release


def _command() -> str:
    import sys

    return " ".join(["safepip", *sys.argv[1:]])[:200]


def _waiting_message(path: Path, target: Target) -> str:
    who = "another safepip"
    with contextlib.suppress(OSError, ValueError):
        pid, _, command = _owner_file(path).read_text("utf-8").partition("\n")
        who = f"another safepip (pid {int(pid)}: `{command.strip()}`)"
    env = target.prefix if target.kind == "env" else target.paths.purelib
    return f"Waiting for {who} to finish with `{env}`"
