"""Build reproducible wheels and sdists for tests: honest ones, and ones that lie on purpose."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import itertools
import tarfile
import zipfile
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import Version

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "WheelFactory",
    "build_sdist",
    "build_wheel",
    "dist_filename_name",
    "import_name",
    "record_digest",
    "sdist_marker_path",
    "sha256_file",
    "wheel_filename",
]

# Every member gets this timestamp so the same inputs always give the same archive bytes.
ZIP_TIMESTAMP = (2020, 2, 2, 0, 0, 0)
TAR_MTIME = 1580601600  # 2020-02-02T00:00:00Z
_FILE_MODE = 0o644
_EXEC_MODE = 0o755


def sha256_file(path: Path) -> str:
    """The hex sha256 digest of the file at `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def record_digest(data: bytes) -> str:
    """The RECORD hash field for `data`: `sha256=` + urlsafe base64 without padding."""
    raw = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def dist_filename_name(name: str) -> str:
    """The project name as written in wheel and sdist filenames (`My.Pkg` -> `my_pkg`)."""
    return canonicalize_name(name).replace("-", "_")


def import_name(name: str) -> str:
    """The top-level package the default wheel contents provide (`my-pkg` -> `my_pkg`)."""
    return dist_filename_name(name)


def _filename_version(version: str) -> str:
    # Filenames carry the normalised version; `-` never survives normalisation.
    return str(Version(version))


def wheel_filename(name: str, version: str, tag: str = "py3-none-any") -> str:
    """The filename `build_wheel` gives a wheel of `name` `version` with `tag`."""
    return f"{dist_filename_name(name)}-{_filename_version(version)}-{tag}.whl"


def _metadata(
    name: str,
    version: str,
    *,
    requires: Sequence[str],
    requires_python: str | None,
    extras: Mapping[str, Sequence[str]],
    license: str | None = None,
) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: Test package {name}",
    ]
    if license is not None:
        lines.append(f"License: {license}")
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires)
    for extra, extra_requires in extras.items():
        lines.append(f"Provides-Extra: {extra}")
        for text in extra_requires:
            req = Requirement(text)
            marker = f'extra == "{extra}"'
            if req.marker is not None:
                marker = f"({req.marker}) and {marker}"
            req.marker = None
            lines.append(f"Requires-Dist: {req}; {marker}")
    return "\n".join(lines) + "\n\n"


def _wheel_info(tag: str, *, root_is_purelib: bool) -> str:
    lines = [
        "Wheel-Version: 1.0",
        "Generator: safepip-tests (0)",
        f"Root-Is-Purelib: {'true' if root_is_purelib else 'false'}",
    ]
    lines.extend(f"Tag: {t}" for t in sorted(str(t) for t in parse_tag(tag)))
    return "\n".join(lines) + "\n"


def _entry_points(entry_points: Mapping[str, Mapping[str, str]]) -> str:
    sections = []
    for group, entries in entry_points.items():
        body = "".join(f"{key} = {value}\n" for key, value in entries.items())
        sections.append(f"[{group}]\n{body}")
    return "\n".join(sections)


def _as_bytes(content: bytes | str) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _zip_info(arcname: str, *, executable: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so the mode bits below are honoured.
    info.external_attr = (0o100000 | (_EXEC_MODE if executable else _FILE_MODE)) << 16
    return info


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    files: Mapping[str, bytes | str] | None = None,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    extras: Mapping[str, Sequence[str]] | None = None,
    tag: str = "py3-none-any",
    entry_points: Mapping[str, Mapping[str, str]] | None = None,
    data_files: Mapping[str, bytes | str] | None = None,
    record_override: Callable[[str], str] | str | None = None,
    extra_members: Mapping[str, bytes | str] | None = None,
    root_is_purelib: bool = True,
    salt: str | bytes | None = None,
    license: str | None = None,
) -> Path:
    """Write a wheel of `name` `version` into `dest_dir` and return its path.

    By default the wheel is correct: `<import_name>/__init__.py` holding
    `__version__ = "<version>"`, METADATA 2.1 (`Requires-Dist`, `Requires-Python`,
    `Provides-Extra`, with extra requirements marked `extra == "..."`), WHEEL and a RECORD
    whose rows are `path,sha256=<urlsafe b64 without padding>,size` plus an empty-hash row
    for RECORD itself (PEP 376/427).

    - `files` replaces the default module entirely: `{"pkg/__init__.py": "..."}`.
    - `data_files` go under `<name>-<ver>.data/` (`"scripts/tool"`, `"data/share/x"`);
      scripts are stored executable.
    - `record_override` lies on purpose: a string replaces RECORD, a callable receives the
      correct RECORD text and returns the text to write.
    - `extra_members` are raw zip members without RECORD rows (`"../evil.py"`,
      `"/abs.py"`): nothing is normalised or checked.
    - `license` is written as the `License` field before `Requires-Dist`, as is: its line breaks
      followed by blanks are continuation lines (whitespace-only ones too).
    - `salt` changes the archive bytes (via the zip comment) but not its filename or
      contents, for "same filename, other bytes" attacks.

    Archive bytes depend only on the arguments (fixed timestamps and member order), so the
    same call twice gives the same sha256.
    """
    extras = extras or {}
    dist = dist_filename_name(name)
    dist_info = f"{dist}-{_filename_version(version)}.dist-info"
    data_dir = f"{dist}-{_filename_version(version)}.data"

    if files is None:
        files = {f"{import_name(name)}/__init__.py": f'__version__ = "{version}"\n'}

    members: list[tuple[str, bytes, bool]] = [
        (path, _as_bytes(content), False) for path, content in files.items()
    ]
    members.extend(
        (f"{data_dir}/{path}", _as_bytes(content), path.startswith("scripts/"))
        for path, content in (data_files or {}).items()
    )
    meta = _metadata(
        name,
        version,
        requires=requires,
        requires_python=requires_python,
        extras=extras,
        license=license,
    )
    members.append((f"{dist_info}/METADATA", meta.encode("utf-8"), False))
    members.append(
        (
            f"{dist_info}/WHEEL",
            _wheel_info(tag, root_is_purelib=root_is_purelib).encode("utf-8"),
            False,
        )
    )
    if entry_points:
        members.append(
            (f"{dist_info}/entry_points.txt", _entry_points(entry_points).encode("utf-8"), False)
        )

    record_path = f"{dist_info}/RECORD"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for path, content, _ in members:
        writer.writerow([path, record_digest(content), str(len(content))])
    writer.writerow([record_path, "", ""])
    record = buffer.getvalue()
    if isinstance(record_override, str):
        record = record_override
    elif record_override is not None:
        record = record_override(record)

    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / wheel_filename(name, version, tag)
    with zipfile.ZipFile(target, "w") as archive:
        for path, content, executable in members:
            archive.writestr(_zip_info(path, executable=executable), content)
        for path, raw in (extra_members or {}).items():
            archive.writestr(_zip_info(path), _as_bytes(raw))
        archive.writestr(_zip_info(record_path), record.encode("utf-8"))
        if salt is not None:
            archive.comment = _as_bytes(salt)
    return target


def sdist_marker_path(dest_dir: Path, name: str) -> Path:
    """The file the `setup.py` of `build_sdist(dest_dir, name, ...)` creates if it ever runs."""
    return dest_dir / f"SDIST-EXECUTED-{dist_filename_name(name)}"


def build_sdist(dest_dir: Path, name: str, version: str) -> Path:
    """Write a minimal `<name>-<version>.tar.gz` (PKG-INFO and setup.py) into `dest_dir`.

    Its `setup.py` creates `sdist_marker_path(dest_dir, name)` as the first thing it does, so
    a test can prove that no code from the sdist ever ran. Bytes are reproducible.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    base = f"{dist_filename_name(name)}-{_filename_version(version)}"
    marker = sdist_marker_path(dest_dir, name).resolve()
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
    setup_py = (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('setup.py ran\\n')\n"
        "from setuptools import setup\n"
        f"setup(name={name!r}, version={version!r})\n"
    )
    target = dest_dir / f"{base}.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, text in (("PKG-INFO", pkg_info), ("setup.py", setup_py)):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size = len(data)
            info.mtime = TAR_MTIME
            info.mode = _FILE_MODE
            archive.addfile(info, io.BytesIO(data))
    # gzip with a fixed mtime and no embedded filename keeps the bytes reproducible.
    with (
        target.open("wb") as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed,
    ):
        compressed.write(raw.getvalue())
    return target


class WheelFactory:
    """Builds wheels and sdists, each call in its own fresh folder under `root`.

    A fresh folder per call means two builds with the same filename (for example with a
    different `salt`) never overwrite each other. Pass `dest_dir` to choose the folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._counter = itertools.count()

    def _fresh_dir(self) -> Path:
        path = self.root / f"build-{next(self._counter):04d}"
        path.mkdir(parents=True)
        return path

    def __call__(
        self,
        name: str,
        version: str,
        *,
        dest_dir: Path | None = None,
        files: Mapping[str, bytes | str] | None = None,
        requires: Sequence[str] = (),
        requires_python: str | None = None,
        extras: Mapping[str, Sequence[str]] | None = None,
        tag: str = "py3-none-any",
        entry_points: Mapping[str, Mapping[str, str]] | None = None,
        data_files: Mapping[str, bytes | str] | None = None,
        record_override: Callable[[str], str] | str | None = None,
        extra_members: Mapping[str, bytes | str] | None = None,
        root_is_purelib: bool = True,
        salt: str | bytes | None = None,
        license: str | None = None,
    ) -> Path:
        """`build_wheel` into `dest_dir` or a fresh folder; same keyword arguments."""
        return build_wheel(
            dest_dir if dest_dir is not None else self._fresh_dir(),
            name,
            version,
            files=files,
            requires=requires,
            requires_python=requires_python,
            extras=extras,
            tag=tag,
            entry_points=entry_points,
            data_files=data_files,
            record_override=record_override,
            extra_members=extra_members,
            root_is_purelib=root_is_purelib,
            salt=salt,
            license=license,
        )

    def sdist(self, name: str, version: str, *, dest_dir: Path | None = None) -> Path:
        """`build_sdist` into `dest_dir` or a fresh folder (see `sdist_marker_path`)."""
        return build_sdist(dest_dir if dest_dir is not None else self._fresh_dir(), name, version)
