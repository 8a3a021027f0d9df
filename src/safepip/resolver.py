"""Resolving unpinned requirements against the indexes: a resolvelib provider with prefetching.

resolvelib walks the dependency graph one decision at a time; this module keeps the network busy
meanwhile. When a project page arrives, the metadata of its most likely candidate is fetched in a
thread pool, and when that metadata arrives, the pages of its dependencies are requested, so the
likely dependency tree is downloaded concurrently while the resolver is still deciding.

Only wheels are candidates: a version offered only as an sdist would have to be built, which runs
the package's code. Metadata comes from PEP 658 `.metadata` files (hash-checked by the index
client) or, failing that, from the wheel itself, downloaded through `fetch` into the cache.
"""

from __future__ import annotations

import enum
import gc
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib import ResolutionImpossible as _Impossible
from resolvelib import ResolutionTooDeep as _TooDeep

from safepip import gcstate
from safepip.errors import ExitCode
from safepip.fetch import fetch_artifacts
from safepip.hashes import ALLOWED_ALGORITHMS
from safepip.metadata import parse_metadata
from safepip.plan import (
    Artifact,
    Pin,
    ResolutionError,
    declared_extras,
    dependencies_for,
    invalid_requirements,
    rank_wheel,
    same_version,
    unknown_extras_warning,
)
from safepip.policy import PolicyViolation
from safepip.urls import host_of, is_loopback, redact_url

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
    from pathlib import Path

    from packaging.requirements import Requirement
    from resolvelib.resolvers import Criterion
    from resolvelib.structs import RequirementInformation, State

    from safepip.buildpolicy import BuildPolicy
    from safepip.fetch import Cache, FetchedArtifact
    from safepip.index import FileListing, IndexClient, IndexFile, ProjectFiles
    from safepip.net import Session
    from safepip.requirements import ParsedRequirement
    from safepip.target import Target

MAX_ROUNDS = 20_000
_T = TypeVar("_T")
_PREFETCH_WORKERS = 16
_LOCAL_WORKERS = 2
"""Fetches at a time while every index is on this machine (loopback) and the process has not
been seen waiting for answers: the work is then all the interpreter's, and more threads only
hand its lock around (a lock of `medium.in` from the benchmark's loopback index: about 13%
more CPU and wall time with 16 than with 2)."""
_IDLE_SHARE = 0.3
"""Every worker is used (a local proxy of a remote index) once the process used less CPU
than this share of the wall time since the first piece of work done by a worker ended (that
one made the HTTP client), checked after each of the next pieces from the `_IDLE_PIECES`th
on: it waits for answers. A lock from a loopback index keeps a core busy: 0.9 on a quiet
machine, 0.47-0.89 at a load of 3.5 on two cores (an earlier rule, 10 ms of waiting per
piece in the median, mistook that for the network in five locks of eight at a load of 2.7);
with answers 50 ms away two workers use a few percent."""
_IDLE_PIECES = 4


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Cause:
    """One requirement taking part in a conflict, and how the resolver got to it."""

    requirement: str
    """As its parent states it, e.g. `c<2` or `c[extra]>=3`."""
    parent: str | None
    """`a==1.0` for a dependency; None for an input requirement."""
    where: str | None
    """The input location (`requirements.in:3`) of an input requirement."""
    chain: tuple[str, ...] = ()
    """The pins from an input requirement down to `parent` (outermost first)."""

    def describe(self) -> str:
        who = f"`{self.parent}`" if self.parent else f"`{self.where or 'the input'}`"
        text = f"{who} requires `{self.requirement}`"
        if len(self.chain) > 1:
            text += " (via " + " -> ".join(f"`{c}`" for c in self.chain) + ")"
        return text


class ConflictError(ResolutionError):
    """No set of versions satisfies every requirement on one or more projects."""

    def __init__(
        self, *, projects: Sequence[str], causes: Sequence[Cause], notes: Sequence[str] = ()
    ) -> None:
        self.projects = tuple(projects)
        self.causes = tuple(causes)
        self.notes = tuple(notes)
        names = ", ".join(f"`{p}`" for p in self.projects)
        lines = [f"Cannot find versions that satisfy every requirement on {names}:"]
        lines += [f"    {c.describe()}" for c in self.causes]
        lines += [f"    {n}" for n in self.notes]
        super().__init__(
            "\n".join(lines),
            hint="loosen one of these requirements, or pin a parent to a version whose "
            "requirements agree",
        )


class NoMatchingVersionError(ResolutionError):
    """A requirement that no offered version satisfies, on its own."""

    def __init__(
        self, *, project: str, requirement: str, causes: Sequence[Cause], reasons: Sequence[str]
    ) -> None:
        self.project = project
        self.requirement = requirement
        self.causes = tuple(causes)
        self.reasons = tuple(reasons)
        lines = [f"No version of `{project}` satisfies `{requirement}`"]
        lines += [f"    {c.describe()}" for c in self.causes]
        lines += [f"    {r}" for r in self.reasons]
        hint = None
        if any("pre-release" in r for r in self.reasons):
            hint = "pass `--pre` to consider pre-releases, or pin one with `==`"
        super().__init__("\n".join(lines), hint=hint)


class ProjectNotFoundError(ResolutionError):
    """A required project that no index or find-links location offers."""

    def __init__(self, *, project: str, sources: Sequence[str], causes: Sequence[Cause]) -> None:
        self.project = project
        self.sources = tuple(redact_url(s) for s in sources)
        self.causes = tuple(causes)
        where = ", ".join(f"`{s}`" for s in self.sources) or "no index (`--no-index`)"
        lines = [f"`{project}` was not found on {where}"]
        lines += [f"    {c.describe()}" for c in self.causes]
        hint = "check the spelling, or add the index that publishes it"
        files = [
            c.requirement
            for c in self.causes
            if c.parent is None and c.requirement.endswith((".txt", ".in"))
        ]
        if files:
            # pip's hint too: nobody publishes a project named `requirements.txt`
            hint = f"a requirements file? `-r {files[0]}` reads the requirements a file lists"
        super().__init__("\n".join(lines), hint=hint)


