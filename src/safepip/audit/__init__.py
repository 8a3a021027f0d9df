"""The audit stage: known vulnerabilities of pinned packages, from the offline database or OSV.

`audit_packages` checks `(name, version)` pairs against an advisory source and returns an
`AuditReport`; `gate` turns a report with findings into `VulnerabilitiesFound` for the install
pipeline. Packages that could not be checked are data (`AuditReport.skipped`), never dropped.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from safepip.audit.osv import affects, merge_matches, parse_version, sorted_fixes
from safepip.errors import ExitCode, SafepipError
from safepip.settings import DEFAULT_OSV_URL, IgnoreRule, Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from packaging.utils import NormalizedName
    from packaging.version import Version

    from safepip.audit.osv import Advisory, Match
    from safepip.net import Session

Package = tuple["NormalizedName", str]


class AuditError(SafepipError):
    """The audit could not run: data missing, unreadable or stale by policy, OSV unreachable."""

    exit_code = ExitCode.FAILURE


@dataclass(frozen=True, kw_only=True, slots=True)
class Vulnerability:
    """One finding for one package (records sharing an alias are merged into one)."""

    id: str
    aliases: tuple[str, ...] = ()
    fix_versions: tuple[str, ...] = ()
    smallest_fix: str | None = None
    """The smallest fix above the audited version, possibly on another release branch."""
    summary: str = ""
    description: str = ""
    ignored_reason: str | None = None
    """Why the user accepts this finding; None when it counts."""

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


@dataclass(frozen=True, kw_only=True, slots=True)
class PackageResult:
    """An audited package and what was found for it (nothing, for a clean package)."""

    name: NormalizedName
    version: str
    vulns: tuple[Vulnerability, ...] = ()
    fix_target: str | None = None
    """The smallest advisory fix version above `version` that no active finding affects."""

    @property
    def active(self) -> tuple[Vulnerability, ...]:
        vulns = self.vulns
        for vuln in vulns:
            if vuln.ignored_reason is not None:
                return tuple(v for v in vulns if v.ignored_reason is None)
        return vulns


@dataclass(frozen=True, kw_only=True, slots=True)
class SkippedPackage:
    """A package that could not be audited, and why."""

    name: NormalizedName
    version: str | None
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditReport:
    """The outcome of an audit: every package checked, every package skipped, and the data used."""

    packages: tuple[PackageResult, ...]
    skipped: tuple[SkippedPackage, ...] = ()
    source: str
    """Where the advisory data came from, for the report (`safepip's bundled database`, a URL)."""
    data_date: dt.date | None
    """The date of the snapshot used; for the online source, the day of the query."""
    warnings: tuple[str, ...] = ()
    stale: str | None = None
    """Set when the data is older than `audit.max-age-days`: the date, the age and the command
    that updates it, for the caller to show once, before the results (`-q` hides it)."""

    @property
    def findings(self) -> tuple[PackageResult, ...]:
        """Packages with at least one finding, ignored or not."""
        return tuple(p for p in self.packages if p.vulns)

    @property
    def active_findings(self) -> tuple[PackageResult, ...]:
        """Packages with at least one finding that is not ignored."""
        return tuple(p for p in self.packages if p.active)

    @property
    def vulnerability_count(self) -> int:
        return sum(len(p.active) for p in self.packages)

    @property
    def ignored_count(self) -> int:
        return sum(len(p.vulns) - len(p.active) for p in self.packages)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditOptions:
    """Where the advisory data comes from and how findings are judged."""

    source: str = "local"
    """`local` (the offline database) or `osv` (the OSV API)."""
    db_path: Path | None = None
    """An OSV zip or folder (or a safepip database) to use for this run instead of the default."""
    osv_url: str = DEFAULT_OSV_URL
    ignore_vulns: tuple[str, ...] = ()
    """Ids or aliases given on the command line (`--ignore-vuln`)."""
    settings: Settings | None = None
    refresh: bool = False
    """Run `safepip db update` first and fail if it cannot."""
    update_url: str | None = None
    """Where `refresh` downloads from; the settings' `update-url` by default."""
    max_age_days: int | None = None
    """Data older than this is stale; the settings' `max-age-days` by default."""
    refuse_stale: bool | None = None
    """Refuse stale data instead of warning; the settings' `refuse-stale` by default."""
    data_dir: Path | None = None
    """The user data folder; `SAFEPIP_DATA_DIR` or the platform's default when None."""
    today: dt.date | None = None
    """For tests: the date ignores and staleness are judged against."""


