"""Installing verified, unpacked wheels into the target, as one transaction that can roll back.

This is the only stage that writes the target environment. It links files from the unpacked
cache (hard links where the file system allows, copies otherwise), lets `installer` lay out
schemes, scripts and RECORD, and keeps a backup of everything it replaces or removes until the
whole install has succeeded. If anything fails, the target is put back as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from safepip.errors import SafepipError
from safepip.hashes import split_hash

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from safepip.fetch import FetchedArtifact, UnpackedWheel
    from safepip.resolve import Pin
    from safepip.target import InstalledDistribution, Target

ARTIFACT_RECORD = "safepip.json"
"""The file safepip writes into each `.dist-info`: which artifact was installed, from where."""


class InstallError(SafepipError):
    """Writing to the target failed; what this run changed has been rolled back."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedInstall:
    pin: Pin
    fetched: FetchedArtifact


@dataclass(frozen=True, kw_only=True, slots=True)
class ChangePlan:
    """What an install will do to the target."""

    install: tuple[Pin, ...]
    """New distributions or other versions of installed ones."""
    remove: tuple[InstalledDistribution, ...]
    """Installed distributions that `install` replaces."""
    keep: tuple[Pin, ...]
    """Already installed exactly as pinned."""


def installed_artifact(dist: InstalledDistribution) -> dict[str, Any] | None:
    """The artifact record safepip wrote at install time, if any."""
    text = dist.read_text(ARTIFACT_RECORD)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def plan_changes(
    pins: Sequence[Pin], installed: Sequence[InstalledDistribution], *, reinstall: bool = False
) -> ChangePlan:
    """Decide, per pin, whether to install, replace or keep.

    A pin is kept only when the installed distribution has the same version *and* safepip's own
    artifact record shows it came from a file whose sha256 the pin accepts. A distribution that
    another installer put there (pip trusts those blindly) is reinstalled from the verified file.
    """
    by_name = {d.name: d for d in installed}
    install: list[Pin] = []
    remove: list[InstalledDistribution] = []
    keep: list[Pin] = []
    for pin in pins:
        current = by_name.get(pin.name)
        if current is None:
            install.append(pin)
            continue
        if not reinstall and _same_version(current.version, pin.version):
            record = installed_artifact(current)
            accepted = {
                d for a, d in map(split_hash, pin.artifact.expected_hashes) if a == "sha256"
            }
            if record and (record.get("sha256") in accepted or not accepted):
                keep.append(pin)
                continue
        install.append(pin)
        remove.append(current)
    return ChangePlan(install=tuple(install), remove=tuple(remove), keep=tuple(keep))


# --- the transaction ------------------------------------------------------------------------


@dataclass
class Transaction:
    """Tracks every path an install creates, replaces or removes, so it can be undone."""

    backup_root: Path
    created_files: list[Path] = field(default_factory=list)
    created_dirs: list[Path] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)

    def _backup_path(self) -> Path:
        self.backup_root.mkdir(parents=True, exist_ok=True)
        return self.backup_root / uuid.uuid4().hex

    def set_aside(self, path: Path) -> None:
        """Move an existing file (or symlink) out of the way, keeping it for a rollback."""
        backup = self._backup_path()
        try:
            os.replace(path, backup)
        except OSError:
            shutil.copy2(path, backup, follow_symlinks=False)
            path.unlink()
        self.moved.append((path, backup))

    def ensure_parent(self, path: Path) -> None:
        missing: list[Path] = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            self.created_dirs.append(folder)

    def prepare(self, path: Path) -> None:
        """Make `path` writable: its folder exists and any file already there is set aside."""
        if path.is_symlink() or path.exists():
            if path.is_dir() and not path.is_symlink():
                raise InstallError(f"Cannot install file `{path}`: a folder is in the way")
            self.set_aside(path)
        else:
            self.ensure_parent(path)
        self.created_files.append(path)

    def rollback(self) -> None:
        for path in reversed(self.created_files):
            with contextlib.suppress(OSError):
                path.unlink()
        for path in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() and not any(path.iterdir()) else None
        for original, backup in reversed(self.moved):
            with contextlib.suppress(OSError):
                original.parent.mkdir(parents=True, exist_ok=True)
                os.replace(backup, original)
        shutil.rmtree(self.backup_root, ignore_errors=True)

    def commit(self) -> None:
        shutil.rmtree(self.backup_root, ignore_errors=True)


