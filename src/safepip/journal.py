"""The install journal: what a transaction will do to the target, on disk before it does it.

An install writes the target in three steps, and the journal (a folder `.safepip-txn-<id>` in
the target's site folder) always says enough to finish or undo it:

1. `begin` (written to a temporary file, fsynced, renamed): the target's folders (*roots*) and
   every file the install will create. Nothing in the target has changed yet.
2. *Set aside*: each file that is removed or replaced is moved (one atomic `rename`) to
   `backup/<root>/<path>` inside the journal folder. The backup's own path says where the file
   came from, so a move needs no bookkeeping: a file is always either in place or in the backup,
   whenever the process stops (SIGKILL, power loss).
3. `create` (appended, fsynced) lists the folders the install will make; then files are linked
   and written. Every file the journal lists as created that exists now was made by this step,
   since step 2 set aside whatever was there before.

`commit` (appended, fsynced) is the point of no return. Before it, the next run rolls back:
it deletes the created files and folders and moves every backup home. After it, it completes:
it deletes the backups and prunes folders left empty. `recover` does this for any journal it
finds, under the environment lock, before the run reads the installed state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safepip import signals
from safepip.envlock import hold
from safepip.errors import SafepipError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from safepip.target import Target

TXN_PREFIX = ".safepip-txn-"
"""Journal folders in a site folder start with this; wheels may not install such a path."""
FORMAT = 1
_JOURNAL = "journal"
_BACKUP = "backup"
_PARTIAL = "partial"


class RecoveryError(SafepipError):
    """An interrupted install's journal cannot be finished or undone automatically."""


def environment_roots(target: Target) -> list[str]:
    """The folders an install may write or remove files in: the scheme folders and the prefix
    (a RECORD may list files anywhere under the prefix, for example `.data/data` files)."""
    roots = [os.path.abspath(p) for p in target.paths.as_dict().values()]
    roots.append(os.path.abspath(target.prefix))
    return list(dict.fromkeys(roots))


def pending(target: Target) -> list[Path]:
    """Journal folders left in the target's site folders (by a run in progress or one that was
    interrupted)."""
    found: list[Path] = []
    for site in target.site_dirs():
        try:
            entries = list(os.scandir(site))
        except OSError:
            continue
        found.extend(Path(e.path) for e in entries if e.name.startswith(TXN_PREFIX) and e.is_dir())
    return sorted(found)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(fd)


def _safe_rel(rel: object) -> bool:
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\x00" in rel:
        return False
    return not any(part in ("..", "") for part in rel.split("/"))


@dataclass
class JournalState:
    """What a journal says (read back from disk, or kept in memory while the install runs)."""

    folder: str
    roots: list[str]
    creates: list[tuple[int, str]]
    """(root index, path below the root) of every file the install creates."""
    pid: int = 0
    started: float = 0.0
    summary: str = ""
    creating: bool = False
    """The `create` record is written: files listed in `creates` that exist were made by us."""
    new_dirs: list[tuple[int, str]] = field(default_factory=list)
    prune: list[tuple[int, str]] = field(default_factory=list)
    """Folders that removed files lived in, pruned when empty after the commit."""
    committed: bool = False

    def path(self, item: tuple[int, str]) -> str:
        return os.path.join(self.roots[item[0]], item[1])


