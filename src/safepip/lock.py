"""Lock files: writing requirements.txt and PEP 751 `pylock.toml` locks, reading them back, freeze.

A lock written here is a hash-mode requirements file (or a pylock file) that lists every file of
each pinned version on the index, so it also installs on other platforms. Credentials never
appear in a lock: index and file URLs lose their `user:password@` part.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from packaging.utils import NormalizedName, canonicalize_name

from safepip.errors import ExitCode, SafepipError
from safepip.plan import Artifact, Pin
from safepip.policy import PolicyViolation
from safepip.urls import without_credentials

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from safepip.fetch import Cache
    from safepip.index import IndexClient, IndexFile
    from safepip.net import Session
    from safepip.requirements import ParsedRequirement
    from safepip.resolver import Resolution
    from safepip.target import Target

LOCK_HASHES = ("sha256", "sha384", "sha512")
PYLOCK_VERSION = "1.0"
FREEZE_SKIPPED = frozenset({"pip", "setuptools", "wheel", "distribute"})
"""Left out of `safepip freeze` unless `--all` is given, as pip does."""


class LockError(SafepipError):
    """A lock file that cannot be read, or a lock that cannot be written."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class LockFormat(enum.Enum):
    REQUIREMENTS = "requirements"
    PYLOCK = "pylock"


def lock_format(output: str) -> LockFormat:
    """PEP 751 for `pylock.toml` and `pylock.<name>.toml`; a requirements file for anything else."""
    from packaging.pylock import is_valid_pylock_path

    if output != "-" and is_valid_pylock_path(Path(output)):
        return LockFormat.PYLOCK
    return LockFormat.REQUIREMENTS


def _load_toml(path: Path) -> dict[str, Any]:
    from safepip.settings import read_toml

    try:
        return read_toml(path)
    except OSError as exc:
        raise LockError(f"Cannot read `{path}`: {exc.strerror}", path=str(path)) from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise LockError(f"`{path}` is not valid TOML: {exc}", path=str(path)) from exc


# --- existing pins --------------------------------------------------------------------------

_PIN_LINE = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*"
    r"===?\s*(?P<version>[^\s;\\#]+)"
)


def read_existing_pins(path: Path) -> dict[NormalizedName, str]:
    """The `name==version` pins of an existing lock (requirements or pylock); empty if absent.

    Read leniently: lines that are not plain pins are ignored, since the file is only a source
    of preferences (pip-compile keeps a pin while it still satisfies the inputs).
    """
    if not path.is_file():
        return {}
    if lock_format(str(path)) is LockFormat.PYLOCK:
        data = _load_toml(path)
        pins: dict[NormalizedName, str] = {}
        for package in data.get("packages", []):
            if isinstance(package, dict) and package.get("name") and package.get("version"):
                pins[canonicalize_name(str(package["name"]))] = str(package["version"])
        return pins
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return {}
    found: dict[NormalizedName, str] = {}
    for line in text.splitlines():
        match = _PIN_LINE.match(line)
        if match:
            found[canonicalize_name(match["name"])] = match["version"]
    return found


# --- hashes of every file -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedFile:
    """One file of a pinned version with the digests the lock records for it."""

    file: IndexFile
    hashes: Mapping[str, str]
    """Algorithm -> hex digest; always has `sha256`."""


def lock_files(
    resolution: Resolution, *, session: Session, cache: Cache
) -> dict[NormalizedName, tuple[LockedFile, ...]]:
    """Every file of every pin with its sha256; files whose index publishes none are downloaded.

    A downloaded file is hashed by `fetch` as it streams into the cache (find-links folders
    publish no hashes, for instance). Files are sorted by name for a stable lock.
    """
    from safepip.fetch import fetch_artifacts

    todo: list[Artifact] = []
    for pin in resolution.pins:
        for file in resolution.files.get(pin.name, ()):
            if "sha256" not in file.hashes:
                todo.append(
                    Artifact(
                        name=pin.name,
                        version=pin.version,
                        filename=file.filename,
                        url=file.url,
                        origin=file.origin,
                        expected_hashes=frozenset(),
                        hash_source="none",
                        size=file.size,
                    )
                )
    computed: dict[str, str] = {}
    if todo:
        for fetched in fetch_artifacts(session, todo, cache):
            computed[fetched.artifact.url] = fetched.sha256
    out: dict[NormalizedName, tuple[LockedFile, ...]] = {}
    for pin in resolution.pins:
        locked = []
        for file in sorted(resolution.files.get(pin.name, ()), key=lambda f: f.filename):
            hashes = {a: d for a, d in file.hashes.items() if a in LOCK_HASHES}
            if "sha256" not in hashes:
                hashes = {"sha256": computed[file.url]}
            locked.append(LockedFile(file=file, hashes=hashes))
        out[pin.name] = tuple(locked)
    return out


