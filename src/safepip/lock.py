"""Lock files: writing requirements.txt and PEP 751 `pylock.toml` locks, reading them back, freeze.

A lock written here is a hash-mode requirements file (or a pylock file) that lists every file of
each pinned version on the index, so it also installs on other platforms. Credentials never
appear in a lock: index and file URLs lose their `user:password@` part.
"""

from __future__ import annotations

import enum
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from packaging.utils import NormalizedName, canonicalize_name

from safepip import __version__
from safepip import target as target_mod
from safepip.buildpolicy import BuildPolicy, timeout_from_environment
from safepip.errors import ExitCode, SafepipError, UsageError
from safepip.fetch import fetch_artifacts, open_cache
from safepip.hashes import ALLOWED_ALGORITHMS
from safepip.index import IndexClient
from safepip.net import Session
from safepip.plan import Artifact, Pin, same_version
from safepip.policy import PolicyViolation
from safepip.requirements import COMMAND_LINE, SourceLocation, parse_requirement_line
from safepip.settings import load_settings, read_toml
from safepip.sources import (
    SourceOptions,
    decide_sources,
    default_index_url,
    load_pip_config,
    net_config,
    parse_inputs,
)
from safepip.target import installed_distributions
from safepip.urls import without_credentials

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from safepip.fetch import Cache
    from safepip.index import IndexFile
    from safepip.pipeline import Reporter
    from safepip.policy import HostPolicy
    from safepip.requirements import ParsedRequirement
    from safepip.resolver import Resolution
    from safepip.target import Target

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
    if output != "-" and _PYLOCK_NAME.fullmatch(Path(output).name):
        return LockFormat.PYLOCK
    return LockFormat.REQUIREMENTS


_PYLOCK_NAME = re.compile(r"pylock\.toml|pylock\.[^.]+\.toml")
"""PEP 751's file names (`packaging.pylock.is_valid_pylock_path`, without importing it)."""


def _load_toml(path: Path) -> dict[str, Any]:

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
            hashes = {a: d for a, d in file.hashes.items() if a in ALLOWED_ALGORITHMS}
            if "sha256" not in hashes:
                hashes = {"sha256": computed[file.url]}
            locked.append(LockedFile(file=file, hashes=hashes))
        out[pin.name] = tuple(locked)
    return out


# --- requirements.txt -----------------------------------------------------------------------


def _via_text(via: str, pinned: set[NormalizedName]) -> str:

    if via in pinned or via == COMMAND_LINE or via.endswith("pyproject.toml"):
        return via
    if via.startswith(BUILD_REQUIREMENT_OF):  # `lock --build`
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
        # extras stay visible on the pin line (pip-compile's --no-strip-extras); pip accepts
        # them in hash-checking mode
        extras = f"[{','.join(sorted(pin.extras))}]" if pin.extras else ""
        out.append(f"{pin.name}{extras}=={pin.version} \\")
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


# --- reading a lock's header and annotations back -------------------------------------------

_HEADER_COMMAND = re.compile(
    r"^#[ \t]*by the following command:[ \t]*\n#[ \t]*\n#[ \t]+(\S.*)$", re.M
)
_VIA = re.compile(r"^\s*#\s*via(?:\s+(?P<entry>\S.*))?$")


@dataclass(frozen=True, kw_only=True, slots=True)
class LockHeader:
    """What the header `render_requirements` writes says about how the lock was made."""

    command: str
    """The command that regenerates the lock."""
    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    pre: bool = False


def read_header(text: str) -> LockHeader | None:
    """The header of a requirements lock, read back; None when the file has none."""
    match = _HEADER_COMMAND.search(text)
    if match is None:
        return None
    command = match[1].strip()
    try:
        words = shlex.split(command)
    except ValueError:
        return LockHeader(command=command)
    python_version = None
    platforms = []
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if not eq:
            value = words[i + 1] if i + 1 < len(words) else ""
        if flag == "--python-version" and value:
            python_version = value
        elif flag == "--platform" and value:
            platforms.append(value)
    return LockHeader(
        command=command,
        python_version=python_version,
        platforms=tuple(platforms),
        pre="--pre" in words,
    )


def is_annotated(lines: Sequence[str]) -> bool:
    """True when the lock has `# via` comments."""
    return any(_VIA.match(line) for line in lines)


