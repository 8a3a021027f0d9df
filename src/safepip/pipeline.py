"""The install pipeline in one place: parse, plan, audit, fetch, verify, then install.

Reading `install()` tells what safepip does. Stages take values and return values; only `fetch`
writes the cache and only `install` writes the target, and nothing is written to the target
until every artifact has been downloaded, verified and unpacked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from safepip import __version__, audit, envlock, fastpath, journal
from safepip import fetch as fetch_stage
from safepip import install as install_stage
from safepip import sync as sync_stage
from safepip import target as target_mod
from safepip.audit import database
from safepip.buildpolicy import BuildPolicy, timeout_from_environment
from safepip.errors import SafepipError, UsageError
from safepip.fetch import cached_wheels, open_cache
from safepip.hashes import HashCheckError, HashProblem, ProblemKind
from safepip.index import IndexClient
from safepip.install import installed_artifact
from safepip.linking import DEFAULT_LINK_MODE, LinkMode
from safepip.net import Session
from safepip.plan import (
    Choice,
    Pin,
    ResolutionError,
    best_version_for,
    check_closure,
    choose_artifact,
    declared_extras,
    direct_artifact,
    merge_requirements,
    pin_without_index,
    pinned_sha256,
    unknown_extras_warning,
)
from safepip.policy import PolicyViolation
from safepip.report import plural
from safepip.requirements import ParsedRequirements
from safepip.settings import DEFAULT_OSV_URL, load_settings, read_toml
from safepip.sources import (
    SourceOptions,
    Sources,
    decide_sources,
    default_index_url,
    load_pip_config,
    net_config,
    parse_inputs,
)
from safepip.target import installed_distributions, probe
from safepip.urls import without_credentials

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from packaging.utils import NormalizedName

    from safepip.audit import AuditReport
    from safepip.bundle import BundleTarget, OpenedBundle
    from safepip.fetch import Cache, FetchedArtifact, Progress, UnpackedWheel
    from safepip.install import ChangePlan, InstallResult
    from safepip.pipconfig import PipConfig
    from safepip.plan import Wanted
    from safepip.target import InstalledDistribution, Target


class Reporter(Protocol):
    """What the pipeline tells the user while it works; the CLI renders it."""

    def info(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def detail(self, text: str) -> None: ...
    def progress(self) -> Progress: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetOptions:
    python: str | None = None
    system: bool = False
    break_system_packages: bool = False
    target_dir: Path | None = None
    prefix: Path | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditChoice:
    enabled: bool = True
    ignore_vulns: tuple[str, ...] = ()
    db: Path | None = None
    source: str = "local"
    osv_url: str | None = None
    refresh: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallOptions:
    requirement_files: tuple[str, ...] = ()
    constraint_files: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    sources: SourceOptions = field(default_factory=SourceOptions)
    target: TargetOptions = field(default_factory=TargetOptions)
    require_hashes: bool = False
    no_deps: bool = False
    allow_unhashed: bool = False
    pre: bool = False
    """Consider pre-releases of every package (`--pre`); without it PEP 440's rule applies."""
    cache_dir: Path | None = None
    no_cache: bool = False
    dry_run: bool = False
    compile: bool = False
    reinstall: bool = False
    link_mode: LinkMode = DEFAULT_LINK_MODE
    audit: AuditChoice = field(default_factory=AuditChoice)
    sync: bool = False
    """Also remove what the lock does not select (`safepip sync`)."""
    bundle: Path | None = None
    """Install from this `.safepip` bundle instead of requirements (never uses the network)."""
    expect_sha256: str | None = None
    """The bundle's published sha256 (`--expect-sha256`)."""
    extras: tuple[str, ...] = ()
    """Extras to select from a `pylock.toml` (`--extra`, PEP 751)."""
    groups: tuple[str, ...] = ()
    """Dependency groups to select from a `pylock.toml` besides its `default-groups`."""
    allow_build: frozenset[NormalizedName] = frozenset()
    """`--allow-build`: projects whose sdists may be built (with the settings file's)."""
    build_constraint: Path | None = None
    """`--build-constraint`: the hash-pinned build dependencies."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """The decided install: pins with their files, before anything is fetched."""

    target: Target
    pins: tuple[Pin, ...]
    hash_mode: bool
    index_urls: tuple[str, ...]
    find_links: tuple[str, ...]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallOutcome:
    plan: Plan
    changes: ChangePlan
    result: InstallResult | None
    """None for `--dry-run`."""
    audit: AuditReport | None = None
    fetched: tuple[FetchedArtifact, ...] = ()
    metadata: Mapping[NormalizedName, bytes] = field(default_factory=dict)
    """Each pin's core metadata (METADATA of the verified wheel, or of the kept install)."""


# --- set-up ---------------------------------------------------------------------------------


def resolve_target(
    options: TargetOptions, cache: Cache | None, sources: SourceOptions | None = None
) -> Target:
    """The target environment, probed; an externally managed one (PEP 668) is refused unless
    `--break-system-packages`, or pip's `break-system-packages` setting (`pip.conf`,
    `PIP_BREAK_SYSTEM_PACKAGES`) when `sources` allow pip's configuration."""

    if options.target_dir is not None and options.prefix is not None:
        raise UsageError("`--target` and `--prefix` cannot be used together")
    if options.python is None and (options.target_dir is not None or options.prefix is not None):
        # pip's rule: `--target`/`--prefix` without `--python` are for the interpreter running
        # the installer (never whatever `python3` is first on PATH)
        python = target_mod.current_python()
    else:
        python = target_mod.find_python(options.python, system=options.system)
    found = target_mod.probe(
        python,
        target_dir=options.target_dir,
        prefix=options.prefix,
        cache_dir=cache.root if cache else None,
    )
    allowed = options.break_system_packages
    if not allowed and found.externally_managed is not None and sources is not None:
        pip_config = load_pip_config(sources, found)
        allowed = pip_config is not None and pip_config.break_system_packages
    target_mod.check_externally_managed(found, break_system_packages=allowed)
    return found


# --- planning -------------------------------------------------------------------------------