class SdistOnlyError(PolicyViolation):
    """Every acceptable version of a project is offered only as a source distribution."""

    def __init__(self, *, project: str, versions: Sequence[str], causes: Sequence[Cause]) -> None:
        self.project = project
        self.versions = tuple(versions)
        self.causes = tuple(causes)
        shown = ", ".join(self.versions[:5]) + (" …" if len(self.versions) > 5 else "")
        lines = [
            f"Refusing `{project}`: the versions that would fit ({shown}) are source "
            "distributions only; building one would run the package's code"
        ]
        lines += [f"    {c.describe()}" for c in self.causes]
        super().__init__(
            "\n".join(lines),
            hint=f"its sdists do not declare their dependencies in `PKG-INFO` (PEP 643), so only "
            f"a build can tell them: allow it with `--allow-build {project}` and pin its build "
            "dependencies in `--build-constraint FILE`; or ask the maintainers for a wheel",
        )


class UnhashedFilesError(ResolutionError):
    """Chosen wheels whose index publishes no hash, outside `--allow-unhashed` (an integrity
    failure: nothing could check them)."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, files: Sequence[str]) -> None:
        self.files = tuple(files)
        super().__init__(
            "The index publishes no hash for: " + ", ".join(f"`{f}`" for f in self.files),
            hint="pass `--allow-unhashed` to accept them (they are then not integrity-checked), "
            "or use an index that publishes hashes",
        )


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolution:
    """A complete, consistent set of pins for one target."""

    pins: tuple[Pin, ...]
    """Sorted by name; each with the best wheel for the target and the index's hashes."""
    files: Mapping[NormalizedName, tuple[IndexFile, ...]]
    """Every file of each pinned version on its index (all wheels and the sdist, yanked ones
    only when the pin itself is yanked), for locks that install on other platforms too."""
    dependencies: Mapping[NormalizedName, tuple[NormalizedName, ...]]
    """Each pin's dependencies on the target (markers evaluated, extras followed)."""
    requires_python: Mapping[NormalizedName, str]
    """`Requires-Python` of each pin's metadata, where it has one."""
    indexes: Mapping[NormalizedName, str]
    """The index that claimed each pin (or the find-links location that offered it)."""
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """Minor findings, such as files on an index page that are neither wheels nor sdists."""


class _Rejection(enum.Enum):
    PRERELEASE = "pre-release"
    YANKED = "yanked"
    SDIST_ONLY = "sdist only"
    NO_WHEEL = "no wheel for the target"
    REQUIRES_PYTHON = "requires another Python"


@dataclass(frozen=True, slots=True)
class _Requirement:
    name: NormalizedName
    extras: frozenset[str]
    specifier: SpecifierSet
    text: str
    """As written, for messages."""
    where: str | None = None
    """`path:line` of an input requirement."""
    origin: str | None = None
    """The input file of an input requirement (for `# via`)."""

    @property
    def key(self) -> str:
        return _key(self.name, self.extras)

    @property
    def exact_version(self) -> Version | None:
        specs = list(self.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
            try:
                return Version(specs[0].version)
            except InvalidVersion:
                return None
        return None


@dataclass(frozen=True, slots=True, eq=False)
class _Candidate:
    name: NormalizedName
    version: Version
    extras: frozenset[str]
    wheel: IndexFile
    files: tuple[IndexFile, ...]
    yanked: str | None

    @property
    def key(self) -> str:
        return _key(self.name, self.extras)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Candidate) and (self.key, self.version) == (
            other.key,
            other.version,
        )

    def __hash__(self) -> int:
        return hash((self.key, self.version))

    def __str__(self) -> str:
        return f"{self.key}=={self.version}"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Metadata:
    requires_dist: tuple[str, ...]
    requires_python: str | None
    extras: frozenset[str] = frozenset()
    """The extras the distribution declares (`Provides-Extra`, and any a marker names)."""


def _key(name: NormalizedName, extras: frozenset[str]) -> str:
    return f"{name}[{','.join(sorted(extras))}]" if extras else str(name)


def _base_name(key: str) -> NormalizedName:
    return NormalizedName(key.split("[", 1)[0])


def _python_ok(spec: SpecifierSet | str | None, python: Version) -> bool:
    if spec is None:
        return True
    if isinstance(spec, str):
        try:
            spec = SpecifierSet(spec)
        except InvalidSpecifier:
            return True  # pip ignores an unparseable Requires-Python as well
    return spec.contains(python, prereleases=True)


def prereleases_allowed(
    specifiers: Sequence[SpecifierSet],
    versions: Mapping[Version, Sequence[IndexFile]],
    *,
    pre: bool,
    usable: Callable[[Sequence[IndexFile]], bool],
    order: Iterable[Version] | None = None,
) -> bool:
    """PEP 440's rule for pre-releases of one project: with `--pre`, when a specifier names a
    pre-release (`>=2.0b1`), or when no final release satisfies the specifiers (among the
    versions the target could use: not yanked, with a fitting wheel or an sdist), as pip and
    uv do. Exact pins (`==2.0b1`) are always allowed by the caller. `order`: the versions in
    the order to look at them (newest first finds a fitting final release soonest)."""
    if pre or any(s.prereleases for s in specifiers):
        return True
    # The files of a version are looked at only when the version itself would do: a page's
    # files are made on first use (`safepip.index.FileListing`).
    return not any(
        not version.is_prerelease
        and all(s.contains(version, prereleases=True) for s in specifiers)
        and usable(versions[version])
        for version in (versions if order is None else order)
    )


def _index_artifact(
    name: NormalizedName, version: Version, file: IndexFile, *, yanked: str | None = None
) -> Artifact:
    """A file an index listed, to fetch checked against the hashes the index published
    (`yanked`: the reason, when a pin uses a yanked file)."""
    hashes = _published_hashes(file)
    return Artifact(
        name=name,
        version=str(version),
        filename=file.filename,
        url=file.url,
        origin=file.origin,
        expected_hashes=hashes,
        hash_source="index" if hashes else "none",
        size=file.size,
        yanked=yanked,
    )


def _published_hashes(file: IndexFile) -> frozenset[str]:
    return frozenset(f"{a}:{d}" for a, d in file.hashes.items() if a in ALLOWED_ALGORITHMS)


# --- fetching pages and metadata ahead of the resolver ----------------------------------------


