"""The offline advisory database: build it from OSV data, open it, import and update it.

A safepip database is a ZIP file with one member `packages/<normalized name>.json` per package
(a JSON list of that package's records, reduced to the OSV fields matching and reports use) and
a `safepip-advisory-db.json` member describing it. Auditing reads only the members of the
packages being audited, so opening it costs one ZIP directory read. Withdrawn records are left
out when a database is built. An OSV `all.zip` or a folder of OSV JSON files can also be opened
as is (`--db PATH`); that parses every record, so it is slower.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import NormalizedName, canonicalize_name

from safepip import settings
from safepip.audit import AuditError, Package
from safepip.audit.osv import (
    InvalidRecord,
    PackageIndex,
    parse_record,
    parse_version,
    prepare_listed,
    versions_add_to_ranges,
)
from safepip.urls import file_url_to_path, redact_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from safepip.audit.osv import Advisory, Match
    from safepip.net import Session

FORMAT = 1
META_MEMBER = "safepip-advisory-db.json"
DB_FILENAME = "advisory-db.zip"
SHIPPED = Path(__file__).parent / "data" / "pypi-advisory-db.zip"
SHIPPED_DESCRIPTION = "safepip's bundled PyPA advisory database"
_PACKAGES = "packages/"


class DatabaseError(AuditError):
    """An advisory database (or OSV data to import) that is missing or cannot be read."""

    def __init__(self, message: str, *, path: Path | str, hint: str | None = None) -> None:
        super().__init__(
            message,
            hint=hint
            or "run `safepip db update` (or `safepip db import PATH`) to replace the database",
        )
        self.path = path


def user_data_dir() -> Path:
    """Where `db import` and `db update` keep the database (`settings.user_data_dir`)."""
    return settings.user_data_dir()


@dataclass(frozen=True, kw_only=True, slots=True)
class DatabaseInfo:
    """What `safepip db status` shows about a database."""

    path: Path
    origin: str
    """`bundled`, `user` (imported or updated) or `path` (`--db`)."""
    source: str
    """Where the data came from: a file name or URL, redacted."""
    data_date: dt.date | None
    records: int
    packages: int
    withdrawn: int
    """Withdrawn records left out when the database was built."""
    skipped: int = 0
    """Files of the source data that were not usable OSV records, left out."""
    skipped_examples: tuple[str, ...] = ()
    """The first few of them, as `file (reason)`."""
    source_sha256: str | None
    built: str | None
    format: int | None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CompactDatabase:
    """A safepip database file, read lazily one package at a time."""

    def __init__(
        self,
        path: Path,
        *,
        origin: str,
        description: str | None = None,
        data: bytes | None = None,
    ) -> None:
        self.path = path
        self.origin = origin
        self.warnings: tuple[str, ...] = ()
        self._in_memory = data is not None
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data) if data is not None else path)
            self.meta: dict[str, Any] = json.loads(self._zip.read(META_MEMBER))
        except FileNotFoundError:
            raise DatabaseError(
                f"The advisory database `{path}` does not exist", path=path
            ) from None
        except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise DatabaseError(
                f"The advisory database `{path}` is corrupt or not a safepip database ({exc})",
                path=path,
            ) from exc
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            raise DatabaseError(
                f"The advisory database `{path}` has an unsupported format "
                f"`{self.meta.get('format') if isinstance(self.meta, dict) else '?'}`",
                path=path,
            )
        self._names = {
            n[len(_PACKAGES) : -5] for n in self._zip.namelist() if n.startswith(_PACKAGES)
        }
        if not self._names:
            # An empty database would report every package as clean.
            raise DatabaseError(f"The advisory database `{path}` has no records", path=path)
        self._advisories: dict[str, list[Advisory]] = {}
        self._indexes: dict[NormalizedName, PackageIndex] = {}
        self.data_date: dt.date | None = _date_or_none(self.meta.get("date"))
        source = str(self.meta.get("source") or path.name)
        self.description = description or f"advisory database `{path}` (from {source})"

    def close(self) -> None:
        if not self._in_memory:  # (bytes read whole hold no file, and may be shared)
            self._zip.close()

    def advisories_for(self, name: NormalizedName) -> list[Advisory]:

        if name not in self._names:
            return []
        cached = self._advisories.get(name)
        if cached is not None:
            return cached
        member = f"{_PACKAGES}{name}.json"
        try:
            records = json.loads(self._zip.read(member))
            # Kept for the run: every pin of a package shares one set of advisory objects, so
            # memory grows with the advisories read, not with the findings (issue 11).
            advisories = self._advisories[name] = [parse_record(r) for r in records]
            return advisories
        except (OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as exc:
            raise DatabaseError(
                f"The advisory database `{self.path}` is corrupt: member `{member}` "
                f"cannot be read ({exc})",
                path=self.path,
            ) from exc

    def find(self, packages: Sequence[Package]) -> dict[Package, list[Match] | str]:
        return _find_local(self, packages)

    def affects(self, advisory: Advisory, name: NormalizedName, version: str) -> bool:
        return _index_for(self, name).affects(advisory, version)

    def info(self) -> DatabaseInfo:
        meta = self.meta
        return DatabaseInfo(
            path=self.path,
            origin=self.origin,
            source=str(meta.get("source") or ""),
            data_date=self.data_date,
            records=int(meta.get("records", 0)),
            packages=int(meta.get("packages", len(self._names))),
            withdrawn=int(meta.get("withdrawn", 0)),
            skipped=int(meta.get("skipped", 0)),
            skipped_examples=tuple(str(e) for e in meta.get("skipped_examples") or ()),
            source_sha256=meta.get("source_sha256"),
            built=meta.get("built"),
            format=FORMAT,
        )


class OsvDataDatabase:
    """OSV records read whole from an `all.zip` or a folder of `<ID>.json` files (`--db PATH`).

    Dated by the zip's newest member timestamp, else by its records' newest `modified` date
    (never after today), else undated: never by the day it was read.
    """

    def __init__(self, path: Path, *, today: dt.date | None = None) -> None:
        self.path = path
        self.origin = "path"
        self.by_name: dict[NormalizedName, list[Advisory]] = {}
        self._indexes: dict[NormalizedName, PackageIndex] = {}
        self.records = 0
        self.withdrawn = 0
        reader = OsvReader(path, today=today)
        for _, advisory in reader:
            self.records += 1
            if advisory.withdrawn:
                self.withdrawn += 1
                continue
            for name in {a.name for a in advisory.affected}:
                self.by_name.setdefault(name, []).append(advisory)
        if not reader.count:
            raise reader.no_records_error(path)
        self.skipped = tuple(reader.skipped)
        self.warnings: tuple[str, ...] = skipped_warnings(self.skipped, path)
        self.data_date: dt.date | None = (
            osv_snapshot_date(path, today=today) or reader.newest_modified
        )
        self.description = f"OSV data `{path}`"

    def advisories_for(self, name: NormalizedName) -> list[Advisory]:
        return self.by_name.get(name, [])

    def find(self, packages: Sequence[Package]) -> dict[Package, list[Match] | str]:
        return _find_local(self, packages)

    def affects(self, advisory: Advisory, name: NormalizedName, version: str) -> bool:
        return _index_for(self, name).affects(advisory, version)

    def info(self) -> DatabaseInfo:
        return DatabaseInfo(
            path=self.path,
            origin=self.origin,
            source=str(self.path),
            data_date=self.data_date,
            records=self.records - self.withdrawn,
            packages=len(self.by_name),
            withdrawn=self.withdrawn,
            skipped=len(self.skipped),
            skipped_examples=tuple(f"{s.file} ({s.reason})" for s in self.skipped[:SHOWN_SKIPPED]),
            source_sha256=None,
            built=None,
            format=None,
        )


Database = CompactDatabase | OsvDataDatabase


def _index_for(db: CompactDatabase | OsvDataDatabase, name: NormalizedName) -> PackageIndex:
    """The package's advisories prepared for matching, once per database and package: every
    pin of the package is matched with them, and every fix candidate of its findings."""
    index = db._indexes.get(name)
    if index is None:
        advisories = db.advisories_for(name)
        prepare_listed(e for a in advisories for e in a.affected if e.name == name)
        index = db._indexes[name] = PackageIndex(name, advisories)
    return index


def _find_local(
    db: CompactDatabase | OsvDataDatabase, packages: Sequence[Package]
) -> dict[Package, list[Match] | str]:

    result: dict[Package, list[Match] | str] = {}
    for name, version in packages:
        index = _index_for(db, name)
        matches = index.match(version)
        if (
            not matches
            and parse_version(version) is None
            and any(
                rng
                for a in index.advisories
                for entry in a.affected
                if entry.name == name
                for rng in entry.ranges
            )
        ):
            result[(name, version)] = (
                f"version `{version}` is not a PEP 440 version, so the advisories' version "
                "ranges cannot be evaluated"
            )
            continue
        result[(name, version)] = matches
    return result


def _date_or_none(value: object) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def is_compact(path: Path) -> bool:
    """True if `path` is a safepip database (rather than OSV data)."""
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return META_MEMBER in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def open_database(path: Path, *, today: dt.date | None = None) -> Database:
    """Open `path`: a safepip database, an OSV `all.zip`, or a folder of OSV JSON records."""
    if not path.exists():
        raise DatabaseError(
            f"The advisory data `{path}` does not exist",
            path=path,
            hint="pass an OSV `all.zip`, a folder of OSV JSON files or a safepip database",
        )
    if is_compact(path):
        return CompactDatabase(path, origin="path")
    return OsvDataDatabase(path, today=today)


def user_database_path(data_dir: Path) -> Path:
    return data_dir / DB_FILENAME


_remembered: dict[tuple[str, str, str | None], tuple[bytes, CompactDatabase]] = {}


def _database(path: Path, *, origin: str, description: str | None = None) -> CompactDatabase:
    """`CompactDatabase(path)` read whole, remembered by its bytes: a process that audits
    again with the same file (the check after an install, `safepip.fastpath`) reads it again
    and compares, but does not parse its directory and records again. The advisories a run
    reads are shared with later runs of the same bytes; its warnings are its own."""
    try:
        data = path.read_bytes()
    except OSError:
        return CompactDatabase(path, origin=origin, description=description)  # its error
    key = (str(path), origin, description)
    known = _remembered.get(key)
    if known is None or known[0] != data:
        if len(_remembered) >= 4:
            _remembered.clear()
        base = CompactDatabase(path, origin=origin, description=description, data=data)
        _remembered[key] = known = (data, base)
    db = copy.copy(known[1])
    db.warnings = ()
    return db


def default_database(data_dir: Path) -> CompactDatabase:
    """The database an audit uses by default: the user's imported or updated one when it
    exists, else the bundled snapshot. A user database that is corrupt is an error, not a
    reason to fall back silently."""
    user = user_database_path(data_dir)
    if user.exists():
        db = _database(user, origin="user", description=f"advisory database `{user}`")
        try:
            bundled_date = _database(SHIPPED, origin="bundled").data_date
        except DatabaseError:
            bundled_date = None
        if db.data_date and bundled_date and db.data_date < bundled_date:
            db.warnings = (
                f"The database in `{user}` ({db.data_date}) is older than the one bundled with "
                f"safepip ({bundled_date}); run `safepip db update`",
            )
        return db
    if not SHIPPED.exists():
        raise DatabaseError(
            f"No advisory database: the bundled one is missing (`{SHIPPED}`)",
            path=SHIPPED,
            hint="reinstall safepip, or run `safepip db update` (or `safepip db import PATH`)",
        )
    return _database(SHIPPED, origin="bundled", description=SHIPPED_DESCRIPTION)


# --- reading OSV data -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SkippedRecord:
    """A file of OSV data that was left out because it is not a record safepip can use."""

    file: str
    """The file's name (a zip member, or a path relative to the folder)."""
    reason: str