class AdvisorySource(Protocol):
    """Where findings come from: the offline database or the OSV API."""

    description: str
    data_date: dt.date | None
    warnings: tuple[str, ...]

    def find(self, packages: Sequence[Package]) -> dict[Package, list[Match] | str]:
        """Matches per package, or a string saying why the package could not be checked."""
        ...

    def affects(self, advisory: Advisory, name: NormalizedName, version: str) -> bool:
        """Whether `advisory` (from a match this source found) affects `name==version`:
        `osv.affects`, which the fix targets ask about every candidate fix version."""
        ...


class VulnerabilitiesFound(SafepipError):
    """Packages with known vulnerabilities that are not ignored."""

    exit_code = ExitCode.VULNERABLE

    def __init__(self, report: AuditReport) -> None:
        self.report = report
        findings = report.active_findings
        parts = []
        for pkg in findings:
            ids = ", ".join(v.id for v in pkg.active)
            fixes = _fix_phrase(pkg)
            parts.append(f"`{pkg.name}=={pkg.version}` ({ids}; {fixes})")
        count = report.vulnerability_count
        if len(findings) == 1:
            pkg = findings[0]
            ids = ", ".join(v.id for v in pkg.active)
            message = (
                f"Refusing `{pkg.name}=={pkg.version}`: {plural(count, 'known vulnerability')} "
                f"({ids}); {_fix_phrase(pkg)}"
            )
        else:
            message = (
                f"Refusing {plural(len(findings), 'package')} with "
                f"{plural(count, 'known vulnerability')}: " + ", ".join(parts)
            )
        super().__init__(
            message,
            hint=(
                "upgrade to a fixed version, or accept an advisory with `--ignore-vuln ID` "
                "(or an `[[tool.safepip.audit.ignore]]` entry with a reason)"
            ),
        )


def plural(count: int, noun: str) -> str:
    """`1 package`, `2 packages`, `2 vulnerabilities`."""
    if count == 1:
        return f"1 {noun}"
    if noun.endswith("y"):
        return f"{count} {noun[:-1]}ies"
    return f"{count} {noun}s"


def _fix_phrase(pkg: PackageResult) -> str:
    target = pkg.fix_target
    if target is not None:
        return f"fixed in {target}"
    fixes = sorted({f for v in pkg.active for f in v.fix_versions})
    return f"fixes: {', '.join(fixes)}" if fixes else "no fix released"


def render_findings_text(report: AuditReport) -> str:
    """Plain text listing every active finding, for an install's error output."""
    lines = []
    for pkg in report.active_findings:
        lines.append(f"{pkg.name}=={pkg.version}:")
        for vuln in pkg.active:
            aliases = f" ({', '.join(vuln.aliases)})" if vuln.aliases else ""
            fix = f"fixed in {vuln.smallest_fix}" if vuln.smallest_fix else "no fix above this"
            title = f": {vuln.summary}" if vuln.summary else ""
            lines.append(f"  {vuln.id}{aliases}, {fix}{title}")
    lines.append(f"Advisory data: {describe_data(report)}")
    return "\n".join(lines)


def describe_data(report: AuditReport) -> str:
    date = report.data_date.isoformat() if report.data_date else "date unknown"
    return f"{report.source}, data as of {date}"


def gate(report: AuditReport) -> None:
    """Raise `VulnerabilitiesFound` if any finding is not ignored. Skipped packages do not raise."""
    if report.active_findings:
        raise VulnerabilitiesFound(report)