# --- requirements.txt -----------------------------------------------------------------------


def _via_text(via: str, pinned: set[NormalizedName]) -> str:
    from safepip.requirements import COMMAND_LINE

    if via in pinned or via == COMMAND_LINE or via.endswith("pyproject.toml"):
        return via
    return f"-r {via}"


def render_requirements(
    resolution: Resolution,
    files: Mapping[NormalizedName, Sequence[LockedFile]],
    *,
    command: str | None,
    python_version: str,
    index_urls: Sequence[str] = (),
    default_index: str | None = None,
    annotate: bool = True,
) -> str:
    """A hash-mode requirements file in pip-compile's layout: a header with the command that
    regenerates it, then sorted `name==version` lines with a `--hash` per file and `# via`."""
    from safepip import __version__

    out: list[str] = []
    if command is not None:
        out += [
            "#",
            f"# This file is autogenerated by safepip {__version__} with Python {python_version}",
            "# by the following command:",
            "#",
            f"#    {command}",
            "#",
        ]
    urls = [without_credentials(u) for u in index_urls]
    if urls and (urls[0].rstrip("/") != (default_index or "").rstrip("/") or len(urls) > 1):
        out.append(f"--index-url {urls[0]}")
        out += [f"--extra-index-url {u}" for u in urls[1:]]
        out.append("")
    pinned = {p.name for p in resolution.pins}
    for pin in resolution.pins:
        digests = sorted({f"sha256:{f.hashes['sha256']}" for f in files.get(pin.name, ())})
        if not digests:
            raise LockError(f"No file with a hash for `{pin.spec}`; the lock would not install")
        out.append(f"{pin.name}=={pin.version} \\")
        out += [f"    --hash={d} \\" for d in digests[:-1]]
        out.append(f"    --hash={digests[-1]}")
        if annotate and pin.via:
            vias = [_via_text(v, pinned) for v in pin.via]
            if len(vias) == 1:
                out.append(f"    # via {vias[0]}")
            else:
                out.append("    # via")
                out += [f"    #   {v}" for v in vias]
    return "\n".join(out) + "\n"


# --- pylock.toml ----------------------------------------------------------------------------


def render_pylock(
    resolution: Resolution,
    files: Mapping[NormalizedName, Sequence[LockedFile]],
    *,
    requires_python: str | None = None,
) -> str:
    """A PEP 751 lock (built and validated with `packaging.pylock`, written with tomli-w)."""
    import tomli_w
    from packaging.pylock import Package, PackageSdist, PackageWheel, Pylock
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from safepip import __version__

    packages = []
    for pin in resolution.pins:
        wheels = []
        sdist = None
        for locked in files.get(pin.name, ()):
            file = locked.file
            if file.kind == "wheel":
                wheels.append(
                    PackageWheel(
                        name=file.filename,
                        url=without_credentials(file.url),
                        size=file.size,
                        hashes=dict(locked.hashes),
                    )
                )
            elif file.kind == "sdist" and sdist is None:
                sdist = PackageSdist(
                    name=file.filename,
                    url=without_credentials(file.url),
                    size=file.size,
                    hashes=dict(locked.hashes),
                )
        spec = resolution.requires_python.get(pin.name)
        try:
            python_spec = SpecifierSet(spec) if spec else None
        except ValueError:
            python_spec = None
        origin = resolution.indexes.get(pin.name)
        packages.append(
            Package(
                name=pin.name,
                version=Version(pin.version),
                requires_python=python_spec,
                index=without_credentials(origin) if origin and "://" in origin else None,
                dependencies=[{"name": d} for d in resolution.dependencies.get(pin.name, ())]
                or None,
                wheels=wheels or None,
                sdist=sdist,
            )
        )
    lock = Pylock(
        lock_version=Version(PYLOCK_VERSION),
        created_by=f"safepip {__version__}",
        requires_python=SpecifierSet(requires_python) if requires_python else None,
        packages=packages,
    )
    lock.validate()
    return tomli_w.dumps(dict(lock.to_dict()))