class _Collector:
    """Keeps the index pages out of the cyclic garbage collector's passes while resolving.

    A lock of a large stack holds what its pages decode to until the resolution ends
    (apache-airflow-core: 130 pages, 88,000 files, some 300,000 objects), and the collector's
    full passes walked all of it again and again while the resolver allocated: a fifth of
    that lock's CPU, for nothing (a page holds no cycles). Once a page is read, everything
    alive is moved out of the collector's view (`gc.freeze`); at the end it is moved back
    (`gc.unfreeze`), so anything that became garbage meanwhile is collected as usual. Left
    alone when the collector is off. When the command line had frozen what it imported, the
    pages join those objects and it gives them all back when the command ends (only all
    frozen objects can be given back at once). When a library caller had frozen objects of
    its own, nothing is frozen: it would stay out of the collector's reach for good.
    """

    def __init__(self) -> None:
        unfrozen = gc.get_freeze_count() == 0
        self.active = gc.isenabled() and (unfrozen or gcstate.frozen_by_command())
        self.unfreeze = self.active and unfrozen

    def page_read(self) -> None:
        if self.active:
            gc.freeze()

    def close(self) -> None:
        if self.active:
            self.active = False
            if self.unfreeze:
                gc.unfreeze()


def _on_this_machine(index: IndexClient) -> bool:
    """Whether every index and find-links location is a folder or on a loopback host."""
    return all(
        is_loopback(host_of(url))
        for url in (*index.index_urls, *index.find_links)
        if url.split("://", 1)[0].lower() in ("http", "https")
    )


