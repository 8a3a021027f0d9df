"""Planning what to install: pins, the files chosen for them, and the dependency closure check.

In hash-checking mode nothing is resolved: every requirement is already pinned and hashed, so
this stage chooses one file per pin (preferring the files whose hash is pinned), and after the
files are verified checks that the dependency closure read from their metadata is complete.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from safepip.errors import SafepipError
from safepip.hashes import ALLOWED_ALGORITHMS, HashProblem, ProblemKind
from safepip.metadata import parse_metadata
from safepip.urls import strip_fragment

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from packaging.requirements import Requirement
    from packaging.tags import Tag

    from safepip.index import IndexFile
    from safepip.requirements import ParsedRequirement
    from safepip.target import Target


class ResolutionError(SafepipError):
    """The requirements cannot be satisfied as given."""


class BrokenDependencyError(ResolutionError):
    """A `Requires-Dist` entry that cannot be used: it does not parse, or its marker cannot
    be evaluated."""

    def __init__(self, owner: str | None, line: str, why: str) -> None:
        whose = f"`{owner}`" if owner else "a package"
        super().__init__(
            f"Refusing {whose}: its metadata has a `Requires-Dist` entry `{line}` that cannot "
            f"be used: {why}",
            hint="the package's metadata is broken; pin another version",
        )
        self.line = line
        self.why = why


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact:
    """One file to fetch: where from, and which digests it must match."""

    name: NormalizedName
    version: str
    filename: str
    url: str
    origin: str
    """The index or find-links location (or `direct URL`) that listed the file."""
    expected_hashes: frozenset[str]
    """`alg:hex` digests; the file must match one of them."""
    hash_source: str
    """`pinned` (from the requirements), `index` (published by the index) or `none`."""
    size: int | None = None
    direct_url: bool = False
    yanked: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Pin:
    """A package at one version, with the file chosen for the target and why it is wanted."""

    name: NormalizedName
    display_name: str
    version: str
    artifact: Artifact
    requested: bool
    """Asked for directly (a requirement line), not only needed by another package."""
    extras: frozenset[str] = frozenset()
    requirement: ParsedRequirement | None = None
    via: tuple[str, ...] = field(default=())

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@functools.lru_cache(maxsize=4096)
def _requirement(line: str) -> Requirement | None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(line)
    except InvalidRequirement:
        return None


_EXTRA_MARKER = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")


# A strict subset of PEP 508 that packaging's parser always accepts: a name, extras, release
# specifiers (canonical pre, post and dev parts), and a marker of `variable op "string"`
# comparisons joined by `and`/`or`, with groups in parentheses one level deep; spaces and tabs
# only. The usual `Requires-Dist` line matches it; anything else (URLs, nested parentheses,
# epochs, local versions, odd spellings) is parsed by packaging. For `fullmatch` only.
#
# Compiling it is most of its cost (a lock compiles it once), so each part is written once:
# parentheses around the specifiers by a conditional group, and `X (and|or X)*` as a repeated
# `X` followed by a separator and the start of the next `X`, or by the end (3,268 characters
# and 4.8 ms to compile written out, 1,417 and 1.5 ms so; the same lines match).
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_RELEASE = r"[0-9]+(?:\.[0-9]+)*"
_SUFFIX = r"(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?"
_SPEC = (
    rf"(?:(?:==|!=)[ \t]*{_RELEASE}(?:\.\*|{_SUFFIX})"
    rf"|~=[ \t]*[0-9]+(?:\.[0-9]+)+{_SUFFIX}"
    rf"|(?:<=|>=|<|>)[ \t]*{_RELEASE}{_SUFFIX})"
)
_SPECS = rf"{_SPEC}(?:[ \t]*,[ \t]*{_SPEC})*"
_VARIABLE = (
    r"(?:python_(?:full_)?version|os_name|sys_platform|extra"
    r"|platform_(?:system|machine|release|version|python_implementation)"
    r"|implementation_(?:name|version))"
)
_ATOM = (
    rf"{_VARIABLE}(?:[ \t]*(?:==|!=|<=|>=|<|>|~=)[ \t]*|[ \t]+(?:not[ \t]+)?in[ \t]+)"
    # Printable ASCII without a backslash: packaging reads any other value as a Python string
    # literal (`ast.literal_eval`), which refuses a NUL, a carriage return or a bad escape
    # (`"\x"`); a line the pattern passes is taken as valid and `dependencies_for` skips one
    # packaging refuses, so such a line would be dropped as a dependency instead of refused.
    r"""(?:"[ !#-\[\]-~]*"|'[ -&(-\[\]-~]*')"""
)
_AND_OR = r"[ \t]+(?:and|or)[ \t]+"
# `ATOM (and|or ATOM)*` in parentheses: every atom is followed by a separator and the next
# atom's first letter, or by the closing parenthesis.
_GROUP = rf"\([ \t]*(?:{_ATOM}(?:{_AND_OR}(?=[a-z])|[ \t]*(?=\))))+[ \t]*\)"
# `TERM (and|or TERM)*` to the end of the line, a term being an atom or a group.
_MARKER = rf"(?:(?:{_ATOM}|{_GROUP})(?:{_AND_OR}(?=[a-z(])|[ \t]*\Z))+"
_PLAIN_REQUIREMENT = (
    rf"[ \t]*{_NAME}[ \t]*(?:\[[ \t]*{_NAME}(?:[ \t]*,[ \t]*{_NAME})*[ \t]*\])?"
    rf"[ \t]*(?:(\()?[ \t]*{_SPECS}[ \t]*(?(1)\)))?"
    rf"[ \t]*(?:;[ \t]*{_MARKER})?[ \t]*"
)


_PLAIN_COMPILED: list[re.Pattern[str]] = []
_PLAIN_LOCK = threading.Lock()


def plain_requirement() -> re.Pattern[str]:
    """`_PLAIN_REQUIREMENT` compiled (1.5 ms: at first use, not at import), once per process:
    the resolver's download threads read metadata side by side, and without the lock each
    of them compiled it again (`functools.cache` does not hold the others back; a lock of
    `medium.in` compiled it five to ten times, 10 ms of CPU each on a loaded machine)."""
    if not _PLAIN_COMPILED:
        with _PLAIN_LOCK:
            if not _PLAIN_COMPILED:
                _PLAIN_COMPILED.append(re.compile(_PLAIN_REQUIREMENT, re.ASCII))
    return _PLAIN_COMPILED[0]


def invalid_requirements(requires_dist: Sequence[str]) -> list[str]:
    """The `Requires-Dist` entries that are not valid requirements (pip refuses such metadata:
    skipping them would drop a dependency silently).

    A line of the plain form (`plain_requirement`, valid PEP 508 by construction) needs no
    parse: most lines of a large distribution belong to extras nobody asked for, and parsing
    them took most of a no-op's dependency check."""
    match = plain_requirement().fullmatch
    return [line for line in requires_dist if match(line) is None and _requirement(line) is None]