SHOWN_SKIPPED = 3
"""How many skipped files a warning names; the rest are counted."""


def skipped_warnings(skipped: Sequence[SkippedRecord], source: Path | str) -> tuple[str, ...]:
    """One warning per skipped file, or for many, one line with a count and the first few."""
    if not skipped:
        return ()
    if len(skipped) <= SHOWN_SKIPPED:
        return tuple(
            f"Skipped `{s.file}` in `{source}`: not an OSV record ({s.reason})" for s in skipped
        )
    shown = "; ".join(f"`{s.file}` ({s.reason})" for s in skipped[:SHOWN_SKIPPED])
    return (
        f"Skipped {len(skipped)} files in `{source}` that are not OSV records: {shown}; "
        f"and {len(skipped) - SHOWN_SKIPPED} more",
    )


class OsvReader:
    """The records of an OSV zip (`<ID>.json` members) or folder (searched recursively).

    Iterating yields each usable record with its parsed form. A file that is not JSON or not
    an OSV record (`{}`, no `id`, `affected` that is not a list, ...) is recorded in `skipped`
    by name and the read goes on; an archive that cannot be read raises `DatabaseError`.
    After a full iteration, `count` is the number of usable records and `newest_modified` the
    latest `modified` date of those records that is not after `today` (or None).
    """

    def __init__(self, path: Path, *, today: dt.date | None = None) -> None:
        self.path = path
        self.today = today or dt.date.today()
        self.skipped: list[SkippedRecord] = []
        self.count = 0
        self.newest_modified: dt.date | None = None

    def _files(self) -> Iterator[tuple[str, bytes]]:
        path = self.path
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*.json") if p.is_file()):
                try:
                    yield file.relative_to(path).as_posix(), file.read_bytes()
                except OSError as exc:
                    raise DatabaseError(
                        f"`{file}` cannot be read ({exc.strerror or exc})", path=file, hint=None
                    ) from exc
            return
        try:
            zf = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise DatabaseError(
                f"`{path}` is not an OSV zip or folder ({exc})",
                path=path,
                hint="pass an OSV `all.zip` or a folder of OSV JSON files",
            ) from exc
        with zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                try:
                    yield info.filename, zf.read(info)
                except (OSError, zipfile.BadZipFile, EOFError) as exc:
                    raise DatabaseError(
                        f"Member `{info.filename}` of `{path}` cannot be read ({exc})",
                        path=path,
                        hint="download the OSV data again",
                    ) from exc

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Advisory]]:

        for name, data in self._files():
            try:
                record = json.loads(data)
            except ValueError as exc:
                self.skipped.append(SkippedRecord(file=name, reason=f"not JSON: {exc}"))
                continue
            try:
                advisory = parse_record(record)
            except InvalidRecord as exc:
                self.skipped.append(SkippedRecord(file=name, reason=str(exc)))
                continue
            self.count += 1
            modified = _date_or_none(str(record.get("modified") or "")[:10])
            if (
                modified is not None
                and modified <= self.today
                and (self.newest_modified is None or modified > self.newest_modified)
            ):
                self.newest_modified = modified
            yield record, advisory

    def no_records_error(self, source: Path | str) -> DatabaseError:
        """The error for data without one usable record: it must never read as "clean"."""
        detail = ""
        if self.skipped:
            shown = ", ".join(f"`{s.file}` ({s.reason})" for s in self.skipped[:SHOWN_SKIPPED])
            more = len(self.skipped) - SHOWN_SKIPPED
            detail = f": {plural_files(len(self.skipped))} skipped: {shown}" + (
                f" and {more} more" if more > 0 else ""
            )
        return DatabaseError(
            f"No OSV records found in `{source}`{detail}",
            path=source,
            hint=(
                "pass an OSV `all.zip` or a folder of OSV JSON files; an empty database "
                "would report every package as clean"
            ),
        )