class _Prefetcher:
    """Index pages and metadata, fetched in a thread pool and kept for the whole resolution.

    Speculative work never raises in a worker: a failure is stored in its future and reaches the
    user only if the resolver actually needs that page or metadata.
    """

    def __init__(
        self,
        *,
        index: IndexClient,
        target: Target,
        session: Session,
        cache: Cache,
        pre: bool,
        preferred: Mapping[NormalizedName, str],
        build: BuildPolicy | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.build = build
        self.warn = warn or (lambda _text: None)
        self.index = index
        self.target = target
        self.session = session
        self.cache = cache
        self.pre = pre
        self.preferred = preferred
        self.python = Version(target.python_version)
        self.priority = target.tag_priority()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(_PREFETCH_WORKERS, thread_name_prefix="safepip-resolve")
        self._queued: dict[Future[Any], Callable[[], Any]] = {}
        """Work submitted that nobody has started yet."""
        self._pages: dict[NormalizedName, Future[ProjectFiles]] = {}
        self._followed: dict[NormalizedName, set[str]] = {}
        """The extras whose dependencies were fetched ahead, per project."""
        self._metadata: dict[tuple[NormalizedName, Version], Future[_Metadata]] = {}
        self._sdists: dict[str, tuple[FetchedArtifact, Artifact]] = {}
        self._collector = _Collector()
        self._backlog: deque[Future[Any]] = deque()
        """Work submitted, in order, for the workers to take up (the resolver may take some
        first: see `_result`)."""
        self._limit = _LOCAL_WORKERS if _on_this_machine(index) else _PREFETCH_WORKERS
        """How many workers take up work at once (the resolver's own thread aside)."""
        self._workers = 0
        self._pieces = 0
        """Pieces of work done by workers while `_limit` is low."""
        self._since: tuple[float, float] = (0.0, 0.0)
        """Wall and process CPU time at the end of the first of them."""
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._backlog.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._collector.close()

    # Work is queued, and whoever comes first does it: a worker, or the resolver when it
    # needs the result before a worker got to it. The queue is first come, first served, so
    # a page the resolver waits for could otherwise sit behind dozens of speculative
    # downloads (a lock of apache-airflow-core waited 0.9 s so, twice). At most `_limit`
    # workers take work from it.

    def _submit(self, work: Callable[[], _T]) -> Future[_T]:
        future: Future[_T] = Future()
        self._queued[future] = work  # callers hold self._lock
        self._backlog.append(future)
        self._start_workers()
        return future

    def _start_workers(self) -> None:
        # with self._lock held
        while self._workers < min(self._limit, len(self._backlog)) and not self._closed:
            self._workers += 1
            self._pool.submit(self._work)

    def _work(self) -> None:
        """A worker: take up queued work until none is left; while few workers run, use all
        of them once the process is seen waiting (`_IDLE_SHARE`)."""
        while True:
            with self._lock:
                if not self._backlog or self._closed:
                    self._workers -= 1
                    return
                future = self._backlog.popleft()
            try:
                ran = self._run(future)
            except BaseException:
                with self._lock:
                    self._workers -= 1
                raise
            if ran and self._limit < _PREFETCH_WORKERS:
                now = (time.perf_counter(), time.process_time())
                with self._lock:
                    self._pieces += 1
                    if self._pieces == 1:
                        self._since = now
                    elif self._pieces > _IDLE_PIECES and now[1] - self._since[1] < _IDLE_SHARE * (
                        now[0] - self._since[0]
                    ):
                        self._limit = _PREFETCH_WORKERS
                        self._start_workers()

    def _run(self, future: Future[Any]) -> bool:
        """Do the work of `future` here, unless someone has already started it."""
        with self._lock:
            work = self._queued.pop(future, None)
        if work is None or not future.set_running_or_notify_cancel():
            return False  # done already, by the resolver
        try:
            result = work()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return True

    def _result(self, future: Future[_T]) -> _T:
        """The result, computed in this thread if no worker has started on it yet."""
        self._run(future)
        return future.result()

    # pages

    def want_project(
        self, name: NormalizedName, specifier: SpecifierSet, extras: frozenset[str]
    ) -> Future[ProjectFiles]:
        with self._lock:
            future = self._pages.get(name)
            if future is None:
                future = self._submit(partial(self._load_page, name, specifier, extras))
                self._pages[name] = future
                self._followed[name] = set(extras)
                return future
            followed = self._followed.setdefault(name, set())
            new = frozenset(extras - followed)
            if not new:
                return future
            followed.update(new)
        # Extras asked for after the page was requested (`b[x]` met after `b`): their
        # dependencies are fetched ahead too, once the page and the metadata are there.
        future.add_done_callback(lambda done: self._follow_extras(name, specifier, new, done))
        return future

    def _follow_extras(
        self,
        name: NormalizedName,
        specifier: SpecifierSet,
        extras: frozenset[str],
        page: Future[ProjectFiles],
    ) -> None:
        try:
            if page.exception() is not None:
                return
            guess = self._likely_wheel(name, page.result().listing, specifier)
            if guess is None:
                return
            metadata = self.want_metadata(name, guess[0], guess[1], extras)
            metadata.add_done_callback(lambda done: self._want_dependencies(done, extras))
        except Exception:  # speculation only; the resolver asks again
            pass

    def _want_dependencies(self, metadata: Future[_Metadata], extras: frozenset[str]) -> None:
        try:
            if metadata.exception() is not None:
                return
            self._want_each(metadata.result().requires_dist, extras)
        except Exception:  # speculation only
            pass

    def _want_each(self, requires: Sequence[str], extras: frozenset[str]) -> None:
        """Prefetch the pages of the dependencies `requires` names for `extras` (this target);
        speculation only: what fails here is met again, and reported, when resolving."""
        try:
            for dep in dependencies_for(requires, extras, self.target.markers):
                self.want_project(
                    canonicalize_name(dep.name),
                    dep.specifier,
                    frozenset(canonicalize_name(e) for e in dep.extras),
                )
        except Exception:
            pass

    def _load_page(
        self, name: NormalizedName, specifier: SpecifierSet, extras: frozenset[str]
    ) -> ProjectFiles:
        page = self.index.project_files(name)
        self._collector.page_read()
        try:
            guess = self._likely_wheel(name, page.listing, specifier)
            if guess is not None:
                self.want_metadata(name, guess[0], guess[1], extras)
        except Exception:  # speculation only; the resolver asks again
            pass
        return page

    def project(self, name: NormalizedName) -> ProjectFiles:
        return self._result(self.want_project(name, SpecifierSet(), frozenset()))

    def versions(self, name: NormalizedName) -> Mapping[Version, tuple[IndexFile, ...]]:
        """Files of `name` by version (wheels and sdists with a parseable name), each
        version's files made when first asked for."""
        return self.project(name).listing.versions

    def best_wheel(self, files: Sequence[IndexFile]) -> IndexFile | None:
        """The wheel among `files` that fits the target best (tags, then `Requires-Python`)."""
        ranked = [
            (rank, f.filename, f)
            for f in files
            if f.kind == "wheel"
            and (rank := rank_wheel(f, self.priority)) is not None
            and _python_ok(f.requires_python, self.python)
        ]
        # Ties (one wheel listed by an index and a find-links page) keep the first source's.
        return min(ranked, key=lambda item: item[:2])[2] if ranked else None

    def usable(self, files: Sequence[IndexFile]) -> bool:
        """Would pip consider any of `files` for the target: not yanked, and a wheel that fits
        (tags and `Requires-Python`) or an sdist for this Python (PEP 440's "available")."""
        for f in files:
            if f.yanked is not None or not _python_ok(f.requires_python, self.python):
                continue
            if f.kind == "sdist" or rank_wheel(f, self.priority) is not None:
                return True
        return False

    def _likely_wheel(
        self, name: NormalizedName, listing: FileListing, specifier: SpecifierSet
    ) -> tuple[Version, IndexFile] | None:
        by_version = listing.versions
        preferred = self.preferred.get(name)
        newest_first = listing.newest_first()
        order: Sequence[Version] = newest_first
        if preferred is not None:
            wanted = _parse_version(preferred)
            if wanted is not None:
                order = [wanted, *newest_first]
        allow_pre = prereleases_allowed(
            [specifier], by_version, pre=self.pre, usable=self.usable, order=newest_first
        )
        for version in order:
            if version not in by_version or not specifier.contains(version, prereleases=True):
                continue
            if version.is_prerelease and not allow_pre:
                continue
            wheel = self.best_wheel([f for f in by_version[version] if f.yanked is None])
            if wheel is not None:
                return version, wheel
        return None

    # metadata

    def want_metadata(
        self, name: NormalizedName, version: Version, wheel: IndexFile, extras: frozenset[str]
    ) -> Future[_Metadata]:
        with self._lock:
            future = self._metadata.get((name, version))
            if future is not None:
                return future
            future = self._submit(partial(self._load_metadata, name, version, wheel, extras))
            self._metadata[(name, version)] = future
            return future

    def metadata(self, candidate: _Candidate) -> _Metadata:
        return self._result(
            self.want_metadata(candidate.name, candidate.version, candidate.wheel, candidate.extras)
        )

    def _load_metadata(
        self, name: NormalizedName, version: Version, wheel: IndexFile, extras: frozenset[str]
    ) -> _Metadata:
        raw: bytes | None
        if wheel.kind == "sdist":
            raw = self._metadata_from_sdist(name, version, wheel)
        elif self._wheel_cached(wheel):
            # The wheel itself is in the cache (hashed again as it is read): its METADATA is
            # the truth a `.metadata` file only mirrors, and reading it costs no request.
            raw = self._metadata_from_wheel(name, version, wheel)
        else:
            raw = self.index.fetch_metadata(wheel)
            if raw is None:
                raw = self._metadata_from_wheel(name, version, wheel)
        core = parse_metadata(raw)
        meta_name, meta_version = core.name, core.version
        requires, requires_python = core.requires_dist, core.requires_python
        invalid = invalid_requirements(requires)
        if invalid:
            raise ResolutionError(
                f"Refusing `{wheel.filename}`: its metadata has an invalid `Requires-Dist` "
                f"entry `{invalid[0]}`",
                hint="the package's metadata is broken; pin another version",
            )
        if canonicalize_name(meta_name) != name or not same_version(meta_version, version):
            raise ResolutionError(
                f"Refusing `{wheel.filename}`: its metadata names `{meta_name} {meta_version}`, "
                f"not `{name} {version}`",
                hint="the index serves inconsistent files; report it to the index operator",
            )
        result = _Metadata(
            requires_dist=tuple(requires),
            requires_python=requires_python,
            extras=declared_extras(core.provides_extra, requires),
        )
        self._want_each(requires, extras)
        return result

    def _wheel_cached(self, wheel: IndexFile) -> bool:
        """Whether the cache holds the wheel under the sha256 its index published, and the index
        published no hash of a `.metadata` file (that one is cached by its hash: cheaper)."""
        if isinstance(wheel.core_metadata, dict) and "sha256" in wheel.core_metadata:
            return False
        digest = wheel.hashes.get("sha256")
        return digest is not None and self.cache.artifact_path(digest, wheel.filename).is_file()

    def _metadata_from_wheel(
        self, name: NormalizedName, version: Version, wheel: IndexFile
    ) -> bytes:
        """The wheel's own METADATA: the wheel is downloaded (hash-checked) into the cache."""

        artifact = _index_artifact(name, version, wheel)
        fetched = fetch_artifacts(self.session, [artifact], self.cache)[0]
        return read_wheel_metadata(fetched.path)

    def static_sdist(self, name: NormalizedName, version: Version, sdist: IndexFile) -> bool:
        """Whether the sdist's `PKG-INFO` declares its dependencies statically (PEP 643); the
        sdist is downloaded (hash-checked) to read it, and nothing of it runs."""
        from safepip import build

        fetched, _ = self._sdist_file(name, version, sdist)
        return build.static_dependencies(build.read_pkg_info(fetched.path, f"{name}=={version}"))

    def _sdist_file(
        self, name: NormalizedName, version: Version, sdist: IndexFile
    ) -> tuple[FetchedArtifact, Artifact]:
        with self._lock:
            known = self._sdists.get(sdist.url)
        if known is not None:
            return known
        artifact = _index_artifact(name, version, sdist)
        fetched = fetch_artifacts(self.session, [artifact], self.cache, use_unpacked=False)[0]
        with self._lock:
            self._sdists[sdist.url] = (fetched, artifact)
        return fetched, artifact

    def _metadata_from_sdist(
        self, name: NormalizedName, version: Version, sdist: IndexFile
    ) -> bytes:
        """An sdist's metadata: downloaded (hash-checked), then its static `PKG-INFO`
        (PEP 643), else built (`safepip.build`; only for `--allow-build` projects)."""
        from safepip import build

        assert self.build is not None
        fetched, artifact = self._sdist_file(name, version, sdist)
        pin = Pin(
            name=name, display_name=name, version=str(version), artifact=artifact, requested=False
        )
        return build.sdist_metadata(
            pin,
            fetched,
            self.target,
            self.build,
            index=self.index,
            session=self.session,
            cache=self.cache,
            warn=self.warn,
            info=self.warn,
        )


def read_wheel_metadata(path: Path) -> bytes:
    """The METADATA of a wheel's top-level `.dist-info` folder, read without unpacking it."""
    import zipfile  # only when an index serves no `.metadata` file: not on a lock's start-up

    try:
        with zipfile.ZipFile(path) as archive:
            names = [
                n
                for n in archive.namelist()
                if n.count("/") == 1
                and n.endswith("/METADATA")
                and n.split("/", 1)[0].endswith(".dist-info")
            ]
            if len(names) != 1:
                raise ResolutionError(
                    f"Refusing wheel `{path.name}`: it has {len(names)} top-level METADATA files"
                )
            return archive.read(names[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ResolutionError(f"Refusing wheel `{path.name}`: not a valid zip archive") from exc


def _parse_version(text: str | None) -> Version | None:
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


# --- the provider ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Findings:
    """What the provider learnt along the way, for messages and the result."""

    rejected: dict[NormalizedName, dict[Version, _Rejection]] = field(default_factory=dict)
    requires_python: dict[tuple[NormalizedName, Version], str] = field(default_factory=dict)
    """The `Requires-Python` that rejected a version (from the index page or the metadata)."""
    eligible: dict[NormalizedName, set[Version]] = field(default_factory=dict)
    """Every version offered as a candidate of each project, under any of its requirements."""
    warnings: list[str] = field(default_factory=list)


class _Provider(AbstractProvider[_Requirement, _Candidate, str]):
    def __init__(
        self,
        prefetcher: _Prefetcher,
        *,
        constraints: Mapping[NormalizedName, Sequence[_Requirement]],
        findings: _Findings,
    ) -> None:
        self.pf = prefetcher
        self.constraints = constraints
        self.findings = findings
        self.markers = prefetcher.target.markers

    def identify(self, requirement_or_candidate: _Requirement | _Candidate) -> str:
        return requirement_or_candidate.key

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, _Candidate],
        candidates: Mapping[str, Iterator[_Candidate]],
        information: Mapping[str, Iterator[RequirementInformation[_Requirement, _Candidate]]],
        backtrack_causes: Sequence[RequirementInformation[_Requirement, _Candidate]],
    ) -> Any:
        infos = list(information[identifier])
        pinned = any(i.requirement.exact_version is not None for i in infos)
        from_input = any(i.parent is None for i in infos)
        name = _base_name(identifier)
        in_conflict = any(c.requirement.name == name for c in backtrack_causes)
        return (not pinned, not in_conflict, not from_input, identifier)

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[_Requirement]],
        incompatibilities: Mapping[str, Iterator[_Candidate]],
    ) -> Callable[[], Iterator[_Candidate]]:
        reqs = list(requirements[identifier])
        name = _base_name(identifier)
        extras = reqs[0].extras if reqs else frozenset()
        specs = [r.specifier for r in reqs]
        specs += [c.specifier for c in self.constraints.get(name, ())]
        bad = {c.version for c in incompatibilities[identifier]}
        exact = {v for r in reqs if (v := r.exact_version) is not None}
        preferred = self.pf.preferred.get(name)
        for r in reqs:
            self.pf.want_project(name, r.specifier, extras)

        def candidates() -> Iterator[_Candidate]:
            listing = self.pf.project(name).listing
            versions = listing.versions
            newest_first = listing.newest_first()
            allow_pre = prereleases_allowed(
                specs, versions, pre=self.pf.pre, usable=self.pf.usable, order=newest_first
            )
            order: Sequence[Version] = newest_first
            wanted = _parse_version(preferred)
            if wanted is not None and wanted in versions:
                order = [wanted, *(v for v in newest_first if v != wanted)]
            fitting = []
            for version in order:
                if not all(s.contains(version, prereleases=True) for s in specs):
                    continue
                if version.is_prerelease and not (
                    allow_pre or version in exact or version == wanted
                ):
                    self._reject(name, version, _Rejection.PRERELEASE)
                    continue
                fitting.append(version)
            eligible = self.findings.eligible.setdefault(name, set())
            for version in fitting:
                if version in bad:
                    eligible.add(version)
                    continue
                candidate = self._candidate(name, version, extras, versions[version], exact)
                if candidate is not None:
                    eligible.add(version)
                    yield candidate

        return candidates

    def _reject(self, name: NormalizedName, version: Version, why: _Rejection) -> None:
        self.findings.rejected.setdefault(name, {}).setdefault(version, why)

    def _candidate(
        self,
        name: NormalizedName,
        version: Version,
        extras: frozenset[str],
        files: Sequence[IndexFile],
        exact: set[Version],
    ) -> _Candidate | None:
        live = [f for f in files if f.yanked is None]
        yanked: str | None = None
        if not live:
            # PEP 592: a yanked file is used only when the requirement pins exactly this version.
            if version not in exact:
                self._reject(name, version, _Rejection.YANKED)
                return None
            live = list(files)
            yanked = next((f.yanked for f in files if f.yanked), "") or ""
        wheel = self.pf.best_wheel(live)
        build = self.pf.build
        if wheel is None and build is not None:
            sdists = sorted(
                (not f.filename.endswith(".tar.gz"), f.filename, f)
                for f in live
                if f.kind == "sdist" and _python_ok(f.requires_python, self.pf.python)
            )
            if sdists and name in build.allowed:
                # `--allow-build`: the sdist stands in, its metadata read or built
                wheel = sdists[0][2]
            elif (
                sdists
                and not any(f.kind == "wheel" for f in live)
                and self.pf.static_sdist(name, version, sdists[0][2])
            ):
                # PEP 643: an sdist-only version whose PKG-INFO declares its dependencies is
                # locked from that, with nothing run (installing it needs `--allow-build`)
                wheel = sdists[0][2]
        if wheel is None:
            if not any(f.kind == "wheel" for f in live):
                self._reject(name, version, _Rejection.SDIST_ONLY)
            elif fitting := [
                f for f in live if f.kind == "wheel" and rank_wheel(f, self.pf.priority) is not None
            ]:
                self._reject(name, version, _Rejection.REQUIRES_PYTHON)
                spec = next((f.requires_python for f in fitting if f.requires_python), None)
                if spec:
                    self.findings.requires_python[(name, version)] = str(spec)
            else:
                self._reject(name, version, _Rejection.NO_WHEEL)
            return None
        candidate = _Candidate(
            name=name, version=version, extras=extras, wheel=wheel, files=tuple(live), yanked=yanked
        )
        metadata = self.pf.metadata(candidate)
        if not _python_ok(metadata.requires_python, self.pf.python):
            self._reject(name, version, _Rejection.REQUIRES_PYTHON)
            if metadata.requires_python:
                self.findings.requires_python[(name, version)] = metadata.requires_python
            return None
        return candidate

    def is_satisfied_by(self, requirement: _Requirement, candidate: _Candidate) -> bool:
        return requirement.specifier.contains(candidate.version, prereleases=True)

    def get_dependencies(self, candidate: _Candidate) -> list[_Requirement]:
        metadata = self.pf.metadata(candidate)
        deps: list[_Requirement] = []
        if candidate.extras:
            # The usual extras pattern: `a[x]==1` stands for `a==1` plus the extra's deps.
            deps.append(
                _Requirement(
                    name=candidate.name,
                    extras=frozenset(),
                    specifier=SpecifierSet(f"=={candidate.version}"),
                    text=f"{candidate.name}=={candidate.version}",
                )
            )
        for req in dependencies_for(
            metadata.requires_dist,
            candidate.extras,
            self.markers,
            owner=f"{candidate.name}=={candidate.version}",
        ):
            dep = _from_requirement(req)
            if dep.name == candidate.name and not dep.extras:
                continue  # a self-reference (`a[all]` listing `a[x]`) adds nothing
            deps.append(dep)
        for dep in deps:
            self.pf.want_project(dep.name, dep.specifier, dep.extras)
        return deps


