"""Installing verified, unpacked wheels into the target, as one transaction that can roll back.

This is the only stage that writes the target environment. It links files from the unpacked
cache (hard links where the file system allows, copies otherwise), lets `installer` lay out
schemes, scripts and RECORD, and keeps a backup of everything it replaces or removes until the
whole install has succeeded. If anything fails, the target is put back as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safepip.errors import SafepipError
from safepip.hashes import split_hash

if TYPE_CHECKING:
    from collections.abc import Sequence

    from installer.scripts import LauncherKind

    from safepip.fetch import FetchedArtifact, UnpackedWheel
    from safepip.plan import Pin
    from safepip.target import InstalledDistribution, Target

ARTIFACT_RECORD = "safepip.json"
"""The file safepip writes into each `.dist-info`: which artifact was installed, from where."""


class InstallError(SafepipError):
    """Writing to the target failed; what this run changed has been rolled back."""


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
    """Tracks every path an install creates, replaces or removes, so it can be undone.

    Paths are plain strings: an install touches tens of thousands of files, and this is the
    hot loop.
    """

    backup_root: str
    created_files: list[str] = field(default_factory=list)
    created_dirs: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    known_dirs: set[str] = field(default_factory=set)

    def _backup_path(self) -> str:
        if self.backup_root not in self.known_dirs:
            os.makedirs(self.backup_root, exist_ok=True)
            self.known_dirs.add(self.backup_root)
        return os.path.join(self.backup_root, uuid.uuid4().hex)

    def set_aside(self, path: str) -> None:
        """Move an existing file (or symlink) out of the way, keeping it for a rollback."""
        backup = self._backup_path()
        try:
            os.replace(path, backup)
        except OSError:
            shutil.copy2(path, backup, follow_symlinks=False)
            os.unlink(path)
        self.moved.append((path, backup))

    def ensure_dir(self, folder: str) -> None:
        if folder in self.known_dirs:
            return
        missing: list[str] = []
        current = folder
        while not os.path.isdir(current):
            if os.path.lexists(current):
                raise InstallError(f"Cannot create folder `{folder}`: a file is in the way")
            missing.append(current)
            current = os.path.dirname(current)
        for item in reversed(missing):
            os.mkdir(item)
            self.created_dirs.append(item)
        self.known_dirs.add(folder)

    def place(self, source: str, dest: str, *, link: bool) -> bool:
        """Hard-link (or copy) `source` to `dest`, setting aside a file already there.
        Returns whether a link was made."""
        self.ensure_dir(os.path.dirname(dest))
        if link:
            try:
                os.link(source, dest)
                self.created_files.append(dest)
                return True
            except FileExistsError:
                self._clear(dest)
                return self.place(source, dest, link=link)
            except OSError:
                pass  # another file system, or links not allowed: copy
        if os.path.lexists(dest):
            self._clear(dest)
        shutil.copyfile(source, dest)
        shutil.copymode(source, dest)
        self.created_files.append(dest)
        return False

    def write(self, dest: str, data: bytes, *, executable: bool = False) -> None:
        self.ensure_dir(os.path.dirname(dest))
        if os.path.lexists(dest):
            self._clear(dest)
        with open(dest, "wb") as fh:
            self.created_files.append(dest)
            fh.write(data)
        if executable:
            os.chmod(dest, 0o755)

    def _clear(self, dest: str) -> None:
        if os.path.isdir(dest) and not os.path.islink(dest):
            raise InstallError(f"Cannot install file `{dest}`: a folder is in the way")
        self.set_aside(dest)

    def rollback(self) -> None:
        for path in reversed(self.created_files):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for path in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        for original, backup in reversed(self.moved):
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(original), exist_ok=True)
                os.replace(backup, original)
        shutil.rmtree(self.backup_root, ignore_errors=True)

    def commit(self) -> None:
        shutil.rmtree(self.backup_root, ignore_errors=True)


# --- laying out one wheel -------------------------------------------------------------------

SCHEMES = ("purelib", "platlib", "headers", "scripts", "data")


def _script_name_ok(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _install_wheel(
    wheel: UnpackedWheel,
    target: Target,
    txn: Transaction,
    extra: dict[str, bytes],
    *,
    link: bool,
) -> bool:
    """Lay out one unpacked, verified wheel in the target (PEP 427 install steps).

    Files are hard-linked from the cache; `.data/scripts` files starting with `#!python` get the
    target's interpreter in their shebang, and entry-point launchers are generated with
    `installer`. RECORD is written last, with every path relative to the root scheme folder.
    Member paths were checked when the wheel was unpacked (no absolute paths, no `..`).
    Returns whether files could be hard-linked.
    """
    import csv
    import io

    schemes = {k: os.path.abspath(v) for k, v in target.paths.as_dict().items()}
    root_scheme = "purelib" if wheel.root_is_purelib else "platlib"
    root = str(wheel.root)
    data_prefix = wheel.data_dir + "/"
    record_name = f"{wheel.dist_info}/RECORD"
    # RECORD rows as (scheme, path within the scheme, "alg=digest", size).
    records: list[tuple[str, str, str, str]] = []
    linked = link
    python = str(target.python)
    for entry in wheel.entries:
        path = entry.path
        if path == record_name:
            continue
        if path.startswith(data_prefix):
            scheme, _, rel = path[len(data_prefix) :].partition("/")
            if scheme not in SCHEMES or not rel:
                raise InstallError(
                    f"Refusing wheel `{wheel.filename}`: `{path}` is not in a valid "
                    "`.data` subfolder"
                )
        else:
            scheme, rel = root_scheme, path
        if "__pycache__" in rel.split("/")[:-1]:
            continue  # bytecode from the wheel is never installed (installer's rule too)
        dest = os.path.join(schemes[scheme], rel)
        source = os.path.join(root, path)
        if scheme == "scripts":
            with open(source, "rb") as fh:
                data = fh.read()
            if data.startswith(b"#!python"):
                _, _, rest = data.partition(b"\n")
                data = f"#!{python}\n".encode() + rest
                txn.write(dest, data, executable=True)
                records.append((scheme, rel, _digest(data), str(len(data))))
                continue
        if not txn.place(source, dest, link=linked):
            linked = False
        records.append((scheme, rel, entry.hash, str(entry.size)))
    entry_points = wheel.root / wheel.dist_info / "entry_points.txt"
    if entry_points.is_file():
        from installer.scripts import Script
        from installer.utils import parse_entrypoints

        kind: LauncherKind = "posix" if os.name != "nt" else "win-amd64"
        for name, module, attr, section in parse_entrypoints(entry_points.read_text("utf-8")):
            if not _script_name_ok(name):
                raise InstallError(
                    f"Refusing wheel `{wheel.filename}`: entry point name `{name}` is not a "
                    "plain file name"
                )
            script_name, data = Script(name, module, attr, section).generate(python, kind)
            txn.write(os.path.join(schemes["scripts"], script_name), data, executable=True)
            records.append(("scripts", script_name, _digest(data), str(len(data))))
    for filename, data in extra.items():
        rel = f"{wheel.dist_info}/{filename}"
        txn.write(os.path.join(schemes[root_scheme], rel), data)
        records.append((root_scheme, rel, _digest(data), str(len(data))))
    records.append((root_scheme, record_name, "", ""))
    # Paths in other schemes are written relative to the root scheme folder (installer's rule).
    prefixes = {
        k: "" if k == root_scheme else os.path.relpath(v, start=schemes[root_scheme]) + "/"
        for k, v in schemes.items()
    }
    out = io.StringIO()
    writer = csv.writer(out, delimiter=",", quotechar='"', lineterminator="\n")
    writer.writerows(
        (prefixes[scheme] + rel, digest, size) for scheme, rel, digest, size in records
    )
    txn.write(os.path.join(schemes[root_scheme], record_name), out.getvalue().encode("utf-8"))
    return linked


def _digest(data: bytes) -> str:
    return "sha256=" + _b64(hashlib.sha256(data).digest())


def _b64(digest: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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
            txn.set_aside(str(path))
            if path.suffix == ".py":
                cache_dir = path.parent / "__pycache__"
                if cache_dir.is_dir():
                    for pyc in cache_dir.glob(f"{path.stem}.*.pyc"):
                        txn.set_aside(str(pyc))
    if dist.dist_info.is_dir():
        for leftover in sorted(dist.dist_info.rglob("*"), reverse=True):
            if leftover.is_file() or leftover.is_symlink():
                txn.set_aside(str(leftover))


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
    from safepip.urls import redact_url

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
    from safepip.urls import redact_url

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
    site = target.paths.purelib
    site.mkdir(parents=True, exist_ok=True)
    with _lock(site):
        txn = Transaction(backup_root=str(site / f".safepip-txn-{uuid.uuid4().hex[:12]}"))
        removed_paths: list[Path] = []
        linked = link
        current: str | None = None
        try:
            for dist in plan.remove:
                current = f"removing `{dist.display_name}=={dist.version}`"
                before = len(txn.moved)
                _remove_distribution(dist, target, txn)
                removed_paths.extend(Path(orig) for orig, _ in txn.moved[before:])
            for pin in plan.install:
                current = f"installing `{pin.spec}`"
                item = fetched[pin.spec]
                extra: dict[str, bytes] = {
                    "INSTALLER": b"safepip\n",
                    ARTIFACT_RECORD: _artifact_record(pin, item),
                }
                if pin.requested:
                    extra["REQUESTED"] = b""
                direct = _direct_url_json(pin)
                if direct is not None:
                    extra["direct_url.json"] = direct
                linked = _install_wheel(unpacked[item.sha256], target, txn, extra, link=linked)
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
    `compileall -j` parallelises folders only, not a list of files, so the list is split across
    one `compileall` process per core. Failures (a file with a syntax error for this Python)
    are ignored, as pip does.
    """
    files = _installed_py_files(target, pins)
    if not files:
        return
    workers = max(1, min(os.cpu_count() or 1, len(files) // 50 or 1))
    # Interleave by size so every process gets a similar amount of work.
    files.sort(key=lambda f: f.stat().st_size if f.exists() else 0, reverse=True)
    chunks = [files[i::workers] for i in range(workers)]
    procs = [
        subprocess.Popen(
            [str(target.python), "-I", "-m", "compileall", "-q", "-i", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in chunks
    ]
    for proc, chunk in zip(procs, chunks, strict=True):
        assert proc.stdin is not None
        proc.stdin.write("\n".join(str(f) for f in chunk).encode())
        proc.stdin.close()
    for proc in procs:
        proc.wait()


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
