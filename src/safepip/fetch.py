"""Fetching: concurrent downloads hashed while streaming, a content-addressed cache, unpacking.

Only this stage writes the cache. Files are named by their sha256 and written through a temporary
file and an atomic rename, so two safepip processes can share a cache. A cached file is hashed again
before it is used. Wheels are unpacked once per verified sha256 into `unpacked/`, after their
RECORD has been checked against every member; installs then link files from there.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import gc
import hashlib
import heapq
import io
import json
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, Protocol

from safepip.errors import ExitCode, SafepipError
from safepip.hashes import (
    ALLOWED_ALGORITHMS,
    HashCheckError,
    HashProblem,
    ProblemKind,
    StreamHasher,
    split_hash,
)
from safepip.net import NetworkError
from safepip.urls import file_url_to_path, redact_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from concurrent.futures import ProcessPoolExecutor

    from safepip import wheelzip
    from safepip.net import Session
    from safepip.plan import Artifact

UNPACK_FORMAT = 3
MANIFEST = ".safepip-manifest.json"


class Progress(Protocol):
    """Hooks for showing download progress; the default implementation does nothing."""

    def start(self, artifact: Artifact, total: int | None) -> None: ...
    def advance(self, artifact: Artifact, size: int) -> None: ...
    def finish(self, artifact: Artifact, *, cached: bool) -> None: ...


class NoProgress:
    def start(self, artifact: Artifact, total: int | None) -> None:
        pass

    def advance(self, artifact: Artifact, size: int) -> None:
        pass

    def finish(self, artifact: Artifact, *, cached: bool) -> None:
        pass


class WheelIntegrityError(SafepipError):
    """A wheel whose contents do not match its RECORD, or that would write outside its folders."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, filename: str, problem: str, *, member: str | None = None) -> None:
        where = f" (member `{member}`)" if member else ""
        super().__init__(
            f"Refusing wheel `{filename}`: {problem}{where}",
            hint=(
                "the wheel is malformed or was tampered with; "
                "report it to the package's maintainers"
            ),
        )
        self.filename = filename
        self.problem = problem
        self.member = member

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in unpacking processes: rebuild from the facts, not from the message.
        return (_rebuild_integrity_error, (self.filename, self.problem, self.member))


def _rebuild_integrity_error(
    filename: str, problem: str, member: str | None
) -> WheelIntegrityError:
    return WheelIntegrityError(filename, problem, member=member)


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchedArtifact:
    """A file in the cache whose digest was checked against the artifact's expected hashes."""

    artifact: Artifact
    path: Path
    sha256: str
    cached: bool
    built_from: Mapping[str, object] | None = None
    """For a wheel built from an sdist (`safepip.build`): the sdist and build dependencies."""
    hashes: frozenset[str] = frozenset()
    """Every `alg:hex` digest computed for the file (sha256, and the others the pin uses)."""