def _from_requirement(req: Requirement, **where: str | None) -> _Requirement:
    name = canonicalize_name(req.name)
    extras = frozenset(canonicalize_name(e) for e in req.extras)
    text = str(req)
    if req.marker is not None:
        text = text.split(";", 1)[0].strip()
    return _Requirement(
        name=name,
        extras=extras,
        specifier=req.specifier,
        text=text,
        where=where.get("where"),
        origin=where.get("origin"),
    )


# --- explaining failures --------------------------------------------------------------------


class _Trail(BaseReporter[_Requirement, _Candidate, str]):
    """What resolvelib reports while it works, kept to explain a failure: the requirements of
    the state in which the last conflict happened (so that a chain of pins is the one that
    state holds, never one seen earlier and backtracked away), and the versions tried."""

    def __init__(self) -> None:
        self._state: State[_Requirement, _Candidate, str] | None = None
        self.failed: dict[str, Criterion[_Requirement, _Candidate]] = {}
        """Each project's requirements (with the pins that state them) when the last conflict
        happened; empty when it happened before the first pin."""
        self.tried: dict[NormalizedName, set[Version]] = {}

    def ending_round(self, index: int, state: State[_Requirement, _Candidate, str]) -> None:
        # The state the next round works in (and fails in, if it does).
        self._state = state

    def resolving_conflicts(
        self, causes: Collection[RequirementInformation[_Requirement, _Candidate]]
    ) -> None:
        # Backjumping then discards this state: keep what explains the conflict.
        self.failed = dict(self._state.criteria) if self._state is not None else {}

    def pinning(self, candidate: _Candidate) -> None:
        self.tried.setdefault(candidate.name, set()).add(candidate.version)

    def rejecting_candidate(
        self, criterion: Criterion[_Requirement, _Candidate], candidate: _Candidate
    ) -> None:
        self.tried.setdefault(candidate.name, set()).add(candidate.version)

    def chain(self, pin: _Candidate) -> tuple[str, ...]:
        """The shortest chain of pins, in the failed state, from an input requirement down to
        `pin` (outermost first); just `pin` when the input requires it or nothing is known."""
        paths: dict[str, tuple[_Candidate, ...]] = {pin.key: (pin,)}
        queue = deque([pin])
        while queue:
            current = queue.popleft()
            criterion = self.failed.get(current.key)
            if criterion is None:
                break
            parents = [info.parent for info in criterion.information]
            if any(parent is None for parent in parents):
                return tuple(str(c) for c in paths[current.key])
            for parent in parents:
                if parent is not None and parent.key not in paths:
                    paths[parent.key] = (parent, *paths[current.key])
                    queue.append(parent)
        return (str(pin),)


