"""The no-op fast path: a repeated `install` or `sync` of an environment that already is the lock.

This is the first module the `safepip` command runs, and it imports only `os`, `sys`, `time` and a
SHA-256 (no argparse, no packaging, no safepip module). It looks for a *stamp* that an earlier full
run left after it found nothing to change; when every input of that run is provably unchanged it
prints that run's output again and exits 0, in a few milliseconds. Anything else runs the full
pipeline, which records a new stamp when it turns out to be a no-op again.

An install that committed changes leaves the stamp of the next identical run itself: right after
it, in the same process, the same command runs again through the full pipeline, recorded and
silent (`_check_after_install`). That run reads everything afresh (in-process memos that would
skip a read are emptied first), adds what the install's own run read before it knew it would
change something (the modules it imported then, which the check does not import again) and the
bytecode file of every module, and stops before it would write anything outside the cache and
lock folders, reach the network or change the environment; so its stamp lists everything a no-op
run in a new process would read, and records what that run would print.

What a stamp binds, and why a match means the full run would decide the same:

- its name is a SHA-256 over the arguments, the working folder, every environment variable (but
  `_`, `OLDPWD` and `PWD`), safepip's interpreter, version, flags and `sys.path`, the user and
  groups, the local and UTC dates (the audit's staleness and ignore-until rules are dates), the
  terminal state, and the contents of the requirement and constraint files named on the command
  line;
- it lists every other path the full run looked at (opened, listed or checked with `stat`,
  `lstat` or `access`: pip's and safepip's configuration files, nested requirement files, the
  advisory database, the target interpreter and its probe, each installed `.dist-info` and its
  `RECORD`, the site folders, the cache folder and its parents, and every module safepip
  imported with its folder), with each one's device, inode, mode, size, modification time and
  status-change time (ctime), or the error that looking at it gave. Any write, rename, `chmod` or
  replacement moves a ctime, and no unprivileged process can set one back, so a change made
  after the stamp is always seen;
- a stamp is written only by a run that exited 0, changed nothing, reached no network, read no
  device, FIFO or `/proc` file, and left no file behind outside the cache and the lock folder; a
  file changed within the file system's timestamp granularity before the stamp is taken (the
  install's own files, for a stamp written after an install) is waited out, so an edit right
  after it cannot carry the same ctime.

Stamps live in the cache folder (`<cache>/noop/`), which the cache's trust model keeps private:
the folder, its parents and the stamp file are checked as `fetch.trusted_cache` checks them
before a stamp is read, and a wheel can never write there. Set `SAFEPIP_NO_FASTPATH=1` to
always run the full pipeline.
"""

from __future__ import annotations

import marshal
import os
import sys
import time

try:  # the OpenSSL-backed hashlib costs several milliseconds to import; the builtin is enough
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - Python 3.12+ names it _sha2
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment,unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

STAMP_FORMAT = "1"
STAMP_HEADER = "safepip-noop-stamp"
STAMP_FOLDER = "noop"
COMMANDS = ("install", "sync")
"""Commands whose no-op runs are stamped."""
IGNORED_ENV = frozenset({"_", "OLDPWD", "PWD"})
"""Variables that shells change between identical commands and safepip never reads."""
DISABLE_ENV = "SAFEPIP_NO_FASTPATH"
ELAPSED = "\x00elapsed\x00"
"""Stands for the run time in a recorded summary line; the replay puts its own there."""
_NOT_INPUTS = frozenset(
    {
        "/dev/null",
        "/proc/self",
        "/proc/self/ns/pid",
        "/proc/self/mountinfo",
        "/proc/self/status",
        "/proc/sys/kernel/random/boot_id",
    }
)
"""Read by the run but never deciding it: `/dev/null` is empty, and the environment lock's
`filelock` reads process identities from `/proc` (which files depends on its version: 4.1, the
newest for Python 3.10, reads the boot id and `/proc/<pid>/stat` of a lock's holder)."""


def _not_input(path: str) -> bool:
    """`_NOT_INPUTS`, and a process's identity files (`/proc/<pid>/stat`, `/proc/<pid>/ns/…`,
    also for `self` and `thread-self`), which tell `filelock` whether a lock's holder lives."""
    if path in _NOT_INPUTS:
        return True
    parts = path.split("/")
    if len(parts) < 4 or parts[1] != "proc":
        return False
    who = parts[2]
    if not (who.isdigit() or who in ("self", "thread-self")):
        return False
    rest = parts[3:]
    return rest in (["stat"], ["status"]) or (rest[0] == "ns" and len(rest) == 2)


