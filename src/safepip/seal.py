"""The install seal: proof, which no wheel can forge, that safepip wrote a `.dist-info` folder.

Everything inside an environment can be written by the packages installed there: a wheel's
`.data/data` members land anywhere under the prefix, and a package's code runs with the user's
rights. So `safepip.json` (which artifact was installed) proves nothing on its own: a wheel can
ship a copy that names any public sha256. When safepip installs a distribution it therefore also
writes `safepip.seal`, an HMAC-SHA256 under a random key that lives outside every environment
(`install-key` in the user's safepip data folder, private to the user) of the folder's name and
of the RECORD safepip wrote. RECORD lists `METADATA` and `safepip.json` with their digests, so a
valid seal vouches for the name, the version and the install record. A wheel is static data
built elsewhere: it cannot know the key, so it cannot make a valid seal.

A seal is checked (`check`) before safepip keeps an installed distribution as it is, before
`verify -r` accepts one, and before `freeze` prints its hash.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import hmac
import os
import stat
from typing import TYPE_CHECKING

from safepip import fastpath
from safepip.errors import ExitCode, SafepipError
from safepip.settings import user_data_dir

if TYPE_CHECKING:
    from pathlib import Path

SEAL_FILE = "safepip.seal"
"""The seal, inside each `.dist-info` safepip writes (listed in RECORD without a digest)."""
KEY_FILE = "install-key"
_KEY_SIZE = 32
_PREFIX = "safepip-seal-v1:"
_COVERED = ("METADATA", "safepip.json")
"""The files of the `.dist-info` whose RECORD digests are checked with the seal."""
_CHECKED_FILES = (SEAL_FILE, "RECORD", *_COVERED)


class SealState(enum.Enum):
    VALID = "valid"
    MISSING = "missing"
    """No seal: installed by another tool, or by a safepip older than seals."""
    INVALID = "invalid"
    """A seal that does not match: forged, or the folder was changed after the install."""
    NO_KEY = "no key"
    """This user has no install key (another user installed it, or the key was deleted)."""


class SealKeyError(SafepipError):
    """The install key cannot be used safely (others can write or read it) or be created."""

    exit_code = ExitCode.POLICY


def key_path() -> Path:
    return user_data_dir() / KEY_FILE


_loaded: dict[str, bytes] = {}


def _check_private(path: Path, info: os.stat_result, what: str) -> None:
    if not hasattr(os, "getuid"):  # pragma: no cover - no POSIX permissions to check
        return
    if info.st_uid != os.getuid():
        raise SealKeyError(
            f"Refusing the install key: {what} `{path}` belongs to another user (uid "
            f"{info.st_uid})",
            hint=f"delete `{path}` (safepip makes a new key; installs are then checked anew), "
            "or set `SAFEPIP_DATA_DIR` to a private folder",
        )
    mask = 0o077 if what == "the key file" else 0o022
    if info.st_mode & mask:
        raise SealKeyError(
            f"Refusing the install key: {what} `{path}` can be "
            f"{'read or written' if mask == 0o077 else 'written'} by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o})",
            hint=f"`chmod {'600' if mask == 0o077 else 'go-w'} {path}`",
        )


def load_key(*, create: bool) -> bytes | None:
    """This user's install key; made (random, private) when `create` and there is none.

    Refused (`SealKeyError`, exit 4) when the key or its folder belongs to another user or is
    open to others: whoever can read the key can forge seals, and whoever can write it can
    swap it.
    """
    path = key_path()
    known = _loaded.get(str(path))
    if known is not None:
        return known
    folder = path.parent
    if create:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_create(path, exc) from exc
    try:
        _check_private(folder, folder.stat(), "its folder")
        info = path.lstat()
    except FileNotFoundError:
        if not create:
            return None
        _make_key(path)
        info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise SealKeyError(
            f"Refusing the install key: `{path}` is not a regular file",
            hint=f"delete `{path}`; safepip makes a new key",
        )
    _check_private(path, info, "the key file")
    key = path.read_bytes()
    if len(key) != _KEY_SIZE:
        raise SealKeyError(
            f"Refusing the install key: `{path}` is damaged ({len(key)} bytes)",
            hint=f"delete `{path}`; safepip makes a new key (installed packages are then "
            "reinstalled once)",
        )
    _loaded[str(path)] = key
    return key


def _cannot_create(path: Path, exc: OSError) -> SealKeyError:
    error = SealKeyError(
        f"Cannot create safepip's install key `{path}`: {exc.strerror or exc}",
        hint="make the folder writable, or set `SAFEPIP_DATA_DIR` to a private folder",
    )
    error.exit_code = ExitCode.FAILURE
    return error


def _make_key(path: Path) -> None:
    """Write a new key atomically: a private temporary file, linked into place (a process that
    races this one keeps whichever key was linked first)."""
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(_KEY_SIZE))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    except OSError as exc:
        raise _cannot_create(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def make(key: bytes, dist_info: str, record: bytes) -> bytes:
    """The seal of a `.dist-info` folder named `dist_info` whose RECORD is `record`."""
    mac = hmac.digest(key, dist_info.encode("utf-8") + b"\0" + record, "sha256")
    return f"{_PREFIX}{mac.hex()}\n".encode("ascii")


_checked: dict[str, tuple[tuple[tuple[int, int, int, int], ...], SealState]] = {}
"""`check` results of this process, with the stat of every file they read."""


def check(dist_info: Path) -> SealState:
    """Whether this `.dist-info` folder is exactly as safepip wrote it for this user: the seal
    matches its RECORD, and `METADATA` and `safepip.json` match their RECORD digests.

    Files of the distribution outside the folder are not read here (`safepip verify` hashes
    them all). A folder checked before in this process, with the same key, is not read again
    while none of the files checked has changed (inode, size, modification and status-change
    time).
    """
    base = str(dist_info)
    try:
        stamps = tuple(
            (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            for st in (os.stat(os.path.join(base, n)) for n in _CHECKED_FILES)
        )
    except OSError:
        stamps = ()
    memo = f"{key_path()}\0{base}"
    known = _checked.get(memo)
    if stamps and known is not None and known[0] == stamps:
        return known[1]
    state = _check(base, dist_info.name)
    if stamps and state is not SealState.NO_KEY:
        _checked[memo] = (stamps, state)
    return state


def _forget() -> None:
    _loaded.clear()
    _checked.clear()


fastpath.forget_before_recording(_forget)


def _read(path: str) -> bytes:
    """The whole file (one `open`, `fstat` and usually one `read`: a no-op reads four files per
    installed distribution)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        chunks = [data]  # it grew since the fstat
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check(base: str, name: str) -> SealState:
    try:
        seal = _read(os.path.join(base, SEAL_FILE))
    except FileNotFoundError:
        return SealState.MISSING
    except OSError:
        return SealState.INVALID
    key = load_key(create=False)
    if key is None:
        return SealState.NO_KEY
    try:
        record = _read(os.path.join(base, "RECORD"))
    except OSError:
        return SealState.INVALID
    if not hmac.compare_digest(seal, make(key, name, record)):
        return SealState.INVALID
    for covered in _COVERED:
        if not _matches_record(base, name, covered, record):
            return SealState.INVALID
    return SealState.VALID


def _matches_record(base: str, dist_info: str, name: str, record: bytes) -> bool:
    row = f"{dist_info}/{name},".encode()
    if record.startswith(row):
        at = 0
    else:
        at = record.find(b"\n" + row) + 1
        if at == 0:
            return False
    line = record[at + len(row) :].split(b"\n", 1)[0]
    field = line.decode("ascii", "replace").partition(",")[0]
    algorithm, _, digest = field.partition("=")
    if algorithm != "sha256":
        return False
    try:
        data = _read(os.path.join(base, name))
    except OSError:
        return False
    got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(got, digest)