# --- installer plumbing ---------------------------------------------------------------------


class _CachedFile:
    """A file in the unpacked cache, opened only if its bytes are needed (scripts to rewrite)."""

    def __init__(self, path: Path, digest: str, size: int) -> None:
        self.path = path
        self.digest = digest
        self.size = size
        self._fh: BinaryIO | None = None
        self.touched = False

    def _open(self) -> BinaryIO:
        if self._fh is None:
            self._fh = self.path.open("rb")
        return self._fh

    def read(self, n: int = -1) -> bytes:
        self.touched = True
        return self._open().read(n)

    def readline(self) -> bytes:
        self.touched = True
        return self._open().readline()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._open().seek(offset, whence)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _make_source(unpacked: UnpackedWheel) -> Any:
    from installer.sources import WheelSource

    class CachedWheelSource(WheelSource):
        def __init__(self) -> None:
            stem = unpacked.dist_info[: -len(".dist-info")]
            name, _, version = stem.rpartition("-")
            super().__init__(name, version)
            self.files: list[_CachedFile] = []

        @property
        def dist_info_dir(self) -> str:
            return unpacked.dist_info

        @property
        def data_dir(self) -> str:
            return unpacked.data_dir

        @property
        def dist_info_filenames(self) -> list[str]:
            prefix = unpacked.dist_info + "/"
            return [e.path[len(prefix) :] for e in unpacked.entries if e.path.startswith(prefix)]

        def read_dist_info(self, filename: str) -> str:
            return unpacked.read_dist_info(filename).decode("utf-8")

        def validate_record(self, **_: object) -> None:
            """Done when the wheel was unpacked (`fetch.unpack_wheel`)."""

        def get_contents(self) -> Iterator[tuple[tuple[str, str, str], BinaryIO, bool]]:
            for entry in unpacked.entries:
                stream = _CachedFile(unpacked.root / entry.path, entry.hash, entry.size)
                self.files.append(stream)
                try:
                    yield (entry.path, entry.hash, str(entry.size)), stream, entry.executable  # type: ignore[misc]
                finally:
                    stream.close()

    return CachedWheelSource()


def _make_destination(target: Target, txn: Transaction, *, link: bool) -> Any:
    from installer.destinations import SchemeDictionaryDestination
    from installer.records import Hash, RecordEntry
    from installer.utils import Scheme, copyfileobj_with_hashing, make_file_executable

    class LinkingDestination(SchemeDictionaryDestination):
        """Hard-links untouched cached files; everything else is written through installer."""

        def write_to_fs(
            self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool
        ) -> RecordEntry:
            target_path = self._path_with_destdir(scheme, path)  # refuses paths outside the scheme
            txn.prepare(target_path)
            if isinstance(stream, _CachedFile) and not stream.touched:
                if not _link_or_copy(stream.path, target_path, link=link):
                    self._link = False
                alg, _, value = stream.digest.partition("=")
                return RecordEntry(path, Hash(alg, value), stream.size)
            with target_path.open("wb") as out:
                digest, size = copyfileobj_with_hashing(stream, out, self.hash_algorithm)
            if is_executable:
                make_file_executable(target_path)
            return RecordEntry(path, Hash(self.hash_algorithm, digest), size)

    return LinkingDestination(
        scheme_dict=target.paths.as_dict(),
        interpreter=str(target.python),
        script_kind="posix" if os.name != "nt" else "win-amd64",
        overwrite_existing=True,
    )