def _ignore_rules(options: AuditOptions) -> tuple[IgnoreRule, ...]:
    from_cli = tuple(
        IgnoreRule(id=i, reason="ignored with `--ignore-vuln`", origin="--ignore-vuln")
        for i in options.ignore_vulns
    )
    configured = options.settings.audit.ignore if options.settings else ()
    return (*from_cli, *configured)


@dataclass(kw_only=True, slots=True)
class _Judge:
    rules: tuple[IgnoreRule, ...]
    today: dt.date
    warnings: list[str] = field(default_factory=list)
    verdicts: dict[tuple[int, str, str], bool] = field(default_factory=dict)
    """`affects(advisory, name, version)` by `(id(advisory), name, version)`, for the fix targets of
    one audit (the advisories stay alive while it runs: the source holds them)."""
    shared: dict[tuple[object, ...], _Shared] = field(default_factory=dict)
    """What the pins of one package with the same matches share, by the package's name and the
    matches (`id` of each advisory, which `_Shared` keeps alive, and its fixes)."""

    def reason(self, ids: tuple[str, ...], package: str) -> str | None:
        for rule in self.rules:
            if not rule.matches(ids):
                continue
            if rule.expired(self.today):
                assert rule.until is not None
                self.warnings.append(
                    f"The ignore rule for `{rule.id}` expired on {rule.until.isoformat()}; "
                    f"`{ids[0]}` in `{package}` counts again"
                )
                continue
            return rule.reason
        return None


class _Shared:
    """The findings of every pin of one package that has the same matches (the same advisories
    with the same fixes): merged, judged against the ignore rules and laid out for the fix
    versions once. What is left to a pin depends only on where its version falls among the
    fix versions (`cut`), and is remembered by it: the smallest fix of each finding and the
    fix target. A 10,000-pin audit has ~2,000 of these (issue 11)."""

    __slots__ = ("active", "by_cut", "candidates", "fixes", "made", "merged", "name", "rank")

    def __init__(self, name: NormalizedName, matches: Sequence[Match], judge: _Judge) -> None:
        self.name = name
        merged = merge_matches(matches)
        self.merged = [
            (m, judge.reason((m.id, *m.aliases), name) if judge.rules else None) for m in merged
        ]
        self.active: list[Advisory] = [
            a for m, reason in self.merged if reason is None for a in m.advisories
        ]
        # Every PEP 440 fix version of the findings in order, and each fix's rank: the number
        # of them below it. A version's `cut` is the number at or below it, so a fix is above
        # the version exactly when its rank is at least the cut; the strings that are not
        # versions come last and have no rank. The order is remembered across the pins of a
        # package (`sorted_fixes`), the comparisons of a pin are one bisection.
        fixes: list[Version] = []
        rank: dict[str, int] = {}
        first = 0
        for fix in sorted_fixes(frozenset(f for m in merged for f in m.fix_versions)):
            version = parse_version(fix)
            if version is None:
                break
            if not fixes or fixes[-1] != version:  # `1.0` and `1.0.0` share a rank
                first = len(fixes)
            rank[fix] = first
            fixes.append(version)
        self.fixes = fixes
        self.rank = rank
        # The fix target's candidates: the active findings' fixes in PEP 440 order, with ranks.
        self.candidates: list[tuple[int, str]] = []
        for fix in sorted_fixes(
            frozenset(f for m, r in self.merged if r is None for f in m.fix_versions)
        ):
            above = rank.get(fix)
            if above is None:
                break
            self.candidates.append((above, fix))
        self.by_cut: dict[int | None, tuple[tuple[Vulnerability, ...], str | None]] = {}
        self.made: dict[tuple[int, str | None], Vulnerability] = {}

    def cut(self, version: Version | None) -> int | None:
        return None if version is None else bisect_right(self.fixes, version)

    def judged(
        self, cut: int | None, judge: _Judge, verdicts: Callable[..., bool]
    ) -> tuple[tuple[Vulnerability, ...], str | None]:
        """The findings of a version at `cut` (None: not a PEP 440 version), and its fix
        target."""
        found = self.by_cut.get(cut)
        if found is None:
            found = self.by_cut[cut] = (self._vulns(cut), self._target(cut, judge, verdicts))
        return found

    def _vulns(self, cut: int | None) -> tuple[Vulnerability, ...]:
        rank = self.rank
        vulns = []
        made = self.made
        for n, (merged, reason) in enumerate(self.merged):
            smallest = None
            if cut is not None:
                # The first PEP 440 fix above the version: fixes are in PEP 440 order, with
                # the strings that are not versions last (`osv.smallest_fix_above`).
                for fix in merged.fix_versions:
                    above = rank.get(fix)
                    if above is None:
                        break
                    if above >= cut:
                        smallest = fix
                        break
            # One finding object per smallest fix, shared by the cuts that agree on it (the
            # reports encode each finding once).
            vuln = made.get((n, smallest))
            if vuln is None:
                vuln = made[(n, smallest)] = Vulnerability(
                    id=merged.id,
                    aliases=merged.aliases,
                    fix_versions=merged.fix_versions,
                    smallest_fix=smallest,
                    # The advisory's own strings, not copies: a report's memory grows with
                    # the distinct advisories it names, not with its findings (issue 11).
                    summary=merged.summary,
                    description=merged.details,
                    ignored_reason=reason,
                )
            vulns.append(vuln)
        return tuple(vulns)

    def _target(self, cut: int | None, judge: _Judge, affects: Callable[..., bool]) -> str | None:
        active = self.active
        if cut is None or not active:
            return None
        # Candidates in PEP 440 order; the first one that no active advisory affects wins (a fix
        # on one branch can still be inside another advisory's range). The advisory that ruled
        # out a candidate is asked first about the next one: it usually rules that out too.
        # Verdicts are remembered for the run: the pins of one package share most candidates.
        verdicts = judge.verdicts
        name = self.name
        for above, candidate in self.candidates:
            if above < cut:
                continue
            for i, advisory in enumerate(active):
                key = (id(advisory), name, candidate)
                hit = verdicts.get(key)
                if hit is None:
                    hit = verdicts[key] = affects(advisory, name, candidate)
                if hit:
                    if i:
                        active.insert(0, active.pop(i))
                    break
            else:
                return candidate
        return None