# --- the key --------------------------------------------------------------------------------


def input_files(argv: Sequence[str]) -> list[str] | None:
    """The requirement and constraint files named on the command line (`-r`, `-c` and their long
    forms), hashed into the key by content; None when one is read from stdin. Files named any
    other way (an abbreviated option, a nested `-r`) are checked by their stat instead."""
    found: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        arg = argv[i]
        value: str | None = None
        if arg in ("-r", "-c", "--requirement", "--constraint"):
            if i + 1 < len(argv):
                value = argv[i + 1]
                next(it, None)
        elif arg.startswith(("--requirement=", "--constraint=")):
            value = arg.partition("=")[2]
        elif len(arg) > 2 and arg[:2] in ("-r", "-c") and arg[2] != "-":
            value = arg[2:]
        if value is None:
            continue
        if value == "-":
            return None
        if "://" in value or value.startswith("file:"):
            continue  # a URL: what the full run reads is recorded and checked instead
        found.append(os.path.abspath(value))
    return found


def stamp_key(argv: Sequence[str], files: Sequence[str]) -> str | None:
    """The stamp's name for this invocation (see the module docstring); None when an input
    file cannot be read."""
    h = sha256()
    parts = [
        STAMP_HEADER,
        STAMP_FORMAT,
        sys.executable,
        sys.version,
        repr(sys.flags),
        repr(sys.path),
        os.getcwd(),
        repr(list(argv)),
        repr(sorted((k, v) for k, v in os.environ.items() if k not in IGNORED_ENV)),
        time.strftime("%Y-%m-%d"),
        time.strftime("%Y-%m-%d", time.gmtime()),
    ]
    if hasattr(os, "geteuid"):
        parts.append(repr((os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())))
    for fd in (0, 1, 2):
        try:
            tty = os.isatty(fd)
        except OSError:
            tty = False
        parts.append(f"tty{fd}={tty}")
        if tty:
            try:
                parts.append(repr(tuple(os.get_terminal_size(fd))))
            except OSError:
                parts.append("no size")
    h.update("\0".join(parts).encode("utf-8", "surrogateescape"))
    for path in files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        h.update(b"\0" + path.encode("utf-8", "surrogateescape") + b"\0")
        h.update(sha256(data).digest())
    return str(h.hexdigest())


# --- where stamps live ----------------------------------------------------------------------


def cache_root(argv: Sequence[str]) -> str | None:
    """The cache folder the full run would use: `--cache-dir`, `SAFEPIP_CACHE_DIR`, or the
    user's cache folder as platformdirs names it on Linux; None where that needs platformdirs
    (a wrong guess only means no stamp is found)."""
    for i, arg in enumerate(argv):
        if arg == "--cache-dir" and i + 1 < len(argv):
            return os.path.abspath(argv[i + 1])
        if arg.startswith("--cache-dir="):
            return os.path.abspath(arg.partition("=")[2])
    env = os.environ.get("SAFEPIP_CACHE_DIR")
    if env:
        return os.path.abspath(env)
    if not sys.platform.startswith("linux"):
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not base.strip():
        base = os.path.expanduser("~/.cache")
    return os.path.abspath(os.path.join(base, "safepip"))