def _causes(
    infos: Sequence[RequirementInformation[_Requirement, _Candidate]], trail: _Trail
) -> list[Cause]:
    out: dict[tuple[str, str | None, str | None], Cause] = {}
    for info in infos:
        parent = info.parent
        if parent is None:
            cause = Cause(
                requirement=info.requirement.text, parent=None, where=info.requirement.where
            )
        else:
            cause = Cause(
                requirement=info.requirement.text,
                parent=str(parent),
                where=None,
                chain=trail.chain(parent),
            )
        out.setdefault((cause.requirement, cause.parent, cause.where), cause)
    return sorted(out.values(), key=lambda c: (c.parent is not None, c.parent or "", c.where or ""))


def _exhausted(
    infos: Sequence[RequirementInformation[_Requirement, _Candidate]],
    trail: _Trail,
    findings: _Findings,
    constraints: Mapping[NormalizedName, Sequence[_Requirement]],
) -> list[str]:
    """Notes for the projects on the conflict's chains of which every version that fits the
    requirements of the failed state was tried (backtracking went through all of them)."""
    names: dict[str, None] = {}
    for info in infos:
        if info.parent is not None:
            for pin in trail.chain(info.parent):
                names.setdefault(pin.split("==", 1)[0], None)
    notes = []
    for key in names:
        criterion = trail.failed.get(key)
        if criterion is None:
            continue
        name = _base_name(key)
        specs = [i.requirement.specifier for i in criterion.information]
        specs += [c.specifier for c in constraints.get(name, ())]
        eligible = {
            v
            for v in findings.eligible.get(name, set())
            if all(s.contains(v, prereleases=True) for s in specs)
        }
        tried = trail.tried.get(name, set())
        if len(eligible) > 1 and eligible <= tried:
            newest, oldest = max(eligible), min(eligible)
            notes.append(
                f"every version of `{name}` that fits was tried ({len(eligible)}, {newest} "
                f"… {oldest}); each one leads to this conflict"
            )
    return notes