class Journal:
    """The journal of one running install: writes the records and sets files aside."""

    def __init__(self, state: JournalState) -> None:
        self.state = state
        self._backup = os.path.join(state.folder, _BACKUP)
        self._known_dirs: set[str] = set()
        # Longest root first: a file under the site folder belongs to it, not to the prefix.
        self._roots = sorted(enumerate(state.roots), key=lambda r: len(r[1]), reverse=True)

    @classmethod
    def begin(
        cls,
        site: str,
        roots: Sequence[str],
        creates: Iterable[tuple[int, str]],
        *,
        summary: str,
    ) -> Journal:
        """Create the journal folder and its `begin` record, durably, before anything changes."""
        folder = os.path.join(site, f"{TXN_PREFIX}{uuid.uuid4().hex[:12]}")
        os.mkdir(folder, 0o700)
        state = JournalState(
            folder=folder,
            roots=list(roots),
            creates=list(creates),
            pid=os.getpid(),
            started=time.time(),
            summary=summary,
        )
        record = {
            "op": "begin",
            "format": FORMAT,
            "pid": state.pid,
            "started": state.started,
            "summary": summary,
            "roots": state.roots,
            "creates": state.creates,
        }
        tmp = os.path.join(folder, _JOURNAL + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, os.path.join(folder, _JOURNAL))
            _fsync_dir(folder)
            _fsync_dir(site)
        except BaseException:
            # Nothing was set aside yet: a journal that could not be written is simply removed.
            _remove_journal(folder)
            raise
        return cls(state)

    def _append(self, record: dict[str, Any]) -> None:
        with open(os.path.join(self.state.folder, _JOURNAL), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def locate(self, path: str) -> tuple[int, str]:
        """(root index, path below it) of an absolute path inside one of the roots."""
        for index, root in self._roots:
            if path.startswith(root + os.sep):
                return index, path[len(root) + 1 :]
        raise RecoveryError(f"`{path}` is outside the environment's folders")

    def set_aside(self, path: str) -> bool:
        """Move a file (or symlink) into the backup; False when there is nothing at `path`.

        The backup path encodes the original one, so the move itself is the journal entry.
        """
        index, rel = self.locate(path)
        backup = os.path.join(self._backup, str(index), rel)
        parent = os.path.dirname(backup)
        if parent not in self._known_dirs:
            os.makedirs(parent, exist_ok=True)
            self._known_dirs.add(parent)
        if os.path.lexists(backup):
            # Set aside twice means it came back in between: never overwrite the original.
            raise RecoveryError(f"`{path}` was already set aside by this install")
        try:
            os.replace(path, backup)
        except FileNotFoundError:
            return False
        except OSError as exc:
            import errno

            if exc.errno != errno.EXDEV:
                raise
            # Another file system (a scheme folder mounted elsewhere): copy, then publish the
            # complete copy by rename, then remove the original. Any stop leaves one whole copy.
            partial = os.path.join(self.state.folder, _PARTIAL)
            os.makedirs(partial, exist_ok=True)
            tmp = os.path.join(partial, uuid.uuid4().hex)
            shutil.copy2(path, tmp, follow_symlinks=False)
            os.replace(tmp, backup)
            os.unlink(path)
        return True

    def creating(
        self, new_dirs: Sequence[tuple[int, str]], prune: Sequence[tuple[int, str]]
    ) -> None:
        """Record that files are about to be created (after everything in the way was set
        aside), with the folders that will be made and those to prune after the commit."""
        self.state.new_dirs = list(new_dirs)
        self.state.prune = list(prune)
        self.state.creating = True
        self._append({"op": "create", "dirs": self.state.new_dirs, "prune": self.state.prune})

    def commit(self) -> None:
        """The point of no return: from here on, the install is completed, never undone."""
        self._append({"op": "commit"})
        self.state.committed = True


def read_state(folder: Path) -> JournalState | None:
    """The journal in `folder`, or None when it has no `begin` record yet."""
    try:
        text = (folder / _JOURNAL).read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecoveryError(f"Cannot read the journal `{folder / _JOURNAL}`: {exc}") from exc
    lines = text.split("\n")
    # A last line without its newline was cut short while being written: it never happened.
    complete = lines[:-1]
    try:
        records = [json.loads(line) for line in complete]
    except ValueError as exc:
        raise RecoveryError(f"The journal `{folder / _JOURNAL}` is damaged") from exc
    if not records or records[0].get("op") != "begin" or records[0].get("format") != FORMAT:
        raise RecoveryError(f"The journal `{folder / _JOURNAL}` is not one safepip can read")
    begin = records[0]
    state = JournalState(
        folder=str(folder),
        roots=[str(r) for r in begin.get("roots", [])],
        creates=_items(begin.get("creates"), folder),
        pid=int(begin.get("pid", 0)),
        started=float(begin.get("started", 0.0)),
        summary=str(begin.get("summary", "")),
    )
    for record in records[1:]:
        if record.get("op") == "create":
            state.creating = True
            state.new_dirs = _items(record.get("dirs"), folder)
            state.prune = _items(record.get("prune"), folder)
        elif record.get("op") == "commit":
            state.committed = True
    return state


def _items(value: object, folder: Path) -> list[tuple[int, str]]:
    items: list[tuple[int, str]] = []
    for item in value if isinstance(value, list) else ():
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], int)
            or not _safe_rel(item[1])
        ):
            raise RecoveryError(f"The journal `{folder / _JOURNAL}` lists an invalid path")
        items.append((item[0], item[1]))
    return items


# --- finishing a transaction ----------------------------------------------------------------