class _Findings:
    """What planning found wrong, collected so that one run reports all of it."""

    def __init__(self) -> None:
        self.problems: list[HashProblem] = []
        self.violations: list[str] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def add(self, choice: Choice) -> None:
        if choice.problem is not None:
            self.problems.append(choice.problem)
        if choice.violation is not None:
            self.violations.append(choice.violation)
        if choice.error is not None:
            self.errors.append(choice.error)
        if choice.warning is not None:
            self.warnings.append(choice.warning)

    def raise_any(self) -> None:
        """Raise the first kind found: policy, then hashes, then resolution."""
        if self.violations:
            from safepip.build import BUILD_HINT

            raise PolicyViolation(
                "Refusing to install:\n" + "\n".join(f"    {v}" for v in self.violations),
                hint=BUILD_HINT,
            )
        if self.problems:
            # Missing hashes: pip shows the hash of the file it would install; so do we.
            raise HashCheckError(self.problems)
        if self.errors:
            raise ResolutionError("\n".join(self.errors))


def plan_install(
    options: InstallOptions,
    parsed: ParsedRequirements,
    target: Target,
    sources: Sources,
    index: IndexClient,
    reporter: Reporter,
    *,
    cache: Cache | None = None,
    installed: Mapping[NormalizedName, tuple[str, Mapping[str, object]]] | None = None,
) -> Plan:
    """Choose one file per pin; every problem is collected and raised at once.

    Hash mode and direct URL requirements take the pinned path (`_pinned_plan`); anything else
    is resolved as pip resolves it (`_resolved_plan`).
    """
    hash_mode = options.require_hashes or parsed.hash_mode
    wanted, constraints, skipped = merge_requirements(
        parsed.requirements, parsed.constraints, target.markers
    )
    for note in skipped:
        reporter.detail(note)
    if not wanted:
        raise UsageError(
            "Nothing to install: no requirement applies to the target",
            hint="give requirements (`safepip install NAME==VERSION`) or `-r FILE`",
        )
    findings = _Findings()
    unpinned = _screen(wanted, constraints, findings, hash_mode=hash_mode)
    if (
        not hash_mode
        and not findings.problems
        and not findings.violations
        and not any(w.url is not None for w in wanted.values())
    ):
        return _resolved_plan(options, parsed, target, sources, index, reporter, cache, skipped)
    plan = _pinned_plan(
        options,
        wanted,
        unpinned,
        findings,
        target,
        sources,
        index,
        hash_mode=hash_mode,
        cache=cache,
        installed=installed or {},
    )
    for warning in findings.warnings:
        reporter.warn(warning)
    return replace(plan, notes=tuple(skipped), warnings=tuple(findings.warnings))


def _screen(
    wanted: dict[NormalizedName, Wanted],
    constraints: Mapping[NormalizedName, Wanted],
    findings: _Findings,
    *,
    hash_mode: bool,
) -> list[Wanted]:
    """Narrow each requirement's hashes by its constraint's (in place), refuse editables, and
    return the requirements without a pinned version."""
    unpinned: list[Wanted] = []
    for w in wanted.values():
        c = constraints.get(w.name)
        if c is not None and c.hashes is not None:
            w = replace(w, hashes=c.hashes if w.hashes is None else w.hashes & c.hashes)
            wanted[w.name] = w
        if any(line.editable for line in w.lines):
            # Editables are local source trees: nothing to hash, and building runs their code.
            if hash_mode:
                findings.problems.append(
                    HashProblem(kind=ProblemKind.UNHASHABLE, package=w.display_name, where=w.where)
                )
            else:
                findings.violations.append(
                    f"`{w.display_name}` is an editable install; building it runs its code "
                    f"({w.where})"
                )
            continue
        if w.url is None and w.pinned_version is None:
            unpinned.append(w)
    return unpinned


def _pinned_plan(
    options: InstallOptions,
    wanted: Mapping[NormalizedName, Wanted],
    unpinned: Sequence[Wanted],
    findings: _Findings,
    target: Target,
    sources: Sources,
    index: IndexClient,
    *,
    hash_mode: bool,
    cache: Cache | None,
    installed: Mapping[NormalizedName, tuple[str, Mapping[str, object]]],
) -> Plan:
    """The hashed path: every requirement pinned (hash mode) or a direct URL among them.

    In hash mode a pin that safepip already installed from a file with a pinned digest, or
    whose pinned wheel is in the cache, is planned without asking the index (fast no-op and
    warm installs); everything else comes from the indexes.
    """
    if unpinned:
        if hash_mode:
            findings.problems.extend(
                HashProblem(
                    kind=ProblemKind.UNPINNED,
                    package=f"{w.display_name}{w.specifier}",
                    where=w.where,
                )
                for w in unpinned
            )
        else:
            names = ", ".join(f"`{w.display_name}{w.specifier}`" for w in unpinned)
            raise ResolutionError(
                f"Not pinned: {names}; with direct URL requirements every other requirement "
                "must be pinned",
                hint="pin each requirement with `==`, or write a lock with `safepip lock`",
            )
    allowed = build_policy(options).allowed
    offline: dict[NormalizedName, Pin] = {}
    if hash_mode and not findings.violations and not findings.problems:
        offline = _offline_pins(wanted, target, cache, installed)
    index_names = [
        w.name
        for w in wanted.values()
        if w.url is None and w.pinned_version is not None and w.name not in offline
    ]
    pages = index.project_files_many(index_names) if index_names else {}
    pins: list[Pin] = []
    for w in wanted.values():
        if any(line.editable for line in w.lines) or (w.url is None and w.pinned_version is None):
            continue
        if w.name in offline:
            pins.append(offline[w.name])
            continue
        if w.url is not None:
            choice = direct_artifact(
                w,
                target,
                hash_mode=hash_mode,
                allow_unhashed=options.allow_unhashed,
                build_allowed=w.name in allowed,
            )
        else:
            found = pages[w.name]
            if not found.files:
                where = (
                    "the indexes " + ", ".join(f"`{u}`" for u in sources.index_urls)
                    if sources.index_urls
                    else "the find-links locations"
                )
                findings.errors.append(f"`{w.display_name}` was not found on {where} ({w.where})")
                continue
            choice = choose_artifact(
                w,
                found.files,
                target,
                hash_mode=hash_mode,
                allow_unhashed=options.allow_unhashed,
                build_allowed=w.name in allowed,
            )
        findings.add(choice)
        if choice.artifact is not None:
            pins.append(
                Pin(
                    name=w.name,
                    display_name=w.display_name,
                    version=choice.artifact.version,
                    artifact=choice.artifact,
                    requested=True,
                    extras=w.extras,
                    requirement=w.lines[0],
                )
            )
    findings.raise_any()
    return Plan(
        target=target,
        pins=tuple(pins),
        hash_mode=hash_mode,
        index_urls=sources.index_urls,
        find_links=sources.find_links,
    )