def _private(path: str, uid: int) -> bool:
    """Owned by the user and not writable by group or others (the cache's rule)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == uid and not st.st_mode & 0o022


def trusted_folder(root: str, folder: str) -> bool:
    """Whether `root/folder` may be trusted as `fetch.trusted_cache` trusts a cache: every
    folder above the root owned by root or the user and not open to anyone without the sticky
    bit; the root, `folder` and what is checked below owned by the user, writable only by them."""
    if not hasattr(os, "geteuid"):
        return False
    uid = os.geteuid()
    parent = os.path.dirname(root)
    while True:
        try:
            st = os.stat(parent)
        except OSError:
            return False
        if st.st_uid not in (0, uid) or (st.st_mode & 0o002 and not st.st_mode & 0o1000):
            return False
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return _private(root, uid) and _private(os.path.join(root, folder), uid)


# --- stat records ---------------------------------------------------------------------------


def fingerprint(paths: Sequence[tuple[str, bool]]) -> tuple[str, int, bool, int]:
    """The SHA-256 of the state of every path; when a change to any of them can no longer
    share the ctime recorded (`_settled`: the latest over the paths, each by its own file
    system's clock); whether each one is (or links to) a regular file or a folder (a device's
    or a FIFO's contents are not in its state); and the latest of each ctime less its clock's
    margin (after the present: a time in the future).

    A path's state is its lstat's mode, inode, device, link count, owner, group, size,
    modification and status-change times in nanoseconds (and its stat's, for a symbolic link),
    or the error looking at it gave. A weak path (a folder the run only looked at, never listed)
    keeps its type, mode, identity and owner only: its times move whenever an entry is added.
    States are serialised with `marshal` version 2, which has no back-references, so equal
    states always give equal bytes.
    """
    lstat, stat = os.lstat, os.stat
    states: list[object] = []
    add = states.append
    ctimes: set[int] = set()
    newest = ctimes.add
    plain = True
    for path, weak in paths:
        try:
            st = lstat(path)
        except OSError as exc:
            add(exc.errno)
            continue
        kind = st.st_mode & 0o170000
        if weak and kind == 0o040000:
            add(st[:3] + st[4:6])
            continue
        add((st[:7], st.st_mtime_ns, st.st_ctime_ns))
        newest(st.st_ctime_ns)
        if kind == 0o120000:
            try:
                st = stat(path)
            except OSError as exc:
                add(exc.errno)
                continue
            add((st[:7], st.st_mtime_ns, st.st_ctime_ns))
            newest(st.st_ctime_ns)
            kind = st.st_mode & 0o170000
        if kind not in (0o100000, 0o040000):
            plain = False
    settled = max((t + _margin(t) for t in ctimes), default=0)
    future = max((t - _margin(t) for t in ctimes), default=0)
    return sha256(marshal.dumps(states, 2)).hexdigest(), settled, plain, future


def _margin(ctime: int) -> int:
    """How long after `ctime` a change may still be given the same one: a time of whole
    seconds comes from a file system that keeps no finer (up to 2 s: FAT), any other from a
    clock of a few milliseconds at most. Each path is judged by its own: the environment and
    the cache may be on different file systems."""
    return _RACY_NS if ctime % 1_000_000_000 else 2_000_000_000


# --- replay ---------------------------------------------------------------------------------


def replay(argv: Sequence[str], started: float) -> int | None:
    """Print the output of the stamped no-op run for this exact invocation and return its exit
    code, or None (run the full pipeline) unless every recorded input is unchanged."""
    if not argv or argv[0] not in COMMANDS or os.environ.get(DISABLE_ENV):
        return None
    files = input_files(argv)
    root = cache_root(argv)
    if files is None or root is None:
        return None
    key = stamp_key(argv, files)
    if key is None or not trusted_folder(root, STAMP_FOLDER):
        return None
    path = os.path.join(root, STAMP_FOLDER, key)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_mode & 0o170000 != 0o100000:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    parsed = parse_stamp(b"".join(chunks), key)
    if parsed is None:
        return None
    paths, digest, locks, output, code = parsed
    if fingerprint(paths)[0] != digest:
        return None
    uid = os.geteuid()
    for folder in locks:
        try:
            lst = os.lstat(folder)
        except OSError:
            return None
        if lst.st_mode & 0o170000 != 0o040000 or lst.st_uid != uid or lst.st_mode & 0o022:
            return None
    elapsed = f"{time.perf_counter() - started:.2f}"
    streams = {"1": sys.stdout, "2": sys.stderr}
    for stream, text in output:
        out = streams[stream]
        out.write(text.replace(ELAPSED, elapsed))
        out.flush()
    return code


def parse_stamp(
    data: bytes, key: str
) -> tuple[list[tuple[str, bool]], str, list[str], list[tuple[str, str]], int] | None:
    """A stamp's paths (with their weak flag), their fingerprint, lock folders, output chunks
    and exit code; None when it is not a well-formed stamp for `key` (its checksum covers
    everything after line one)."""
    head, sep, body = data.partition(b"\n")
    if not sep:
        return None
    fields = head.split(b" ")
    if (
        len(fields) != 4
        or fields[0] != STAMP_HEADER.encode()
        or fields[1] != STAMP_FORMAT.encode()
        or fields[2] != key.encode()
        or fields[3] != sha256(body).hexdigest().encode()
    ):
        return None
    paths: list[tuple[str, bool]] = []
    locks: list[str] = []
    output: list[tuple[str, str]] = []
    digest: str | None = None
    code: int | None = None
    try:
        for line in body.decode("utf-8", "surrogateescape").split("\n"):
            kind, _, rest = line.partition(" ")
            if kind in ("f", "w"):
                paths.append((rest, kind == "w"))
            elif kind == "o":
                stream, _, text = rest.partition(" ")
                if stream not in ("1", "2"):
                    return None
                output.append((stream, bytes.fromhex(text).decode("utf-8", "surrogateescape")))
            elif kind == "d":
                digest = rest
            elif kind == "l":
                locks.append(rest)
            elif kind == "x":
                code = int(rest)
            elif line:
                return None
    except ValueError:
        return None
    if code is None or digest is None:
        return None
    return paths, digest, locks, output, code


# --- recording a full run -------------------------------------------------------------------


class Recorder:
    """Watches one full run of `install` or `sync` in this process: every path it looks at,
    whether it reached the network or wrote anything outside the cache, and what it printed."""

    def __init__(self, argv: Sequence[str], key: str, files: Sequence[str]) -> None:
        self.argv = list(argv)
        self.key = key
        self.skip = set(files)
        self.paths: set[str] = set()
        self.read: set[str] = set()
        """Paths opened or listed (the rest were only looked at with `stat`)."""
        self.written: set[str] = set()
        self.refused: str | None = None
        self.noop_root: str | None = None
        self.cache_root: str | None = None
        self.lock_folders: list[str] = []
        self.output: list[tuple[str, str]] = []
        self.decided: tuple[list[tuple[str, bool]], str] | None = None
        """What the run had read when it found it would change nothing, and its fingerprint
        then (`mark_noop`, under the environment's lock)."""
        self.allowed: tuple[str, ...] | None = None
        """For a check after an install (`_check_after_install`): the only folders it may
        write in; in its thread, any other write and anything else that keeps a run from being
        stamped stops the check before it happens (`_Stop`)."""
        self.thread: int | None = None

    def refuse(self, why: str, *, any_thread: bool = False) -> None:
        """This run cannot be stamped. In a check after an install, stop it before the event
        happens: in the check's own thread, and with `any_thread` (the network) also in the
        threads it started, so that no request is made and no credential helper (a keyring)
        is asked after the answer."""
        if self.refused is None:
            self.refused = why
        if self.allowed is not None and self.thread is not None:
            import _thread

            if any_thread or _thread.get_ident() == self.thread:
                raise _Stop(why)

    def add(self, path: object, *, read: bool = False) -> None:
        """A path the run looked at (`read`: opened or listed it)."""
        if isinstance(path, (bytes, os.PathLike)):
            path = os.fsdecode(os.fspath(path))
        if not isinstance(path, str):
            return
        if not path.startswith("/"):
            path = os.path.abspath(path)
        self.paths.add(path)
        if read:
            self.read.add(path)

    def add_written(self, path: object) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(os.fspath(path)))
            if self.allowed is not None and not any(_under(path, f) for f in self.allowed):
                self.refuse(f"a write to {path}")
            self.written.add(path)

    def event(self, name: str, args: tuple[object, ...]) -> None:
        if name == "open":
            path, mode, flags = args[0], args[1], args[2]
            if isinstance(path, int):
                return
            self.add(path, read=True)
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            ):
                self.add_written(path)
        elif name in ("os.listdir", "os.scandir"):
            self.add(args[0] if args and args[0] is not None else ".", read=True)
        elif name in ("os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.copytree"):
            self.add(args[0], read=True)
            self.add_written(args[1])
        elif name in ("os.mkdir", "os.truncate", "os.chmod", "os.utime", "os.chown"):
            self.add_written(args[0])
        elif name.startswith(("socket.", "urllib.", "http.", "ftplib.", "smtplib.")):
            if name != "socket.__new__":
                self.refuse(f"network ({name})", any_thread=True)
        elif name in ("sqlite3.connect", "os.startfile", "os.system", "os.exec", "os.posix_spawn"):
            self.refuse(name)


class _Stop(BaseException):
    """Ends the no-op check after an install where a stamp could not be written; raised before
    the operation that would have kept it from being stamped (a write, a network call)."""


class _State:
    recorder: Recorder | None = None
    hooked = False
    saved_stats: list[tuple[object, str, object]] = []  # noqa: RUF012 - one per process
    committed: tuple[str, str | None] | None = None
    """Set by the pipeline when this run's install committed (its cache and lock folders)."""
    memos: list[Callable[[], None]] = []  # noqa: RUF012 - one per process


def _audit(name: str, args: tuple[object, ...]) -> None:
    recorder = _State.recorder
    if recorder is not None:
        recorder.event(name, args)


def mark_noop(*, cache_root: str, lock_folder: str | None) -> None:
    """Called by the pipeline when an install changed nothing: this run may be stamped."""
    recorder = _State.recorder
    if recorder is not None:
        recorder.noop_root = cache_root
        recorder.cache_root = cache_root
        if lock_folder is not None:
            recorder.lock_folders = [os.path.dirname(lock_folder), lock_folder]
        # What the decision read, as it is now: the pipeline holds the environment's lock
        # here, and lets go of it before the stamp is taken (`write_stamp` compares; but the
        # cache folder, which making the stamp's folder changes).
        paths = _stamp_paths(recorder)
        if paths is not None:
            cache = os.path.abspath(cache_root)
            paths = [item for item in paths if item[0] != cache]
            recorder.decided = (paths, fingerprint(paths)[0])


def committed(*, cache_root: str, lock_folder: str | None) -> None:
    """Called by the pipeline once an install's changes are committed: when the run ends well,
    the no-op it makes of the next identical run is checked, recorded and stamped in this
    process (`_check_after_install`)."""
    _State.committed = (cache_root, lock_folder)


def forget_before_recording(forget: Callable[[], None]) -> None:
    """Register a function that empties an in-process memo which lets a run skip reading a
    file: before a recorded run in a process that already ran one, every such memo is emptied,
    so the run reads (and the stamp lists) what a run in a new process would."""
    _State.memos.append(forget)


def not_noop(why: str) -> None:
    """Called by the pipeline when this run is not one to stamp (it changes something). No
    stamp will be written, so the recording stops here: an install's tens of thousands of
    `stat`s, opens and links no longer each go through the recorder."""
    recorder = _State.recorder
    if recorder is not None:
        recorder.refuse(why)
        _State.recorder = None
        _restore_stats()


def _restore_stats() -> None:
    for owner, name, original in _State.saved_stats:
        setattr(owner, name, original)
    _State.saved_stats = []


class _Tee:
    """A text stream that records what is written and passes everything on (with `quiet`,
    records it only)."""

    def __init__(self, stream: object, fd: str, recorder: Recorder, *, quiet: bool = False) -> None:
        self._stream = stream
        self._fd = fd
        self._recorder = recorder
        self._quiet = quiet

    def write(self, text: str) -> int:
        self._recorder.output.append((self._fd, text))
        if self._quiet:
            return len(text)
        return int(self._stream.write(text))  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        if name == "buffer":
            self._recorder.refuse("binary output")
        return getattr(self._stream, name)


def _wrap_stat(
    recorder: Recorder,
) -> list[tuple[object, str, object]]:
    """Route `os.stat`, `os.lstat` and `os.access` (and pathlib's 3.10 accessor) through the
    recorder; returns what to put back."""
    saved: list[tuple[object, str, object]] = []

    add = recorder.paths.add

    def wrap(owner: object, name: str, static: bool) -> None:
        original = getattr(owner, name)

        def recorded(path: object, *args: object, **kwargs: object) -> object:
            if type(path) is str and path[:1] == "/":
                add(path)  # (the usual case, as `Recorder.add` records it)
            elif not isinstance(path, int):
                recorder.add(path)
            return original(path, *args, **kwargs)

        saved.append((owner, name, owner.__dict__[name] if static else original))
        setattr(owner, name, staticmethod(recorded) if static else recorded)

    for name in ("stat", "lstat", "access"):
        wrap(os, name, False)
    import pathlib

    accessor = getattr(pathlib, "_NormalAccessor", None)
    if accessor is not None:  # pragma: no cover - Python 3.10 only
        for name in ("stat", "lstat"):
            if name in accessor.__dict__:
                wrap(accessor, name, True)
    return saved


def record_and_run(argv: Sequence[str], run: Callable[[Sequence[str]], int]) -> int:
    """Run the full pipeline through `run`, recording it; write a stamp if it was a no-op."""
    files = input_files(argv)
    key = stamp_key(argv, files) if files is not None else None
    if key is None or files is None:
        return run(argv)
    recorder = Recorder(argv, key, files)
    _State.committed = None
    started = time.time_ns()
    code = _recorded(recorder, argv, run, quiet=False)
    if code == 0:
        try:
            write_stamp(recorder, code)
        except OSError:
            recorder.refuse("the stamp could not be written")  # the next run is a full one
    after = _take_committed()
    if code == 0 and after is not None:
        from safepip import signals

        try:
            # SIGINT and SIGTERM end the check (an exception, caught in it or here) rather
            # than the process: the install is committed and its output already printed.
            with signals.handled():
                if not _code_changed_since(started):
                    _check_after_install(argv, run, after, recorder)
        except KeyboardInterrupt:
            pass  # the next run is a full one
    return code


def _code_changed_since(started: int) -> bool:
    """Whether code this process runs may differ from what a new process would run, because
    something changed since `started` (the install began): the file of a module it imported
    (changed or gone), or a folder of `sys.path` that now holds a `.pth` file made since or
    something named like a module imported from elsewhere (which would shadow it). That is
    safepip installing into the environment it runs from: the check after the install would
    decide with the code loaded before it, and its stamp would vouch, against the files as
    the install left them, for a decision the next process's code may not make."""
    since = started - _RACY_NS  # (file times come from a coarse clock)
    loaded: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        file = os.path.abspath(file)
        try:
            if os.stat(file).st_ctime_ns >= since:
                return True
        except OSError:
            if os.path.isdir(os.path.dirname(file)):
                return True  # removed (a module in an archive has no folder: not looked at)
            continue
        if "." not in name:
            loaded[name] = file
    for entry in dict.fromkeys(os.path.abspath(p) for p in sys.path if p):
        try:
            if os.stat(entry).st_ctime_ns < since:
                continue
            names = os.listdir(entry)
        except OSError:
            continue
        below = entry.rstrip(os.sep) + os.sep
        for item in names:
            file = loaded.get(item.partition(".")[0])
            if file is not None and not (
                file.startswith(below) and file[len(below) :].split(os.sep, 1)[0] == item
            ):
                return True  # (also `name/` beside the `name.py` imported: it comes first)
            if item.endswith(".pth"):
                try:
                    if os.stat(os.path.join(entry, item)).st_ctime_ns >= since:
                        return True
                except OSError:
                    return True
    return False


def _take_committed() -> tuple[str, str | None] | None:
    after, _State.committed = _State.committed, None
    return after


def _recorded(
    recorder: Recorder, argv: Sequence[str], run: Callable[[Sequence[str]], int], *, quiet: bool
) -> int:
    if not _State.hooked:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: one for the process
        _State.hooked = True
    saved_streams = (sys.stdout, sys.stderr)
    sys.stdout = _Tee(sys.stdout, "1", recorder, quiet=quiet)
    sys.stderr = _Tee(sys.stderr, "2", recorder, quiet=quiet)
    _State.saved_stats = _wrap_stat(recorder)
    _State.recorder = recorder
    try:
        return run(argv)
    finally:
        _State.recorder = None
        _restore_stats()
        sys.stdout, sys.stderr = saved_streams


_AFTER_INSTALL_WAIT_NS = 100_000_000
"""How long the stamp after an install may wait out the file system's clock; longer (a file
system with coarse timestamps) and the next run is a full one that writes it."""


def _check_after_install(
    argv: Sequence[str],
    run: Callable[[Sequence[str]], int],
    after: tuple[str, str | None],
    install: Recorder,
) -> bool:
    """After an install committed, run the same command again in this process, recorded and
    silent, so that the next identical run can replay it: the no-op check is the full
    pipeline's, from the start (arguments, configuration, target, every installed
    distribution's seal, the audit, the dependency closure), with every in-process memo that
    skips a read emptied first, so it reads what a new process would. It may write only in the
    cache and lock folders and may not reach the network: anything that would keep a run from
    being stamped (a change to make, a report file, a message) stops it before it happens.
    Returns whether a stamp was written."""
    files = input_files(argv)
    key = stamp_key(argv, files) if files is not None else None
    if key is None or files is None:
        return False
    cache, lock_folder = after
    if cache_root(argv) != os.path.abspath(cache):
        return False  # the next run would not look for a stamp there (not on Linux, say)
    recorder = Recorder(argv, key, files)
    # What the install's own run looked at before it knew it would change something (but the
    # cache, which the check reads for itself): the modules it imported then and what
    # importing them read, which the check, importing nothing anew, does not read again.
    recorder.paths |= {p for p in install.paths if not _under(p, cache)}
    recorder.read |= {p for p in install.read if not _under(p, cache)}
    recorder.allowed = (cache,) + ((os.path.dirname(lock_folder),) if lock_folder else ())
    import _thread
    import gc

    recorder.thread = _thread.get_ident()
    for forget in _State.memos:
        forget()
    # The check allocates little, but the install left a large heap that a full collection
    # would walk (about 10 ms on the benchmark's large lock); cycles wait for the next one.
    collecting = gc.isenabled()
    gc.disable()
    try:
        code = _recorded(recorder, argv, run, quiet=True)
    except (_Stop, Exception, KeyboardInterrupt):
        # The install is done and reported; the next run is a full one (Ctrl-C included).
        return False
    finally:
        if collecting:
            gc.enable()
    recorder.allowed = None
    if code != 0 or recorder.refused:
        return False
    try:
        return write_stamp(recorder, code, max_wait_ns=_AFTER_INSTALL_WAIT_NS)
    except (OSError, KeyboardInterrupt):
        return False


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _stamp_paths(recorder: Recorder) -> list[tuple[str, bool]] | None:
    """Every path to check, each with whether a weak state will do (a folder the run only
    looked at); None when the run read something a stamp cannot vouch for."""
    paths = set(recorder.paths)
    full = set(recorder.read)
    own = os.path.dirname(os.path.abspath(__file__)) + os.sep
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            file = os.path.abspath(file)
            # Each module's folder in full: an upgrade (or a new file that could shadow a
            # module) adds, removes or renames files there. safepip's own modules also file by
            # file, since they are edited in place in a checkout.
            full.add(os.path.dirname(file))
            if file.startswith(own):
                full.add(file)
            cached = getattr(module, "__cached__", None)
            if isinstance(cached, str):
                # The bytecode a new process would read, or its absence (a check after an
                # install imports nothing, so it reads none).
                full.add(os.path.abspath(cached))
    full.update(os.path.abspath(p) for p in sys.path if p)
    paths.add(os.path.abspath(sys.executable))
    for path in list(full):
        folder = os.path.dirname(path)
        if folder.endswith(".dist-info"):
            # An installer that touches the package adds, removes or renames files there.
            full.add(folder)
    paths |= full
    excluded = [os.path.join(recorder.noop_root or "/nonexistent", STAMP_FOLDER)]
    if recorder.lock_folders:
        excluded.append(recorder.lock_folders[0])
    skip = recorder.skip | set(excluded)
    below = tuple(e.rstrip("/") + "/" for e in excluded)
    changing = ("/proc/", "/sys/", "/dev/fd/")
    out = []
    for path in sorted(paths):
        if "\n" in path:
            return None
        if path in skip or path.startswith(below):
            continue
        if path.startswith(changing) or path in ("/proc", "/sys", "/dev/fd"):
            if _not_input(path):
                continue
            return None  # changing contents (`-r /proc/self/fd/0` is stdin)
        if path == "/dev/null":  # (the one input that is not under /proc)
            continue
        out.append((path, path not in full))
    return out


_RACY_NS = 50_000_000
"""A change this close to the stamp could share its ctime with a later one (coarse clocks)."""


def write_stamp(recorder: Recorder, code: int, *, max_wait_ns: int | None = None) -> bool:
    """Write the stamp of a finished run if it may be replayed; True when one was written.
    `max_wait_ns`: give up rather than wait longer for the file system's clock."""
    if recorder.refused or recorder.noop_root is None:
        return False
    root = recorder.noop_root
    for path in recorder.written:
        if os.path.lexists(path) and not (
            _under(path, root) or any(_under(path, f) for f in recorder.lock_folders[:1])
        ):
            return False  # the run left a file (a report): a replay would not
    paths = _stamp_paths(recorder)
    if paths is None:
        return False
    # The stamp folder first: making it changes the cache folder, whose state is recorded.
    folder = os.path.join(root, STAMP_FOLDER)
    if not os.path.isdir(folder):
        os.mkdir(folder, 0o700)
    if not trusted_folder(root, STAMP_FOLDER):
        return False
    _prune(folder)
    digest, settled, plain, future = fingerprint(paths)
    if not plain:
        return False
    decided = recorder.decided
    if decided is None:
        return False
    now = time.time_ns()
    wait = settled - now
    if wait > 0:
        if future > now:
            return False  # a timestamp in the future: the clock cannot be trusted
        if max_wait_ns is not None and wait > max_wait_ns:
            return False
        time.sleep(wait / 1e9)
        digest, settled, plain, _ = fingerprint(paths)
        if not plain or settled > time.time_ns():
            return False  # something changed meanwhile
    if fingerprint(decided[0])[0] != decided[1]:
        # Changed since the run decided under the environment's lock (another install took
        # the lock once this run let go of it): the stamp would bind a state it never read.
        # (Compared after the stamp's own fingerprint: a change after it fails that one.)
        return False
    lines = [f"d {digest}"]
    lines += [f"{'w' if weak else 'f'} {path}" for path, weak in paths]
    lines += [f"l {folder}" for folder in recorder.lock_folders]
    output = list(recorder.output)
    if output:
        # The summary line ends with the run time; a replay prints its own.
        fd, last = output[-1]
        i = last.rfind(" in ")
        if i >= 0 and last.endswith(("s\n", "s\x1b[0m\n")):
            number = last[i + 4 :].rstrip("\n").removesuffix("\x1b[0m").removesuffix("s")
            if number.replace(".", "", 1).isdigit():
                output[-1] = (fd, last[: i + 4] + ELAPSED + last[i + 4 + len(number) :])
    lines += [
        f"o {fd} {text.encode('utf-8', 'surrogateescape').hex()}" for fd, text in output if text
    ]
    lines.append(f"x {code}")
    body = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    head = f"{STAMP_HEADER} {STAMP_FORMAT} {recorder.key} {sha256(body).hexdigest()}\n"
    final = os.path.join(folder, recorder.key)
    tmp = f"{final}.{os.getpid()}.tmp"
    fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.write(fd_out, head.encode() + body)
    finally:
        os.close(fd_out)
    os.replace(tmp, final)
    return True


_PRUNE_AFTER = 3 * 86400


def _prune(folder: str) -> None:
    """Stamps name the date, so yesterday's are never used again: remove those over 3 days."""
    now = time.time()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime > _PRUNE_AFTER:
                        os.unlink(entry.path)
                except OSError:
                    continue
    except OSError:
        pass


# --- the command ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The `safepip` command: a stamped no-op replayed, else the full command line."""
    started = time.perf_counter()
    args = list(sys.argv[1:] if argv is None else argv)
    code = replay(args, started)
    if code is not None:
        return code
    from safepip.cli import main as cli_main

    if args and args[0] in COMMANDS and not os.environ.get(DISABLE_ENV):
        return record_and_run(args, cli_main)
    return cli_main(args)


def run() -> None:
    """Console-script entry point.

    The process then ends without finalizing the interpreter (`os._exit`, once stdout and
    stderr are flushed): finalizing would free, one by one, the whole heap an install leaves
    (its manifests and layouts, hundreds of thousands of objects) and walk it in a last
    collection, for nothing, since the process ends. Every file safepip writes is closed by
    then (`with` blocks). It ends the ordinary way, with `gc.freeze` first (which keeps the
    objects from that collection), when something may still need the exit's handlers: a
    thread still running, `multiprocessing` (its helper processes are told to stop at exit),
    coverage measurement, or a flush that fails (a closed pipe, which the exit reports).
    """
    code = main()
    import gc

    gc.freeze()
    import threading

    if (
        threading.active_count() == 1
        and "multiprocessing" not in sys.modules
        and "coverage" not in sys.modules
    ):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        else:
            os._exit(code)
    sys.exit(code)