def rollback(state: JournalState) -> None:
    """Undo an uncommitted transaction: created files and folders go, backups come home.

    Safe to run again after it was interrupted: each step checks what is there. The journal
    folder is removed only when everything was restored.
    """
    failures: list[str] = []
    if state.creating:
        for item in state.creates:
            path = state.path(item)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failures.append(f"{path}: {exc.strerror}")
        for item in sorted(state.new_dirs, key=lambda d: d[1].count("/"), reverse=True):
            _remove_dir(state.path(item))
    backup_root = os.path.join(state.folder, _BACKUP)
    for index_name in _listdir(backup_root):
        if not index_name.isdigit() or int(index_name) >= len(state.roots):
            failures.append(f"{backup_root}/{index_name}: not a backup of this transaction")
            continue
        base = os.path.join(backup_root, index_name)
        root = state.roots[int(index_name)]
        for dirpath, dirnames, filenames in os.walk(base):
            for name in [*dirnames, *filenames]:
                held = os.path.join(dirpath, name)
                if os.path.isdir(held) and not os.path.islink(held):
                    continue
                original = os.path.join(root, os.path.relpath(held, base))
                try:
                    os.makedirs(os.path.dirname(original), exist_ok=True)
                    os.replace(held, original)
                except OSError as exc:
                    failures.append(f"{original}: {exc.strerror}")
    if failures:
        raise RecoveryError(
            "Could not undo the interrupted install completely:\n"
            + "\n".join(f"    {f}" for f in failures[:20]),
            hint=f"the journal `{state.folder}` is kept; run safepip again to retry",
        )
    _remove_journal(state.folder)


def complete(state: JournalState) -> None:
    """Finish a committed transaction: delete the backups, prune emptied folders."""
    shutil.rmtree(os.path.join(state.folder, _BACKUP), ignore_errors=True)
    shutil.rmtree(os.path.join(state.folder, _PARTIAL), ignore_errors=True)
    stops = set(state.roots)
    for item in sorted(set(state.prune), key=lambda d: d[1].count("/"), reverse=True):
        current = state.path(item)
        while current not in stops and _remove_dir(current, pycache=True):
            current = os.path.dirname(current)
    _remove_journal(state.folder)


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _remove_dir(path: str, *, pycache: bool = False) -> bool:
    """Remove an empty folder (or, with `pycache`, one holding only `__pycache__`)."""
    try:
        if pycache and os.listdir(path) == ["__pycache__"]:
            shutil.rmtree(os.path.join(path, "__pycache__"))
        os.rmdir(path)
    except OSError:
        return False
    return True


def _remove_journal(folder: str) -> None:
    # The journal goes last: while it exists, a later run can still finish the work.
    for name in (_BACKUP, _PARTIAL):
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, _JOURNAL + ".tmp"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, _JOURNAL))
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(folder)


# --- recovery by a later run ----------------------------------------------------------------


def _warn(text: str) -> None:
    import sys

    sys.stderr.write(f"warning: {text}\n")


def recover(
    target: Target,
    *,
    on_wait: Callable[[str], None] | None = _warn,
    on_note: Callable[[str], None] | None = _warn,
) -> tuple[str, ...]:
    """Finish or undo every install of this environment that was interrupted; every command
    that reads an environment calls this first.

    Runs under the environment lock (an install in progress is waited for, not disturbed).
    Returns (and tells `on_note`) one line per journal handled. A journal that cannot be read,
    or whose folders are not this environment's (a moved environment, or a journal not written
    by safepip), is never acted on: `RecoveryError` names it.
    """
    if not pending(target):
        return ()

    notes: list[str] = []
    with hold(target, on_wait=on_wait):
        roots = set(environment_roots(target))
        for folder in pending(target):
            with signals.deferred():  # recovery is itself not cut short by Ctrl-C
                note = _recover_one(folder, roots)
            notes.append(note)
            if on_note is not None:
                on_note(note)
    return tuple(notes)


def _recover_one(folder: Path, roots: set[str]) -> str:
    state = read_state(folder)
    if state is None:
        # Stopped while writing `begin`: nothing was set aside yet (backups come after it).
        if any(True for _ in _walk_files(folder / _BACKUP)):
            raise RecoveryError(
                f"`{folder}` holds files set aside by an install but no journal",
                hint="move the files under its `backup` folder back by hand, then delete it",
            )
        shutil.rmtree(folder, ignore_errors=True)
        return f"Removed `{folder.name}`, left by an install stopped before it changed anything"
    foreign = [r for r in state.roots if r not in roots]
    if foreign:
        raise RecoveryError(
            f"The interrupted install `{folder}` was made for other folders (`{foreign[0]}`)",
            hint="the environment was moved or the journal is not safepip's; check and "
            "delete the folder by hand",
        )
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started))
    what = f"{state.summary}; " if state.summary else ""
    which = f"({what}pid {state.pid}, started {when})"
    if state.committed:
        complete(state)
        return f"Completed an interrupted install that had committed {which}"
    rollback(state)
    return f"Rolled back an interrupted install {which}: the environment is as it was before it"


def _walk_files(path: Path) -> Iterable[str]:
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            yield os.path.join(dirpath, name)
