"""What `safepip audit` checks: the packages named by requirements files, pylock files, an
installed environment or `NAME==VERSION` arguments, each with where it was pinned."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from safepip.audit import AuditError, SkippedPackage, audit_packages
from safepip.errors import UsageError
from safepip.requirements import parse_requirements
from safepip.settings import read_toml

if TYPE_CHECKING:
    from collections.abc import Sequence

    from packaging.requirements import Requirement
    from packaging.utils import NormalizedName

    from safepip.audit import AuditOptions, AuditReport


class UnpinnedRequirements(AuditError):
    """Requirements without an exact version: there is nothing definite to audit."""

    def __init__(self, unpinned: list[tuple[str, str | None]]) -> None:
        self.unpinned = unpinned
        shown = [f"`{req}`" + (f" ({where})" if where else "") for req, where in unpinned]
        if len(shown) == 1:
            message = f"Cannot audit unpinned requirement {shown[0]}; pin it or lock first"
        else:
            message = (
                f"Cannot audit {len(shown)} unpinned requirements; pin them or lock first: "
                + ", ".join(shown)
            )
        super().__init__(
            message,
            hint="pin each requirement with `==VERSION` (or write a lock with `safepip lock`)",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditInput:
    """A package to audit and where it was pinned."""

    name: NormalizedName
    version: str | None
    """None for a direct reference that names no version (it is reported as skipped)."""
    location: tuple[str, int | None] | None = None
    skip_reason: str | None = None


def _pinned_version(requirement: Requirement) -> str | None:
    specs = list(requirement.specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        return None
    return str(specs[0].version)


def _version_from_url(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


def from_requirements(files: list[str]) -> list[AuditInput]:

    parsed = parse_requirements(files=files)
    inputs: list[AuditInput] = []
    unpinned: list[tuple[str, str | None]] = []
    for item in parsed.requirements:
        where = (item.location.path, item.location.line)
        if item.url:
            version = _version_from_url(item.url)
            inputs.append(
                AuditInput(
                    name=item.name,
                    version=version,
                    location=where,
                    skip_reason=None
                    if version
                    else "direct reference without a version; it cannot be matched to advisories",
                )
            )
            continue
        version = _pinned_version(item.requirement) if item.requirement is not None else None
        if version is None:
            shown = str(item.requirement) if item.requirement is not None else item.name
            unpinned.append((shown, str(item.location)))
            continue
        inputs.append(AuditInput(name=item.name, version=version, location=where))
    if unpinned:
        raise UnpinnedRequirements(unpinned)
    return inputs


def from_pylock(path: Path) -> list[AuditInput]:
    from packaging.pylock import (
        Pylock,
        PylockUnsupportedVersionError,
        PylockValidationError,
    )
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename

    try:
        lock = Pylock.from_dict(read_toml(path))
    except OSError as exc:
        raise UsageError(f"Cannot read `{path}`: {exc.strerror}") from exc
    except (ValueError, PylockValidationError, PylockUnsupportedVersionError) as exc:
        raise UsageError(
            f"`{path}` is not a valid pylock.toml: {exc}",
            hint="regenerate the lock, or check it against PEP 751",
        ) from exc
    inputs = []
    for package in lock.packages:
        version = str(package.version) if package.version is not None else None
        if version is None:
            urls = [w.url or (w.path or "") for w in package.wheels or ()]
            if package.sdist is not None:
                urls.append(package.sdist.url or package.sdist.path or "")
            for url in urls:
                try:
                    version = _version_from_url(url)
                except (InvalidWheelFilename, InvalidSdistFilename):
                    version = None
                if version:
                    break
        inputs.append(
            AuditInput(
                name=package.name,
                version=version,
                location=(str(path), None),
                skip_reason=None
                if version
                else "locked as a direct reference without a version; it cannot be matched",
            )
        )
    return inputs


def from_python(python: str) -> list[AuditInput]:
    # Only `--python` reads an environment: the journal and target modules (and what they
    # import) stay out of an audit of files, ~9 ms of its start (`python -X importtime`).
    from safepip.journal import recover
    from safepip.target import installed_distributions, probe

    target = probe(python)
    recover(target)
    return [
        AuditInput(name=d.name, version=d.version, location=(str(d.dist_info), None))
        for d in installed_distributions(target)
    ]


def from_spec(text: str) -> AuditInput:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise UsageError(
            f"`{text}` is neither a file nor a requirement: {exc}",
            hint="pass `NAME==VERSION`, a `pylock.toml` or `-r FILE`",
        ) from exc
    from packaging.utils import canonicalize_name

    version = _pinned_version(requirement)
    if version is None or requirement.url:
        raise UnpinnedRequirements([(text, None)])
    return AuditInput(name=canonicalize_name(requirement.name), version=version)


def is_pylock(path: str) -> bool:
    # PEP 751 names: `pylock.toml` or `pylock.<name>.toml` (checked without importing
    # packaging.pylock, which costs more than the whole audit of a requirements file).
    name = Path(path).name
    if name == "pylock.toml" or (
        name.startswith("pylock.") and name.endswith(".toml") and name.count(".") == 2
    ):
        return True
    return path.endswith(".toml") and Path(path).is_file()


def collect_inputs(
    *, requirements: Sequence[str] = (), targets: Sequence[str] = (), python: str | None = None
) -> list[AuditInput]:
    """Every package named by `-r` files (`requirements`), pylock files, `python`'s environment
    and `NAME==VERSION` arguments (`targets` holds files and specifiers as given)."""
    inputs: list[AuditInput] = []
    requirement_files: list[str] = []
    for file in requirements:
        if is_pylock(file):
            inputs += from_pylock(Path(file))
        else:
            requirement_files.append(file)
    specs = []
    for target in targets:
        if is_pylock(target):
            inputs += from_pylock(Path(target))
        elif Path(target).is_file():
            requirement_files.append(target)
        else:
            specs.append(target)
    if requirement_files:
        inputs += from_requirements(requirement_files)
    unpinned: list[tuple[str, str | None]] = []
    for spec in specs:
        try:
            inputs.append(from_spec(spec))
        except UnpinnedRequirements as exc:
            unpinned += exc.unpinned
    if unpinned:
        raise UnpinnedRequirements(unpinned)
    if python:
        inputs += from_python(python)
    if not (requirements or targets or python):
        raise UsageError(
            "Nothing to audit",
            hint="pass `-r requirements.txt`, a `pylock.toml`, `--python PATH` or `NAME==VERSION`",
        )
    return inputs


def audit_inputs(inputs: list[AuditInput], options: AuditOptions) -> AuditReport:
    """Audit `inputs`; those without a version are reported as not audited."""

    auditable = [(i.name, i.version) for i in inputs if i.version is not None]
    report = audit_packages(auditable, options)
    direct = tuple(
        SkippedPackage(name=i.name, version=i.version, reason=i.skip_reason or "no version")
        for i in inputs
        if i.version is None
    )
    if direct:
        report = replace(report, skipped=(*report.skipped, *direct))
    return report