def plan_from_pylock(
    path: Path,
    target: Target,
    *,
    extras: Sequence[str] = (),
    groups: Sequence[str] | None = None,
) -> list[Pin]:
    """The pins a PEP 751 lock selects for `target`, following the PEP's install steps.

    Checks the major `lock-version`, the lock's `requires-python` and `environments`; per
    package evaluates `marker` and checks `requires-python`; then takes the best wheel by the
    target's tags among the files the lock lists (never a file it does not list). A package
    that would need its sdist (or a VCS, directory or non-wheel archive source) is refused:
    building runs the package's code. Each pin carries the lock's URL, size and hashes, marked
    `pinned`. Does not download or verify anything: `fetch` checks sizes and hashes.
    """
    from packaging.pylock import (
        PackageArchive,
        PackageWheel,
        Pylock,
        PylockSelectError,
        PylockUnsupportedVersionError,
        PylockValidationError,
    )
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    data = _load_toml(path)
    try:
        lock = Pylock.from_dict(data)
    except PylockUnsupportedVersionError as exc:
        raise LockError(
            f"Refusing `{path}`: lock-version `{data.get('lock-version')}` is not supported "
            f"(safepip reads {PYLOCK_VERSION.split('.', maxsplit=1)[0]}.x)",
            path=str(path),
            hint="regenerate the lock with a tool that writes lock-version 1.0",
        ) from exc
    except PylockValidationError as exc:
        raise LockError(f"`{path}` is not a valid pylock file: {exc}", path=str(path)) from exc
    environment = dict(target.markers)
    try:
        selected = list(
            lock.select(
                environment=environment,  # type: ignore[arg-type]
                tags=target.tags,
                extras=[canonicalize_name(e) for e in extras],
                dependency_groups=groups,
            )
        )
    except PylockSelectError as exc:
        raise LockError(
            f"`{path}` cannot be installed on the target (Python {target.python_version}): {exc}",
            path=str(path),
            hint="lock again for this environment",
        ) from exc
    pins: list[Pin] = []
    refused: list[str] = []
    problems: list[str] = []
    for package, source in selected:
        label = f"{package.name}=={package.version}" if package.version else str(package.name)
        if isinstance(source, PackageArchive):
            filename = _filename(source.url, source.path)
            if not filename.endswith(".whl"):
                refused.append(f"`{label}` is locked as the archive `{filename}`")
                continue
        elif not isinstance(source, PackageWheel):
            kind = type(source).__name__.removeprefix("Package").lower()
            refused.append(f"`{label}` is locked only as a {kind} source")
            continue
        filename = (
            source.filename
            if isinstance(source, PackageWheel)
            else _filename(source.url, source.path)
        )
        try:
            wheel_name, wheel_version, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            problems.append(f"`{filename}` of `{label}` is not a valid wheel filename")
            continue
        if wheel_name != package.name:
            problems.append(f"`{filename}` is a wheel of `{wheel_name}`, not of `{package.name}`")
            continue
        if isinstance(source, PackageArchive) and not set(tags) & set(target.tags):
            problems.append(f"`{filename}` of `{label}` does not fit the target")
            continue
        hashes = frozenset(
            f"{alg}:{digest.lower()}" for alg, digest in source.hashes.items() if alg in LOCK_HASHES
        )
        if not hashes:
            problems.append(f"`{filename}` of `{label}` has no sha256, sha384 or sha512 hash")
            continue
        url = source.url or (path.parent / str(source.path)).absolute().as_uri()
        version = str(package.version) if package.version is not None else str(wheel_version)
        pins.append(
            Pin(
                name=package.name,
                display_name=package.name,
                version=version,
                artifact=Artifact(
                    name=package.name,
                    version=version,
                    filename=filename,
                    url=url,
                    origin=package.index or str(path),
                    expected_hashes=hashes,
                    hash_source="pinned",
                    size=source.size,
                    direct_url=isinstance(source, PackageArchive),
                ),
                requested=True,
                via=(str(path),),
            )
        )
    if refused:
        raise PolicyViolation(
            f"Refusing to install from `{path}`:\n" + "\n".join(f"    {r}" for r in refused),
            hint="building from source runs the package's code; lock wheels instead (safepip "
            "installs wheels only)",
        )
    if problems:
        raise LockError(
            f"`{path}` cannot be installed:\n" + "\n".join(f"    {p}" for p in problems),
            path=str(path),
        )
    return pins


def _filename(url: str | None, path: str | None) -> str:
    from urllib.parse import unquote

    if url:
        return unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return Path(path or "").name


# --- pyproject.toml -------------------------------------------------------------------------