class Cache:
    """The content-addressed cache: `artifacts/<sha256[:2]>/<sha256>/<filename>` and `unpacked/`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def artifact_path(self, sha256: str, filename: str) -> Path:
        return self.root / "artifacts" / sha256[:2] / sha256 / filename

    def unpacked_path(self, sha256: str) -> Path:
        return self.root / "unpacked" / f"v{UNPACK_FORMAT}" / sha256[:2] / sha256

    def tmp_dir(self) -> Path:
        """Where files are written before they are renamed into place (`CacheWriteError` when
        it cannot be made)."""
        path = self.root / "tmp"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cache_write_error(exc, path, self.root) from exc
        return path


class CacheTrustError(SafepipError):
    """A cache folder that someone else could write to: its contents prove nothing."""

    exit_code = ExitCode.POLICY

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"Refusing the cache folder `{path}`: {reason}",
            hint=(
                f"make it yours and private (`chmod go-w {path}`), or use another folder with "
                "`--cache-dir`"
            ),
        )
        self.path = path
        self.reason = reason


class CacheWriteError(SafepipError):
    """The cache cannot be written (a full or read-only file system, no permission). Whatever
    the failed step had written is removed before this is raised."""

    def __init__(self, path: str, reason: str, root: str, code: int | None = None) -> None:
        if code in (errno.ENOSPC, errno.EDQUOT):
            hint = (
                "free some space on that file system, or choose another cache folder with "
                "`--cache-dir` (or `--no-cache`)"
            )
        else:
            hint = "choose a cache folder this user can write with `--cache-dir` (or `--no-cache`)"
        super().__init__(f"Cannot write `{path}` in the cache `{root}`: {reason}", hint=hint)
        self.path = path
        self.reason = reason
        self.root = root
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in unpacking processes: rebuilt from the facts.
        return (CacheWriteError, (self.path, self.reason, self.root, self.code))


def cache_write_error(exc: OSError, path: str | os.PathLike[str], root: Path) -> CacheWriteError:
    """`exc`, raised while writing `path` in the cache at `root`, as one line for the user."""
    where = os.fsdecode(exc.filename) if exc.filename else os.fspath(path)
    return CacheWriteError(where, exc.strerror or str(exc), str(root), exc.errno)


def trusted_cache(root: Path) -> Cache:
    """The cache at `root`, created private (0700) if missing, after checking that nobody else
    can write to it.

    Like ssh with a world-writable key, safepip refuses (exit 4) a cache folder, or one of its
    top-level folders, that is owned by another user or writable by group or others, and a
    folder on the way to it that another user could use to swap it (writable by others without
    the sticky bit, or owned by another user than root). The contents are checked on every use
    anyway (`check_unpacked`, archive hashes); this keeps others from planting them at all.
    """
    root = Path(os.path.abspath(root))
    missing: list[Path] = []
    current = root
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it: checked below
        except OSError as exc:
            raise cache_write_error(exc, folder, root) from exc
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is None:  # pragma: no cover - no POSIX permissions to check
        return Cache(root)
    for parent in root.parents:
        st = parent.stat()
        if st.st_uid not in (0, uid):
            raise CacheTrustError(root, f"the folder `{parent}` above it belongs to another user")
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            raise CacheTrustError(root, f"the folder `{parent}` above it is writable by anyone")
    folders = [root]
    with os.scandir(root) as entries:
        folders += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    for folder in folders:
        st = folder.stat()
        if st.st_uid != uid:
            raise CacheTrustError(
                root, f"`{folder}` belongs to another user (uid {st.st_uid}, you are {uid})"
            )
        if st.st_mode & 0o022:
            who = "anyone" if st.st_mode & 0o002 else "its group"
            raise CacheTrustError(
                root,
                f"`{folder}` is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})",
            )
    return Cache(root)


def _pinned_sha256(artifact: Artifact) -> list[str]:
    return [d for alg, d in map(split_hash, artifact.expected_hashes) if alg == "sha256"]


def _algorithms(artifact: Artifact) -> set[str]:
    return {alg for alg, _ in map(split_hash, artifact.expected_hashes)}


def _from_cache(artifact: Artifact, cache: Cache) -> FetchedArtifact | None:
    """The cached file for one of the pinned sha256 digests, hashed again before use."""
    root = str(cache.root)
    for digest in _pinned_sha256(artifact):
        # Looked up by string first: a lock pins dozens of files per version, most not cached.
        if not os.path.isfile(
            os.path.join(root, "artifacts", digest[:2], digest, artifact.filename)
        ):
            continue
        path = cache.artifact_path(digest, artifact.filename)
        hasher = StreamHasher()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                hasher.update(chunk)
        if hasher.sha256 == digest:
            return FetchedArtifact(artifact=artifact, path=path, sha256=digest, cached=True)
        path.unlink(missing_ok=True)  # corrupt entry: fetch it again
    return None


ORIGIN_FILE = "origin.json"


def _from_unpacked(artifact: Artifact, cache: Cache) -> FetchedArtifact | None:
    """This very file, already unpacked (and verified): the install works from the unpacked
    tree, so the archive need not be read again. `unpack_all` re-checks the tree before use.

    The entry is found by the artifact's filename *and* a pinned digest: a lock pins every wheel
    of a version, and the cp311 wheel unpacked for one environment must never stand in for the
    cp310 file chosen for another (the pin accepts both hashes, the target only one file). The
    archive stored under that filename and digest is what ties the two together.
    """
    if artifact.hash_source != "pinned":
        return None
    base = os.path.join(cache.root, "unpacked", f"v{UNPACK_FORMAT}")
    for digest in _pinned_sha256(artifact):
        # A lock pins every file of a version (dozens of digests): the manifest is looked for
        # first, the archive's path is built only for a digest that has one.
        if not os.path.isfile(os.path.join(base, digest[:2], digest, MANIFEST)):
            continue
        path = cache.artifact_path(digest, artifact.filename)
        if path.is_file():
            return FetchedArtifact(artifact=artifact, path=path, sha256=digest, cached=True)
    return None


def _store(tmp: Path, cache: Cache, sha256: str, artifact: Artifact) -> Path:
    final = cache.artifact_path(sha256, artifact.filename)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    origin = final.parent / ORIGIN_FILE
    if not origin.exists():
        # Where the file came from, so that a later hash-pinned install can use the cached file
        # without asking the index and still record its origin. Credentials are not stored.
        info = {"filename": artifact.filename, "url": redact_url(artifact.url)}
        info["origin"] = redact_url(artifact.origin)
        tmp_origin = cache.tmp_dir() / f"origin-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        tmp_origin.write_text(json.dumps(info), "utf-8")
        os.replace(tmp_origin, origin)
    return final


@dataclass(frozen=True, kw_only=True, slots=True)
class CachedWheel:
    """A wheel in the cache, found by a pinned sha256 (its bytes are checked again when used)."""

    sha256: str
    filename: str
    url: str
    origin: str


def cached_wheels(cache: Cache, sha256s: Iterable[str]) -> list[CachedWheel]:
    """The cached wheels among `sha256s`, without reading the index (only hash-pinned installs
    may use this: the pinned digest, not the index, says which file is acceptable)."""
    found: list[CachedWheel] = []
    base = os.path.join(cache.root, "artifacts")
    for digest in sha256s:
        origin = os.path.join(base, digest[:2], digest, ORIGIN_FILE)
        if not os.path.isfile(origin):
            continue
        folder = Path(origin).parent
        try:
            info = json.loads((folder / ORIGIN_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        filename = str(info.get("filename", ""))
        if filename.endswith(".whl") and (folder / filename).is_file():
            found.append(
                CachedWheel(
                    sha256=digest,
                    filename=filename,
                    url=str(info.get("url", "")),
                    origin=str(info.get("origin", "cache")),
                )
            )
    return found


def _cut_short(
    artifact: Artifact, got: int, length: str | None, url: str, *, timed_out: bool = False
) -> NetworkError:
    of = f" of {length}" if length and length.isdigit() else ""
    if timed_out:
        return NetworkError(
            f"Download of `{artifact.filename}` timed out: the server stopped sending after "
            f"{got}{of} bytes",
            url=redact_url(url),
            hint="retry, or raise `--timeout` for a slow server",
            retryable=True,
            timed_out=True,
        )
    return NetworkError(
        f"Download of `{artifact.filename}` was cut short: got {got}{of} bytes",
        url=redact_url(url),
        hint="retry; if it keeps happening the server or a proxy is at fault",
        retryable=True,
    )


class _Stopped(SafepipError):
    """A download given up because the run is stopping (another download failed, or a signal
    arrived): its partial file is removed."""


def _download(
    session: Session,
    artifact: Artifact,
    cache: Cache,
    progress: Progress,
    stop: threading.Event | None = None,
) -> FetchedArtifact | HashProblem:
    hasher = StreamHasher(_algorithms(artifact))
    folder = cache.tmp_dir()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix="dl-", suffix=".part")
    except OSError as exc:
        raise cache_write_error(exc, folder, cache.root) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if artifact.url.startswith("file:"):
                src = file_url_to_path(artifact.url)
                progress.start(artifact, src.stat().st_size if src.exists() else None)
                # Only reading the source is the source's fault: a failed write (a full cache)
                # must not blame a find-links folder.
                try:
                    fh = src.open("rb")
                except OSError as exc:
                    raise _unreadable(src, artifact, exc) from exc
                with fh:
                    while True:
                        try:
                            chunk = fh.read(1 << 20)
                        except OSError as exc:
                            raise _unreadable(src, artifact, exc) from exc
                        if not chunk:
                            break
                        if stop is not None and stop.is_set():
                            raise _Stopped("stopped")
                        hasher.update(chunk)
                        out.write(chunk)
                        progress.advance(artifact, len(chunk))
            else:
                with session.stream(
                    artifact.url,
                    # The file's own bytes: its hash and the length are of those (pip asks the
                    # same). A server that compresses anyway is decoded by `net`.
                    headers={"Accept-Encoding": "identity"},
                    purpose="a download",
                    package=f"{artifact.name}=={artifact.version}",
                ) as resp:
                    resp.raise_for_status()
                    encoded = resp.headers.get("content-encoding", "identity").lower() not in (
                        "identity",
                        "",
                    )
                    # Content-Length counts the bytes on the wire: of an encoded body, not of the
                    # file (the HTTP layer checks that many arrived).
                    length = None if encoded else resp.headers.get("content-length")
                    total = int(length) if length and length.isdigit() else artifact.size
                    progress.start(artifact, total)
                    try:
                        for chunk in resp.iter_bytes(1 << 16):
                            if stop is not None and stop.is_set():
                                raise _Stopped("stopped")
                            hasher.update(chunk)
                            out.write(chunk)
                            progress.advance(artifact, len(chunk))
                    except NetworkError as exc:
                        raise _cut_short(
                            artifact, hasher.size, length, resp.url, timed_out=exc.timed_out
                        ) from exc
                    if length and length.isdigit() and hasher.size != int(length):
                        raise _cut_short(artifact, hasher.size, length, resp.url)
        if artifact.expected_hashes and not hasher.matches(artifact.expected_hashes):
            tmp.unlink(missing_ok=True)
            return HashProblem(
                kind=ProblemKind.MISMATCH,
                package=f"{artifact.name}=={artifact.version}",
                expected=tuple(sorted(artifact.expected_hashes)),
                got=f"sha256:{hasher.sha256}",
                url=redact_url(artifact.url),
            )
        if (
            artifact.size is not None
            and artifact.hash_source != "pinned"
            and hasher.size != artifact.size
        ):
            raise NetworkError(
                f"`{artifact.filename}` has {hasher.size} bytes but the index announced "
                f"{artifact.size}",
                url=redact_url(artifact.url),
            )
        path = _store(tmp, cache, hasher.sha256, artifact)
    except OSError as exc:
        # Reading the source was handled above: what is left is writing the cache.
        tmp.unlink(missing_ok=True)
        raise cache_write_error(exc, tmp, cache.root) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    progress.finish(artifact, cached=False)
    return FetchedArtifact(
        artifact=artifact,
        path=path,
        sha256=hasher.sha256,
        cached=False,
        hashes=frozenset(f"{a}:{d}" for a, d in hasher.digests().items()),
    )


def _unreadable(src: Path, artifact: Artifact, exc: OSError) -> NetworkError:
    return NetworkError(
        f"Could not read `{src}` for `{artifact.name}`: {exc.strerror}", url=artifact.url
    )


def fetch_artifacts(
    session: Session,
    artifacts: Sequence[Artifact],
    cache: Cache,
    *,
    progress: Progress | None = None,
    max_workers: int = 8,
    use_unpacked: bool = True,
    on_ready: Callable[[FetchedArtifact], None] | None = None,
    unpacked_hits: Mapping[int, FetchedArtifact | None] | None = None,
) -> list[FetchedArtifact]:
    """Fetch every artifact concurrently, verifying each against its expected digests.

    Hash mismatches are collected across all artifacts and raised together as one
    `HashCheckError`; nothing mismatching is ever stored in the cache. A truncated download is
    retried once. `unpacked_hits`: `_from_unpacked`'s answers already found, by `id` of the
    artifact (a lock pins dozens of files per version: each answer looks for dozens of them).
    """
    progress = progress or NoProgress()
    results: list[FetchedArtifact] = []
    problems: list[HashProblem] = []
    todo: list[Artifact] = []
    for artifact in artifacts:
        if not use_unpacked:
            hit = None
        elif unpacked_hits is not None and id(artifact) in unpacked_hits:
            hit = unpacked_hits[id(artifact)]
        else:
            hit = _from_unpacked(artifact, cache)
        hit = hit or _from_cache(artifact, cache)
        if hit is not None:
            progress.finish(artifact, cached=True)
            results.append(hit)
            if on_ready is not None:
                on_ready(hit)
        else:
            todo.append(artifact)

    # Set when the run stops (an error elsewhere, SIGINT, SIGTERM): downloads in flight give up
    # at their next chunk instead of running to the end.
    stop = threading.Event()

    def work(artifact: Artifact) -> FetchedArtifact | HashProblem:
        try:
            outcome = _download(session, artifact, cache, progress, stop)
        except NetworkError as exc:
            if not exc.retryable or stop.is_set():
                raise
            outcome = _download(session, artifact, cache, progress, stop)
        if on_ready is not None and isinstance(outcome, FetchedArtifact):
            on_ready(outcome)
        return outcome

    if todo:
        workers = max(1, min(max_workers, len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safepip-fetch") as pool:
            # Largest first: the long downloads (and their unpacking) start early.
            todo.sort(key=lambda a: a.size or 0, reverse=True)
            futures = [pool.submit(work, a) for a in todo]
            first_error: BaseException | None = None
            try:
                for future in as_completed(futures):
                    if future.cancelled():
                        continue  # cancelled after the first error
                    try:
                        outcome = future.result()
                    except SafepipError as exc:
                        if first_error is None:
                            first_error = exc
                            stop.set()
                            for f in futures:
                                f.cancel()
                        continue
                    if isinstance(outcome, HashProblem):
                        problems.append(outcome)
                    else:
                        results.append(outcome)
            except BaseException:
                # Anything else (SIGINT, SIGTERM, a bug): leaving the pool waits for its
                # threads, so stop them first.
                stop.set()
                for f in futures:
                    f.cancel()
                raise
        if first_error is not None:
            raise first_error
    if problems:
        raise HashCheckError(problems)
    order = {id(a): i for i, a in enumerate(artifacts)}
    results.sort(key=lambda r: order.get(id(r.artifact), 0))
    return results


# --- unpacking -----------------------------------------------------------------------------


class ManifestEntry(NamedTuple):
    """One file of an unpacked wheel, as its manifest records it (a tuple: an unpacked cache
    holds tens of thousands of them, loaded on every install)."""

    path: str
    """The member's path in the wheel (POSIX)."""
    hash: str
    """`sha256=<urlsafe b64>` as in RECORD."""
    size: int
    executable: bool
    stamp: tuple[int, int, int] = (0, 0, 0)
    """(inode, mtime, ctime) of the cached file when it was verified (see `check_unpacked`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class UnpackedWheel:
    """A verified wheel unpacked in the cache, ready to be linked into a target."""

    sha256: str
    filename: str
    root: Path
    dist_info: str
    """The `.dist-info` folder name inside the wheel."""
    data_dir: str
    root_is_purelib: bool
    entries: tuple[ManifestEntry, ...]

    def read_dist_info(self, name: str) -> bytes:
        return (self.root / self.dist_info / name).read_bytes()

    @property
    def metadata(self) -> bytes:
        return self.read_dist_info("METADATA")


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _safe_member(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return False
    if len(name) > 1 and name[1] == ":":
        return False
    parts = name.split("/")
    return ".." not in parts and "." not in parts[:-1]


def _dist_info_of(filename: str, names: Iterable[str]) -> str:
    """The wheel's one `.dist-info` folder, after checking the top level holds no metadata of
    any other distribution.

    A wheel that also carries `victim-1.0.dist-info` (or `victim.egg-info`, or such a folder
    inside its `.data/purelib`) would make the environment claim `victim` is installed, with
    whatever RECORD and install record the attacker wrote; pip refuses several `.dist-info`
    folders too. `.data` folders other than the wheel's own are refused for the same reason.
    """
    from packaging.utils import canonicalize_name, parse_wheel_filename

    wheel_name, wheel_version, _, _ = parse_wheel_filename(filename)
    top = {n.split("/", 1)[0] for n in names if "/" in n}
    dist_infos = sorted(c for c in top if c.endswith(".dist-info"))
    if len(dist_infos) != 1:
        found = ", ".join(f"`{d}`" for d in dist_infos) or "none"
        raise WheelIntegrityError(
            filename,
            f"a wheel must have exactly one `.dist-info` folder, for `{wheel_name}` (found "
            f"{found})",
        )
    dist_info = dist_infos[0]
    stem = dist_info[: -len(".dist-info")]
    name, _, version = stem.rpartition("-")
    if canonicalize_name(name) != wheel_name:
        raise WheelIntegrityError(
            filename,
            f"its `.dist-info` folder `{dist_info}` belongs to another distribution than "
            f"`{wheel_name}`",
        )
    from packaging.version import InvalidVersion, Version

    try:
        same = Version(version) == wheel_version
    except InvalidVersion:
        same = False
    if not same:
        raise WheelIntegrityError(
            filename, f"`{dist_info}` does not match the version in the filename ({wheel_version})"
        )
    data_dir = stem + ".data"
    for folder in sorted(top):
        if folder.endswith(".data") and folder != data_dir:
            raise WheelIntegrityError(
                filename,
                f"`.data` folder `{folder}` does not match the wheel's own (`{data_dir}`)",
            )
    # Files under .data/purelib and .data/platlib land at the top of site-packages.
    roots = [n for n in names if "/" in n]
    roots += [
        rel
        for n in names
        if n.startswith(data_dir + "/")
        for scheme, _, rel in [n[len(data_dir) + 1 :].partition("/")]
        if scheme in ("purelib", "platlib") and "/" in rel
    ]
    for member in roots:
        folder = member.split("/", 1)[0]
        if folder == dist_info or not folder.endswith((".dist-info", ".egg-info")):
            continue
        raise WheelIntegrityError(
            filename,
            f"it carries the metadata folder `{folder}` of another distribution (only "
            f"`{dist_info}` is allowed)",
            member=member,
        )
    return dist_info


METADATA_LIMIT = 64 << 20
"""RECORD and WHEEL are read into memory: a larger one is refused, not inflated."""


def unpack_wheel(wheel: Path, sha256: str, cache_root: str) -> UnpackedWheel:
    """Unpack a verified wheel into the cache, checking its ZIP structure and every member
    against RECORD.

    Refuses: an archive with more than one reading (`wheelzip.read_directory`); members with
    absolute paths, `..`, backslashes or symlinks; a second `.dist-info` or another
    distribution's metadata; members missing from RECORD or RECORD entries missing from the
    archive; any digest or size that differs from RECORD; a RECORD without a sha256-family
    digest for a file. Members are inflated in bounded chunks straight to disk, so memory does
    not grow with their size. Idempotent and safe to run concurrently (the folder appears by
    atomic rename).
    """
    from safepip import wheelzip  # not imported by a run that unpacks nothing (a lock)

    cache = Cache(Path(cache_root))
    final = cache.unpacked_path(sha256)
    ready = _try_load_manifest(final)
    if ready is not None:
        return ready
    filename = wheel.name
    try:
        raw = wheel.open("rb")
    except OSError as exc:
        raise WheelIntegrityError(filename, f"cannot be read ({exc.strerror})") from exc
    with raw:
        try:
            members = wheelzip.read_directory(raw, os.fstat(raw.fileno()).st_size)
        except wheelzip.ZipStructureError as exc:
            raise WheelIntegrityError(
                filename, f"ambiguous or malformed zip archive: {exc.rule}", member=exc.member
            ) from exc
        files = [m for m in members if not m.is_dir]
        by_name = {m.name: m for m in files}
        for m in files:
            if not _safe_member(m.name):
                raise WheelIntegrityError(filename, "unsafe path in archive", member=m.name)
            if stat.S_ISLNK(m.external_attr >> 16):
                raise WheelIntegrityError(filename, "symbolic link in archive", member=m.name)
        dist_info = _dist_info_of(filename, by_name)
        record_name = f"{dist_info}/RECORD"
        if record_name not in by_name:
            raise WheelIntegrityError(filename, "no RECORD file")
        record = _parse_record(filename, _read_small(raw, by_name[record_name], filename))
        wheel_file = by_name.get(f"{dist_info}/WHEEL")
        wheel_meta = (
            _read_small(raw, wheel_file, filename).decode("utf-8", "replace") if wheel_file else ""
        )
        if not wheel_meta:
            raise WheelIntegrityError(filename, "no WHEEL file")
        root_is_purelib = any(
            line.split(":", 1)[1].strip().lower() == "true"
            for line in wheel_meta.splitlines()
            if line.lower().startswith("root-is-purelib:")
        )
        unsigned = {record_name, f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s"}
        missing = sorted(set(record) - set(by_name) - unsigned)
        if missing:
            raise WheelIntegrityError(
                filename, "RECORD lists a file the archive lacks", member=missing[0]
            )
        for m in files:
            name = m.name
            if name in unsigned:
                continue
            if name not in record:
                raise WheelIntegrityError(filename, "file not listed in RECORD", member=name)
            want_size = record[name][1]
            if want_size is not None and want_size != m.size:
                # Refused before inflating anything: RECORD bounds the member too.
                raise WheelIntegrityError(filename, "size does not match RECORD", member=name)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{sha256[:12]}-"))
        except OSError as exc:
            raise cache_write_error(exc, final.parent, cache.root) from exc
        entries: list[ManifestEntry] = []
        made: set[str] = {str(staging)}
        dest = str(staging)
        # This loop runs once per file of every wheel (tens of thousands in a large install):
        # plain file descriptors, one `pread` and one inflate call per small member.
        source = raw.fileno()
        top = str(staging)
        prefix, b64 = top + os.sep, _b64
        sha256_of = hashlib.sha256
        try:
            for m in files:
                name = m.name
                if name in unsigned and name != record_name:
                    continue
                # Member names were checked (relative, `/`-separated, no `..`): joined as text.
                dest = prefix + name
                head = name.rpartition("/")[0]
                folder = prefix + head if head else top
                if folder not in made:
                    try:
                        _make_folders(folder, made)
                    except OSError as exc:
                        raise _unwritable_member(filename, name, exc) from exc
                want = None if name == record_name else record[name][0]
                alg = want.partition("=")[0] if want else "sha256"
                if alg not in ALLOWED_ALGORITHMS:
                    raise WheelIntegrityError(
                        filename,
                        f"RECORD digest `{alg}` is not acceptable (use sha256)",
                        member=name,
                    )
                other = hashlib.new(alg) if alg != "sha256" else None
                executable = bool((m.external_attr >> 16) & 0o111)
                try:
                    out = os.open(dest, _WRITE_FLAGS, 0o666)
                except OSError as exc:
                    raise _unwritable_member(filename, name, exc) from exc
                try:
                    if wheelzip.is_small(m):
                        data = wheelzip.read_small(source, m)
                        hasher = sha256_of(data)
                        if other is not None:
                            other.update(data)
                        _write_all(out, data)
                    else:
                        hasher = sha256_of()
                        for chunk in wheelzip.iter_member(raw, m):
                            hasher.update(chunk)
                            if other is not None:
                                other.update(chunk)
                            _write_all(out, chunk)
                    if executable and _FD_CHMOD:
                        os.chmod(out, 0o755)
                    # Stamped through the open file: no second lookup of the path.
                    stamped = os.fstat(out)
                except wheelzip.ZipStructureError as exc:
                    raise WheelIntegrityError(filename, exc.rule, member=name) from exc
                finally:
                    os.close(out)
                if executable and not _FD_CHMOD:
                    os.chmod(dest, 0o755)
                    stamped = os.stat(dest)
                digest = "sha256=" + b64(hasher.digest())
                if want and want != (digest if other is None else f"{alg}={b64(other.digest())}"):
                    raise WheelIntegrityError(
                        filename, "content does not match its RECORD digest", member=name
                    )
                entries.append(ManifestEntry(name, digest, m.size, executable, _stamp(stamped)))
            # As for every stamp (see `_clock_past`): recorded only once the file system's
            # clock has moved past the newest, so no later change can share one; else none is
            # recorded and the entry's first use hashes every file again.
            if entries and not _clock_past(final.parent, max(e.stamp[2] for e in entries)):
                entries = [e._replace(stamp=(0, 0, 0)) for e in entries]
            manifest = _manifest(sha256, filename, dist_info, root_is_purelib)
            manifest["entries"] = [
                [e.path, e.hash, e.size, e.executable, *e.stamp] for e in entries
            ]
            dest = str(staging / MANIFEST)
            (staging / MANIFEST).write_text(json.dumps(manifest), "utf-8")
            dest = str(final)
            published = _publish(staging, final)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise cache_write_error(exc, dest, cache.root) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if not published:
        return _load_manifest(final)  # a concurrent run's copy won: its own stamps
    # The manifest just written, from memory (reading it back would parse it again).
    return UnpackedWheel(
        sha256=sha256,
        filename=filename,
        root=final,
        dist_info=dist_info,
        data_dir=manifest["data_dir"],
        root_is_purelib=root_is_purelib,
        entries=tuple(entries),
    )


_WRITE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
_FD_CHMOD = os.chmod in os.supports_fd


def _make_folders(folder: str, made: set[str]) -> None:
    """Create `folder` and its parents up to one in `made` (the staging folder is), once each."""
    missing = []
    while folder not in made:
        missing.append(folder)
        folder = os.path.dirname(folder)
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):  # made under another spelling (`a//b` and `a/b`)
                raise
        made.add(path)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):  # a short write (a signal, a nearly full disk): write the rest
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def _unwritable_member(filename: str, name: str, exc: OSError) -> OSError | WheelIntegrityError:
    """A member whose name no file system here can hold is the wheel's fault (exit 3); any other
    failure to write (a full disk) is not, and is passed on as it is."""
    if exc.errno == errno.ENAMETOOLONG:
        return WheelIntegrityError(
            filename, "a member's path is longer than the file system allows", member=name
        )
    return exc


def _publish(staging: Path, final: Path) -> bool:
    """Rename a complete unpacked tree into place. A damaged tree in the way (no or garbled
    manifest, as a crash or an edit leaves it) is replaced; an intact one, put there by a
    concurrent run, wins and the staging copy goes (False is returned: the tree in place is
    not the one just written). Two runs replacing the same damaged tree
    at once both end here without an error (`Directory not empty` is that race)."""
    for _ in range(3):
        try:
            os.rename(staging, final)
            return True
        except OSError:
            if _try_load_manifest(final) is not None:
                shutil.rmtree(staging, ignore_errors=True)
                return False
            _discard(final)
    os.rename(staging, final)
    return True


def _read_small(raw: BinaryIO, member: wheelzip.ZipMember, filename: str) -> bytes:
    from safepip import wheelzip

    if member.size > METADATA_LIMIT:
        raise WheelIntegrityError(filename, "metadata file is too large", member=member.name)
    try:
        return b"".join(wheelzip.iter_member(raw, member))
    except wheelzip.ZipStructureError as exc:
        raise WheelIntegrityError(filename, exc.rule, member=member.name) from exc


def _parse_record(filename: str, data: bytes) -> dict[str, tuple[str, int | None]]:
    """RECORD rows → {path: (digest, size)}; files that need no digest are left out of checks."""
    rows: dict[str, tuple[str, int | None]] = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WheelIntegrityError(filename, "RECORD is not UTF-8") from exc
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0]:
            continue
        path = row[0]
        if not _safe_member(path):
            raise WheelIntegrityError(filename, "unsafe path in RECORD", member=path)
        digest = row[1] if len(row) > 1 else ""
        size_text = row[2] if len(row) > 2 else ""
        if not digest:
            if path.endswith("/RECORD"):
                continue
            if path.endswith(".pyc"):
                rows[path] = ("", None)  # listed; RECORD may leave .pyc files unhashed
                continue
            raise WheelIntegrityError(filename, "RECORD has no digest for a file", member=path)
        try:
            size = int(size_text) if size_text else None
        except ValueError as exc:
            raise WheelIntegrityError(filename, "RECORD has an invalid size", member=path) from exc
        if path in rows:
            raise WheelIntegrityError(filename, "RECORD lists a file twice", member=path)
        rows[path] = (digest, size)
    return rows


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector held off while tens of thousands of small objects that all
    stay alive are made (a manifest's entries, an install's layout): each collection would only
    walk them again (about 40 ms of a warm install of the large lock). Reference counting
    still frees everything else; the collector runs again afterwards, if it was on."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _load_manifest(root: Path) -> UnpackedWheel:
    with open(os.path.join(root, MANIFEST), "rb") as fh:
        text = fh.read()
    with paused_gc():
        return _manifest_of(root, json.loads(text))


def _manifest_of(root: Path, data: Any) -> UnpackedWheel:
    if data.get("format") != UNPACK_FORMAT:
        raise ValueError("another manifest format")
    entry = ManifestEntry
    new = tuple.__new__
    return UnpackedWheel(
        sha256=str(data["sha256"]),
        filename=str(data["filename"]),
        root=root,
        dist_info=str(data["dist_info"]),
        data_dir=str(data["data_dir"]),
        root_is_purelib=bool(data["root_is_purelib"]),
        # Positional and unconverted: this runs for every file of every wheel of an install
        # (made with `tuple.__new__`, as the named tuple's own `__new__` does, without the call
        # through it: half the time). The types are checked by `_try_load_manifest`.
        entries=tuple(
            [new(entry, (p, h, s, x, (i, m, c))) for p, h, s, x, i, m, c in data["entries"]]
        ),
    )


_SUSPECT_PARTS = ("\\", "./", ":", ".\x00", "\x00/", "\x00\x00")
"""Wherever a path breaks a rule of `_safe_member`, its NUL-joined list holds one of these (or
starts with `/` or NUL, or ends with `.` or NUL)."""


def _all_safe(paths: list[str]) -> bool:
    """`all(_safe_member(p) for p in paths)`, for tens of thousands of paths at a time: the paths
    are joined with NUL (which no safe path contains) and the joined string is searched for
    what an unsafe path must contain; only then is each path checked. Raises TypeError if one
    is not a string."""
    if not paths:
        return True
    joined = "\x00".join(paths)
    if joined.count("\x00") != len(paths) - 1:
        return False  # a NUL inside a path
    if (
        joined
        and joined[0] not in "/\x00"
        and joined[-1] not in ".\x00"
        and not any(part in joined for part in _SUSPECT_PARTS)
    ):
        return True
    return all(_safe_member(p) for p in paths)


def _try_load_manifest(root: Path) -> UnpackedWheel | None:
    """The unpacked tree's manifest, or None when it is missing or damaged (garbled, cut
    short, another format, a path or digest that is not a string): such a tree is never used,
    only replaced."""
    try:
        unpacked = _load_manifest(root)
        entries = unpacked.entries
        # Paths and digests must be strings (`join` checks every one).
        "".join([e.hash for e in entries])
        if not _all_safe([e.path for e in entries]):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return unpacked


def _discard(root: Path) -> None:
    """Remove a cache folder: renamed aside first (atomic), so no other process ever sees it
    half deleted under its real name."""
    aside = root.with_name(f".discard-{root.name}-{os.getpid()}-{id(root)}")
    try:
        os.rename(root, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def check_unpacked(unpacked: UnpackedWheel) -> bool:
    """Whether every file of an unpacked entry is still exactly as it was verified (against
    RECORD, from an archive with the pinned sha256).

    The fast path compares size, inode, modification time and status-change time (ctime). Any
    write, truncation, `chmod`, `utime` or replacement of a file changes its ctime, and no
    unprivileged process can set a ctime back (`os.utime` sets only atime and mtime), so an edit
    that keeps size and mtime still shows. A file whose stamp moved but whose size did not is
    hashed again: with the same sha256 and executable bit it is intact (a hard link made or
    removed by another environment moves the ctime too), and the stamp taken *before* it was
    hashed is recorded (a change during or after the hashing moves the ctime past it, so the
    next check hashes the file again); anything else means the entry is unpacked again from the
    verified archive. Large amounts of hashing are shared among threads (hashlib and reads
    release the GIL). Only root (who can change the clock or write the block device) could
    forge a stamp; the README's security model says so.
    """
    stat_ = os.stat
    moved: list[ManifestEntry] = []
    stamps: dict[str, tuple[int, int, int]] = {}
    record = False
    try:
        prefix, dir_fd = _open_root(unpacked.root)
    except OSError:
        return False
    try:
        for e in unpacked.entries:
            st = stat_(prefix + e.path, dir_fd=dir_fd)
            if st.st_size != e.size:
                return False
            stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            if stamp != e.stamp:
                if bool(st.st_mode & 0o111) != e.executable:
                    return False
                moved.append(e)
                stamps[e.path] = stamp
        if moved:
            # The stamps are recorded only if no later change can share one (see
            # `_clock_past`): the hashing starts once the clock has moved past them.
            record = _clock_past(unpacked.root.parent, max(stamps.values(), key=_ctime)[2])
            if not _hashes_match(prefix, dir_fd, moved):
                return False
    except OSError:
        return False
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    if moved and record:
        _write_manifest(
            unpacked,
            [
                [e.path, e.hash, e.size, e.executable, *stamps.get(e.path, e.stamp)]
                for e in unpacked.entries
            ],
        )
    return True


SHARE_CHECK_FILES = 2000
"""Unpacked trees holding at least this many files in all are checked by this process and one
forked process (`check_unpacked_many`): a check is a `stat` of each file, a short system call
that two processes make side by side and two threads of one interpreter do not (the large
lock's 18,214 files: about 60 ms in one process)."""


def check_unpacked_many(
    fetched: Sequence[FetchedArtifact], cache: Cache
) -> dict[str, UnpackedWheel]:
    """The unpacked trees of `fetched` that `check_unpacked` finds intact, by sha256; a tree
    missing, damaged or changed is left out (for `_reusable_unpacked`, which says so and
    unpacks it again).

    With many files, on more than one core, from a process with no other thread (a forked
    child gets only the forking thread), the trees are cut in two halves of about as many
    files and a forked child checks one while this process checks the other; the child
    answers one byte a tree on a pipe and exits. Should it fail (or be killed), this process
    checks its half itself: the answer is always this function's own, and every tree is
    checked before its files are used. The child inherits the environment's lock with every
    other descriptor; it stops before its next tree once this process is gone, and is killed
    and reaped here on an error, SIGINT or SIGTERM."""
    loaded: list[tuple[str, UnpackedWheel]] = []
    for item in fetched:
        unpacked = _try_load_manifest(cache.unpacked_path(item.sha256))
        if unpacked is not None:
            loaded.append((item.sha256, unpacked))
    total = sum(len(u.entries) for _, u in loaded)
    theirs: list[tuple[str, UnpackedWheel]] = []
    if (
        total >= SHARE_CHECK_FILES
        and (os.cpu_count() or 1) > 1
        and hasattr(os, "fork")
        and threading.active_count() == 1
    ):
        half = 0
        while loaded and half + len(loaded[-1][1].entries) <= total // 2:
            half += len(loaded[-1][1].entries)
            theirs.append(loaded.pop())
    answers = _check_in_child([u for _, u in theirs]) if theirs else None
    if answers is None:  # no child (few files, or it could not be started): all checked here
        loaded += reversed(theirs)
        theirs = []
    intact: dict[str, UnpackedWheel] = {}
    try:
        for sha256, unpacked in loaded:
            if check_unpacked(unpacked):
                intact[sha256] = unpacked
        if answers is not None:
            found = answers()
            for (sha256, unpacked), ok in zip(theirs, found or [], strict=False):
                if ok:
                    intact[sha256] = unpacked
            if found is None:  # the child failed: its half is checked here
                for sha256, unpacked in theirs:
                    if check_unpacked(unpacked):
                        intact[sha256] = unpacked
    except BaseException:
        if answers is not None:
            answers(kill=True)
        raise
    return intact


def _check_in_child(wheels: Sequence[UnpackedWheel]) -> Callable[..., list[bool] | None] | None:
    """Fork a child that runs `check_unpacked` on each of `wheels`. Returns the function that
    waits for its answers (None when it failed), or with `kill=True` kills and reaps it; None
    when no child could be started (no pipe or process to be had)."""
    import signal

    from safepip import signals

    try:
        results, report = os.pipe()
    except OSError:
        return None
    parent = os.getpid()
    try:
        with signals.deferred() as early:  # held in this process; the child resets them
            try:
                pid = os.fork()
            except OSError:
                pid = -1  # (no process to be had: EAGAIN, ENOMEM)
            if pid == 0:  # pragma: no cover - the child process (covered via subprocesses)
                code = 1
                try:
                    os.close(results)
                    for s in signals.HANDLED:
                        signal.signal(s, signal.SIG_DFL)
                    found = bytearray()
                    for wheel in wheels:
                        if os.getppid() != parent:
                            break  # this run is gone: nothing is waiting for the answer
                        found.append(1 if check_unpacked(wheel) else 0)
                    else:
                        os.write(report, bytes(found))  # (at most one byte a wheel)
                        code = 0
                finally:
                    os._exit(code)
    except BaseException:
        os.close(results)
        os.close(report)
        raise
    if pid == -1:
        os.close(results)
        os.close(report)
        if early:
            raise signals.Interrupted(early[0])
        return None
    os.close(report)
    done = False

    def answers(*, kill: bool = False) -> list[bool] | None:
        nonlocal done
        if done:
            return None
        done = True
        data = b""
        try:
            if not kill:
                while chunk := os.read(results, 4096):
                    data += chunk
        except BaseException:  # interrupted while waiting (SIGINT, SIGTERM): not waited for
            kill = True
            raise
        finally:
            with signals.deferred():
                if kill:
                    os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still its own
                _, status = os.waitpid(pid, 0)
                os.close(results)
        if kill or status != 0 or len(data) != len(wheels):
            return None
        return [bool(b) for b in data]

    if early:
        answers(kill=True)
        raise signals.Interrupted(early[0])
    return answers


_BY_DIR_FD = os.stat in os.supports_dir_fd and os.open in os.supports_dir_fd


def _open_root(root: Path) -> tuple[str, int | None]:
    """How to reach the many files below `root`: `(prefix, dir_fd)` for `os.stat(prefix +
    path, dir_fd=dir_fd)`. Relative to an open descriptor of the folder where the platform has
    them (each lookup then walks only the path inside the entry), else by the full path. The
    caller closes the descriptor."""
    if _BY_DIR_FD:
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
        return "", os.open(root, flags)
    return str(root) + os.sep, None


_HASH_SPLIT = 8 << 20
"""Bytes to hash again above which the work is shared among threads."""


def _hashes_match(prefix: str, dir_fd: int | None, entries: Sequence[ManifestEntry]) -> bool:
    """Whether each file (see `_open_root`) still has its sha256."""
    workers = min(os.cpu_count() or 1, 4)
    if workers < 2 or sum(e.size for e in entries) < _HASH_SPLIT:
        return _hash_each(prefix, dir_fd, entries)
    # Largest first, dealt round-robin: about the same number of bytes per thread.
    ordered = sorted(entries, key=lambda e: e.size, reverse=True)
    shares = [ordered[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="safepip-hash") as pool:
        others = [pool.submit(_hash_each, prefix, dir_fd, share) for share in shares[1:]]
        mine = _hash_each(prefix, dir_fd, shares[0])
        return all([mine, *(f.result() for f in others)])


def _hash_each(prefix: str, dir_fd: int | None, entries: Iterable[ManifestEntry]) -> bool:
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        for e in entries:
            fd = os.open(prefix + e.path, flags, dir_fd=dir_fd)
            try:
                if e.size < len(buffer):
                    # One read: a byte more than recorded would show as another digest.
                    digest = hashlib.sha256(os.read(fd, e.size + 1))
                else:
                    digest = hashlib.sha256()
                    while n := os.readv(fd, [buffer]):
                        digest.update(view[:n])
            finally:
                os.close(fd)
            if "sha256=" + _b64(digest.digest()) != e.hash:
                return False
    except OSError:
        return False
    return True


def restamp(unpacked: Iterable[UnpackedWheel]) -> None:
    """After hard-linking (`--link-mode hardlink`), record the cached files' new ctimes.

    Making a hard link changes the inode's ctime (its link count changed), so without this the
    next `check_unpacked` would hash every hard-linked file again. The stamps are taken right
    after linking. A file whose inode, size or modification time is no longer the one verified
    keeps its old stamp (so its next use hashes it); an edit made through an environment later
    moves the ctime again and is caught. The manifest is replaced atomically; a concurrent run
    that restamps the same entry at the same time at worst leaves a stamp that no longer
    matches, which costs one hashing.
    """
    wheels = list(unpacked)
    # Every link was made before this first look at the clock; once it has moved on, a later
    # change to a file gets a later ctime than the one recorded here, also where the file
    # system's clock is coarse. Without that (a clock that stands still), nothing is recorded.
    if not wheels or not _clock_past(wheels[0].root.parent, None):
        return
    stat_ = os.stat
    for wheel in wheels:
        rows: list[list[Any]] = []
        append = rows.append
        try:
            prefix, dir_fd = _open_root(wheel.root)
        except OSError:
            continue  # the entry is re-verified (and, if need be, rebuilt) on its next use
        try:
            for p, h, size, x, old in wheel.entries:
                st = stat_(prefix + p, dir_fd=dir_fd)
                if st.st_ino == old[0] and st.st_mtime_ns == old[1] and st.st_size == size:
                    append([p, h, size, x, st.st_ino, st.st_mtime_ns, st.st_ctime_ns])
                else:
                    append([p, h, size, x, *old])
        except OSError:
            continue
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        _write_manifest(wheel, rows)


CLOCK_WAIT = 3.0
"""Seconds `_clock_past` waits at most: more than the coarsest file times in use (2 s)."""


def _ctime(stamp: tuple[int, int, int]) -> int:
    return stamp[2]


def _clock_past(folder: Path, newest: int | None) -> bool:
    """Wait until the file system holding `folder` gives a change a later ctime than `newest`
    (nanoseconds; None: than any change made before this call). False when it does not within
    `CLOCK_WAIT`, or the folder cannot be written: then no stamp is to be recorded.

    A file system stamps changes from a clock that may only tick every few milliseconds (or
    seconds): a change made in the same tick as the one a recorded stamp shows would share its
    ctime and go unseen. Waiting here, with a scratch file's own ctime as the clock, rules that
    out. Usually the first look is enough (an unlinked environment moved the ctimes long ago).
    """
    name = os.path.join(folder, f".clock-{os.getpid()}-{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, 0o600)
    except OSError:
        return False
    try:

        def now() -> int:
            os.write(fd, b"\0")  # a change: the file system stamps it with its clock
            return os.fstat(fd).st_ctime_ns

        limit = now() if newest is None else newest
        deadline = time.monotonic() + CLOCK_WAIT
        while now() <= limit:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


def _write_manifest(wheel: UnpackedWheel, rows: list[list[Any]]) -> None:
    """Replace an entry's manifest atomically with `rows` as its files (written from the entry
    in memory, which was loaded from this manifest and checked). A failure is left to the next
    use, which checks the entry again."""
    data = _manifest(wheel.sha256, wheel.filename, wheel.dist_info, wheel.root_is_purelib)
    data["entries"] = rows
    final = os.path.join(wheel.root, MANIFEST)
    tmp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data))
        os.replace(tmp, final)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _manifest(sha256: str, filename: str, dist_info: str, root_is_purelib: bool) -> dict[str, Any]:
    """An unpacked entry's manifest, but its entries."""
    return {
        "format": UNPACK_FORMAT,
        "sha256": sha256,
        "filename": filename,
        "dist_info": dist_info,
        "data_dir": dist_info[: -len(".dist-info")] + ".data",
        "root_is_purelib": root_is_purelib,
    }


class CacheDamagedError(SafepipError):
    """A damaged cache entry whose archive cannot be used either."""

    exit_code = ExitCode.INTEGRITY


def _reverify_archive(item: FetchedArtifact) -> None:
    """Before unpacking a cached archive again, hash it again: the unpacked copy was damaged,
    so the archive may be too."""
    hasher = StreamHasher()
    try:
        with item.path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                hasher.update(chunk)
    except OSError:
        pass
    if hasher.sha256 != item.sha256:
        item.path.unlink(missing_ok=True)
        raise CacheDamagedError(
            f"The cached copy of `{item.artifact.filename}` is damaged and was removed",
            hint="run the same command again to download it afresh",
        )


def fetch_and_unpack(
    session: Session,
    artifacts: Sequence[Artifact],
    cache: Cache,
    *,
    progress: Progress | None = None,
    max_workers: int = 8,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[FetchedArtifact], dict[str, UnpackedWheel]]:
    """`fetch_artifacts` and `unpack_all` overlapped: each wheel is unpacked (RECORD checked)
    in a worker process as soon as its download has been verified, while others still download.

    Unpacking is CPU-bound (inflate, hash, write), so it runs in processes; threads would share
    one core. Small jobs are unpacked in the calling thread: a process pool costs more to start.
    """
    result: dict[str, UnpackedWheel] = {}
    lock = threading.Lock()
    # Only wheels that are not unpacked yet need a worker: a warm install starts no pool (a
    # forkserver and its workers cost about 0.1 s of CPU before they do anything).
    hits = {id(a): _from_unpacked(a, cache) for a in artifacts}
    # The unpacked trees found are checked up front, shared with a forked process when they
    # hold many files; a tree found changed is left to `_reusable_unpacked` (below).
    intact = check_unpacked_many([hit for hit in hits.values() if hit is not None], cache)
    big = sum(1 for a in artifacts if (a.size or 1 << 20) > 256 * 1024 and hits[id(a)] is None)
    pool: ProcessPoolExecutor | None = None
    feeder: _Feeder | None = None
    if big >= 3 and (os.cpu_count() or 1) > 1:
        workers = min(os.cpu_count() or 1, 4)
        pool = _process_pool(workers)
        # Start the workers now, while the first downloads run, not when the first is done.
        for _ in range(workers):
            pool.submit(_warm_up)
        feeder = _Feeder(pool, workers, str(cache.root))

    def on_ready(item: FetchedArtifact) -> None:
        ready = intact.pop(item.sha256, None) or _reusable_unpacked(item, cache, warn)
        if ready is not None:
            with lock:
                result[item.sha256] = ready
            return
        if feeder is not None:
            size = item.path.stat().st_size
            if size > 256 * 1024:
                feeder.add(item, size)
                return
        unpacked = unpack_wheel(item.path, item.sha256, str(cache.root))
        with lock:
            result[item.sha256] = unpacked

    try:
        fetched = fetch_artifacts(
            session,
            artifacts,
            cache,
            progress=progress,
            max_workers=max_workers,
            on_ready=on_ready,
            unpacked_hits=hits,
        )
        if feeder is not None:
            for unpacked in feeder.finish():
                result[unpacked.sha256] = unpacked
    except OSError as exc:
        # Every file this stage touches outside the sources (their errors are NetworkErrors)
        # is in the cache.
        raise cache_write_error(exc, cache.root, cache.root) from exc
    finally:
        if feeder is not None:
            feeder.stop()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if feeder is not None:
            feeder.join()
    return fetched, result


class _Feeder:
    """Hands verified wheels to the process pool, the largest waiting one first and one per
    worker at a time.

    Downloads finish in no useful order (a large wheel, started first, ends after dozens of
    small ones); in the pool's own first-come queue the largest wheel then waits behind all of
    them and, unpacked last, is the tail of the whole stage. One thread per worker takes the
    largest wheel waiting, waits for its unpacking, and takes the next.
    """

    def __init__(self, pool: ProcessPoolExecutor, workers: int, cache_root: str) -> None:
        self._pool = pool
        self._cache_root = cache_root
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int, FetchedArtifact]] = []
        self._count = 0
        self._closed = False
        self._results: list[UnpackedWheel] = []
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._feed, name="safepip-unpack-feeder", daemon=True)
            for _ in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def add(self, item: FetchedArtifact, size: int) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._waiting, (-size, self._count, item))
            self._cond.notify()

    def _feed(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting or self._error is not None:
                    return
                item = heapq.heappop(self._waiting)[2]
            try:
                future = self._pool.submit(unpack_wheel, item.path, item.sha256, self._cache_root)
                unpacked = future.result()
            except BaseException as exc:  # handed to the caller by `finish`
                with self._cond:
                    if self._error is None:
                        self._error = exc
                    self._waiting.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._results.append(unpacked)

    def finish(self) -> list[UnpackedWheel]:
        """Every wheel added is unpacked: the results, or the first error."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.join()
        if self._error is not None:
            raise self._error
        return self._results

    def stop(self) -> None:
        """Hand out nothing more (the run is failing); unpackings under way still finish."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._cond.notify_all()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """The pool that unpacks wheels. Its workers are forked from multiprocessing's fork server,
    a fresh single-threaded process (never from this multi-threaded one), which imports this
    module once for all of them (each worker importing it costs about 0.07 s of CPU)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if os.name == "nt":  # pragma: no cover - no fork server on Windows
        ctx: Any = multiprocessing.get_context("spawn")
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", __name__])  # `__main__`: multiprocessing's default
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
    )