def _offline_pins(
    wanted: Mapping[NormalizedName, Wanted],
    target: Target,
    cache: Cache | None,
    installed: Mapping[NormalizedName, tuple[str, Mapping[str, object]]],
) -> dict[NormalizedName, Pin]:
    """Hash-pinned requirements that need no index: installed by safepip from a pinned file, or
    with a pinned wheel in the cache."""
    offline: dict[NormalizedName, Pin] = {}
    for w in wanted.values():
        if w.url is not None or w.pinned_version is None or not w.hashes:
            continue
        pin = pin_without_index(w, target, installed=installed.get(w.name), cached=())
        if pin is None and cache is not None:
            cached = [
                (c.sha256, c.filename, c.url, c.origin)
                for c in cached_wheels(cache, pinned_sha256(w))
            ]
            pin = pin_without_index(w, target, installed=None, cached=cached)
        if pin is not None:
            offline[w.name] = pin
    return offline


def _resolved_plan(
    options: InstallOptions,
    parsed: ParsedRequirements,
    target: Target,
    sources: Sources,
    index: IndexClient,
    reporter: Reporter,
    cache: Cache | None,
    skipped: Sequence[str],
) -> Plan:
    """Outside hash mode, resolve (as pip does) and check every file against the hash the
    index publishes; files without one are refused unless `--allow-unhashed`."""
    # Imported here: a hash-pinned install never resolves, and resolvelib with the provider
    # costs it 30-50 ms of start-up (`python -X importtime`, safepip.resolver cumulative).
    from safepip.resolver import resolve_requirements

    assert cache is not None
    resolution = resolve_requirements(
        parsed.requirements,
        parsed.constraints,
        index=index,
        target=target,
        pre=options.pre or parsed.pre,
        allow_unhashed=options.allow_unhashed,
        session=index.session,
        cache=cache,
        build=build_policy(options),
        warn=reporter.warn,
    )
    for warning in resolution.warnings:
        reporter.warn(warning)
    requested = {r.name for r in parsed.requirements}
    pins = tuple(
        replace(p, requested=p.name in requested) if p.requested != (p.name in requested) else p
        for p in resolution.pins
    )
    return Plan(
        target=target,
        pins=pins,
        hash_mode=False,
        index_urls=sources.index_urls,
        find_links=sources.find_links,
        notes=tuple(skipped),
        warnings=tuple(resolution.warnings),
    )


def warn_unknown_extras(
    plan: Plan, metadata: Mapping[NormalizedName, bytes], reporter: Reporter
) -> None:
    """Warn about requested extras that a pinned package does not declare (pip and uv warn
    too); the package is installed without them."""
    from safepip.metadata import parse_metadata

    for pin in plan.pins:
        if not pin.extras or pin.name not in metadata:
            continue
        core = parse_metadata(metadata[pin.name])
        warning = unknown_extras_warning(
            pin.display_name,
            pin.version,
            frozenset(pin.extras),
            declared_extras(core.provides_extra, core.requires_dist),
        )
        if warning is not None:
            reporter.warn(warning)


def check_dependencies(
    plan: Plan,
    constraints: Mapping[NormalizedName, Wanted],
    metadata: Mapping[NormalizedName, bytes],
    index: IndexClient,
) -> None:
    """The dependency closure, read from the verified wheels (or, for packages kept as they
    are, from what safepip installed), must be pinned in the files."""

    gaps, problems = check_closure(plan.pins, metadata, plan.target, constraints)
    if problems:
        raise ResolutionError("\n".join(problems))
    if not gaps:
        return
    missing = [g for g in gaps if g.pinned is None]
    conflicts = [g for g in gaps if g.pinned is not None]
    if conflicts:
        lines = [
            f"`{g.parent}` requires `{g.requirement}`, but the files pin `{g.name}=={g.pinned}`"
            + (f" (via {' -> '.join(g.chain)})" if len(g.chain) > 1 else "")
            for g in conflicts
        ]
        raise ResolutionError(
            "Conflicting pins:\n" + "\n".join(f"    {line}" for line in lines),
            hint="regenerate the lock so that every dependency is satisfied",
        )
    pages = index.project_files_many({g.name for g in missing})
    problems_out: list[HashProblem] = []
    for g in missing:
        found = pages.get(g.name)
        best = best_version_for(g.requirement, found.files if found else (), plan.target)
        if best is None:
            suggestion = f"{g.name}  # no version on the index satisfies `{g.requirement}`"
        else:
            version, sha = best
            suggestion = f"{g.name}=={version}" + (
                f" --hash=sha256:{sha}" if sha else "  # the index publishes no hash"
            )
        problems_out.append(
            HashProblem(
                kind=ProblemKind.MISSING_DEPENDENCY,
                package=g.name,
                where="required by " + " -> ".join((*g.chain, g.requirement)),
                suggestion=suggestion,
            )
        )
    raise HashCheckError(problems_out)


# --- the pipeline ---------------------------------------------------------------------------


