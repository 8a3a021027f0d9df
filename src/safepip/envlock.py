"""One safepip at a time per environment: the lock held from reading the installed state to the
commit, and the message a second run shows while it waits.

The lock file lives outside the environment (an install leaves nothing of safepip's behind), in
a per-user folder of the temporary directory that only its owner can write: a shared, writable
lock folder would let another user plant a symlink where safepip opens its lock file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from safepip.errors import SafepipError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from filelock import BaseFileLock

    from safepip.target import Target


class LockError(SafepipError):
    """The environment lock cannot be taken."""


# Locks this process holds, by key, with how many times it entered them: the install takes the
# lock for the whole run and the install step or a recovery inside it enter it again.
_held: dict[str, tuple[BaseFileLock, int]] = {}
# The descriptor of each held lock's `.helpers` file (see `hold`), by key.
_inherited: dict[str, int] = {}


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
            lock, count = _held[key]
            _held[key] = (lock, count - 1)
        return
    from filelock import FileLock, Timeout

    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    path = lock_folder() / f"{name}.lock"
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(_waiting_message(path, target))
        lock.acquire(timeout=-1, poll_interval=0.1)
    _held[key] = (lock, 1)
    try:
        _inherited[key] = _hold_inherited(path, target, on_wait)
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
        inherited = _inherited.pop(key, -1)
        if inherited >= 0:
            os.close(inherited)  # not LOCK_UN, which would free it for a helper still running
        lock.release()


def _hold_inherited(path: Path, target: Target, on_wait: Callable[[str], None] | None) -> int:
    """Also lock `<lock>.helpers` (flock), through a descriptor of safepip's own: helper
    processes forked by an install (`linking.Linker.place_shared`) inherit it, whereas filelock
    closes its descriptors in forked children. A helper that outlives its install's process
    (killed by SIGKILL) keeps that lock until it has exited, so the next run, which waits for
    both locks, never recovers the environment while the helper still writes into it.
    Returns the descriptor, or -1 where there is no fork (no helpers) or no flock."""
    if not hasattr(os, "fork"):
        return -1  # pragma: no cover - Windows
    import fcntl

    fd = os.open(path.with_suffix(".helpers"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_waiting_message(path, target))
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