def declared_extras(provides_extra: Sequence[str], requires_dist: Sequence[str]) -> frozenset[str]:
    """The extras a distribution offers: its `Provides-Extra` entries, and any extra a
    `Requires-Dist` marker names (older metadata lists extras only there), canonicalised."""
    named = {canonicalize_name(e) for e in provides_extra}
    for line in requires_dist:
        if "extra" in line:
            named.update(canonicalize_name(e) for e in _EXTRA_MARKER.findall(line))
    return frozenset(named)


def unknown_extras_warning(
    name: str, version: str, wanted: frozenset[str], declared: frozenset[str]
) -> str | None:
    """The warning for extras asked of `name==version` that it does not declare (pip and uv
    warn too; the rest of the requirement is installed)."""
    unknown = sorted(wanted - declared)
    if not unknown:
        return None
    listed = ", ".join(f"`{e}`" for e in unknown)
    offers = ", ".join(f"`{e}`" for e in sorted(declared)) if declared else "none"
    return (
        f"`{name}=={version}` has no extra {listed} (it declares: {offers}); "
        f"`{name}` is installed without {'it' if len(unknown) == 1 else 'them'}"
    )


def dependencies_for(
    requires_dist: Sequence[str],
    extras: frozenset[str],
    markers: Mapping[str, str],
    *,
    owner: str | None = None,
) -> list[Requirement]:
    """The `Requires-Dist` entries that apply to the target with the given extras.

    An entry that does not parse, or whose marker cannot be evaluated (`os_name ~= "a"`:
    packaging has no answer for it), raises BrokenDependencyError naming `owner`: left out,
    it would drop a dependency without a word."""
    from packaging.markers import UndefinedComparison, UndefinedEnvironmentName

    result: list[Requirement] = []
    wanted = ("", *sorted(extras))
    for line in requires_dist:
        if ";" in line and "extra" in line:
            # Most lines of large projects belong to extras nobody asked for: skip them
            # without parsing (a line naming only other extras can never apply).
            named = {canonicalize_name(e) for e in _EXTRA_MARKER.findall(line)}
            if named and not named & extras and " or " not in line:
                continue
        req = _requirement(line)
        if req is None:
            raise BrokenDependencyError(owner, line, "it is not a valid requirement")
        if req.marker is not None:
            env: dict[str, str] = dict(markers)
            try:
                applies = any(req.marker.evaluate({**env, "extra": e}) for e in wanted)
            except (UndefinedComparison, UndefinedEnvironmentName) as exc:
                raise BrokenDependencyError(
                    owner, line, f"its marker cannot be evaluated ({exc})"
                ) from None
            if not applies:
                continue
        result.append(req)
    return result