class _Context:
    """Resources shared by the stages of one run."""

    def __init__(self, options: InstallOptions, reporter: Reporter) -> None:
        self.options = options
        self.reporter = reporter
        self._stack = contextlib.ExitStack()
        self.session: Session | None = None
        self._locks = contextlib.ExitStack()

    def __enter__(self) -> _Context:
        self.cache = self._stack.enter_context(
            open_cache(self.options.cache_dir, throwaway=self.options.no_cache)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._locks.close()
        if self.session is not None:
            self.session.close()
        self._stack.close()

    def hold_environment(self, target: Target) -> None:
        """Take the environment lock for the rest of the run (planning through commit), then
        finish or undo any install of it that was interrupted."""

        self._locks.enter_context(envlock.hold(target, on_wait=self._once))
        journal.recover(target, on_wait=self._once, on_note=self._once)

    def _once(self, text: str) -> None:
        """A message about this run only (a wait, a recovery): the run is not a plain no-op."""
        fastpath.not_noop("a one-time message")
        self.reporter.warn(text)

    def connect(self, parsed: ParsedRequirements, pip_config: PipConfig | None) -> _Connection:
        """Decide the sources and open the one session and index client of the run."""
        sources = decide_sources(self.options.sources, parsed, pip_config)
        self.session = Session(
            net_config(
                self.options.sources, sources.policy, pip_config, login_urls=sources.login_urls
            )
        )
        index = IndexClient(
            self.session,
            index_urls=sources.index_urls,
            find_links=sources.find_links,
            cache_dir=self.cache.root / "http",
        )
        return _Connection(sources=sources, session=self.session, index=index)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Connection:
    sources: Sources
    session: Session
    index: IndexClient


def _parse_inputs(
    options: InstallOptions, pip_config: PipConfig | None, reporter: Reporter
) -> ParsedRequirements:
    parsed = parse_inputs(
        requirement_files=options.requirement_files,
        constraint_files=options.constraint_files,
        requirements=options.requirements,
        sources=options.sources,
        pip_config=pip_config,
    )
    for warning in parsed.warnings:
        reporter.warn(warning)
    return parsed


def install(options: InstallOptions, reporter: Reporter) -> InstallOutcome:
    """Install the requirements into the target: the whole safepip promise, in order.

    From a bundle (`options.bundle`), the whole bundle is verified and unpacked into a
    temporary folder first; then its lock is installed like any `pylock.toml`, with no index,
    no find-links and no allowed host, audited with the newer of the bundle's advisory data and
    the local database.
    """
    if options.bundle is None:
        return _install(options, reporter)
    with tempfile.TemporaryDirectory(prefix="safepip-bundle-") as tmp:
        opened = open_bundle(options.bundle, Path(tmp), options.expect_sha256, reporter)
        return _install(_bundle_options(options, opened, reporter), reporter, bundle=opened)


def _install(
    options: InstallOptions, reporter: Reporter, *, bundle: OpenedBundle | None = None
) -> InstallOutcome:

    with _Context(options, reporter) as ctx:
        target = resolve_target(options.target, ctx.cache, options.sources)
        ctx.hold_environment(target)
        reporter.detail(f"Target: `{target.python}` (Python {target.python_version})")
        if bundle is not None:
            check_bundle_fits(bundle, target)
        pip_config = load_pip_config(options.sources, target)
        if pip_config is not None and pip_config.pre:
            options = replace(options, pre=True)  # `PIP_PRE`, `pre = true` in pip.conf
        pylock = _pylock_input(options)
        parsed = (
            _parse_inputs(options, pip_config, reporter) if pylock is None else ParsedRequirements()
        )
        conn = ctx.connect(parsed, pip_config)
        sources, session, index = conn.sources, conn.session, conn.index
        for host in sources.trusted_hosts:
            reporter.warn(f"`--trusted-host {host}`: plain HTTP is allowed for `{host}`")
        # Torn `.dist-info` folders too (no METADATA, an empty RECORD): their packages are
        # reinstalled, never kept (issue 10).
        dists = installed_distributions(target, damaged=True)
        records = {} if options.reinstall else _safepip_records(dists)
        if pylock is not None:
            plan = _pylock_plan(
                pylock,
                target,
                sources,
                extras=options.extras,
                groups=options.groups,
                allow_build=build_policy(options).allowed,
            )
        else:
            plan = plan_install(
                options,
                parsed,
                target,
                sources,
                index,
                reporter,
                cache=ctx.cache,
                installed=records,
            )
        if options.sync:
            sync_stage.require_lock(
                hash_mode=plan.hash_mode,
                no_deps=options.no_deps,
                source=", ".join(f"`{f}`" for f in options.requirement_files) or "the input",
            )
        audit_report = audit_gate(options.audit, plan, reporter, isolated=options.sources.isolated)
        # (the seal of every distribution safepip installed was checked once, for `records`)
        changes = install_stage.plan_changes(
            plan.pins,
            dists,
            reinstall=options.reinstall,
            records={name: record for name, (_, record) in records.items()},
        )
        if options.sync:
            changes = sync_stage.sync_changes(changes, plan.pins, dists)
        if changes.install or changes.remove:
            # Not a no-op: nothing to stamp, so the fast path's recording stops before the
            # tens of thousands of file operations of an install.
            fastpath.not_noop("it changes the environment")
        kept = {p.spec for p in changes.keep}
        # Everything that will be written is fetched and verified first; packages kept as they
        # are need no download (safepip installed them from a file with a pinned digest).
        to_fetch = [p for p in plan.pins if p.spec not in kept]
        fetched, unpacked, sdists = fetch_and_build(
            options, to_fetch, target, ctx.cache, session, index, reporter
        )
        # What was downloaded: for a built pin, its sdist (the report names it, as pip's does)
        fetched_list = [sdists.get(spec, item) for spec, item in fetched.items()]
        metadata = _metadata(plan, fetched, unpacked, dists)
        if plan.hash_mode:
            # (a resolved plan's extras were checked by the resolver)
            warn_unknown_extras(plan, metadata, reporter)
        if not options.no_deps:
            _, constraints, _ = _merged_constraints(parsed, target)
            check_dependencies(plan, constraints, metadata, index)
        if options.dry_run:
            return InstallOutcome(
                plan=plan,
                changes=changes,
                result=None,
                audit=audit_report,
                fetched=tuple(fetched_list),
                metadata=metadata,
            )
        if not changes.install and not changes.remove:
            result = install_stage.InstallResult(
                installed=(), removed=(), kept=changes.keep, linked=False
            )
            if bundle is None and not options.no_cache:
                # A no-op: the next identical run may replay this one (`safepip.fastpath`).
                fastpath.mark_noop(
                    cache_root=str(ctx.cache.root), lock_folder=str(envlock.lock_folder())
                )
        else:
            result = install_stage.apply(
                changes, fetched, unpacked, target, link_mode=options.link_mode
            )
            for note in result.overwritten:
                reporter.warn(note)
            if result.linked:
                # Hard links moved the cached files' ctimes: record them (fetch.restamp).
                fetch_stage.restamp(unpacked[fetched[p.spec].sha256] for p in changes.install)
        if options.compile and changes.install:
            install_stage.compile_bytecode(target, changes.install)
        if result.installed or result.removed:
            _committed(options, ctx, bundle)
        return InstallOutcome(
            plan=plan,
            changes=changes,
            result=result,
            audit=audit_report,
            fetched=tuple(fetched_list),
            metadata=metadata,
        )


def _committed(options: InstallOptions, ctx: _Context, bundle: OpenedBundle | None) -> None:
    """The install is committed: the next identical run will be a no-op, which the fast path
    may check and stamp right away (`safepip.fastpath.committed`), as it stamps a no-op run."""
    if bundle is None and not options.no_cache:
        fastpath.committed(cache_root=str(ctx.cache.root), lock_folder=str(envlock.lock_folder()))


def build_policy(options: InstallOptions) -> BuildPolicy:
    """`--allow-build` with the settings file's `allow-build`, `--build-constraint`, and the
    time limit (`SAFEPIP_BUILD_TIMEOUT`)."""
    settings = load_settings(isolated=options.sources.isolated)
    return BuildPolicy(
        allowed=options.allow_build | settings.allow_build,
        constraint=options.build_constraint,
        timeout=timeout_from_environment(),
    )


def fetch_and_build(
    options: InstallOptions,
    pins: Sequence[Pin],
    target: Target,
    cache: Cache,
    session: Session,
    index: IndexClient,
    reporter: Reporter,
    *,
    copies: bool = False,
) -> tuple[dict[str, FetchedArtifact], dict[str, UnpackedWheel], dict[str, FetchedArtifact]]:
    """Fetch and verify every pin's file and unpack the wheels; build a wheel from each sdist
    the plan chose (`--allow-build`), after its bytes were verified (safepip.build).

    Returns the wheels by `Pin.spec` (for a built pin, the built wheel), the unpacked wheels by
    sha256, and the verified sdists by `Pin.spec`. With `copies` (`download`) every archive is
    hashed again, even one whose unpacked tree is in the cache, because the archive is copied.
    """
    wheels: list[Pin] = []
    sdists: list[Pin] = []
    # (`safepip.build.is_sdist`, without importing safepip.build when there is no sdist)
    for pin in pins:
        (wheels if pin.artifact.filename.endswith(".whl") else sdists).append(pin)
    if copies:
        fetched_list = fetch_stage.fetch_artifacts(
            session,
            [p.artifact for p in wheels],
            cache,
            progress=reporter.progress(),
            use_unpacked=False,
        )
        unpacked = fetch_stage.unpack_all(fetched_list, cache, warn=reporter.warn)
    else:
        fetched_list, unpacked = fetch_stage.fetch_and_unpack(
            session,
            [p.artifact for p in wheels],
            cache,
            progress=reporter.progress(),
            warn=reporter.warn,
        )
    fetched = {p.spec: f for p, f in zip(wheels, fetched_list, strict=True)}
    sources: dict[str, FetchedArtifact] = {}
    if sdists:
        from safepip import build as build_stage

        sdist_files = fetch_stage.fetch_artifacts(
            session,
            [p.artifact for p in sdists],
            cache,
            progress=reporter.progress(),
            use_unpacked=False,
        )
        built = build_stage.build_wheels(
            sdists,
            sdist_files,
            target,
            build_policy(options),
            index=index,
            session=session,
            cache=cache,
            warn=reporter.warn,
            info=reporter.info,
        )
        for pin, sdist, item in zip(sdists, sdist_files, built, strict=True):
            fetched[pin.spec] = item.fetched
            unpacked[item.fetched.sha256] = item.unpacked
            sources[pin.spec] = sdist
    return fetched, unpacked, sources


def _pylock_input(options: InstallOptions) -> Path | None:
    """The `pylock.toml` given with `-r`, if any (PEP 751 locks are installed as they are)."""

    # (safepip.lock is imported only for a name that may be a PEP 751 one: a no-op of a
    # requirements file never needs it)
    locks = [f for f in options.requirement_files if Path(f).name.startswith("pylock.")]
    if locks:
        from safepip.lock import LockFormat, lock_format

        locks = [f for f in locks if lock_format(f) is LockFormat.PYLOCK]
    if not locks:
        if options.extras or options.groups:
            raise UsageError(
                "`--extra` and `--group` select from a PEP 751 lock; no `pylock.toml` was given",
                hint="give the extras on the requirement (`name[extra]`), or install a lock: "
                "`safepip install -r pylock.toml --extra NAME`",
            )
        return None
    if len(options.requirement_files) > 1 or options.requirements or options.constraint_files:
        raise UsageError(
            f"`{locks[0]}` is a PEP 751 lock; it cannot be combined with other requirements",
            hint="install the lock on its own: `safepip install -r pylock.toml`",
        )
    return Path(locks[0])


def _pylock_plan(
    path: Path,
    target: Target,
    sources: Sources,
    *,
    extras: Sequence[str] = (),
    groups: Sequence[str] = (),
    allow_build: frozenset[NormalizedName] = frozenset(),
) -> Plan:
    """PEP 751 install steps: environments, markers, requires-python, a wheel chosen by tags
    from the lock only (or the sdist of an `--allow-build` project), with the lock's hashes
    (and sizes) as the pins."""
    from safepip.lock import plan_from_pylock

    pins = plan_from_pylock(
        path, target, extras=extras, groups=groups or None, allow_build=allow_build
    )
    return Plan(
        target=target,
        pins=tuple(pins),
        hash_mode=True,
        index_urls=sources.index_urls,
        find_links=sources.find_links,
    )


def _safepip_records(
    dists: Sequence[InstalledDistribution],
) -> dict[NormalizedName, tuple[str, Mapping[str, object]]]:

    records: dict[NormalizedName, tuple[str, Mapping[str, object]]] = {}
    for dist in dists:
        if dist.installer == "safepip" and dist.damage is None:
            record = installed_artifact(dist)
            if record is not None:
                records[dist.name] = (dist.version, record)
    return records


def _metadata(
    plan: Plan,
    fetched: Mapping[str, FetchedArtifact],
    unpacked: Mapping[str, UnpackedWheel],
    dists: Sequence[InstalledDistribution],
) -> dict[NormalizedName, bytes]:
    by_name = {d.name: d for d in dists}
    metadata: dict[NormalizedName, bytes] = {}
    for pin in plan.pins:
        item = fetched.get(pin.spec)
        if item is not None:
            metadata[pin.name] = unpacked[item.sha256].metadata
        else:
            metadata[pin.name] = (by_name[pin.name].dist_info / "METADATA").read_bytes()
    return metadata


def _merged_constraints(
    parsed: ParsedRequirements, target: Target
) -> tuple[dict[NormalizedName, Wanted], dict[NormalizedName, Wanted], list[str]]:

    return merge_requirements(parsed.requirements, parsed.constraints, target.markers)


def audit_gate(
    choice: AuditChoice, plan: Plan, reporter: Reporter, *, isolated: bool = False
) -> AuditReport | None:
    """Audit the final set of distributions before anything is downloaded or written.

    A finding that is not ignored raises `VulnerabilitiesFound` (exit 5); a missing or corrupt
    database raises `AuditError`. Packages from indexes other than the default one are never
    sent to a public service.
    """

    if not choice.enabled:
        reporter.warn(
            "AUDIT DISABLED (`--no-audit`): packages are installed without checking them "
            "against known vulnerabilities"
        )
        return None
    settings = load_settings(isolated=isolated)
    options = audit.AuditOptions(
        source=choice.source,
        db_path=choice.db,
        ignore_vulns=choice.ignore_vulns,
        refresh=choice.refresh,
        settings=settings,
        osv_url=choice.osv_url or DEFAULT_OSV_URL,
    )
    public = default_index_url()
    private = frozenset(p.name for p in plan.pins if not p.artifact.origin.startswith(public))
    report = audit.audit_packages(
        [(p.name, p.version) for p in plan.pins], options, private_names=private
    )
    if report.stale is not None:
        reporter.notice(report.stale)
    for warning in report.warnings:
        reporter.warn(warning)
    for skipped in report.skipped:
        reporter.warn(f"Not audited: `{skipped.name}=={skipped.version}`: {skipped.reason}")
    audit.gate(report)
    if report.ignored_count:
        reporter.warn(
            f"Ignoring {audit.plural(report.ignored_count, 'known vulnerability')} as configured"
        )
    reporter.detail(f"Audited {len(plan.pins)} packages against {report.source}")
    return report


@dataclass(frozen=True, kw_only=True, slots=True)
class DownloadOutcome:
    plan: Plan
    files: tuple[Path, ...]


def download(options: InstallOptions, dest: Path, reporter: Reporter) -> DownloadOutcome:
    """Fetch and verify like `install`, then copy the wheels into `dest` (usable as find-links)."""

    with _Context(options, reporter) as ctx:
        target = (
            resolve_target(options.target, ctx.cache, options.sources)
            if (options.target.python or options.target.system)
            else _current_target(ctx.cache)
        )
        pip_config = load_pip_config(options.sources, target)
        parsed = _parse_inputs(options, pip_config, reporter)
        conn = ctx.connect(parsed, pip_config)
        sources, session, index = conn.sources, conn.session, conn.index
        plan = plan_install(options, parsed, target, sources, index, reporter, cache=ctx.cache)
        audit_gate(options.audit, plan, reporter, isolated=options.sources.isolated)
        fetched, unpacked, sdists = fetch_and_build(
            options, plan.pins, target, ctx.cache, session, index, reporter, copies=True
        )
        # The verified sdist is what goes into the folder (as pip downloads it); the build
        # proved it builds and gave the metadata for the dependency check.
        fetched_list = [sdists.get(p.spec, fetched[p.spec]) for p in plan.pins]
        if not options.no_deps:
            _, constraints, _ = _merged_constraints(parsed, target)
            check_dependencies(plan, constraints, _metadata(plan, fetched, unpacked, ()), index)
        written = []
        tmp = dest
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for item in fetched_list:
                out = dest / item.artifact.filename
                tmp = dest / f".{item.artifact.filename}.{os.getpid()}.tmp"
                shutil.copyfile(item.path, tmp)
                os.replace(tmp, out)
                written.append(out)
        except OSError as exc:
            # A full or read-only disk: one line naming the file, no partial file left.
            if tmp != dest:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            raise _download_folder_error(exc, tmp, dest) from exc
        return DownloadOutcome(plan=plan, files=tuple(written))


def _download_folder_error(exc: OSError, path: Path, dest: Path) -> SafepipError:
    import errno

    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return SafepipError(
        f"Cannot write `{path}` in the download folder `{dest}`: {exc.strerror or exc}",
        hint="free some space on that file system, or download to another folder with `-d`"
        if full
        else "choose a folder this user can write with `-d`",
    )


def _current_target(cache: Cache) -> Target:
    import sys

    return probe(sys.executable, cache_dir=cache.root)


# --- bundles --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class BundleOptions:
    """What `safepip bundle` was asked to do."""

    install: InstallOptions
    """Inputs, sources, cache and audit choice, as for `install`."""
    output: Path
    pythons: tuple[str, ...] = ()
    """Interpreters (or virtual environments) to bundle for."""
    python_versions: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    """With `python_versions`, other machines: every version with every platform."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BundleOutcome:
    path: Path
    sha256: str
    targets: tuple[BundleTarget, ...]
    wheels: tuple[str, ...]
    packages: int
    advisory_date: str | None


def bundle_targets(options: BundleOptions) -> list[Target]:
    """`--python` interpreters, then every `--python-version` × `--platform` pair (a missing
    one of the two defaults to safepip's own); with none of these, the active virtual
    environment or `./.venv`, else safepip's interpreter (as `safepip lock` chooses)."""
    import sys

    targets = [target_mod.probe(target_mod.find_python(p, system=False)) for p in options.pythons]
    if options.python_versions or options.platforms:
        versions = options.python_versions or ("{}.{}".format(*sys.version_info[:2]),)
        platforms: Sequence[str | None] = options.platforms or (None,)
        for version in versions:
            for platform in platforms:
                chosen = [platform] if platform else []
                targets.append(target_mod.synthetic_target(version, chosen))
    if not targets:
        try:
            python = target_mod.find_python(None, system=False)
        except target_mod.TargetError:
            python = target_mod.current_python()
        targets.append(target_mod.probe(python))
    return targets


def bundle(options: BundleOptions, reporter: Reporter) -> BundleOutcome:
    """Plan, audit, fetch and verify the lock for every target, exactly as `install` does,
    then write one bundle: the verified wheels, a `pylock.toml` that lists them by path (with
    each package's marker from the lock), the advisory database used and the manifest.

    Only hash-pinned locks are bundled, and each target's dependency closure is checked.
    """
    from safepip import bundle as bundle_format
    from safepip.build import is_sdist

    install_options = options.install
    targets = bundle_targets(options)
    with _Context(install_options, reporter) as ctx:
        pip_config = load_pip_config(install_options.sources, None)
        pylock = _pylock_input(install_options)
        parsed = (
            _parse_inputs(install_options, pip_config, reporter)
            if pylock is None
            else ParsedRequirements()
        )
        conn = ctx.connect(parsed, pip_config)
        sources, session, index = conn.sources, conn.session, conn.index
        markers = _lock_markers(pylock) if pylock is not None else {}
        packages: dict[tuple[str, str], _BundledPackage] = {}
        for target in targets:
            reporter.detail(f"Bundling for {bundle_format.BundleTarget.of(target).describe()}")
            if pylock is not None:
                plan = _pylock_plan(pylock, target, sources)
            else:
                plan = plan_install(
                    install_options, parsed, target, sources, index, reporter, cache=ctx.cache
                )
            if not plan.hash_mode:
                raise UsageError(
                    "`safepip bundle` needs a hash-pinned lock",
                    hint="write one with `safepip lock requirements.in -o requirements.txt`",
                )
            sdists = [p for p in plan.pins if is_sdist(p.artifact)]
            if sdists:
                # a bundle is installed offline, where nothing may be built
                raise PolicyViolation(
                    "A bundle carries wheels only; "
                    + ", ".join(f"`{p.spec}` would be built from its sdist" for p in sdists),
                    hint="install those with `--allow-build`, or bundle a wheel built from them",
                )
            audit_gate(
                install_options.audit, plan, reporter, isolated=install_options.sources.isolated
            )
            fetched_list = fetch_stage.fetch_artifacts(
                session,
                [p.artifact for p in plan.pins],
                ctx.cache,
                progress=reporter.progress(),
                use_unpacked=False,
            )
            fetched = {p.spec: f for p, f in zip(plan.pins, fetched_list, strict=True)}
            # Unpacking validates each wheel's RECORD: nothing unusable goes into a bundle.
            unpacked = fetch_stage.unpack_all(fetched_list, ctx.cache)
            if not install_options.no_deps:
                _, constraints, _ = _merged_constraints(parsed, target)
                check_dependencies(plan, constraints, _metadata(plan, fetched, unpacked, ()), index)
            for pin in plan.pins:
                item = fetched[pin.spec]
                marker = markers.get((pin.name, pin.version))
                if pin.requirement is not None and pin.requirement.marker is not None:
                    marker = str(pin.requirement.marker)
                entry = packages.setdefault(
                    (pin.name, pin.version),
                    _BundledPackage(marker=marker, index=pin.artifact.origin, wheels={}),
                )
                entry.wheels[item.artifact.filename] = item.path
        with tempfile.TemporaryDirectory(prefix="safepip-bundle-") as tmp:
            lock_path = Path(tmp) / bundle_format.LOCK
            lock_path.write_text(_bundle_lock(packages), "utf-8")
            advisories, advisory_date, advisory_source = _advisory_snapshot(
                install_options, Path(tmp)
            )
            files = {bundle_format.LOCK: lock_path, bundle_format.ADVISORIES: advisories}
            for entry in packages.values():
                for filename, path in entry.wheels.items():
                    files[bundle_format.WHEELS + filename] = path
            made_for = tuple(bundle_format.BundleTarget.of(t) for t in targets)
            sha256 = bundle_format.write_bundle(
                options.output,
                files,
                created_by=f"safepip {__version__}",
                targets=made_for,
                lock_source=Path(install_options.requirement_files[0]).name
                if install_options.requirement_files
                else "requirements",
                advisory_date=advisory_date,
                advisory_source=advisory_source,
            )
    return BundleOutcome(
        path=options.output,
        sha256=sha256,
        targets=tuple(dict.fromkeys(made_for)),
        wheels=tuple(sorted(n for e in packages.values() for n in e.wheels)),
        packages=len(packages),
        advisory_date=advisory_date,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class _BundledPackage:
    marker: str | None
    index: str
    wheels: dict[str, Path]


def _lock_markers(path: Path) -> dict[tuple[str, str], str]:
    """(name, version) → marker of each package in a `pylock.toml`."""
    from packaging.utils import canonicalize_name

    found: dict[tuple[str, str], str] = {}
    for package in read_toml(path).get("packages", ()):
        if isinstance(package, dict) and package.get("marker"):
            key = (canonicalize_name(str(package.get("name"))), str(package.get("version")))
            found[key] = str(package["marker"])
    return found


def _bundle_lock(packages: Mapping[tuple[str, str], _BundledPackage]) -> str:
    """The bundle's PEP 751 lock: each package with its marker and the bundled wheels, by
    path relative to the lock (`wheels/<file>`), with their verified sha256 and size."""
    import tomli_w
    from packaging.markers import Marker
    from packaging.pylock import Package, PackageWheel, Pylock
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    from safepip.bundle import WHEELS, file_digest
    from safepip.lock import PYLOCK_VERSION

    out = []
    for (name, version), entry in sorted(packages.items()):
        wheels = []
        for filename, path in sorted(entry.wheels.items()):
            size, sha256 = file_digest(path)
            wheels.append(
                PackageWheel(
                    name=filename, path=WHEELS + filename, size=size, hashes={"sha256": sha256}
                )
            )
        out.append(
            Package(
                name=canonicalize_name(name),
                version=Version(version),
                marker=Marker(entry.marker) if entry.marker else None,
                index=without_credentials(entry.index) if "://" in entry.index else None,
                wheels=wheels,
            )
        )
    lock = Pylock(
        lock_version=Version(PYLOCK_VERSION),
        created_by=f"safepip {__version__}",
        packages=out,
    )
    lock.validate()
    return tomli_w.dumps(dict(lock.to_dict()))


def _advisory_snapshot(options: InstallOptions, tmp: Path) -> tuple[Path, str | None, str]:
    """The advisory database an audit with these options reads, as a safepip database file
    (OSV data given with `--db` is converted), with its date and source."""

    path = options.audit.db or load_settings(isolated=options.sources.isolated).audit.db
    if path is None:
        db = database.default_database(database.user_data_dir())
    elif database.is_compact(path):
        db = database.CompactDatabase(path, origin="path")
    else:
        out = tmp / "advisory-db.zip"
        database.build_database(
            database.OsvReader(path),
            out,
            date=database.osv_snapshot_date(path),
            source=path.name,
        )
        db = database.CompactDatabase(out, origin="path")
    try:
        info = db.info()
    finally:
        db.close()
    date = info.data_date.isoformat() if info.data_date else None
    return db.path, date, info.source or db.description


def open_bundle(
    path: Path, dest: Path, expect_sha256: str | None, reporter: Reporter
) -> OpenedBundle:
    """Verify the whole bundle (see `bundle.open_bundle`) and unpack it into `dest`."""
    from safepip import bundle as bundle_format

    opened = bundle_format.open_bundle(path, dest, expect_sha256=expect_sha256)
    checked = "the expected sha256" if expect_sha256 else "sha256"
    reporter.info(
        f"Verified bundle `{path}` ({plural(len(opened.wheels), 'wheel')}, {checked} "
        f"{opened.sha256})"
    )
    if expect_sha256 is None:
        reporter.warn(
            "No `--expect-sha256`: the bundle is consistent, but only its published digest "
            "proves it is the one that was made"
        )
    return opened


def check_bundle_fits(opened: OpenedBundle, target: Target) -> None:
    """Refuse a bundle made for another Python or platform before anything is planned."""
    from safepip.bundle import BundleError, BundleTarget

    if opened.manifest.fitting(target) is not None:
        return
    made = ", ".join(f"`{t.describe()}`" for t in opened.manifest.targets)
    raise BundleError(
        f"Bundle `{opened.path}` was made for {made}; the target `{target.python}` is "
        f"`{BundleTarget.of(target).describe()}`",
        path=opened.path,
        hint="make a bundle for this target: `safepip bundle -r LOCK --python-version X.Y "
        "--platform TAG` (several of each are allowed)",
    )


def _bundle_options(
    options: InstallOptions, opened: OpenedBundle, reporter: Reporter
) -> InstallOptions:
    """Install the bundle's lock with no network at all, audited with the newer data."""
    if options.requirement_files or options.requirements or options.constraint_files:
        raise UsageError(
            "`--bundle` installs the bundle's own lock; it cannot be combined with "
            "requirements or constraints"
        )
    return replace(
        options,
        requirement_files=(str(opened.lock),),
        sources=SourceOptions(offline=True, isolated=options.sources.isolated),
        audit=_bundle_audit(options.audit, opened, reporter, isolated=options.sources.isolated),
        bundle=None,
    )


def _bundle_audit(
    choice: AuditChoice, opened: OpenedBundle, reporter: Reporter, *, isolated: bool
) -> AuditChoice:
    """The bundle's advisory data, or the local database if that is newer (said either way)."""

    if not choice.enabled:
        return choice
    if choice.source != "local" or choice.refresh:
        raise UsageError(
            "An install from a bundle never uses the network: `--audit-source osv` and "
            "`--refresh` cannot be used with `--bundle`",
            hint="update the local database first (`safepip db update` or `safepip db import`)",
        )
    bundled = database.CompactDatabase(opened.advisories, origin="bundle")
    bundled_date = bundled.data_date
    bundled.close()
    local_path = choice.db or load_settings(isolated=isolated).audit.db
    try:
        local = (
            database.open_database(local_path)
            if local_path
            else database.default_database(database.user_data_dir())
        )
    except database.DatabaseError as exc:
        reporter.warn(f"The local advisory database cannot be used: {exc}")
        local = None
    local_date = local.data_date if local is not None else None
    if isinstance(local, database.CompactDatabase):
        local.close()
    if (
        local is not None
        and local_date is not None
        and (bundled_date is None or local_date > bundled_date)
    ):
        reporter.info(
            f"Auditing with the local advisory database `{local.path}` ({local_date}), "
            f"newer than the bundle's ({bundled_date or 'undated'})"
        )
        return replace(choice, db=local.path)
    newer_than = f"; the local database is from {local_date}" if local_date else ""
    reporter.info(f"Auditing with the bundle's advisory data ({bundled_date}){newer_than}")
    return replace(choice, db=opened.advisories)