def via_entries(lines: Sequence[str], start: int, end: int) -> list[str]:
    """The `# via` entries among `lines[start:end]` (pip-compile's one-line and list forms)."""
    entries: list[str] = []
    in_via = False
    for raw in lines[start:end]:
        text = raw.strip()
        match = _VIA.match(raw)
        if match:
            in_via = True
            if match["entry"]:
                entries.append(match["entry"].strip())
        elif in_via and text.startswith("#") and raw[:1].isspace() and text[1:].strip():
            entries.append(text[1:].strip())
        elif not text:
            in_via = False
    return entries


# --- pylock.toml ----------------------------------------------------------------------------


def render_pylock(
    resolution: Resolution,
    files: Mapping[NormalizedName, Sequence[LockedFile]],
    *,
    requires_python: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> str:
    """A PEP 751 lock (built and validated with `packaging.pylock`, written with tomli-w).

    With `environment` (the markers the resolution used) the lock says what it was made for:
    `environments` names that Python version, implementation, platform and machine, and
    `requires-python` that Python version, so an installer elsewhere refuses the lock instead of
    missing a dependency whose marker was false here.
    """
    import tomli_w
    from packaging.markers import Marker
    from packaging.pylock import Package, PackageSdist, PackageWheel, Pylock
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

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
    environments = None
    if environment is not None:
        made_for = " and ".join(
            f"{key} == '{environment[key]}'" for key in _LOCK_MARKERS if environment.get(key)
        )
        environments = [Marker(made_for)] if made_for else None
        if requires_python is None and environment.get("python_version"):
            requires_python = f"=={environment['python_version']}.*"
    lock = Pylock(
        lock_version=Version(PYLOCK_VERSION),
        created_by=f"safepip {__version__}",
        environments=environments,
        requires_python=SpecifierSet(requires_python) if requires_python else None,
        packages=packages,
    )
    lock.validate()
    return tomli_w.dumps(dict(lock.to_dict()))


# The markers that decide a resolution in practice; a lock names the values it was made for.
_LOCK_MARKERS = ("python_version", "implementation_name", "sys_platform", "platform_machine")


def plan_from_pylock(
    path: Path,
    target: Target,
    *,
    extras: Sequence[str] = (),
    groups: Sequence[str] | None = None,
    allow_build: frozenset[NormalizedName] = frozenset(),
) -> list[Pin]:
    """The pins a PEP 751 lock selects for `target`, following the PEP's install steps.

    Checks the major `lock-version`, the lock's `requires-python` and `environments`; per
    package evaluates `marker` and checks `requires-python`; then takes the best wheel by the
    target's tags among the files the lock lists (never a file it does not list). A package
    that would need its sdist is refused unless named in `allow_build` (`--allow-build`: then
    the sdist is the pin's file, built by `safepip.build`); VCS, directory and non-wheel
    archive sources are refused: building runs the package's code. Each pin carries the lock's
    URL, size and hashes, marked `pinned`. Does not download or verify anything: `fetch` checks
    sizes and hashes.
    """
    from packaging.pylock import (
        PackageArchive,
        PackageSdist,
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
    if groups is not None:
        # named groups come on top of the lock's `default-groups` (what a plain install gets)
        groups = [*(lock.default_groups or ()), *groups]
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
        if isinstance(source, PackageSdist) and package.name in allow_build:
            pin = _sdist_pin(path, package, source, label, problems)
            if pin is not None:
                pins.append(pin)
            continue
        if isinstance(source, PackageSdist):
            refused.append(
                f"`{label}` is locked only as a sdist source; allow it with "
                f"`--allow-build {package.name}`"
            )
            continue
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
        hashes = _accepted_hashes(source.hashes)
        if not hashes:
            problems.append(f"`{filename}` of `{label}` has no sha256, sha384 or sha512 hash")
            continue
        pins.append(
            _locked_pin(
                path,
                package,
                source,
                filename,
                hashes,
                wheel_version,
                direct_url=isinstance(source, PackageArchive),
            )
        )
    if refused:
        raise PolicyViolation(
            f"Refusing to install from `{path}`:\n" + "\n".join(f"    {r}" for r in refused),
            hint="building from source runs the package's code; lock wheels instead, or name "
            "the projects whose sdists may be built with `--allow-build NAME`",
        )
    if problems:
        raise LockError(
            f"`{path}` cannot be installed:\n" + "\n".join(f"    {p}" for p in problems),
            path=str(path),
        )
    return pins


def _sdist_pin(
    path: Path, package: Any, source: Any, label: str, problems: list[str]
) -> Pin | None:
    """The pin of an sdist the lock lists, for a project allowed to be built."""
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename

    filename = source.name or _filename(source.url, source.path)
    try:
        name, sdist_version = parse_sdist_filename(filename)
    except InvalidSdistFilename:
        problems.append(f"`{filename}` of `{label}` is not a valid sdist filename")
        return None
    if name != package.name:
        problems.append(f"`{filename}` is an sdist of `{name}`, not of `{package.name}`")
        return None
    hashes = _accepted_hashes(source.hashes)
    if not hashes:
        problems.append(f"`{filename}` of `{label}` has no sha256, sha384 or sha512 hash")
        return None
    return _locked_pin(path, package, source, filename, hashes, sdist_version)


def _locked_pin(
    path: Path,
    package: Any,
    source: Any,
    filename: str,
    hashes: frozenset[str],
    file_version: object,
    *,
    direct_url: bool = False,
) -> Pin:
    """The pin of one file a pylock file lists (its version: the package's, else the one its
    filename names), fetched from its URL or the path relative to the lock, checked against the
    lock's hashes."""
    version = str(package.version) if package.version is not None else str(file_version)
    return Pin(
        name=package.name,
        display_name=package.name,
        version=version,
        artifact=Artifact(
            name=package.name,
            version=version,
            filename=filename,
            url=source.url or (path.parent / str(source.path)).absolute().as_uri(),
            origin=package.index or str(path),
            expected_hashes=hashes,
            hash_source="pinned",
            size=source.size,
            direct_url=direct_url,
        ),
        requested=True,
        via=(str(path),),
    )


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
    """`record` (safepip's install record), `built` (the sdist safepip built it from), `index`
    (the index's published hashes) or `none`."""
    problem: str | None = None


def freeze_environment(
    target: Target, index: IndexClient | None, *, include_all: bool = False
) -> list[FrozenPackage]:
    """The target's distributions as pins with hashes.

    The hash comes from the artifact record safepip writes at install (the exact wheel that
    was installed); otherwise the index's hashes for that version are used (every file of the
    version). Distributions with neither are returned with a `problem`, never dropped.
    """
    # Imported here: `safepip lock` imports this module and never installs.
    from safepip.install import installed_artifact
    from safepip.journal import recover

    recover(target)
    results: dict[NormalizedName, FrozenPackage] = {}
    lookup: list[tuple[NormalizedName, str]] = []
    for dist in installed_distributions(target):
        if dist.name in FREEZE_SKIPPED and not include_all:
            continue
        record = installed_artifact(dist)
        sha = record.get("sha256") if record else None
        built = record.get("built_from") if record else None
        source = "record"
        if isinstance(built, dict):
            # Built by safepip from a pinned sdist: the sdist's hash installs it again.
            sha, source = built.get("sha256"), "built"
        same = record is not None and str(record.get("version_installed", "")) == dist.version
        if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) and same:
            results[dist.name] = FrozenPackage(
                name=dist.name, version=dist.version, hashes=(f"sha256:{sha}",), source=source
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
                if f.kind != "other"
                and "sha256" in f.hashes
                and f.version is not None
                and same_version(f.version, version)
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


def render_freeze(packages: Sequence[FrozenPackage]) -> str:
    """Pinned requirements with hashes; packages without a hash are commented out."""
    out: list[str] = []
    for pkg in packages:
        if not pkg.hashes:
            out.append(f"# {pkg.name}=={pkg.version}  # no hash available: {pkg.problem}")
            continue
        if pkg.source == "built":
            out.append(f"# {pkg.name}: built from its sdist; needs `--allow-build {pkg.name}`")
        out.append(f"{pkg.name}=={pkg.version} \\")
        out += [f"    --hash={h} \\" for h in pkg.hashes[:-1]]
        out.append(f"    --hash={pkg.hashes[-1]}")
    return "\n".join(out) + ("\n" if out else "")


# --- the lock run ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class LockOptions:
    """Everything `safepip lock` was asked to do."""

    sources: tuple[str, ...] = ()
    """Requirements files and `pyproject.toml` files."""
    requirements: tuple[str, ...] = ()
    """Requirements given on the command line."""
    constraint_files: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    output: str
    """A path, or `-` for stdout."""
    upgrade: bool = False
    upgrade_packages: tuple[str, ...] = ()
    pre: bool = False
    python: str | None = None
    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    index: SourceOptions = field(default_factory=SourceOptions)
    cache_dir: Path | None = None
    no_cache: bool = False
    header: bool = True
    annotate: bool = True
    emit_index_url: bool = True
    """Write the index URLs into a requirements lock (pip-compile's `--emit-index-url`)."""
    command: str = "safepip lock"
    """The command line shown in the header (credentials removed)."""
    allow_build: frozenset[NormalizedName] = frozenset()
    """`--allow-build` (with the settings file's): projects locked from their sdists."""
    build_constraint: Path | None = None
    build: bool = False
    """`--build`: lock the build requirements of the locked sdists instead."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LockOutcome:
    resolution: Resolution
    target: Target
    text: str
    """The lock as written."""
    kept: tuple[str, ...] = ()
    """Pins from the existing lock that were kept."""


def lock_target(options: LockOptions, *, cache_dir: Path | None = None) -> Target:
    """The environment to lock for: a synthetic one for `--python-version`/`--platform`, else
    `--python`, else the active virtual environment or `./.venv`, else safepip's interpreter.

    With `cache_dir` (a trusted cache's root), the probe of an interpreter is kept there, as
    `install` keeps it."""
    if options.python_version or options.platforms:
        if options.python is not None:
            raise UsageError(
                "`--python` cannot be combined with `--python-version` or `--platform`",
                hint="use `--python` to lock for an interpreter you have, or the other two to "
                "lock for another machine",
            )
        version = options.python_version or "{}.{}".format(*sys.version_info[:2])
        return target_mod.synthetic_target(version, options.platforms)
    try:
        python = target_mod.find_python(options.python, system=False)
    except target_mod.TargetError:
        python = target_mod.current_python()
    return target_mod.probe(python, cache_dir=cache_dir)


def files_host(policy: HostPolicy) -> HostPolicy:
    """pypi.org serves its files from files.pythonhosted.org; that host comes with the index.

    `sources.decide_sources` adds it for pip's spelling of the default index; this covers any
    other spelling of a pypi.org index as well.
    """
    if "pypi.org" in policy.allowed_hosts:
        return policy.with_hosts("files.pythonhosted.org")
    return policy


def run_lock(options: LockOptions, reporter: Reporter) -> LockOutcome:
    """Parse the inputs, resolve them for the target, hash every file and render the lock.

    Nothing is written here; the caller writes `LockOutcome.text` (`write_lock`).
    """
    with open_cache(options.cache_dir, throwaway=options.no_cache) as cache:
        return _lock_in(cache, options, reporter)


def _lock_in(cache: Cache, options: LockOptions, reporter: Reporter) -> LockOutcome:
    # Imported here: the install pipeline imports this module for reading locks, and a
    # hash-pinned install never resolves; resolvelib with the provider costs 25-50 ms of
    # start-up (`python -X importtime`, safepip.resolver cumulative).
    from safepip.resolver import resolve_requirements

    target = lock_target(options, cache_dir=None if options.no_cache else cache.root)
    reporter.detail(f"Locking for Python {target.python_version} ({target.tags[0]})")
    pip_config = load_pip_config(options.index, None if target.kind == "synthetic" else target)
    files = [s for s in options.sources if Path(s).name != "pyproject.toml"]
    pyprojects = [Path(s) for s in options.sources if Path(s).name == "pyproject.toml"]
    if (options.extras or options.groups) and not pyprojects:
        raise UsageError("`--extra` and `--group` need a `pyproject.toml` input")
    parsed = parse_inputs(
        requirement_files=files,
        constraint_files=options.constraint_files,
        requirements=options.requirements,
        sources=options.index,
        pip_config=pip_config,
    )
    for warning in parsed.warnings:
        reporter.warn(warning)
    requirements = list(parsed.requirements)
    for path in pyprojects:
        requirements += pyproject_requirements(path, extras=options.extras, groups=options.groups)
    if not requirements:
        raise UsageError(
            "Nothing to lock: the inputs name no requirements",
            hint="give a requirements file, a `pyproject.toml`, or requirements as arguments",
        )
    sources = decide_sources(options.index, parsed, pip_config)
    for host in sources.trusted_hosts:
        reporter.warn(f"`--trusted-host {host}`: plain HTTP is allowed for `{host}`")
    preferred: dict[NormalizedName, str] = {}
    if options.output != "-" and not options.upgrade:
        preferred = read_existing_pins(Path(options.output))
        for name in options.upgrade_packages:
            preferred.pop(canonicalize_name(name.split("==", 1)[0].strip()), None)
    config = net_config(
        options.index, files_host(sources.policy), pip_config, login_urls=sources.login_urls
    )
    with Session(config) as session:
        index = IndexClient(
            session,
            index_urls=sources.index_urls,
            find_links=sources.find_links,
            cache_dir=cache.root / "http",
        )
        build = BuildPolicy(
            allowed=options.allow_build
            | load_settings(isolated=options.index.isolated).allow_build,
            constraint=options.build_constraint,
            timeout=timeout_from_environment(),
            metadata_only=options.build,
        )
        resolution = resolve_requirements(
            requirements,
            parsed.constraints,
            index=index,
            target=target,
            # `--pre`, a `--pre` line, or pip's `pre` setting (`PIP_PRE`), as for `install`
            pre=options.pre or parsed.pre or (pip_config is not None and pip_config.pre),
            preferred=preferred,
            allow_unhashed=True,
            session=session,
            cache=cache,
            build=build,
            warn=reporter.warn,
        )
        if options.build:
            # `--build`: the lock is of what the chosen sdists need to be built
            build_reqs = build_requirements(resolution, session=session, cache=cache)
            if not build_reqs:
                raise UsageError(
                    "Nothing to lock with `--build`: no package of the lock is built from an sdist",
                    hint="name the projects to build with `--allow-build NAME`",
                )
            for line in build_reqs:
                reporter.detail(f"Build requirement `{line.requirement}` ({line.location.path})")
            resolution = resolve_requirements(
                build_reqs,
                (),
                index=index,
                target=target,
                pre=options.pre,
                preferred=preferred,
                allow_unhashed=True,
                session=session,
                cache=cache,
            )
        for warning in (*index.find_links_warnings, *resolution.warnings):
            reporter.warn(warning)
        for note in resolution.notes:
            reporter.detail(note)
        locked_files = lock_files(resolution, session=session, cache=cache)
    if lock_format(options.output) is LockFormat.PYLOCK:
        text = render_pylock(resolution, locked_files, environment=target.markers)
    else:
        text = render_requirements(
            resolution,
            locked_files,
            command=options.command if options.header else None,
            python_version="{}.{}".format(*target.version[:2]),
            index_urls=sources.index_urls if options.emit_index_url else (),
            default_index=default_index_url(),
            annotate=options.annotate,
        )
    kept = tuple(
        p.spec for p in resolution.pins if preferred.get(p.name) == p.version and preferred
    )
    return LockOutcome(resolution=resolution, target=target, text=text, kept=kept)


BUILD_REQUIREMENT_OF = "build requirement of "


def build_requirements(
    resolution: Resolution, *, session: Session, cache: Cache
) -> list[ParsedRequirement]:
    """`[build-system] requires` of every pin chosen as an sdist (read from the verified sdist;
    nothing runs), as requirement lines naming the sdist they come from."""
    from safepip.build import is_sdist, read_sdist_build_system
    from safepip.fetch import fetch_artifacts

    out: list[ParsedRequirement] = []
    sdists = [p for p in resolution.pins if is_sdist(p.artifact)]
    fetched = fetch_artifacts(session, [p.artifact for p in sdists], cache, use_unpacked=False)
    for pin, item in zip(sdists, fetched, strict=True):
        system = read_sdist_build_system(item.path, pin.spec)
        where = BUILD_REQUIREMENT_OF + pin.artifact.filename
        out += [
            parse_requirement_line(text, SourceLocation(path=where, line=1, text=text))
            for text in system.requires
        ]
    return out


def write_lock(text: str, output: str) -> None:
    """Write `text` to `output` atomically (a temporary file renamed into place), or stdout."""
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output)
    parent = path.absolute().parent
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _accepted_hashes(hashes: Mapping[str, str]) -> frozenset[str]:
    """A pylock file's `hashes` table as `alg:digest` pins, only the algorithms pip accepts."""
    return frozenset(
        f"{alg}:{digest.lower()}" for alg, digest in hashes.items() if alg in ALLOWED_ALGORITHMS
    )