def _explain(
    exc: _Impossible[_Requirement, _Candidate],
    prefetcher: _Prefetcher,
    findings: _Findings,
    trail: _Trail,
    constraints: Mapping[NormalizedName, Sequence[_Requirement]],
) -> ResolutionError | PolicyViolation:
    """The error for a failed resolution, from the requirements of the state it failed in."""
    infos: list[RequirementInformation[_Requirement, _Candidate]] = list(exc.causes)
    by_name: dict[NormalizedName, list[RequirementInformation[_Requirement, _Candidate]]] = {}
    for info in infos:
        by_name.setdefault(info.requirement.name, []).append(info)
    # A requirement that nothing could satisfy on its own is the most useful thing to report;
    # otherwise the requirements are fine one by one and collide with each other.
    for name, group in by_name.items():
        page = prefetcher.project(name)
        if not page.listing:
            sources = [*prefetcher.index.index_urls, *prefetcher.index.find_links]
            return ProjectNotFoundError(project=name, sources=sources, causes=_causes(group, trail))
        versions = prefetcher.versions(name)
        rejected = findings.rejected.get(name, {})
        for info in group:
            specs = [info.requirement.specifier]
            specs += [c.specifier for c in constraints.get(name, ())]
            matching = [v for v in versions if all(s.contains(v, prereleases=True) for s in specs)]
            if matching and not all(rejected.get(v) is not None for v in matching):
                continue
            causes = _causes([info], trail)
            if matching and {rejected[v] for v in matching} == {_Rejection.SDIST_ONLY}:
                listed = [str(v) for v in sorted(matching, reverse=True)]
                return SdistOnlyError(project=name, versions=listed, causes=causes)
            requirement = ",".join(str(s) for s in specs if str(s))
            reasons = _reasons(name, matching, rejected, versions, prefetcher, findings)
            if page.skipped_indexes and page.claimed_by is not None:
                # First index wins (dependency confusion): say so when it hides versions.
                skipped = ", ".join(f"`{redact_url(u)}`" for u in page.skipped_indexes)
                reasons.append(
                    f"`{name}` is taken from `{redact_url(page.claimed_by)}`, the first index "
                    f"that has it; {skipped} was not consulted for it"
                )
            return NoMatchingVersionError(
                project=name,
                requirement=f"{name}{requirement}",
                causes=causes,
                reasons=reasons,
            )
    names = sorted(by_name)
    causes = _causes(infos, trail)
    notes = _exhausted(infos, trail, findings, constraints)
    for name in names:
        for c in constraints.get(name, ()):
            notes.append(f"`{c.where or 'a constraints file'}` constrains `{c.text}`")
        available = sorted(prefetcher.versions(name), reverse=True)
        if available:
            shown = ", ".join(str(v) for v in available[:8])
            more = " …" if len(available) > 8 else ""
            notes.append(f"available versions of `{name}`: {shown}{more}")
    return ConflictError(projects=names, causes=causes, notes=notes)


def _reasons(
    name: NormalizedName,
    matching: Sequence[Version],
    rejected: Mapping[Version, _Rejection],
    versions: Mapping[Version, Sequence[IndexFile]],
    prefetcher: _Prefetcher,
    findings: _Findings,
) -> list[str]:
    if not matching:
        available = sorted(versions, reverse=True)
        shown = ", ".join(str(v) for v in available[:8]) + (" …" if len(available) > 8 else "")
        return [f"available versions: {shown}" if shown else "the index lists no files"]
    python = prefetcher.target.python_version
    groups: dict[tuple[_Rejection, str | None], list[str]] = {}
    for version in sorted(matching, reverse=True):
        kind = rejected[version]
        spec = findings.requires_python.get((name, version))
        groups.setdefault((kind, spec), []).append(str(version))
    texts = {
        _Rejection.PRERELEASE: "pre-release (not considered without `--pre`)",
        _Rejection.YANKED: "yanked (used only when pinned exactly with `==`)",
        _Rejection.SDIST_ONLY: "source distribution only (building would run its code)",
        _Rejection.NO_WHEEL: f"no wheel for the target ({prefetcher.target.tags[0]})",
        _Rejection.REQUIRES_PYTHON: f"requires another Python than {python}",
    }
    lines = []
    for (kind, spec), listed in groups.items():
        shown = ", ".join(listed[:6]) + (" …" if len(listed) > 6 else "")
        text = texts[kind]
        if kind is _Rejection.REQUIRES_PYTHON and spec:
            text = f"requires Python `{spec}` (Requires-Python); the target is Python {python}"
        lines.append(f"{shown}: {text}")
    return lines


# --- the entry point ------------------------------------------------------------------------


def _input_requirement(line: ParsedRequirement) -> _Requirement:
    where = f"{line.location.path}:{line.location.line}"
    if line.editable or line.url is not None or line.requirement is None:
        raise ResolutionError(
            f"Cannot resolve `{line}` ({where}): direct URLs, paths and editables are not "
            "resolved from an index",
            hint="name the package with a version specifier instead, or pin it with `==` and "
            "a `--hash`",
        )
    return _from_requirement(line.requirement, where=where, origin=line.location.path)


def _applies(line: ParsedRequirement, markers: Mapping[str, str]) -> bool:
    marker = line.requirement.marker if line.requirement is not None else line.marker
    return marker is None or marker.evaluate({**markers, "extra": ""})


