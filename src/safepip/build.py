"""Building wheels from the sdists the user allowed: pinned bytes, pinned build dependencies,
an isolated environment and no network for the backend (issue 13).

An sdist is built only when its project is named with `--allow-build` (or `allow-build` in the
settings file) and no wheel fits the target. Its bytes were verified like any file before this
stage sees them. The build then:

1. unpacks the sdist into a private temporary folder, refusing links, devices, absolute paths and
   `..`, and checks that its `PKG-INFO` names the pinned project and version;
2. reads `[build-system]` (PEP 518; without it, setuptools' legacy backend, as PEP 517 says) and
   takes every build requirement, and every dependency of those, from the build constraint file,
   where each must be pinned with `==` and a hash: anything missing is one refusal listing the
   lines to add (no build dependency is ever fetched unverified);
3. installs them with safepip's own installer (hash check, RECORD check, dependency closure) into
   a fresh virtual environment made by the target's interpreter, holding nothing else;
4. calls the PEP 517 hooks (`get_requires_for_build_wheel`, then `build_wheel`) through
   `pyproject-hooks`, in a process with no network where the OS allows it (a new user and
   network namespace: `unshare --map-root-user --net`; otherwise its proxy variables point at a
   closed port, and a warning says so), an environment holding no credentials and no `PIP_*`
   variable, a temporary `HOME` and a time limit; what `get_requires_for_build_wheel` asks for
   must be in the build constraint file too;
5. checks the wheel: its filename and `METADATA` name the pinned project and version, its tags
   fit the target, and it is then unpacked like any downloaded wheel (ZIP structure, `RECORD`,
   paths) by the fetch stage.

Built wheels are cached by (sdist sha256, the build constraint pins, target tags), and the
install records in `safepip.json` which sdist a wheel was built from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from safepip import fetch as fetch_stage
from safepip import install as install_stage
from safepip import target as target_mod
from safepip.errors import ExitCode, SafepipError
from safepip.fetch import FetchedArtifact
from safepip.hashes import HashCheckError, HashProblem, ProblemKind, hash_file
from safepip.linking import LinkMode
from safepip.metadata import parse_metadata
from safepip.plan import (
    Artifact,
    Pin,
    best_version_for,
    choose_artifact,
    dependencies_for,
    merge_requirements,
    same_version,
    version_matches,
)
from safepip.policy import PolicyViolation

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import pyproject_hooks
    from packaging.requirements import Requirement
    from packaging.utils import NormalizedName

    from safepip.buildpolicy import BuildPolicy
    from safepip.fetch import Cache, UnpackedWheel
    from safepip.index import IndexClient
    from safepip.net import Session
    from safepip.plan import Wanted
    from safepip.target import Target

BUILD_HINT = (
    "safepip builds only the sdists you name: `--allow-build NAME` (or `allow-build` in "
    "`[tool.safepip]`), with its build dependencies pinned in `--build-constraint FILE`; "
    "or ask the maintainers for a wheel"
)
"""Seconds a build may take, all hooks together."""
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
LEGACY_REQUIRES = ("setuptools>=40.8.0",)
"""PEP 517's defaults for a source tree without `[build-system]`."""
CLOSED_PROXY = "http://127.0.0.1:9"
"""Where the backend's proxies point when no network namespace can be made (the discard port,
closed on any machine that does not run that service)."""
SDIST_LIMIT = 1 << 30
"""Bytes an sdist may unpack to."""
BUILT_FORMAT = 1

_PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)