def _judge_package(
    name: NormalizedName,
    version: str,
    matches: Sequence[Match],
    judge: _Judge,
    affected: Callable[[Advisory, NormalizedName, str], bool] = affects,
) -> PackageResult:
    if not matches:
        return PackageResult(name=name, version=version)
    key = (name, *[(id(m.advisory), m.fix_versions) for m in matches])
    shared = judge.shared.get(key)
    if shared is None:
        shared = judge.shared[key] = _Shared(name, matches, judge)
    vulns, target = shared.judged(shared.cut(parse_version(version)), judge, affected)
    return PackageResult(name=name, version=version, vulns=vulns, fix_target=target)


def open_source(
    options: AuditOptions,
    *,
    session_factory: Callable[[], Session] | None = None,
    private_names: frozenset[NormalizedName] = frozenset(),
) -> AdvisorySource:
    """The advisory source `options` asks for; the local database is checked for staleness."""
    settings = options.settings or Settings()
    today = options.today or dt.date.today()
    # The two sources are imported here, not at the top: they implement this package's
    # `AdvisorySource` and import it, so a top-level import would be a cycle.
    if options.source == "osv":
        from safepip.audit.online import OsvApiSource

        return OsvApiSource(
            base_url=options.osv_url,
            session_factory=session_factory,
            private_names=private_names,
            today=today,
        )
    if options.source != "local":
        raise AuditError(f"Unknown advisory source `{options.source}`", hint="use `local` or `osv`")
    from safepip.audit import database

    data_dir = options.data_dir or database.user_data_dir()
    if options.refresh:
        database.update_database(
            options.update_url or settings.audit.update_url,
            data_dir=data_dir,
            session_factory=session_factory,
            today=today,
        )
    db_path = options.db_path or settings.audit.db
    db = (
        database.open_database(db_path, today=today)
        if db_path
        else database.default_database(data_dir)
    )
    max_age, refuse = _age_limits(options)
    if db.data_date is None:
        # An undated database cannot be shown to be fresh: `refuse-stale` refuses it.
        if refuse:
            raise AuditError(
                f"Refusing to audit with data of unknown date: `{db.path}` has no snapshot date "
                "and no record with a `modified` date",
                hint="import it with `safepip db import PATH --date YYYY-MM-DD`, "
                "or run `safepip db update`",
            )
        db.warnings = (
            *db.warnings,
            f"The advisory data `{db.path}` has no date, so its age cannot be checked",
        )
        return db
    age = (today - db.data_date).days
    if age > max_age and refuse:
        raise AuditError(
            f"Refusing to audit with stale data: the advisory data is from {db.data_date} "
            f"({age} days old, more than the {max_age} days allowed)",
            hint="run `safepip db update` (or `--refresh`), or raise `audit.max-age-days`",
        )
    return db