def resolve_requirements(
    requirements: Sequence[ParsedRequirement],
    constraints: Sequence[ParsedRequirement],
    *,
    index: IndexClient,
    target: Target,
    pre: bool = False,
    preferred: Mapping[NormalizedName, str] | None = None,
    allow_unhashed: bool = False,
    session: Session,
    cache: Cache,
    build: BuildPolicy | None = None,
    warn: Callable[[str], None] | None = None,
) -> Resolution:
    """Choose one version of every project needed by `requirements`, for `target`.

    Versions follow PEP 440 order, newest first, with `preferred` versions (the pins of an
    existing lock) tried before all others so that re-locking changes nothing needlessly.
    Pre-releases follow PEP 440 per project: considered with `pre`, when a specifier names one,
    when pinned, or when no final release satisfies the requirements. Yanked
    files (PEP 592) are skipped unless a requirement pins exactly their version. Markers,
    extras and `Requires-Python` are evaluated for `target`. Only versions with a wheel that
    fits the target are candidates; a project with nothing but sdists is refused
    (`SdistOnlyError`) unless `build` allows it (`--allow-build`): then its sdist is a
    candidate, with the metadata of its `PKG-INFO` when static (PEP 643), else of a build.
    Conflicts raise `ConflictError` naming the requirements that collide and the chains of pins
    that led to them in the state the resolution failed in, and the projects of which every
    fitting version was tried. Extras a pin does not declare are warnings.

    Does not verify the wheels themselves: each pin's artifact carries the index's published
    hashes, which `fetch` checks when the wheel is downloaded, and the dependency closure is
    checked again from the verified wheels by the install pipeline.
    """
    inputs = [_input_requirement(r) for r in requirements if _applies(r, target.markers)]
    if not inputs:
        raise ResolutionError(
            "Nothing to resolve: no requirement applies to the target",
            hint="check the markers of the requirements, or the target (`--python`)",
        )
    constrained: dict[NormalizedName, list[_Requirement]] = {}
    for line in constraints:
        if _applies(line, target.markers):
            req = _input_requirement(line)
            constrained.setdefault(req.name, []).append(req)
    prefetcher = _Prefetcher(
        index=index,
        target=target,
        session=session,
        cache=cache,
        pre=pre,
        preferred=dict(preferred or {}),
        build=build,
        warn=warn,
    )
    findings = _Findings()
    provider = _Provider(prefetcher, constraints=constrained, findings=findings)
    try:
        for req in inputs:
            prefetcher.want_project(req.name, req.specifier, req.extras)
        trail = _Trail()
        resolver: Resolver[_Requirement, _Candidate, str] = Resolver(provider, trail)
        try:
            result = resolver.resolve(inputs, max_rounds=MAX_ROUNDS)
        except _Impossible as exc:
            raise _explain(exc, prefetcher, findings, trail, constrained) from None
        except _TooDeep as exc:
            raise ResolutionError(
                f"Gave up resolving after {exc.round_count} rounds: the requirements leave too "
                "many combinations to try",
                hint="narrow the requirements (lower bounds help most) and try again",
            ) from None
        return _build(result.mapping, result.criteria, prefetcher, findings, allow_unhashed)
    finally:
        prefetcher.close()


def _build(
    mapping: Mapping[str, _Candidate],
    criteria: Mapping[str, Any],
    prefetcher: _Prefetcher,
    findings: _Findings,
    allow_unhashed: bool,
) -> Resolution:
    extras: dict[NormalizedName, set[str]] = {}
    via: dict[NormalizedName, set[str]] = {}
    requested: dict[NormalizedName, _Requirement] = {}
    deps: dict[NormalizedName, set[NormalizedName]] = {}
    for key, candidate in mapping.items():
        name = candidate.name
        extras.setdefault(name, set()).update(candidate.extras)
        for info in criteria[key].information:
            parent = info.parent
            if parent is None:
                requested.setdefault(name, info.requirement)
                if info.requirement.origin:
                    via.setdefault(name, set()).add(info.requirement.origin)
            elif parent.name != name:
                via.setdefault(name, set()).add(parent.name)
                deps.setdefault(parent.name, set()).add(name)
    pins: list[Pin] = []
    unhashed: list[str] = []
    warnings = list(findings.warnings)
    notes: list[str] = []
    for candidate in mapping.values():
        if candidate.extras:
            declared = prefetcher.metadata(candidate).extras
            warning = unknown_extras_warning(
                candidate.name, str(candidate.version), candidate.extras, declared
            )
            if warning is not None:
                warnings.append(warning)
    for candidate in sorted(mapping.values(), key=lambda c: c.name):
        if candidate.extras:
            continue
        name = candidate.name
        wheel = candidate.wheel
        hashes = _published_hashes(wheel)
        if not hashes and not allow_unhashed:
            unhashed.append(wheel.filename)
        if candidate.yanked is not None:
            warnings.append(
                f"`{name}=={candidate.version}` is yanked ({candidate.yanked or 'no reason given'})"
                "; using it because it is pinned exactly"
            )
        if wheel.kind == "sdist":
            warnings.append(
                f"`{name}=={candidate.version}` has no wheel for the target: its sdist "
                f"`{wheel.filename}` is used, and installing it needs `--allow-build {name}`"
            )
        notes.extend(prefetcher.project(name).warnings)
        pins.append(
            Pin(
                name=name,
                display_name=name,
                version=str(candidate.version),
                artifact=_index_artifact(name, candidate.version, wheel, yanked=wheel.yanked),
                requested=name in requested,
                extras=frozenset(extras.get(name, ())),
                via=tuple(sorted(via.get(name, ()))),
            )
        )
    if unhashed:
        raise UnhashedFilesError(unhashed)
    base = {c.name: c for c in mapping.values() if not c.extras}
    requires_python: dict[NormalizedName, str] = {}
    for name, candidate in base.items():
        meta = prefetcher.metadata(candidate)
        if meta.requires_python:
            requires_python[name] = meta.requires_python
    return Resolution(
        pins=tuple(pins),
        files={n: c.files for n, c in base.items()},
        dependencies={n: tuple(sorted(deps.get(n, ()))) for n in base},
        requires_python=requires_python,
        indexes={n: c.wheel.origin for n, c in base.items()},
        warnings=tuple(dict.fromkeys(warnings)),
        notes=tuple(dict.fromkeys(notes)),
    )