def _warm_up() -> None:
    """Runs in each new worker process: the import of this module is the work."""


def _worker_init(parent: int) -> None:
    """Set up an unpacking process so that it never outlives safepip (issue 10).

    Its parent is multiprocessing's fork server, not safepip, and after safepip is killed
    (SIGKILL, an OOM kill) nothing would ever tell it to exit: it would wait on its queue
    forever, holding the caller's stdout and stderr open (a CI step that captures them hangs).
    So a thread watches safepip and ends the process when safepip is gone; the fork server and
    the resource tracker then see their last client go and exit too. Ctrl-C in a terminal
    reaches the whole process group: safepip decides what happens, the workers ignore it.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    thread = threading.Thread(
        target=_watch_parent, args=(parent,), name="safepip-watch-parent", daemon=True
    )
    thread.start()


def _watch_parent(parent: int) -> None:
    import select

    pidfd = -1
    with contextlib.suppress(OSError, AttributeError):
        pidfd = os.pidfd_open(parent)  # Linux 5.3+: readable when the process has exited
    if pidfd >= 0:
        select.select([pidfd], [], [])
        os._exit(1)
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            pass
        time.sleep(0.2)


def _reusable_unpacked(
    item: FetchedArtifact, cache: Cache, warn: Callable[[str], None] | None = None
) -> UnpackedWheel | None:
    """The unpacked tree for `item` if it is intact; a modified or damaged one is discarded
    with a warning (and a cached archive hashed again before it is unpacked anew)."""
    root = cache.unpacked_path(item.sha256)
    if not root.exists():
        return None
    unpacked = _try_load_manifest(root)
    if unpacked is not None and check_unpacked(unpacked):
        return unpacked
    if warn is not None:
        what = "was modified" if unpacked is not None else "is damaged"
        warn(
            f"The unpacked cache entry for `{item.artifact.filename}` {what} (`{root}`); "
            "unpacking it again from the verified archive"
        )
    _discard(root)
    if item.cached:
        _reverify_archive(item)
    return None


def unpack_all(
    fetched: Sequence[FetchedArtifact],
    cache: Cache,
    *,
    warn: Callable[[str], None] | None = None,
) -> dict[str, UnpackedWheel]:
    """Unpack (or reuse) every wheel; in several processes when there is enough work."""
    try:
        return _unpack_all(fetched, cache, warn)
    except OSError as exc:
        raise cache_write_error(exc, cache.root, cache.root) from exc


def _unpack_all(
    fetched: Sequence[FetchedArtifact], cache: Cache, warn: Callable[[str], None] | None
) -> dict[str, UnpackedWheel]:
    result: dict[str, UnpackedWheel] = {}
    todo: list[FetchedArtifact] = []
    for item in fetched:
        ready = _reusable_unpacked(item, cache, warn)
        if ready is not None:
            result[item.sha256] = ready
        else:
            todo.append(item)
    if not todo:
        return result
    big = [t for t in todo if t.path.stat().st_size > 256 * 1024]
    workers = min(os.cpu_count() or 1, 4, len(todo))
    if workers <= 1 or len(big) < 2:
        for item in todo:
            result[item.sha256] = unpack_wheel(item.path, item.sha256, str(cache.root))
        return result
    # Largest first keeps the processes evenly busy.
    todo.sort(key=lambda t: t.path.stat().st_size, reverse=True)
    pool = _process_pool(workers)
    try:
        futures = {
            pool.submit(unpack_wheel, item.path, item.sha256, str(cache.root)): item
            for item in todo
        }
        for future in as_completed(futures):
            unpacked = future.result()
            result[unpacked.sha256] = unpacked
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return result


# --- the cache of one run -------------------------------------------------------------------


def cache_root(cache_dir: Path | None = None) -> Path:
    """`--cache-dir`, else `SAFEPIP_CACHE_DIR`, else the user's cache folder."""
    if cache_dir is not None:
        return cache_dir
    env = os.environ.get("SAFEPIP_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("safepip", appauthor=False))


LEFTOVER_AGE = 2 * 3600.0
"""Seconds after which a temporary file or folder in the cache is an interrupted run's
leftover. A live run touches its own within seconds (a download that sends nothing for the
network timeout fails), so two hours never catches one that is still being written."""
SWEEP_INTERVAL = 3600.0
"""Runs look for leftovers at most this often (a stamp file says when the last one did)."""
_SWEPT = ".swept"


def sweep_leftovers(cache: Cache, *, age: float = LEFTOVER_AGE, force: bool = False) -> int:
    """Remove what interrupted runs left in the cache, older than `age`: partial downloads and
    temporary files in `tmp/`, half-unpacked (`.<sha256>-*`) and half-removed (`.discard-*`)
    folders in `unpacked/`, temporary files of the target and index caches. At most once per
    `SWEEP_INTERVAL` unless `force`; best effort (a read-only cache is left as it is). Returns
    how many entries were removed. Complete entries are never touched here.
    """
    root = str(cache.root)
    tmp = os.path.join(root, "tmp")
    stamp = os.path.join(tmp, _SWEPT)
    now = time.time()
    if not os.path.isdir(tmp):
        return 0  # nothing was ever downloaded into this cache: nothing to sweep, no stamp
    if not force:
        with contextlib.suppress(OSError):
            if now - os.stat(stamp).st_mtime < SWEEP_INTERVAL:
                return 0
    candidates: list[os.DirEntry[str]] = []

    def scan(folder: str, wanted: Callable[[str], bool]) -> None:
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            candidates.extend(e for e in entries if wanted(e.name))

    scan(tmp, lambda name: name != _SWEPT)
    scan(os.path.join(root, "targets"), lambda name: name.endswith(".tmp"))
    for folder in ("index-pages", "metadata", "metadata-revalidated"):
        scan(os.path.join(root, "http", folder), lambda name: name.startswith(".tmp-"))
    with contextlib.suppress(OSError), os.scandir(os.path.join(root, "unpacked")) as formats:
        for fmt in formats:
            with contextlib.suppress(OSError), os.scandir(fmt.path) as shards:
                for shard in shards:
                    scan(shard.path, lambda name: name.startswith("."))
    removed = 0
    for entry in candidates:
        try:
            st = entry.stat(follow_symlinks=False)
            if now - st.st_mtime < age:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue
    with contextlib.suppress(OSError):
        with open(stamp, "a"):
            pass
        os.utime(stamp)
    return removed


@contextlib.contextmanager
def open_cache(cache_dir: Path | None = None, *, throwaway: bool = False) -> Iterator[Cache]:
    """The cache for one run; `throwaway` (`--no-cache`) makes a temporary one, removed after.
    Leftovers of interrupted runs are swept first (`sweep_leftovers`)."""
    if not throwaway:
        cache = trusted_cache(cache_root(cache_dir))
        sweep_leftovers(cache)
        yield cache
        return
    tmp = tempfile.mkdtemp(prefix="safepip-nocache-")
    try:
        yield trusted_cache(Path(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