def _link_or_copy(src: Path, dst: Path, *, link: bool) -> bool:
    if link:
        try:
            os.link(src, dst)
            return True
        except OSError:
            pass
    shutil.copyfile(src, dst)
    shutil.copymode(src, dst)
    return False


# --- uninstall ------------------------------------------------------------------------------


def _record_paths(dist: InstalledDistribution, target: Target) -> list[Path]:
    """Absolute paths listed in a distribution's RECORD that lie inside the target's folders."""
    import csv
    import io

    site = dist.dist_info.parent
    allowed = [Path(os.path.abspath(p)) for p in target.paths.as_dict().values()]
    allowed.append(Path(os.path.abspath(target.prefix)))
    text = dist.read_text("RECORD") or ""
    paths: list[Path] = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0]:
            continue
        path = Path(os.path.abspath(site / row[0]))
        # A RECORD is data from the package: never delete outside the environment's folders.
        if any(path == root or path.is_relative_to(root) for root in allowed):
            paths.append(path)
    return paths


def _remove_distribution(dist: InstalledDistribution, target: Target, txn: Transaction) -> None:
    for path in _record_paths(dist, target):
        if path.is_symlink() or path.is_file():
            txn.set_aside(path)
            if path.suffix == ".py":
                cache_dir = path.parent / "__pycache__"
                if cache_dir.is_dir():
                    for pyc in cache_dir.glob(f"{path.stem}.*.pyc"):
                        txn.set_aside(pyc)
    if dist.dist_info.is_dir():
        for leftover in sorted(dist.dist_info.rglob("*"), reverse=True):
            if leftover.is_file() or leftover.is_symlink():
                txn.set_aside(leftover)


def _prune_empty_dirs(paths: Sequence[Path], stop: Sequence[Path]) -> None:
    stops = {Path(os.path.abspath(s)) for s in stop}
    for path in sorted({p.parent for p in paths}, key=lambda p: len(p.parts), reverse=True):
        current = path
        while current not in stops and current.is_dir():
            try:
                if any(current.iterdir()):
                    if [c.name for c in current.iterdir()] != ["__pycache__"]:
                        break
                    shutil.rmtree(current / "__pycache__")
                current.rmdir()
            except OSError:
                break
            current = current.parent


# --- the install ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallResult:
    installed: tuple[Pin, ...]
    removed: tuple[InstalledDistribution, ...]
    kept: tuple[Pin, ...]
    linked: bool
    """Whether files were hard-linked from the cache (else copied)."""


def _direct_url_json(pin: Pin) -> bytes | None:
    if not pin.artifact.direct_url:
        return None
    from safepip.net import redact_url

    url = redact_url(pin.artifact.url)
    sha = next(
        (f"sha256={d}" for a, d in map(split_hash, pin.artifact.expected_hashes) if a == "sha256"),
        None,
    )
    info: dict[str, object] = {"url": url, "archive_info": {}}
    if sha:
        info["archive_info"] = {"hash": sha, "hashes": {"sha256": sha.split("=", 1)[1]}}
    return json.dumps(info, sort_keys=True).encode()


