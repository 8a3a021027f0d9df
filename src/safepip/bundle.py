"""The `.safepip` bundle format: one file carrying a lock, its verified wheels and advisory data.

Format version 1 is an uncompressed POSIX tar archive (ustar headers; a pax `path` record only
for names longer than 100 bytes) with these members, in this order:

- `manifest.json`: the format name and version, the targets the bundle was made for, where the
  lock and the advisory data came from, and the name, size and sha256 of every other member;
- `advisories/advisory-db.zip`: the advisory database the bundle was audited with;
- `pylock.toml`: the lock (PEP 751) whose wheels are listed by `path` (`wheels/<file>`);
- `wheels/<file>.whl`: the wheels, sorted by name.

Every header is fixed (mode 0644, owner 0, time 0), so the same inputs give the same bytes and
the whole-file sha256 can be published and checked (`--print-digest`, `--expect-sha256`).

Reading is strict and streaming: the reader accepts exactly what the writer produces (regular
files, ustar magic, correct header checksums, zero padding, two zero blocks and nothing after
them), refuses any name that is not in the manifest, a name seen twice, a size or digest that
differs from the manifest, and a lock whose wheels are not exactly the bundled ones. Memory is
bounded by the manifest's size limit; members are streamed to disk while hashed. The manifest
cannot vouch for itself: without the external digest, a reader detects corruption and
inconsistency, not an attacker who rewrites the whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from safepip.errors import ExitCode, SafepipError
from safepip.settings import read_toml

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from safepip.target import Target

FORMAT_NAME = "safepip-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = "pylock.toml"
ADVISORIES = "advisories/advisory-db.zip"
WHEELS = "wheels/"
MAX_MANIFEST_SIZE = 8 << 20
"""The manifest is the only member read into memory."""
MAX_MEMBERS = 100_000

_BLOCK = 512
_WHEEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(SafepipError):
    """A bundle that cannot be used as given: unsupported format, another platform."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class BundleIntegrityError(BundleError):
    """A bundle that is damaged, truncated, tampered with or inconsistent."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, path: Path, problem: str, *, member: str | None = None) -> None:
        self.problem = problem
        self.member = member
        where = f" (member `{member}`)" if member else ""
        super().__init__(
            f"Refusing bundle `{path}`: {problem}{where}",
            path=path,
            hint="get the bundle again from its source and compare its sha256 with the "
            "published one (`--expect-sha256`)",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class BundleTarget:
    """An environment a bundle was made for."""

    implementation: str
    """The `implementation_name` marker, e.g. `cpython`."""
    python_version: str
    """`X.Y`."""
    platform: str
    """The most preferred platform tag, e.g. `manylinux_2_28_x86_64`."""

    @classmethod
    def of(cls, target: Target) -> BundleTarget:
        # `linux_*` is in every Linux tag list (some interpreters even rank it first); the
        # manylinux/musllinux tag says which machines the wheels were chosen for.
        platforms = [t.platform for t in target.tags if t.platform != "any"]
        specific = [p for p in platforms if not p.startswith("linux_")]
        platform = (specific or platforms or ["any"])[0]
        return cls(
            implementation=target.markers.get("implementation_name", ""),
            python_version="{}.{}".format(*target.version[:2]),
            platform=platform,
        )

    def fits(self, target: Target) -> bool:
        """True if `target` is this implementation and Python version and takes wheels built
        for this platform (a `manylinux_2_39` machine also takes `manylinux_2_28` wheels)."""
        return (
            self.implementation == target.markers.get("implementation_name", "")
            and self.python_version == "{}.{}".format(*target.version[:2])
            and (self.platform == "any" or any(t.platform == self.platform for t in target.tags))
        )

    def describe(self) -> str:
        return f"{self.implementation} {self.python_version} on {self.platform}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    """What a bundle says it holds (`manifest.json`)."""

    created_by: str
    targets: tuple[BundleTarget, ...]
    members: tuple[Member, ...]
    """Every member but the manifest, sorted by name."""
    lock_source: str
    """The name of the lock the bundle was made from."""
    advisory_date: str | None
    """The date of the bundled advisory data (ISO), if known."""
    advisory_source: str
    format_version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        data = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "created_by": self.created_by,
            "lock": {"source": self.lock_source},
            "advisories": {"date": self.advisory_date, "source": self.advisory_source},
            "targets": [
                {
                    "implementation": t.implementation,
                    "python_version": t.python_version,
                    "platform": t.platform,
                }
                for t in self.targets
            ],
            "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in self.members],
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @property
    def wheels(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.name.startswith(WHEELS))

    def fitting(self, target: Target) -> BundleTarget | None:
        return next((t for t in self.targets if t.fits(target)), None)


def _valid_member_name(name: str) -> bool:
    if name in (LOCK, ADVISORIES):
        return True
    if not name.startswith(WHEELS):
        return False
    filename = name[len(WHEELS) :]
    return bool(_WHEEL_NAME.match(filename)) and ".." not in filename


def parse_manifest(raw: bytes, path: Path) -> Manifest:
    """Validate `manifest.json` strictly: every field typed, names safe, no duplicates."""

    def bad(problem: str) -> BundleIntegrityError:
        return BundleIntegrityError(path, f"the manifest is invalid: {problem}", member=MANIFEST)

    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise bad(f"`format` is not `{FORMAT_NAME}`")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"Bundle `{path}` has format version `{version}`; this safepip reads version "
            f"{FORMAT_VERSION}",
            path=path,
            hint="install it with the safepip version that made it (see `created_by`)",
        )

    def text(obj: object, key: str, *, optional: bool = False) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise bad(f"`{key}` is missing or not a string")
        return value

    targets = []
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise bad("`targets` is missing or empty")
    for item in raw_targets:
        targets.append(
            BundleTarget(
                implementation=text(item, "implementation"),
                python_version=text(item, "python_version"),
                platform=text(item, "platform"),
            )
        )
    members: list[Member] = []
    raw_members = data.get("members")
    if not isinstance(raw_members, list) or len(raw_members) > MAX_MEMBERS:
        raise bad("`members` is missing or too long")
    seen: set[str] = set()
    for item in raw_members:
        name = text(item, "name")
        size = item.get("size")
        sha256 = text(item, "sha256")
        if not _valid_member_name(name):
            raise bad(f"member name `{name}` is not allowed")
        if name in seen:
            raise bad(f"member `{name}` is listed twice")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"the size of `{name}` is not a number")
        if not _SHA256.match(sha256):
            raise bad(f"the sha256 of `{name}` is not a hex digest")
        seen.add(name)
        members.append(Member(name=name, size=size, sha256=sha256))
    for required in (LOCK, ADVISORIES):
        if required not in seen:
            raise bad(f"`{required}` is not listed")
    return Manifest(
        created_by=text(data, "created_by"),
        targets=tuple(targets),
        members=tuple(members),
        lock_source=text(data.get("lock"), "source"),
        advisory_date=text(data.get("advisories"), "date", optional=True),
        advisory_source=text(data.get("advisories"), "source"),
    )


# --- writing --------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def _header(name: str, size: int, typeflag: bytes) -> bytes:
    encoded = name.encode()
    assert len(encoded) <= 100
    block = bytearray(_BLOCK)
    block[0 : len(encoded)] = encoded
    block[100:108] = _octal(0o644, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    return bytes(block)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length = len(str(length).encode()) + len(body)
    return str(length).encode() + body


def _member_headers(name: str, size: int) -> bytes:
    if len(name.encode()) <= 100:
        return _header(name, size, b"0")
    record = _pax_record("path", name)
    pax = _header("././@PaxHeader", len(record), b"x") + _padded(record)
    return pax + _header(name.encode()[:100].decode("ascii", "ignore"), size, b"0")


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % _BLOCK)


def file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def write_bundle(
    out: Path,
    files: Mapping[str, Path],
    *,
    created_by: str,
    targets: Sequence[BundleTarget],
    lock_source: str,
    advisory_date: str | None,
    advisory_source: str,
) -> str:
    """Write the bundle of `files` (member name → local file) to `out`; return its sha256.

    Each file is hashed for the manifest, then hashed again while copied: a file that changes
    in between is an error, so the manifest always describes the bytes written. `out` is
    replaced atomically.
    """
    names = sorted(files, key=lambda n: (n != ADVISORIES, n != LOCK, n))
    members = []
    for name in names:
        if not _valid_member_name(name):
            raise ValueError(f"not a bundle member name: {name}")
        size, sha256 = file_digest(files[name])
        members.append(Member(name=name, size=size, sha256=sha256))
    manifest = Manifest(
        created_by=created_by,
        targets=tuple(dict.fromkeys(targets)),
        members=tuple(members),
        lock_source=lock_source,
        advisory_date=advisory_date,
        advisory_source=advisory_source,
    ).to_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    whole = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:

            def emit(data: bytes) -> None:
                whole.update(data)
                fh.write(data)

            emit(_member_headers(MANIFEST, len(manifest)) + _padded(manifest))
            for member in members:
                emit(_member_headers(member.name, member.size))
                digest = hashlib.sha256()
                size = 0
                with files[member.name].open("rb") as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                        emit(chunk)
                if (size, digest.hexdigest()) != (member.size, member.sha256):
                    raise BundleIntegrityError(
                        out, f"`{files[member.name]}` changed while the bundle was written"
                    )
                emit(b"\0" * (-size % _BLOCK))
            emit(b"\0" * (2 * _BLOCK))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return whole.hexdigest()


# --- reading --------------------------------------------------------------------------------


class _Reader:
    """Reads the file once, hashing every byte (the whole-file digest comes from this pass)."""

    def __init__(self, fh: IO[bytes], path: Path) -> None:
        self.fh = fh
        self.path = path
        self.digest = hashlib.sha256()
        self.offset = 0

    def exactly(self, size: int, what: str) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        self.offset += len(data)
        if len(data) != size:
            raise BundleIntegrityError(self.path, f"the file is truncated (in {what})")
        return data

    def chunks(self, size: int, what: str) -> Iterator[bytes]:
        left = size
        while left:
            chunk = self.exactly(min(left, 1 << 20), what)
            left -= len(chunk)
            yield chunk

    def rest(self) -> int:
        extra = 0
        while chunk := self.fh.read(1 << 20):
            self.digest.update(chunk)
            extra += len(chunk)
        return extra


def _field(block: bytes, start: int, end: int) -> bytes:
    return block[start:end].split(b"\0", 1)[0]


def _number(block: bytes, start: int, end: int) -> int | None:
    raw = block[start:end].rstrip(b"\0 ").lstrip(b" ")
    if not raw or not all(48 <= c <= 55 for c in raw):
        return None
    return int(raw, 8)


def _parse_header(block: bytes, path: Path, offset: int) -> tuple[str, int, bytes]:
    """(name, size, typeflag) of a ustar header written by `_header`, checked strictly."""

    def bad(problem: str) -> BundleIntegrityError:
        return BundleIntegrityError(path, f"{problem} at offset {offset}")

    stored = _number(block, 148, 156)
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored is None or stored != computed:
        raise bad("a tar header has a wrong checksum")
    if block[257:265] != b"ustar\x0000":
        raise bad("a tar header is not a ustar header")
    typeflag = block[156:157]
    if typeflag not in (b"0", b"x"):
        kind = {b"1": "hard link", b"2": "symbolic link", b"5": "folder"}.get(typeflag)
        raise bad(f"a member is a {kind or f'tar entry of type {typeflag!r}'}, not a file")
    size = _number(block, 124, 136)
    if size is None:
        raise bad("a tar header has no valid size")
    if _field(block, 345, 500):
        raise bad("a tar header uses a name prefix")
    try:
        name = _field(block, 0, 100).decode("ascii")
    except UnicodeDecodeError:
        raise bad("a member name is not ASCII") from None
    return name, size, typeflag


def _pax_path(data: bytes, path: Path) -> str:
    records: dict[str, str] = {}
    rest = data
    while rest:
        head, sep, _ = rest.partition(b" ")
        if not sep or not head.isdigit() or int(head) > len(rest) or int(head) <= len(head) + 1:
            raise BundleIntegrityError(path, "a pax header is malformed")
        record, rest = rest[: int(head)], rest[int(head) :]
        if not record.endswith(b"\n"):
            raise BundleIntegrityError(path, "a pax header is malformed")
        key, eq, value = record[len(head) + 1 : -1].partition(b"=")
        if not eq or key != b"path" or "path" in records:
            raise BundleIntegrityError(path, f"a pax header sets `{key.decode(errors='replace')}`")
        try:
            records["path"] = value.decode("ascii")
        except UnicodeDecodeError:
            raise BundleIntegrityError(path, "a member name is not ASCII") from None
    if "path" not in records:
        raise BundleIntegrityError(path, "a pax header is empty")
    return records["path"]


def _entries(reader: _Reader) -> Iterator[tuple[str, int]]:
    """(name, size) of each member; the caller reads exactly `size` bytes, then the padding
    is checked. Ends after the two zero blocks that close the archive."""
    pending_name: str | None = None
    while True:
        offset = reader.offset
        block = reader.exactly(_BLOCK, "a tar header")
        if block == bytes(_BLOCK):
            if pending_name is not None:
                raise BundleIntegrityError(reader.path, "a pax header has no member")
            if reader.exactly(_BLOCK, "the end of the archive") != bytes(_BLOCK):
                raise BundleIntegrityError(reader.path, "the end-of-archive marker is broken")
            return
        name, size, typeflag = _parse_header(block, reader.path, offset)
        if typeflag == b"x":
            if pending_name is not None or size > 4096:
                raise BundleIntegrityError(reader.path, f"a bad pax header at offset {offset}")
            pending_name = _pax_path(reader.exactly(size, "a pax header"), reader.path)
            _check_padding(reader, size)
            continue
        if pending_name is not None:
            name, pending_name = pending_name, None
        yield name, size
        _check_padding(reader, size)


def _check_padding(reader: _Reader, size: int) -> None:
    if reader.exactly(-size % _BLOCK, "padding") != bytes(-size % _BLOCK):
        raise BundleIntegrityError(reader.path, "data hidden in the padding of a member")


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenedBundle:
    """A bundle whose every member was verified and written to `root`."""

    path: Path
    sha256: str
    """The sha256 of the whole file."""
    manifest: Manifest
    root: Path
    lock: Path
    advisories: Path
    wheels: Mapping[str, Path]
    """Wheel filename → extracted file."""


def open_bundle(path: Path, dest: Path, *, expect_sha256: str | None = None) -> OpenedBundle:
    """Verify the bundle at `path` in one streaming pass and extract it into `dest`.

    `dest` must be an empty folder the caller owns (outside any environment); on any error it
    may hold partial files, which the caller removes. Checks, in order: the manifest comes
    first and is valid; each further member is named in the manifest, appears once, has the
    manifest's size and sha256; every listed member is present; nothing follows the archive;
    the whole file has `expect_sha256` (when given); and the lock lists exactly the bundled
    wheels with their sha256. Raises `BundleIntegrityError` (exit 3) on any difference.
    """
    if expect_sha256 is not None:
        expect_sha256 = expect_sha256.lower().removeprefix("sha256:")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise BundleError(f"Cannot read bundle `{path}`: {exc.strerror}", path=path) from exc
    with fh:
        reader = _Reader(fh, path)
        entries = _entries(reader)
        first = next(entries, None)
        if first is None or first[0] != MANIFEST:
            raise BundleIntegrityError(path, "the first member is not `manifest.json`")
        if first[1] > MAX_MANIFEST_SIZE:
            raise BundleIntegrityError(path, "the manifest is too large", member=MANIFEST)
        manifest = parse_manifest(reader.exactly(first[1], "the manifest"), path)
        listed = {m.name: m for m in manifest.members}
        written: dict[str, Path] = {}
        for name, size in entries:
            member = listed.get(name)
            if member is None:
                problem = "a member that is not in the manifest"
                if name == MANIFEST:
                    problem = "a second manifest"
                elif not _valid_member_name(name):
                    problem = "a member with a name that is not allowed"
                raise BundleIntegrityError(path, problem, member=name)
            if name in written:
                raise BundleIntegrityError(path, "a member appears twice", member=name)
            if size != member.size:
                raise BundleIntegrityError(
                    path,
                    f"the member has {size} bytes but the manifest says {member.size}",
                    member=name,
                )
            # Names were checked against a strict pattern: no separators beyond `wheels/`,
            # no `..`, no absolute paths, so the join stays inside `dest`.
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with out.open("xb") as fh_out:
                for chunk in reader.chunks(size, f"member `{name}`"):
                    digest.update(chunk)
                    fh_out.write(chunk)
            if digest.hexdigest() != member.sha256:
                raise BundleIntegrityError(
                    path,
                    f"sha256 mismatch: the manifest says {member.sha256}, "
                    f"the member has {digest.hexdigest()}",
                    member=name,
                )
            written[name] = out
        missing = sorted(set(listed) - set(written))
        if missing:
            raise BundleIntegrityError(
                path, "a member listed in the manifest is missing", member=missing[0]
            )
        if reader.rest():
            raise BundleIntegrityError(path, "data after the end of the archive")
    whole = reader.digest.hexdigest()
    if expect_sha256 is not None and whole != expect_sha256:
        raise BundleIntegrityError(
            path, f"the file's sha256 is {whole}, not the expected {expect_sha256}"
        )
    _check_lock(path, written[LOCK], listed)
    return OpenedBundle(
        path=path,
        sha256=whole,
        manifest=manifest,
        root=dest,
        lock=written[LOCK],
        advisories=written[ADVISORIES],
        wheels={n[len(WHEELS) :]: p for n, p in written.items() if n.startswith(WHEELS)},
    )


def _check_lock(path: Path, lock: Path, listed: Mapping[str, Member]) -> None:
    """The lock must list exactly the bundled wheels, by path, with their sha256."""

    def bad(problem: str) -> BundleIntegrityError:
        return BundleIntegrityError(path, problem, member=LOCK)

    try:
        data = read_toml(lock)
    except (OSError, ValueError) as exc:
        raise bad(f"the lock is not valid TOML ({exc})") from None
    referenced: set[str] = set()
    packages = data.get("packages")
    for package in packages if isinstance(packages, list) else ():
        wheels = package.get("wheels") if isinstance(package, dict) else None
        if package.get("sdist") or package.get("archive") or package.get("vcs"):
            raise bad(f"the lock lists a source for `{package.get('name')}`, not only wheels")
        for wheel in wheels if isinstance(wheels, list) else ():
            name = wheel.get("path") if isinstance(wheel, dict) else None
            member = listed.get(name) if isinstance(name, str) else None
            if member is None or not str(name).startswith(WHEELS):
                raise bad(f"the lock lists `{name}`, which is not a bundled wheel")
            hashes = wheel.get("hashes")
            if not isinstance(hashes, dict) or hashes.get("sha256") != member.sha256:
                raise bad(f"the lock's sha256 for `{name}` differs from the manifest's")
            referenced.add(member.name)
    unlisted = sorted(n for n in listed if n.startswith(WHEELS) and n not in referenced)
    if unlisted:
        raise bad(f"`{unlisted[0]}` is bundled but not in the lock")