def version_matches(spec: SpecifierSet, version: str) -> bool:
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def rank_wheel(file: IndexFile, priority: Mapping[Tag, int]) -> int | None:
    """Lower is better: the best tag's position in the target's preference list; None if no
    tag fits."""
    tags = file.tags
    ranks = [priority[t] for t in tags if t in priority]
    return min(ranks) if ranks else None


def requires_python_ok(file: IndexFile, target: Target) -> bool:
    spec = file.requires_python
    if spec is None:
        return True
    return spec.contains(Version(target.python_version), prereleases=True)


# --- hash-mode planning ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Wanted:
    """All requirement lines for one project, merged (pip intersects their hash sets)."""

    name: NormalizedName
    display_name: str
    specifier: SpecifierSet
    extras: frozenset[str]
    hashes: frozenset[str] | None
    """None when no line gave hashes; else the intersection of every line's set."""
    url: str | None
    lines: tuple[ParsedRequirement, ...]
    requested: bool

    @property
    def where(self) -> str:
        loc = self.lines[0].location
        return f"{loc.path}:{loc.line}"

    @property
    def pinned_version(self) -> str | None:
        specs = list(self.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
            return specs[0].version
        return None


def merge_requirements(
    requirements: Sequence[ParsedRequirement],
    constraints: Sequence[ParsedRequirement],
    markers: Mapping[str, str],
) -> tuple[dict[NormalizedName, Wanted], dict[NormalizedName, Wanted], list[str]]:
    """Group requirement and constraint lines by project, dropping lines whose marker is false."""
    skipped: list[str] = []

    def applies(line: ParsedRequirement) -> bool:
        req = line.requirement
        marker = req.marker if req is not None else None
        if marker is not None and not marker.evaluate({**markers, "extra": ""}):
            skipped.append(
                f"Ignoring `{req}` ({line.location.path}:{line.location.line}): "
                "its markers do not match the target"
            )
            return False
        return True

    def group(
        lines: Sequence[ParsedRequirement], *, requested: bool
    ) -> dict[NormalizedName, Wanted]:
        out: dict[NormalizedName, list[ParsedRequirement]] = {}
        for line in lines:
            if applies(line):
                out.setdefault(line.name, []).append(line)
        merged: dict[NormalizedName, Wanted] = {}
        for name, group_lines in out.items():
            spec = SpecifierSet()
            extras: set[str] = set()
            hashes: frozenset[str] | None = None
            url = None
            for line in group_lines:
                if line.requirement is not None:
                    spec &= line.requirement.specifier
                    extras |= set(line.requirement.extras)
                if line.hashes:
                    hashes = line.hashes if hashes is None else hashes & line.hashes
                if line.url:
                    if url is not None and url != line.url:
                        raise ResolutionError(
                            f"Two different URLs are given for `{name}`: `{url}` and `{line.url}`",
                            hint="keep one line for this package",
                        )
                    url = line.url
            display = group_lines[0].requirement.name if group_lines[0].requirement else name
            merged[name] = Wanted(
                name=name,
                display_name=display,
                specifier=spec,
                extras=frozenset(canonicalize_name(e) for e in extras),
                hashes=hashes,
                url=url,
                lines=tuple(group_lines),
                requested=requested,
            )
        return merged

    return group(requirements, requested=True), group(constraints, requested=False), skipped


@dataclass(frozen=True, kw_only=True, slots=True)
class Choice:
    """The outcome of choosing a file for one wanted project."""

    artifact: Artifact | None = None
    problem: HashProblem | None = None
    violation: str | None = None
    """A policy refusal (sdist only, untrusted direct URL)."""
    error: str | None = None
    warning: str | None = None


def _sha256_of(hashes: Mapping[str, str]) -> str | None:
    value = hashes.get("sha256")
    return value.lower() if value else None


def _file_hashes(file: IndexFile) -> frozenset[str]:
    return frozenset(
        f"{alg}:{d.lower()}" for alg, d in file.hashes.items() if alg in ALLOWED_ALGORITHMS
    )


def sdist_refusal(label: str, name: str, where: str) -> str:
    """The refusal of an sdist the user did not allow to be built, naming the option."""
    return (
        f"`{label}` has only a source distribution; building it would run the package's "
        f"code ({where}); allow it with `--allow-build {canonicalize_name(name)}`"
    )


def choose_artifact(
    wanted: Wanted,
    files: Sequence[IndexFile],
    target: Target,
    *,
    hash_mode: bool,
    allow_unhashed: bool,
    build_allowed: bool = False,
) -> Choice:
    """Pick the best wheel of the pinned version for the target.

    In hash mode only files whose listed sha256 is pinned, or whose hash the index does not
    publish in an algorithm the pin uses (checked after download), are considered; files with a
    pinned hash come first so a wheel uploaded after the lock was written cannot break the
    install (pip issue 11692). When no wheel fits and `build_allowed` (`--allow-build`), the
    sdist is chosen by the same rules (a `.tar.gz` before a `.zip`); otherwise an sdist-only
    version is a policy refusal.
    """
    version = wanted.pinned_version
    assert version is not None
    exact = any(s.operator == "===" for s in wanted.specifier)

    def same_version(file: IndexFile) -> bool:
        if exact:
            return str(file.version) == version
        return file.version is not None and file.version == Version(version)

    matching = [f for f in files if same_version(f)]
    label = f"{wanted.name}=={version}"
    if not matching:
        return Choice(
            error=f"No file for `{label}` on the index ({wanted.where})",
        )
    priority = target.tag_priority()
    wheels = [f for f in matching if f.kind == "wheel"]
    fitting = [
        (rank, f)
        for f in wheels
        if (rank := rank_wheel(f, priority)) is not None and requires_python_ok(f, target)
    ]
    sdists = [f for f in matching if f.kind == "sdist" and requires_python_ok(f, target)]
    if not fitting and sdists and build_allowed:
        fitting = sorted(
            ((0 if f.filename.endswith(".tar.gz") else 1, f) for f in sdists),
            key=lambda rf: (rf[0], rf[1].filename),
        )
    if not fitting:
        if not wheels:
            return Choice(violation=sdist_refusal(label, wanted.display_name, wanted.where))
        other_python = [
            f for f in wheels if rank_wheel(f, priority) is not None and f.requires_python
        ]
        if other_python:
            return Choice(
                error=(
                    f"`{label}` requires Python `{other_python[0].requires_python}` "
                    f"(Requires-Python); the target is Python {target.python_version} "
                    f"({wanted.where})"
                )
            )
        return Choice(
            error=(
                f"No wheel of `{label}` fits the target (Python {target.python_version}, "
                f"{target.tags[0]}); the index offers: "
                + ", ".join(sorted(f.filename for f in wheels)[:6])
            )
        )
    warning = None
    live = [(r, f) for r, f in fitting if f.yanked is None]
    if not live:
        reason = fitting[0][1].yanked or "no reason given"
        warning = f"`{label}` is yanked ({reason}); installing it because it is pinned exactly"
        live = fitting
    pinned = wanted.hashes or frozenset()
    pinned_sha = {d for a, d in (h.split(":", 1) for h in pinned) if a == "sha256"}
    if hash_mode:
        if not pinned:
            best = min(live, key=lambda rf: rf[0])[1]
            sha = _sha256_of(best.hashes)
            return Choice(
                problem=HashProblem(
                    kind=ProblemKind.MISSING_HASH,
                    package=label,
                    where=wanted.where,
                    suggestion=(
                        f"{label} --hash=sha256:{sha}"
                        if sha
                        else f"{label}  # index publishes no hash"
                    ),
                    url=best.url,
                )
            )
        good = [(r, f) for r, f in live if _sha256_of(f.hashes) in pinned_sha]
        # The index publishes no digest in an algorithm the pin uses (none at all, or only
        # sha256 for a sha384/sha512 pin): the file is checked after download, as pip does.
        pinned_algs = {h.split(":", 1)[0] for h in pinned}
        unknown = [(r, f) for r, f in live if not pinned_algs & set(f.hashes)]
        other = [(r, f) for r, f in live if f.hashes and _file_hashes(f) & pinned]
        pool = good or other or unknown
        if not pool:
            best = min(live, key=lambda rf: rf[0])[1]
            sha = _sha256_of(best.hashes)
            return Choice(
                problem=HashProblem(
                    kind=ProblemKind.NO_PINNED_FILE,
                    package=label,
                    where=wanted.where,
                    expected=tuple(sorted(pinned)),
                    got=f"{best.filename} sha256:{sha}" if sha else best.filename,
                )
            )
        rank, file = min(pool, key=lambda rf: rf[0])
        expected = pinned
        source = "pinned"
    else:
        rank, file = min(live, key=lambda rf: rf[0])
        published = _file_hashes(file)
        if pinned:
            expected, source = pinned, "pinned"
        elif published:
            expected, source = published, "index"
        elif allow_unhashed:
            expected, source = frozenset(), "none"
        else:
            return Choice(
                problem=HashProblem(
                    kind=ProblemKind.UNHASHED_INDEX_FILE,
                    package=label,
                    where=wanted.where,
                    url=file.url,
                )
            )
    del rank
    return Choice(
        artifact=Artifact(
            name=wanted.name,
            version=version,
            filename=file.filename,
            url=file.url,
            origin=file.origin,
            expected_hashes=expected,
            hash_source=source,
            size=file.size,
            yanked=file.yanked,
        ),
        warning=warning,
    )


def direct_artifact(
    wanted: Wanted,
    target: Target,
    *,
    hash_mode: bool,
    allow_unhashed: bool,
    build_allowed: bool = False,
) -> Choice:
    """The artifact of a direct URL requirement (`name @ https://…/x.whl`, or with
    `build_allowed` an sdist, `…/x.tar.gz`)."""
    from urllib.parse import urlsplit

    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    assert wanted.url is not None
    url = wanted.url
    parts = urlsplit(url)
    filename = parts.path.rsplit("/", 1)[-1]
    fragment_hashes = set()
    for item in parts.fragment.split("&"):
        alg, _, value = item.partition("=")
        if alg.lower() in ALLOWED_ALGORITHMS and value:
            fragment_hashes.add(f"{alg.lower()}:{value.lower()}")
    hashes = set(wanted.hashes or ()) | fragment_hashes
    if build_allowed and not filename.endswith(".whl") and "+" not in parts.scheme:
        try:
            name, sdist_version = parse_sdist_filename(filename)
        except InvalidSdistFilename:
            return Choice(error=f"`{filename}` is not a valid sdist filename ({wanted.where})")
        if name != wanted.name:
            return Choice(
                error=f"`{filename}` is an sdist of `{name}`, not of `{wanted.name}` "
                f"({wanted.where})"
            )
        hashed = hash_mode or not allow_unhashed
        return _direct_choice(wanted, url, filename, str(sdist_version), hashes, hashed=hashed)
    if not filename.endswith(".whl"):
        if parts.scheme.startswith(("git", "hg", "svn", "bzr")) or "+" in parts.scheme:
            return Choice(
                problem=HashProblem(
                    kind=ProblemKind.UNHASHABLE,
                    package=str(wanted.display_name),
                    where=wanted.where,
                    url=url,
                )
            )
        label = wanted.display_name or url
        if not filename.endswith((".tar.gz", ".zip")) or not wanted.name:
            # a local source folder (or anything else that is not an archive): never built
            return Choice(
                violation=(
                    f"`{label}` points at `{filename or url}`, which is neither a wheel nor an "
                    f"sdist; building it would run the package's code ({wanted.where})"
                )
            )
        return Choice(
            violation=(
                f"`{label}` points at `{filename}`, which is not a wheel; building it would run "
                f"the package's code ({wanted.where}); allow it with `--allow-build {wanted.name}`"
            )
        )
    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return Choice(error=f"`{filename}` is not a valid wheel filename ({wanted.where})")
    if name != wanted.name:
        return Choice(
            error=f"`{filename}` is a wheel of `{name}`, not of `{wanted.name}` ({wanted.where})"
        )
    if not set(tags) & set(target.tags):
        return Choice(
            error=f"`{filename}` does not fit the target (Python {target.python_version})"
        )
    return _direct_choice(
        wanted, url, filename, str(version), hashes, hashed=hash_mode or not allow_unhashed
    )


def _direct_choice(
    wanted: Wanted, url: str, filename: str, version: str, hashes: set[str], *, hashed: bool
) -> Choice:
    """A direct URL's artifact, or the missing-hash problem when `hashed` needs one."""
    if not hashes and hashed:
        return Choice(
            problem=HashProblem(
                kind=ProblemKind.MISSING_HASH,
                package=f"{wanted.display_name} @ {url}",
                where=wanted.where,
                suggestion=f"{wanted.display_name} @ {url}  # add --hash=sha256:<digest>",
            )
        )
    return Choice(
        artifact=Artifact(
            name=wanted.name,
            version=version,
            filename=filename,
            url=strip_fragment(url),
            origin="direct URL",
            expected_hashes=frozenset(hashes),
            hash_source="pinned" if hashes else "none",
            direct_url=True,
        )
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ClosureGap:
    """A dependency that the pinned set lacks or pins at a version it does not accept."""

    parent: str
    requirement: str
    name: NormalizedName
    pinned: str | None
    chain: tuple[str, ...]


def check_closure(
    pins: Sequence[Pin],
    metadata: Mapping[NormalizedName, bytes],
    target: Target,
    constraints: Mapping[NormalizedName, Wanted],
) -> tuple[list[ClosureGap], list[str]]:
    """Check that every dependency of every pin (markers evaluated for the target, extras followed)
    is itself pinned at an acceptable version. Returns the gaps and metadata problems."""
    by_name = {p.name: p for p in pins}
    extras: dict[NormalizedName, set[str]] = {p.name: set(p.extras) for p in pins}
    parents: dict[NormalizedName, NormalizedName | None] = {
        p.name: None for p in pins if p.requested
    }
    problems: list[str] = []
    parsed: dict[NormalizedName, tuple[Sequence[str], str | None]] = {}
    broken: set[NormalizedName] = set()  # reported already: its dependencies are not listed
    for pin in pins:
        name, version, requires, requires_python, invalid = _closure_facts(metadata[pin.name])
        if invalid:
            broken.add(pin.name)
        problems.extend(
            f"`{pin.artifact.filename}` has an invalid `Requires-Dist` entry `{line}`"
            for line in invalid
        )
        if canonicalize_name(name) != pin.name or not same_version(version, pin.version):
            problems.append(
                f"`{pin.artifact.filename}` declares `{name} {version}` in its metadata, "
                f"not `{pin.name} {pin.version}`"
            )
        if requires_python and not SpecifierSet(requires_python).contains(
            Version(target.python_version), prereleases=True
        ):
            problems.append(
                f"`{pin.spec}` requires Python `{requires_python}`; the target has "
                f"{target.python_version}"
            )
        parsed[pin.name] = (requires, requires_python)
    gaps: dict[tuple[str, str], ClosureGap] = {}
    # Each pin's dependencies for the extras it had when they were last listed: a pass after
    # the first lists (and evaluates markers) again only where new extras were found.
    listed: dict[NormalizedName, tuple[frozenset[str], list[Requirement]]] = {}
    changed = True
    while changed:
        changed = False
        for pin in pins:
            asked = frozenset(extras[pin.name])
            known = listed.get(pin.name)
            if pin.name in broken:
                continue
            if known is None or known[0] != asked:
                try:
                    deps = dependencies_for(parsed[pin.name][0], asked, target.markers)
                except BrokenDependencyError as exc:
                    broken.add(pin.name)
                    problems.append(
                        f"`{pin.artifact.filename}` has a `Requires-Dist` entry `{exc.line}` "
                        f"that cannot be used: {exc.why}"
                    )
                    continue
                listed[pin.name] = known = (asked, deps)
            for dep in known[1]:
                dep_name = canonicalize_name(dep.name)
                child = by_name.get(dep_name)
                if child is None or not version_matches(dep.specifier, child.version):
                    key = (pin.name, str(dep))
                    if key not in gaps:
                        gaps[key] = ClosureGap(
                            parent=pin.spec,
                            requirement=str(dep),
                            name=dep_name,
                            pinned=child.version if child else None,
                            chain=_chain(pin.name, parents),
                        )
                    continue
                parents.setdefault(dep_name, pin.name)
                new = {canonicalize_name(e) for e in dep.extras} - extras[dep_name]
                if new:
                    extras[dep_name] |= new
                    changed = True
    for pin in pins:
        wanted = constraints.get(pin.name)
        if wanted is not None and not version_matches(wanted.specifier, pin.version):
            problems.append(
                f"`{pin.spec}` does not satisfy the constraint `{wanted.name}{wanted.specifier}` "
                f"({wanted.where})"
            )
    return list(gaps.values()), problems


@functools.lru_cache(maxsize=1024)
def _closure_facts(
    metadata: bytes,
) -> tuple[str, str, tuple[str, ...], str | None, tuple[str, ...]]:
    """Name, version, `Requires-Dist` lines, `Requires-Python` and the invalid lines of one
    METADATA file: a function of its bytes alone, remembered by them, so the check after an
    install (`safepip.fastpath`) does not parse again the files the install just checked."""
    core = parse_metadata(metadata)
    requires = tuple(core.requires_dist)
    return (
        core.name,
        core.version,
        requires,
        core.requires_python,
        tuple(invalid_requirements(requires)),
    )


def _chain(
    name: NormalizedName, parents: Mapping[NormalizedName, NormalizedName | None]
) -> tuple[str, ...]:
    chain = [str(name)]
    seen = {name}
    current = parents.get(name)
    while current is not None and current not in seen:
        chain.append(str(current))
        seen.add(current)
        current = parents.get(current)
    return tuple(reversed(chain))


def same_version(a: str | Version, b: str | Version) -> bool:
    """PEP 440 equality (`1.0` is `1.0.0`); text that is not a PEP 440 version equals only the
    same text. The one version comparison of installed, pinned, locked and wheel versions."""
    try:
        return (a if isinstance(a, Version) else Version(a)) == (
            b if isinstance(b, Version) else Version(b)
        )
    except InvalidVersion:
        return str(a) == str(b)


def best_version_for(
    requirement: str, files: Sequence[IndexFile], target: Target
) -> tuple[str, str | None] | None:
    """The newest final version with a fitting wheel that satisfies `requirement`, and its sha256.

    Used only to suggest the line a user should add for a missing dependency.
    """
    from packaging.requirements import Requirement

    spec = Requirement(requirement).specifier
    priority = target.tag_priority()
    best: tuple[Version, int, IndexFile] | None = None
    for f in files:
        if f.kind != "wheel" or f.version is None or f.yanked is not None:
            continue
        if f.version.is_prerelease or not spec.contains(f.version):
            continue
        rank = rank_wheel(f, priority)
        if rank is None or not requires_python_ok(f, target):
            continue
        key = (f.version, -rank, f)
        if best is None or (key[0], key[1]) > (best[0], best[1]):
            best = key
    if best is None:
        return None
    return str(best[0]), _sha256_of(best[2].hashes)


def pinned_sha256(wanted: Wanted) -> frozenset[str]:
    return frozenset(
        d for a, _, d in (h.partition(":") for h in wanted.hashes or ()) if a == "sha256"
    )


def recorded_sha256s(record: Mapping[str, object]) -> frozenset[object]:
    """The sha256s an install record vouches for: the wheel's, and for a wheel safepip built,
    the sdist's it was built from (the file whose hash the lock pins)."""
    built = record.get("built_from")
    sdist = built.get("sha256") if isinstance(built, dict) else None
    return frozenset(d for d in (record.get("sha256"), sdist) if d)


def pin_without_index(
    wanted: Wanted,
    target: Target,
    *,
    installed: tuple[str, Mapping[str, object]] | None,
    cached: Sequence[tuple[str, str, str, str]],
) -> Pin | None:
    """A hash-pinned requirement that needs no index: already installed by safepip from a file
    with a pinned digest, or a fitting wheel with a pinned digest is in the cache.

    `installed` is (version, safepip's artifact record); `cached` holds (sha256, filename, url,
    origin). The pinned digest decides which file is acceptable, so the index is not asked;
    files from the cache are hashed again before use.
    """
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    version = wanted.pinned_version
    accepted = pinned_sha256(wanted)
    if version is None or not accepted or wanted.url is not None:
        return None

    def make(filename: str, url: str, origin: str) -> Pin:
        return Pin(
            name=wanted.name,
            display_name=wanted.display_name,
            version=version,
            artifact=Artifact(
                name=wanted.name,
                version=version,
                filename=filename,
                url=url,
                origin=origin,
                expected_hashes=wanted.hashes or frozenset(),
                hash_source="pinned",
            ),
            requested=True,
            extras=wanted.extras,
            requirement=wanted.lines[0],
        )

    if installed is not None:
        installed_version, record = installed
        if same_version(installed_version, version) and recorded_sha256s(record) & accepted:
            return make(
                str(record.get("filename", "")),
                str(record.get("url", "")),
                str(record.get("origin", "")),
            )
    priority = target.tag_priority()
    best: tuple[int, tuple[str, str, str, str]] | None = None
    for item in cached:
        sha, filename = item[0], item[1]
        if sha not in accepted:
            continue
        try:
            name, wheel_version, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            continue
        if name != wanted.name or not same_version(wheel_version, version):
            continue
        ranks = [priority[t] for t in tags if t in priority]
        if ranks and (best is None or min(ranks) < best[0]):
            best = (min(ranks), item)
    if best is None:
        return None
    _, (_, filename, url, origin) = best
    return make(filename, url, origin)