class BuildError(SafepipError):
    """An allowed sdist could not be built, or built something other than it promised."""

    def __init__(self, message: str, *, sdist: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.sdist = sdist


class SdistError(BuildError):
    """An sdist whose contents are unsafe to unpack or do not match its pin (integrity)."""

    exit_code = ExitCode.INTEGRITY


class BuildDependencyError(HashCheckError):
    """Build dependencies that the build constraint file does not pin with a hash (exit 3)."""

    def __init__(self, sdist: str, constraint: Path | None, problems: Sequence[HashProblem]):
        self.sdist = sdist
        self.constraint = constraint
        if constraint is None:
            hint = (
                "put the lines in a file, check them, and pass it with `--build-constraint FILE` "
                "(`safepip lock --build` writes one)"
            )
        else:
            hint = f"add the lines to `{constraint}` after checking them"
        super().__init__(problems, hint=hint)

    def _render(self) -> str:
        where = f"`{self.constraint}`" if self.constraint else "a `--build-constraint` file"
        lines = [
            f"Cannot build `{self.sdist}`: its build dependencies must be pinned with `==` and a "
            f"hash in {where}; these are not:"
        ]
        for p in sorted(self.problems, key=lambda p: p.package.lower()):
            lines.append(f"    {p.suggestion or p.package}  # {p.where}")
        return "\n".join(lines)


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildSystem:
    """`[build-system]` of a source tree (PEP 517/518)."""

    requires: tuple[str, ...]
    backend: str
    backend_path: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Built:
    """A wheel built from a verified sdist, stored in the cache."""

    fetched: FetchedArtifact
    """The wheel, as the install stage takes it (its artifact names the wheel)."""
    unpacked: UnpackedWheel
    record: Mapping[str, object]
    """`built_from` of the install record: the sdist's filename and sha256, the build
    dependencies (name, version, sha256) and the backend."""


def is_sdist(artifact: Artifact) -> bool:
    return not artifact.filename.endswith(".whl")


# --- unpacking the sdist --------------------------------------------------------------------


def _safe_name(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def extract_sdist(archive: Path, dest: Path, label: str) -> Path:
    """Unpack `archive` (`.tar.gz` or `.zip`) into `dest` and return its one top-level folder.

    Only regular files and folders are taken: links, devices, absolute paths, `..` and more than
    `SDIST_LIMIT` bytes are refused (`SdistError`). Modes are reduced to 0644/0755.
    """
    dest.mkdir(parents=True, exist_ok=True)
    total = 0

    def refuse(problem: str) -> SdistError:
        return SdistError(
            f"`{archive.name}` (the sdist of `{label}`) cannot be unpacked safely: {problem}",
            sdist=archive.name,
        )

    def place(name: str, read: Callable[[], Any], size: int, executable: bool) -> None:
        nonlocal total
        rel = _safe_name(name)
        if rel is None:
            raise refuse(f"member `{name}` would be written outside its folder")
        total += size
        if total > SDIST_LIMIT:
            raise refuse(f"it unpacks to more than {SDIST_LIMIT >> 20} MB")
        out = dest.joinpath(*rel.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            raise refuse(f"member `{name}` appears twice")
        with read() as src, out.open("wb") as fh:
            copied = 0
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > size:
                    raise refuse(f"member `{name}` is larger than it declares")
                fh.write(chunk)
        out.chmod(0o755 if executable else 0o644)

    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        if _safe_name(info.filename) is None:
                            raise refuse(f"member `{info.filename}` is outside its folder")
                        continue
                    kind = (info.external_attr >> 16) & 0o170000
                    if kind not in (0, 0o100000):
                        raise refuse(f"member `{info.filename}` is not a regular file")
                    place(
                        info.filename,
                        functools.partial(zf.open, info),
                        info.file_size,
                        bool((info.external_attr >> 16) & 0o111),
                    )
        else:
            with tarfile.open(archive, mode="r:*") as tf:
                for member in tf:
                    if member.isdir():
                        if _safe_name(member.name) is None:
                            raise refuse(f"member `{member.name}` is outside its folder")
                        continue
                    if not member.isfile():
                        raise refuse(
                            f"member `{member.name}` is a link or special file; sdists hold "
                            "regular files only"
                        )
                    extracted = tf.extractfile(member)
                    assert extracted is not None
                    place(
                        member.name,
                        functools.partial(_Closing, extracted),
                        member.size,
                        bool(member.mode & 0o111),
                    )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise refuse(f"it is not a valid archive ({exc})") from exc
    tops = [p for p in dest.iterdir()]
    if len(tops) != 1 or not tops[0].is_dir():
        raise refuse("it must hold exactly one top-level folder")
    return tops[0]


class _Closing:
    """A context manager over an already-open member stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __enter__(self) -> Any:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def _top_level_member(archive: Path, member: str, label: str) -> bytes | None:
    """`<top>/<member>` of an sdist, read without unpacking anything else (nothing runs)."""

    def refuse(problem: str) -> SdistError:
        return SdistError(
            f"`{archive.name}` (the sdist of `{label}`) {problem}", sdist=archive.name
        )

    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/" + member)]
                if not names:
                    return None
                info = zf.getinfo(names[0])
                if len(names) != 1 or info.file_size > 16 << 20:
                    raise refuse(f"has more than one `{member}`, or one larger than 16 MB")
                return zf.read(info)
        with tarfile.open(archive, mode="r:*") as tf:
            for entry in tf:
                if entry.name.count("/") == 1 and entry.name.endswith("/" + member):
                    if not entry.isfile() or entry.size > 16 << 20:
                        raise refuse(f"has a `{member}` that is not a small regular file")
                    extracted = tf.extractfile(entry)
                    assert extracted is not None
                    return extracted.read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise refuse(f"is not a valid archive ({exc})") from exc
    return None


def read_pkg_info(archive: Path, label: str) -> bytes:
    """The `<top>/PKG-INFO` of an sdist (every sdist has one)."""
    data = _top_level_member(archive, "PKG-INFO", label)
    if data is None:
        raise SdistError(
            f"`{archive.name}` (the sdist of `{label}`) has no top-level `PKG-INFO`",
            sdist=archive.name,
        )
    return data


def static_dependencies(pkg_info: bytes) -> bool:
    """PEP 643: `Metadata-Version` 2.2 or later, and `Requires-Dist` (and `Requires-Python`)
    not marked `Dynamic`, so the wheel built from the sdist declares the same dependencies."""
    from email.parser import BytesHeaderParser

    from packaging.version import InvalidVersion, Version

    headers = BytesHeaderParser().parsebytes(pkg_info)
    try:
        version = Version(str(headers.get("Metadata-Version", "0")).strip())
    except InvalidVersion:
        return False
    dynamic = {str(v).strip().lower() for v in headers.get_all("Dynamic") or ()}
    return version >= Version("2.2") and not dynamic & {"requires-dist", "requires-python"}


def sdist_metadata(
    pin: Pin,
    sdist: FetchedArtifact,
    target: Target,
    policy: BuildPolicy,
    *,
    index: IndexClient,
    session: Session,
    cache: Cache,
    warn: Callable[[str], None],
    info: Callable[[str], None],
) -> bytes:
    """The core metadata of a verified sdist, for resolving: its `PKG-INFO` when that declares
    the dependencies statically (PEP 643; nothing runs), else the `METADATA` of the wheel built
    from it (the project must be allowed to be built)."""
    pkg_info = read_pkg_info(sdist.path, pin.spec)
    if static_dependencies(pkg_info):
        return pkg_info
    if pin.name not in policy.allowed:  # pragma: no cover - only static or allowed sdists get here
        raise PolicyViolation(
            f"`{pin.spec}` would have to be built to learn its dependencies; allow it with "
            f"`--allow-build {pin.name}`"
        )
    if policy.metadata_only:
        # `lock --build` runs nothing: the build requirements it locks come from the sdists
        # found, and this one's dependencies are taken from its PKG-INFO as they stand.
        warn(
            f"`{pin.spec}`: its `PKG-INFO` does not declare its dependencies statically (PEP 643); "
            "`--build` reads them from it without building, so an sdist needed only by a "
            "dependency it omits is not covered"
        )
        return pkg_info
    info(
        f"`{pin.spec}` does not declare its dependencies statically (PEP 643); building it to "
        "read them"
    )
    builder = _Builder(
        policy, target, index=index, session=session, cache=cache, warn=warn, info=info
    )
    return builder.build(pin, sdist).unpacked.metadata


def check_pkg_info(source: Path, pin: Pin) -> None:
    """The sdist's `PKG-INFO` must name the pinned project and version (before anything runs)."""
    label = f"{pin.name}=={pin.version}"
    pkg_info = source / "PKG-INFO"
    if not pkg_info.is_file():
        raise SdistError(
            f"`{pin.artifact.filename}` has no `PKG-INFO`, so it cannot be checked to be `{label}`",
            sdist=pin.artifact.filename,
        )
    core = parse_metadata(pkg_info.read_bytes())
    if canonicalize_name(core.name) != pin.name or not same_version(core.version, pin.version):
        raise SdistError(
            f"`{pin.artifact.filename}` declares `{core.name} {core.version}` in its `PKG-INFO`, "
            f"not `{label}`",
            sdist=pin.artifact.filename,
        )


def read_build_system(source: Path, sdist: str) -> BuildSystem:
    """`[build-system]` of `pyproject.toml`, or PEP 517's setuptools defaults without it."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        return BuildSystem(requires=LEGACY_REQUIRES, backend=LEGACY_BACKEND)
    return _build_system(pyproject.read_bytes(), sdist)


def read_sdist_build_system(archive: Path, label: str) -> BuildSystem:
    """`[build-system]` of a verified sdist, read from its `<top>/pyproject.toml` without
    unpacking anything else (for `safepip lock --build`)."""
    data = _top_level_member(archive, "pyproject.toml", label)
    if data is None:
        return BuildSystem(requires=LEGACY_REQUIRES, backend=LEGACY_BACKEND)
    return _build_system(data, archive.name)


def _build_system(data: bytes, sdist: str) -> BuildSystem:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    try:
        table = tomllib.loads(data.decode("utf-8")).get("build-system")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BuildError(
            f"`pyproject.toml` of `{sdist}` cannot be read: {exc}", sdist=sdist
        ) from exc
    if table is None:
        return BuildSystem(requires=LEGACY_REQUIRES, backend=LEGACY_BACKEND)
    requires = table.get("requires") if isinstance(table, dict) else None
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise BuildError(
            f"`[build-system] requires` of `{sdist}` must be a list of requirements", sdist=sdist
        )
    backend = table.get("build-backend", LEGACY_BACKEND)
    path = table.get("backend-path")
    path_ok = path is None or (isinstance(path, list) and all(isinstance(p, str) for p in path))
    if not isinstance(backend, str) or not path_ok:
        raise BuildError(f"`[build-system]` of `{sdist}` is not valid", sdist=sdist)
    return BuildSystem(
        requires=tuple(requires),
        backend=backend,
        backend_path=tuple(path) if path is not None else None,
    )


# --- build dependencies ---------------------------------------------------------------------


def read_constraints(path: Path | None, target: Target) -> dict[NormalizedName, Wanted]:
    """The build constraint file's pins whose markers hold for the target."""
    if path is None:
        return {}
    from safepip.requirements import parse_requirements

    parsed = parse_requirements(files=[str(path)])
    wanted, _, _ = merge_requirements(parsed.requirements, (), target.markers)
    return wanted


def _constraint_key(constraints: Mapping[NormalizedName, Wanted]) -> list[list[object]]:
    return [
        [str(name), str(w.specifier), sorted(w.hashes or ())]
        for name, w in sorted(constraints.items())
    ]


def _requirement(text: str, sdist: str) -> Requirement:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise BuildError(
            f"`{sdist}` asks for the build requirement `{text}`, which is not valid: {exc}",
            sdist=sdist,
        ) from exc


@dataclass
class _BuildEnv:
    """The build environment of one sdist while it is made."""

    root: Path
    target: Target
    pins: dict[NormalizedName, Pin]
    sha256: dict[NormalizedName, str]


class _Builder:
    """Builds the allowed sdists of one run (shares the index, session and cache)."""

    def __init__(
        self,
        policy: BuildPolicy,
        target: Target,
        *,
        index: IndexClient,
        session: Session,
        cache: Cache,
        warn: Callable[[str], None],
        info: Callable[[str], None],
    ) -> None:
        self.policy = policy
        self.target = target
        self.index = index
        self.session = session
        self.cache = cache
        self.warn = warn
        self.info = info
        self.constraints = read_constraints(policy.constraint, target)

    # -- the build dependencies --

    def _missing(self, req: Requirement, where: str, pinned: Wanted | None) -> HashProblem:
        name = canonicalize_name(req.name)
        found = self.index.project_files_many({name}).get(name)
        best = best_version_for(str(req), found.files if found else (), self.target)
        if best is None:
            suggestion = f"{name}  # no version on the index satisfies `{req}`"
        else:
            version, sha = best
            suggestion = f"{name}=={version}" + (
                f" --hash=sha256:{sha}" if sha else "  # the index publishes no hash"
            )
        if pinned is not None:
            where += f"; the build constraint pins `{pinned.display_name}{pinned.specifier}`" + (
                "" if pinned.hashes else " without a hash"
            )
        return HashProblem(
            kind=ProblemKind.MISSING_DEPENDENCY,
            package=str(name),
            where=where,
            suggestion=suggestion,
        )

    def install_requirements(
        self, env: _BuildEnv, requirements: Sequence[tuple[Requirement, str]], sdist: str
    ) -> None:
        """Take `requirements` and their dependencies from the build constraint file, fetch and
        verify them, and install them into the build environment."""
        markers = env.target.markers
        queue = list(requirements)
        new_pins: list[Pin] = []
        fetched_all: dict[str, FetchedArtifact] = {}
        unpacked_all: dict[str, UnpackedWheel] = {}
        problems: list[HashProblem] = []
        errors: list[str] = []
        while queue:
            round_pins: list[Pin] = []
            for req, where in queue:
                if req.marker is not None and not req.marker.evaluate({**markers, "extra": ""}):
                    continue
                name = canonicalize_name(req.name)
                have = env.pins.get(name)
                if have is not None:
                    if not version_matches(req.specifier, have.version):
                        problems.append(self._missing(req, where, self.constraints.get(name)))
                    continue
                wanted = self.constraints.get(name)
                if (
                    wanted is None
                    or wanted.pinned_version is None
                    or not wanted.hashes
                    or wanted.url is not None
                    or not version_matches(req.specifier, wanted.pinned_version)
                ):
                    problems.append(self._missing(req, where, wanted))
                    continue
                found = self.index.project_files_many({name}).get(name)
                choice = choose_artifact(
                    wanted,
                    found.files if found else (),
                    env.target,
                    hash_mode=True,
                    allow_unhashed=False,
                )
                if choice.problem is not None:
                    problems.append(replace(choice.problem, where=where))
                    continue
                if choice.violation is not None or choice.error is not None:
                    errors.append(f"{choice.violation or choice.error} (needed {where})")
                    continue
                assert choice.artifact is not None
                pin = Pin(
                    name=name,
                    display_name=wanted.display_name,
                    version=choice.artifact.version,
                    artifact=choice.artifact,
                    requested=False,
                    extras=frozenset(canonicalize_name(e) for e in req.extras),
                )
                env.pins[name] = pin
                round_pins.append(pin)
            queue = []
            if problems or errors or not round_pins:
                continue
            fetched, unpacked = fetch_stage.fetch_and_unpack(
                self.session, [p.artifact for p in round_pins], self.cache, warn=self.warn
            )
            for pin, item in zip(round_pins, fetched, strict=True):
                fetched_all[pin.spec] = item
                env.sha256[pin.name] = item.sha256
                core = parse_metadata(unpacked[item.sha256].metadata)
                for dep in dependencies_for(
                    core.requires_dist, pin.extras, markers, owner=pin.spec
                ):
                    queue.append(
                        (dep, f"required by `{pin.spec}`, a build dependency of `{sdist}`")
                    )
            unpacked_all.update(unpacked)
            new_pins.extend(round_pins)
        missing = [p for p in problems if p.kind is ProblemKind.MISSING_DEPENDENCY]
        if missing:
            raise BuildDependencyError(sdist, self.policy.constraint, missing)
        if problems:
            # pinned but not matching what the index serves: reported as for any file
            raise HashCheckError(
                problems, hint=f"check the build constraint file `{self.policy.constraint}`"
            )
        if errors:
            raise BuildError(
                f"Cannot build `{sdist}`:\n" + "\n".join(f"    {e}" for e in errors), sdist=sdist
            )
        if new_pins:
            changes = install_stage.ChangePlan(install=tuple(new_pins), remove=(), keep=())
            install_stage.apply(
                changes, fetched_all, unpacked_all, env.target, link_mode=LinkMode.COPY
            )

    # -- one build --

    def _cache_dir(self, sdist_sha256: str) -> Path:
        key = hashlib.sha256(
            json.dumps(
                {
                    "format": BUILT_FORMAT,
                    "sdist": sdist_sha256,
                    "build-constraint": _constraint_key(self.constraints),
                    "tags": [str(t) for t in self.target.tags],
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        return self.cache.root / "built" / key[:2] / key

    def _from_cache(self, folder: Path, pin: Pin) -> Built | None:
        try:
            record = json.loads((folder / "built.json").read_text("utf-8"))
            wheel = folder / str(record["wheel"])
            expected = str(record["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not wheel.is_file() or hash_file(str(wheel)).sha256 != expected:
            self.warn(
                f"The cached wheel built from `{pin.artifact.filename}` was modified (`{folder}`); "
                "building it again"
            )
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return self._finish(pin, wheel, expected, record["built_from"], cached=True)

    def _finish(
        self, pin: Pin, wheel: Path, sha256: str, record: Mapping[str, object], *, cached: bool
    ) -> Built:
        artifact = replace(
            pin.artifact,
            filename=wheel.name,
            expected_hashes=frozenset({f"sha256:{sha256}"}),
            size=wheel.stat().st_size,
        )
        fetched = FetchedArtifact(
            artifact=artifact, path=wheel, sha256=sha256, cached=cached, built_from=record
        )
        unpacked = fetch_stage.unpack_all([fetched], self.cache, warn=self.warn)[sha256]
        core = parse_metadata(unpacked.metadata)
        if canonicalize_name(core.name) != pin.name or not same_version(core.version, pin.version):
            raise SdistError(
                f"The wheel built from `{pin.artifact.filename}` declares `{core.name} "
                f"{core.version}` in its metadata, not `{pin.spec}`",
                sdist=pin.artifact.filename,
            )
        return Built(fetched=fetched, unpacked=unpacked, record=record)

    def build(self, pin: Pin, sdist: FetchedArtifact) -> Built:
        label = pin.artifact.filename
        folder = self._cache_dir(sdist.sha256)
        reused = self._from_cache(folder, pin)
        if reused is not None:
            self.info(f"Using the wheel built earlier from `{label}` (sha256 {sdist.sha256})")
            return reused
        if self.target.python is None or not Path(self.target.python).exists():
            raise BuildError(
                f"Cannot build `{label}`: the target is not an interpreter on this machine",
                sdist=label,
            )
        self.info(f"Building `{pin.spec}` from `{label}` (sha256 {sdist.sha256})")
        with tempfile.TemporaryDirectory(prefix="safepip-build-") as tmp:
            work = Path(tmp)
            source = extract_sdist(sdist.path, work / "src", pin.spec)
            check_pkg_info(source, pin)
            system = read_build_system(source, label)
            env = self._make_env(work / "env", label)
            self.install_requirements(
                env,
                [
                    (_requirement(r, label), f"`[build-system] requires` of `{label}`")
                    for r in system.requires
                ],
                label,
            )
            sandbox = _Sandbox(work, env.root, self.policy.timeout, label, self.warn)
            hooks = _hook_caller(source, system, env, sandbox)
            dynamic = sandbox.call(
                hooks.get_requires_for_build_wheel, "get_requires_for_build_wheel"
            )
            if not isinstance(dynamic, list) or not all(isinstance(r, str) for r in dynamic):
                raise BuildError(
                    f"The backend of `{label}` returned an invalid list of build requirements",
                    sdist=label,
                )
            self.install_requirements(
                env,
                [
                    (_requirement(r, label), f"asked for by the backend of `{label}`")
                    for r in dynamic
                ],
                label,
            )
            out = work / "wheel"
            out.mkdir()
            name = sandbox.call(lambda: hooks.build_wheel(str(out)), "build_wheel")
            wheel = out / str(name)
            self._check_wheel(pin, wheel, out)
            record: dict[str, object] = {
                "filename": pin.artifact.filename,
                "sha256": sdist.sha256,
                "backend": system.backend,
                "build_dependencies": [
                    {"name": p.name, "version": p.version, "sha256": env.sha256[p.name]}
                    for p in sorted(env.pins.values(), key=lambda p: p.name)
                ],
            }
            sha256 = hash_file(str(wheel)).sha256
            stored = self._store(folder, wheel, sha256, record)
        if stored is None:
            other = self._from_cache(folder, pin)
            if other is None:
                raise BuildError(
                    f"The cache entry for the build of `{label}` (`{folder}`) is in use and could "
                    "not be read; run the command again",
                    sdist=label,
                )
            return other
        return self._finish(pin, stored, sha256, record, cached=False)

    def _make_env(self, root: Path, label: str) -> _BuildEnv:
        proc = subprocess.run(
            [str(self.target.python), "-m", "venv", "--without-pip", str(root)],
            capture_output=True,
            text=True,
            env=_clean_environment(root.parent, path=None),
            check=False,
            timeout=120,
        )
        if proc.returncode != 0:
            raise BuildError(
                f"Cannot build `{label}`: the target interpreter could not make a build "
                f"environment: {(proc.stderr or proc.stdout).strip()[-400:]}",
                sdist=label,
            )
        python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        return _BuildEnv(root=root, target=target_mod.probe(python), pins={}, sha256={})

    def _check_wheel(self, pin: Pin, wheel: Path, out: Path) -> None:
        from packaging.utils import InvalidWheelFilename, parse_wheel_filename

        label = pin.artifact.filename
        if wheel.parent != out or not wheel.is_file() or wheel.is_symlink():
            raise BuildError(
                f"The backend of `{label}` did not write the wheel it named (`{wheel.name}`)",
                sdist=label,
            )
        try:
            name, version, _, tags = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename as exc:
            raise SdistError(
                f"The backend of `{label}` wrote `{wheel.name}`, not a valid wheel filename",
                sdist=label,
            ) from exc
        if name != pin.name or not same_version(version, pin.version):
            raise SdistError(
                f"The backend of `{label}` built `{wheel.name}`, which is not `{pin.spec}`",
                sdist=label,
            )
        if not set(tags) & set(self.target.tags):
            raise BuildError(
                f"The wheel built from `{label}` (`{wheel.name}`) does not fit the target "
                f"(Python {self.target.python_version})",
                sdist=label,
            )

    def _store(
        self, folder: Path, wheel: Path, sha256: str, record: Mapping[str, object]
    ) -> Path | None:
        """Move the built wheel into the cache atomically (a folder renamed into place)."""
        tmp = Path(tempfile.mkdtemp(prefix="built-", dir=self.cache.tmp_dir()))
        shutil.copyfile(wheel, tmp / wheel.name)
        (tmp / "built.json").write_text(
            json.dumps(
                {"wheel": wheel.name, "sha256": sha256, "built_from": record},
                indent=2,
                sort_keys=True,
            ),
            "utf-8",
        )
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another run stored the same build first (a damaged entry was removed when it was
            # found): the caller uses that one, hashed again.
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        return folder / wheel.name


def build_wheels(
    pins: Sequence[Pin],
    sdists: Sequence[FetchedArtifact],
    target: Target,
    policy: BuildPolicy,
    *,
    index: IndexClient,
    session: Session,
    cache: Cache,
    warn: Callable[[str], None],
    info: Callable[[str], None],
) -> list[Built]:
    """Build a wheel from each verified sdist (see the module docstring for every check)."""
    builder = _Builder(
        policy, target, index=index, session=session, cache=cache, warn=warn, info=info
    )
    out = []
    for pin, sdist in zip(pins, sdists, strict=True):
        if pin.name not in policy.allowed:
            raise PolicyViolation(
                f"`{pin.spec}` would be built from `{pin.artifact.filename}`, but building it "
                f"was not allowed; allow it with `--allow-build {pin.name}`"
            )
        out.append(builder.build(pin, sdist))
    return out


# --- the sandbox ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def network_namespace() -> str | None:
    """None when `unshare --map-root-user --net` works here; else why not."""
    unshare = shutil.which("unshare")
    if sys.platform != "linux" or unshare is None:
        return "`unshare` is not available"
    try:
        proc = subprocess.run(
            [unshare, "--map-root-user", "--net", "--", "/bin/true"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`unshare` failed ({exc})"
    if proc.returncode != 0:
        return f"`unshare --map-root-user --net` failed ({proc.stderr.strip()[:200]})"
    return None


def _clean_environment(home: Path, *, path: Path | None) -> dict[str, str]:
    """An environment with no credentials, no `PIP_*`, no proxies and a private HOME."""
    bins = [str(path)] if path is not None else []
    env = {
        "PATH": os.pathsep.join([*bins, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if os.name == "nt":  # pragma: no cover - Windows
        env["SYSTEMROOT"] = os.environ.get("SYSTEMROOT", "")
    return env


class _Sandbox:
    """Runs the backend's hooks: no network, a clean environment, a temporary HOME, a deadline."""

    def __init__(
        self, work: Path, env_root: Path, timeout: float, label: str, warn: Callable[[str], None]
    ) -> None:
        self.home = work / "home"
        self.home.mkdir()
        self.bin = env_root / ("Scripts" if os.name == "nt" else "bin")
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.label = label
        self.log = work / "build.log"
        self.netns = network_namespace()
        if self.netns is not None:
            warn(
                f"No network namespace for the build of `{label}`: {self.netns}; its proxy "
                f"variables point at a closed port ({CLOSED_PROXY}), which stops only programs "
                "that honour them"
            )

    def run(
        self,
        cmd: Sequence[str],
        cwd: str | None = None,
        extra_environ: Mapping[str, str] | None = None,
    ) -> None:
        """The `pyproject-hooks` runner."""
        env = _clean_environment(self.home, path=self.bin)
        env["VIRTUAL_ENV"] = str(self.bin.parent)
        if self.netns is not None:
            env.update(dict.fromkeys(_PROXY_VARIABLES, CLOSED_PROXY))
        env.update(extra_environ or {})
        argv = list(cmd)
        if self.netns is None:
            argv = [shutil.which("unshare") or "unshare", "--map-root-user", "--net", "--", *argv]
        remaining = self.deadline - time.monotonic()
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=max(remaining, 0.1))
            except subprocess.TimeoutExpired:
                with _suppress_process_lookup():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise _Timeout from None
            finally:
                if proc.poll() is None:  # interrupted: take the backend's whole group down
                    with _suppress_process_lookup():
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if code != 0:
            raise subprocess.CalledProcessError(code, argv)

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        return "\n".join(f"    | {line}" for line in kept)

    def call(self, hook: Callable[[], Any], name: str) -> Any:
        # Imported only when something is built: `pipeline` imports this module on every run,
        # and pyproject_hooks costs ~3 ms (`python -X importtime`).
        import pyproject_hooks

        try:
            return hook()
        except _Timeout:
            raise BuildError(
                f"Building `{self.label}` took longer than {self.timeout:.0f} s and was stopped "
                f"(in `{name}`)",
                sdist=self.label,
            ) from None
        except subprocess.CalledProcessError as exc:
            output = self.tail()
            raise BuildError(
                f"Building `{self.label}` failed: the backend's `{name}` exited with "
                f"{exc.returncode}" + (f"; its last output:\n{output}" if output else ""),
                sdist=self.label,
            ) from None
        except pyproject_hooks.BackendUnavailable as exc:
            raise BuildError(
                f"Building `{self.label}` failed: the build backend `{exc.backend_name}` cannot be "
                "imported from the build environment"
                + (f":\n{self.tail()}" if self.tail() else ""),
                sdist=self.label,
                hint="its build requirements are in `[build-system] requires`",
            ) from None
        except (pyproject_hooks.BackendInvalid, pyproject_hooks.HookMissing) as exc:
            raise BuildError(
                f"Building `{self.label}` failed: the build backend is not usable ({exc})",
                sdist=self.label,
            ) from None


class _Timeout(Exception):
    pass


class _suppress_process_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError)


def _hook_caller(
    source: Path, system: BuildSystem, env: _BuildEnv, sandbox: _Sandbox
) -> pyproject_hooks.BuildBackendHookCaller:
    import pyproject_hooks  # only when something is built (see `_Sandbox.call`)

    try:
        return pyproject_hooks.BuildBackendHookCaller(
            str(source),
            system.backend,
            backend_path=list(system.backend_path) if system.backend_path is not None else None,
            runner=sandbox.run,
            python_executable=str(env.target.python),
        )
    except ValueError as exc:  # a backend-path outside the source tree
        raise SdistError(
            f"`[build-system] backend-path` of `{sandbox.label}` is not valid: {exc}",
            sdist=sandbox.label,
        ) from exc