def plural_files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"


def osv_snapshot_date(path: Path, *, today: dt.date | None = None) -> dt.date | None:
    """The date of an OSV zip snapshot: its newest member timestamp, or None.

    Never a timestamp after `today`: the data has records dated in the future (their member
    timestamps too), which would make a snapshot look fresher than it is. A folder has no
    snapshot date (its files' times say when they were copied, not when the data was current).
    """
    today = today or dt.date.today()
    newest: dt.date | None = None
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    try:
                        stamp = dt.date(*info.date_time[:3])
                    except ValueError:
                        continue
                    # 1980-01-01 is the zip epoch: what reproducible archives write.
                    if stamp <= dt.date(1980, 1, 1) or stamp > today:
                        continue
                    if newest is None or stamp > newest:
                        newest = stamp
        except (OSError, zipfile.BadZipFile):
            newest = None
    return newest


# --- building ---------------------------------------------------------------------------------


def _compact_record(record: dict[str, Any], name: NormalizedName) -> dict[str, Any]:
    entries = []
    for entry in record.get("affected") or ():
        package = entry.get("package") or {}
        if package.get("ecosystem", "PyPI") != "PyPI" or not package.get("name"):
            continue
        if canonicalize_name(package["name"]) != name:
            continue
        compact: dict[str, Any] = {"package": {"name": package["name"]}}
        ranges = [
            {"type": "ECOSYSTEM", "events": rng.get("events") or []}
            for rng in entry.get("ranges") or ()
            if rng.get("type") == "ECOSYSTEM"
        ]
        if ranges:
            compact["ranges"] = ranges
        if entry.get("versions"):
            compact["versions"] = entry["versions"]
            # A list that names only versions inside the ranges is left out: it matches
            # nothing the ranges do not, and it was two fifths of the data an audit reads
            # (PyPA's lists enumerate the releases in the ranges; issue 11).
            if ranges and not versions_add_to_ranges(
                parse_record({"id": record["id"], "affected": [compact]}).affected[0]
            ):
                del compact["versions"]
        entries.append(compact)
    out: dict[str, Any] = {"id": record["id"]}
    for key in ("aliases", "summary", "details"):
        if record.get(key):
            out[key] = record[key]
    out["affected"] = entries
    return out