def pyproject_requirements(
    path: Path, *, extras: Sequence[str] = (), groups: Sequence[str] = ()
) -> list[ParsedRequirement]:
    """`[project.dependencies]`, the named `[project.optional-dependencies]` and PEP 735
    `[dependency-groups]` of a `pyproject.toml`, as requirement lines pointing at the file."""
    from packaging.dependency_groups import resolve_dependency_groups

    from safepip.requirements import SourceLocation, parse_requirement_line

    data = _load_toml(path)
    text = path.read_text("utf-8", errors="replace").splitlines()
    project = data.get("project", {})
    if not isinstance(project, dict):
        project = {}
    lines: list[str] = [str(d) for d in project.get("dependencies", []) or []]
    optional = project.get("optional-dependencies", {}) or {}
    known = {canonicalize_name(k): v for k, v in optional.items()}
    for extra in extras:
        if canonicalize_name(extra) not in known:
            raise LockError(
                f"`{path}` has no optional dependency group `{extra}`",
                path=str(path),
                hint="known extras: " + (", ".join(f"`{k}`" for k in sorted(known)) or "none"),
            )
        lines += [str(d) for d in known[canonicalize_name(extra)]]
    if groups:
        table = data.get("dependency-groups", {}) or {}
        try:
            lines += list(resolve_dependency_groups(table, *groups))
        except (LookupError, ValueError, TypeError) as exc:
            raise LockError(f"Cannot read `--group` from `{path}`: {exc}", path=str(path)) from exc
    out: list[ParsedRequirement] = []
    for line in lines:
        number = next((i for i, t in enumerate(text, 1) if line in t), 1)
        location = SourceLocation(path=str(path), line=number, text=line)
        out.append(parse_requirement_line(line, location, cwd=path.parent.absolute()))
    return out


# --- freeze ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class FrozenPackage:
    """One installed distribution, with the hashes that let a hash-mode install reproduce it."""

    name: NormalizedName
    version: str
    hashes: tuple[str, ...]
    """`sha256:<hex>` digests; empty when none could be found."""
    source: str
    """`record` (safepip's install record), `index` (the index's published hashes) or `none`."""
    problem: str | None = None


def freeze_environment(
    target: Target, index: IndexClient | None, *, include_all: bool = False
) -> list[FrozenPackage]:
    """The target's distributions as pins with hashes.

    The hash comes from the artifact record safepip writes at install (the exact wheel that
    was installed); otherwise the index's hashes for that version are used (every file of the
    version). Distributions with neither are returned with a `problem`, never dropped.
    """
    from safepip.install import installed_artifact
    from safepip.journal import recover
    from safepip.target import installed_distributions

    recover(target)
    results: dict[NormalizedName, FrozenPackage] = {}
    lookup: list[tuple[NormalizedName, str]] = []
    for dist in installed_distributions(target):
        if dist.name in FREEZE_SKIPPED and not include_all:
            continue
        record = installed_artifact(dist)
        sha = record.get("sha256") if record else None
        same = record is not None and str(record.get("version_installed", "")) == dist.version
        if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) and same:
            results[dist.name] = FrozenPackage(
                name=dist.name, version=dist.version, hashes=(f"sha256:{sha}",), source="record"
            )
        else:
            lookup.append((dist.name, dist.version))
    if lookup and index is not None:
        pages = index.project_files_many(name for name, _ in lookup)
    else:
        pages = {}
    for name, version in lookup:
        page = pages.get(name)
        digests = sorted(
            {
                f"sha256:{f.hashes['sha256']}"
                for f in (page.files if page else ())
                if f.kind != "other" and "sha256" in f.hashes and _same(f, version)
            }
        )
        if digests:
            results[name] = FrozenPackage(
                name=name, version=version, hashes=tuple(digests), source="index"
            )
        else:
            why = (
                "not installed by safepip, and no index is configured"
                if index is None
                else "not installed by safepip, and the index has no hashed file of this version"
            )
            results[name] = FrozenPackage(
                name=name, version=version, hashes=(), source="none", problem=why
            )
    return [results[n] for n in sorted(results)]


def _same(file: IndexFile, version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return file.version == Version(version)
    except InvalidVersion:
        return False


def render_freeze(packages: Sequence[FrozenPackage]) -> str:
    """Pinned requirements with hashes; packages without a hash are commented out."""
    out: list[str] = []
    for pkg in packages:
        if not pkg.hashes:
            out.append(f"# {pkg.name}=={pkg.version}  # no hash available: {pkg.problem}")
            continue
        out.append(f"{pkg.name}=={pkg.version} \\")
        out += [f"    --hash={h} \\" for h in pkg.hashes[:-1]]
        out.append(f"    --hash={pkg.hashes[-1]}")
    return "\n".join(out) + ("\n" if out else "")