def _artifact_record(pin: Pin, fetched: FetchedArtifact) -> bytes:
    from safepip import __version__
    from safepip.net import redact_url

    return (
        json.dumps(
            {
                "version": 1,
                "installer": f"safepip {__version__}",
                "name": pin.name,
                "version_installed": pin.version,
                "filename": pin.artifact.filename,
                "sha256": fetched.sha256,
                "url": redact_url(pin.artifact.url),
                "origin": redact_url(pin.artifact.origin),
                "hash_source": pin.artifact.hash_source,
                "requested": pin.requested,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    ).encode()


def apply(
    plan: ChangePlan,
    fetched: dict[str, FetchedArtifact],
    unpacked: dict[str, UnpackedWheel],
    target: Target,
    *,
    link: bool = True,
) -> InstallResult:
    """Carry out `plan` on the target as one transaction.

    `fetched` and `unpacked` are keyed by `Pin.spec` and by sha256. Every file of a removed
    distribution is set aside first; each new wheel is laid out by `installer` with files linked
    from the unpacked cache. On any error everything is rolled back and `InstallError` raised.
    """
    import installer

    site = target.paths.purelib
    site.mkdir(parents=True, exist_ok=True)
    lock = _lock(site)
    with lock:
        txn = Transaction(backup_root=site / f".safepip-txn-{uuid.uuid4().hex[:12]}")
        removed_paths: list[Path] = []
        linked = link
        current: str | None = None
        try:
            for dist in plan.remove:
                current = f"removing `{dist.display_name}=={dist.version}`"
                before = len(txn.moved)
                _remove_distribution(dist, target, txn)
                removed_paths.extend(orig for orig, _ in txn.moved[before:])
            for pin in plan.install:
                current = f"installing `{pin.spec}`"
                item = fetched[pin.spec]
                wheel = unpacked[item.sha256]
                source = _make_source(wheel)
                destination = _make_destination(target, txn, link=linked)
                extra: dict[str, bytes] = {
                    "INSTALLER": b"safepip\n",
                    ARTIFACT_RECORD: _artifact_record(pin, item),
                }
                if pin.requested:
                    extra["REQUESTED"] = b""
                direct = _direct_url_json(pin)
                if direct is not None:
                    extra["direct_url.json"] = direct
                installer.install(source, destination, extra)
                if getattr(destination, "_link", True) is False:
                    linked = False
        except Exception as exc:
            txn.rollback()
            if isinstance(exc, SafepipError):
                raise
            raise InstallError(
                f"Install failed while {current}: {exc}; the environment was restored",
            ) from exc
        except BaseException:
            txn.rollback()
            raise
        txn.commit()
        _prune_empty_dirs(removed_paths, [*target.site_dirs(), target.paths.scripts])
    return InstallResult(installed=plan.install, removed=plan.remove, kept=plan.keep, linked=linked)


def _lock(site: Path) -> contextlib.AbstractContextManager[object]:
    """One safepip at a time per environment. The lock file lives outside the environment so that
    an install leaves nothing of safepip's own behind."""
    import hashlib
    import tempfile

    from filelock import FileLock

    key = hashlib.sha256(os.path.abspath(site).encode()).hexdigest()[:24]
    folder = Path(tempfile.gettempdir()) / "safepip-locks"
    folder.mkdir(exist_ok=True)
    return FileLock(str(folder / f"{key}.lock"), timeout=600)


def compile_bytecode(target: Target, pins: Sequence[Pin]) -> None:
    """Compile the installed `.py` files with the *target* interpreter, on every core.

    Bytecode is specific to the interpreter's version, so safepip never compiles with its own.
    Failures (a file with a syntax error for this Python) are ignored, as pip does.
    """
    files = _installed_py_files(target, pins)
    if not files:
        return
    subprocess.run(
        [str(target.python), "-I", "-m", "compileall", "-q", "-j", "0", "-i", "-"],
        input="\n".join(str(f) for f in files).encode(),
        check=False,
        capture_output=True,
    )


def _installed_py_files(target: Target, pins: Sequence[Pin]) -> list[Path]:
    import csv
    import io

    from packaging.utils import canonicalize_name

    wanted = {p.name for p in pins}
    roots: set[Path] = set()
    for site in target.site_dirs():
        for dist_info in site.glob("*.dist-info"):
            stem = dist_info.name[: -len(".dist-info")]
            if canonicalize_name(stem.rpartition("-")[0]) not in wanted:
                continue
            try:
                text = (dist_info / "RECORD").read_text("utf-8")
            except OSError:
                continue
            for row in csv.reader(io.StringIO(text)):
                if row and row[0].endswith(".py"):
                    path = Path(os.path.abspath(site / row[0]))
                    if path.is_relative_to(site):
                        roots.add(path)
    return sorted(roots)