def build_database(
    records: OsvReader,
    out: Path,
    *,
    date: dt.date | None,
    source: str,
    source_sha256: str | None = None,
) -> DatabaseInfo:
    """Write a safepip database built from OSV `records` to `out` (replaced atomically).

    `date` is the snapshot's date; when None, the records' newest `modified` date (not after
    today) stands in, and without one the database is undated ("unknown", which
    `refuse-stale` refuses). Files that are not OSV records are left out and counted. Data
    without a single PyPI record is an error: an empty database would read as "clean".
    The output is reproducible: members are sorted and stamped with the snapshot date, so the
    same data and date give the same bytes (and the same digest).
    """
    by_name: dict[NormalizedName, list[dict[str, Any]]] = {}
    total = withdrawn = 0
    for record, advisory in records:
        total += 1
        if advisory.withdrawn:
            withdrawn += 1
            continue
        for name in sorted({a.name for a in advisory.affected}):
            by_name.setdefault(name, []).append(_compact_record(record, name))
    if not by_name:
        raise records.no_records_error(source)
    if date is None:
        date = records.newest_modified
    meta = {
        "format": FORMAT,
        "ecosystem": "PyPI",
        "date": date.isoformat() if date else None,
        "source": source,
        "source_sha256": source_sha256,
        "records": total - withdrawn,
        "withdrawn": withdrawn,
        "skipped": len(records.skipped),
        "skipped_examples": [f"{s.file} ({s.reason})" for s in records.skipped[:SHOWN_SKIPPED]],
        "packages": len(by_name),
        "built": date.isoformat() if date else None,
        "licence": "CC-BY-4.0 for PyPA advisory database records; see LICENSE-CC-BY-4.0.txt",
    }
    stamp = (max(date.year, 1980), date.month, date.day, 0, 0, 0) if date else (1980, 1, 1, 0, 0, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:

            def write(name: str, data: Any) -> None:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
                zf.writestr(info, payload.encode("utf-8"), compresslevel=9)

            write(META_MEMBER, meta)
            for name in sorted(by_name):
                write(f"{_PACKAGES}{name}.json", sorted(by_name[name], key=lambda r: str(r["id"])))
        # Check what was written before it replaces anything.
        CompactDatabase(tmp, origin="user").close()
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return CompactDatabase(out, origin="user").info()


def import_database(
    source: Path, *, data_dir: Path, date: dt.date | None = None, today: dt.date | None = None
) -> DatabaseInfo:
    """Replace the user database with one built from an OSV zip or folder at `source`."""
    if not source.exists():
        raise DatabaseError(
            f"`{source}` does not exist",
            path=source,
            hint="pass an OSV `all.zip` or a folder of OSV JSON files",
        )
    snapshot = date or osv_snapshot_date(source, today=today)
    digest = file_sha256(source) if source.is_file() else None
    return build_database(
        OsvReader(source, today=today),
        user_database_path(data_dir),
        date=snapshot,
        source=str(source.name if source.is_file() else source),
        source_sha256=digest,
    )


def _default_session(url: str) -> Session:
    from safepip.net import NetConfig, Session
    from safepip.policy import HostPolicy

    return Session(NetConfig(policy=HostPolicy().with_hosts(url), timeout=60.0))


def update_database(
    url_or_path: str,
    *,
    data_dir: Path,
    session_factory: Callable[[], Session] | None = None,
    date: dt.date | None = None,
    today: dt.date | None = None,
) -> DatabaseInfo:
    """Download an OSV `all.zip` (or read a local one) and replace the user database with it.

    The download goes to a temporary file in `data_dir` and is hashed while it is written; the
    database is only replaced once the new one has been built and read back.
    """

    # The network stack (httpx) only for a download: an audit, which imports this module,
    # starts without it (`python -X importtime`).
    from safepip.net import NetworkError
    from safepip.policy import PolicyViolation

    if "://" not in url_or_path:
        return import_database(Path(url_or_path), data_dir=data_dir, date=date, today=today)
    if url_or_path.startswith("file:"):
        return import_database(
            file_url_to_path(url_or_path), data_dir=data_dir, date=date, today=today
        )
    shown = redact_url(url_or_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".download.{os.getpid()}.zip"
    digest = hashlib.sha256()
    session = session_factory() if session_factory else _default_session(url_or_path)
    last_modified: str | None = None
    try:
        with session.stream(url_or_path, purpose="the advisory database") as resp:
            resp.raise_for_status()
            last_modified = resp.headers.get("last-modified")
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    digest.update(chunk)
                    fh.write(chunk)
        snapshot = date or _download_date(tmp, last_modified, today)
        return build_database(
            OsvReader(tmp, today=today),
            user_database_path(data_dir),
            date=snapshot,
            source=shown,
            source_sha256=digest.hexdigest(),
        )
    except (NetworkError, PolicyViolation) as exc:
        raise DatabaseError(
            f"Could not update the advisory database from `{shown}`: {exc.message}",
            path=shown,
            hint=exc.hint
            or "check the network, or set `audit.update-url` to a mirror you can reach",
        ) from exc
    finally:
        if session_factory is None:
            session.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _download_date(path: Path, last_modified: str | None, today: dt.date | None) -> dt.date | None:
    """The zip's newest member timestamp, else the server's `Last-Modified` (not after today),
    else None (the records' `modified` dates then stand in)."""
    today = today or dt.date.today()
    from_members = osv_snapshot_date(path, today=today)
    if from_members is not None or not last_modified:
        return from_members
    from email.utils import parsedate_to_datetime

    try:
        stamp = parsedate_to_datetime(last_modified).date()
    except (TypeError, ValueError):
        return None
    return stamp if stamp <= today else None