def _age_limits(options: AuditOptions) -> tuple[int, bool]:
    """`max-age-days` and `refuse-stale`, from the options or else the settings."""
    settings = options.settings or Settings()
    max_age = options.max_age_days
    if max_age is None:
        max_age = settings.audit.max_age_days
    refuse = options.refuse_stale
    if refuse is None:
        refuse = settings.audit.refuse_stale
    return max_age, refuse


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def stale_notice(data_date: dt.date | None, options: AuditOptions) -> str | None:
    """What to say when the offline data is older than allowed (and not refused): its date,
    its age and the one command that brings newer data."""
    if options.source != "local" or data_date is None:
        return None
    max_age, _ = _age_limits(options)
    age = ((options.today or dt.date.today()) - data_date).days
    if age <= max_age:
        return None
    given = options.db_path or (options.settings.audit.db if options.settings else None)
    fix = (
        f"`{given}` is the data in use: give `--db` newer OSV data"
        if given is not None
        else "update it with `safepip db update`"
    )
    return (
        f"The advisory data is from {data_date}, {_days(age)} old (the limit is "
        f"{_days(max_age)}); {fix}"
    )


def audit_packages(
    packages: Sequence[tuple[NormalizedName, Version | str]],
    options: AuditOptions,
    *,
    session_factory: Callable[[], Session] | None = None,
    private_names: frozenset[NormalizedName] = frozenset(),
) -> AuditReport:
    """Check every package against the advisory source of `options`.

    Raises `AuditError` when the data cannot be read (a missing or corrupt database, an
    unreachable OSV API) or is stale and `refuse-stale` is set. Packages from a non-default index
    (`private_names`) are never sent to the OSV API: they are reported as skipped instead.
    """
    source = open_source(options, session_factory=session_factory, private_names=private_names)
    return audit_with(source, packages, options)


def audit_with(
    source: AdvisorySource,
    packages: Sequence[tuple[NormalizedName, Version | str]],
    options: AuditOptions,
) -> AuditReport:
    """Audit `packages` with an already opened `source` (the seam tests replace)."""
    unique: dict[Package, None] = {}
    for name, version in packages:
        unique[(name, str(version))] = None
    wanted = list(unique)
    found = source.find(wanted)
    judge = _Judge(rules=_ignore_rules(options), today=options.today or dt.date.today())
    results = []
    skipped = []
    for name, version in wanted:
        outcome = found.get((name, version), [])
        if isinstance(outcome, str):
            skipped.append(SkippedPackage(name=name, version=version, reason=outcome))
            continue
        results.append(_judge_package(name, version, outcome, judge, source.affects))
    return AuditReport(
        packages=tuple(results),
        skipped=tuple(skipped),
        source=source.description,
        data_date=source.data_date,
        warnings=(*source.warnings, *dict.fromkeys(judge.warnings)),
        stale=stale_notice(source.data_date, options),
    )
