"""`safepip audit` and `safepip db`: argument parsers, input collection and handlers."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safepip.audit import AuditError
from safepip.errors import UsageError

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.utils import NormalizedName
    from rich.console import Console

    from safepip.audit import AuditOptions, AuditReport
    from safepip.pipeline import Reporter, SourceOptions

FORMATS = ("table", "json", "markdown", "cyclonedx", "sarif")


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


class FixUsageError(UsageError):
    """`--fix` was asked of inputs it cannot rewrite."""


class FixError(AuditError):
    """`--fix` could not re-lock a file; every file was left as it was."""

    def __init__(self, path: str, reason: str, *, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"Cannot fix `{path}`, no file was changed: {reason}",
            hint=hint or "re-lock by hand with `safepip lock`, then run `safepip audit` again",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditInput:
    """A package to audit and where it was pinned."""

    name: NormalizedName
    version: str | None
    """None for a direct reference that names no version (it is reported as skipped)."""
    location: tuple[str, int | None] | None = None
    skip_reason: str | None = None


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit` and `db` to the root parser's subcommands."""
    audit = subparsers.add_parser(
        "audit",
        help="check pinned packages for known vulnerabilities",
        description=(
            "Check pinned packages against known vulnerabilities (OSV data). Exit codes: 0 "
            "clean, 5 vulnerabilities found, 1 when the audit could not run or a package could "
            "not be audited. With `--fix`, the exit code describes the lock after the fix; 1 "
            "when the re-lock failed (nothing is written)."
        ),
    )
    audit.add_argument(
        "targets",
        nargs="*",
        metavar="PYLOCK|NAME==VERSION",
        help="a `pylock.toml` (or requirements file) to audit, or a pinned package",
    )
    audit.add_argument(
        "-r",
        "--requirement",
        dest="requirements",
        action="append",
        default=[],
        metavar="FILE",
        help="a fully pinned requirements file, or a pylock.toml (repeatable)",
    )
    audit.add_argument(
        "--python", metavar="PATH", help="audit the packages installed for this interpreter"
    )
    audit.add_argument(
        "--source",
        choices=("local", "osv"),
        default=None,
        help="the offline database (default) or the OSV API",
    )
    audit.add_argument(
        "--db", type=Path, metavar="PATH", help="use this OSV zip or folder for this run"
    )
    audit.add_argument("--osv-url", metavar="URL", help="the OSV API base URL (with --source osv)")
    audit.add_argument(
        "--refresh",
        action="store_true",
        help="update the offline database first; fail if that is not possible",
    )
    audit.add_argument("-f", "--format", choices=FORMATS, default="table")
    audit.add_argument(
        "--ignore-vuln",
        action="append",
        default=[],
        metavar="ID",
        help="ignore an advisory by id or alias (repeatable)",
    )
    fix = audit.add_argument_group("fixing a lock")
    fix.add_argument(
        "--fix",
        action="store_true",
        help="re-lock the `-r` file or pylock.toml with vulnerable pins moved to the smallest "
        "fixed versions (fresh hashes, other pins kept)",
    )
    fix.add_argument(
        "--dry-run", action="store_true", help="with `--fix`: show the changes, write nothing"
    )
    _fix_sources(audit)
    from safepip.cli import _cache

    _cache(audit)
    audit.set_defaults(handler=run_audit)

    db = subparsers.add_parser(
        "db",
        help="manage the offline advisory database",
        description="Manage the offline advisory database used by `safepip audit` and installs.",
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    status = db_commands.add_parser("status", help="show the database in use")
    status.add_argument("--db", type=Path, metavar="PATH", help="show this OSV zip or folder")
    status.add_argument("-f", "--format", choices=("text", "json"), default="text")
    status.set_defaults(handler=run_db_status)
    imp = db_commands.add_parser("import", help="replace the database with an OSV zip or folder")
    imp.add_argument("path", type=Path, metavar="PATH")
    imp.add_argument("--date", type=_date_arg, help="the snapshot's date (YYYY-MM-DD)")
    imp.set_defaults(handler=run_db_import)
    update = db_commands.add_parser("update", help="download the current OSV data")
    update.add_argument(
        "--from",
        dest="source",
        metavar="URL|PATH",
        help="an OSV all.zip URL or path (default: the `audit.update-url` setting)",
    )
    update.add_argument("--date", type=_date_arg, help="the snapshot's date (YYYY-MM-DD)")
    update.set_defaults(handler=run_db_update)


def _fix_sources(parser: argparse.ArgumentParser) -> None:
    # `safepip install`'s source options, except `-f` (here it is `--format`).
    from safepip.cli import _sources

    _sources(
        parser,
        title="package sources for `--fix` (default: those of the lock)",
        short_find_links=False,
    )


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _console(args: argparse.Namespace) -> Console:
    from rich.console import Console

    return Console(
        stderr=True,
        no_color=True if getattr(args, "no_color", False) else None,
        highlight=False,
    )


def _settings(args: argparse.Namespace) -> Any:
    from safepip.settings import load_settings

    return load_settings(isolated=bool(getattr(args, "isolated", False)))


# --- inputs -----------------------------------------------------------------------------------


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


def _from_requirements(files: list[str]) -> list[AuditInput]:
    from safepip.requirements import parse_requirements

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


def _from_pylock(path: Path) -> list[AuditInput]:
    from packaging.pylock import (
        Pylock,
        PylockUnsupportedVersionError,
        PylockValidationError,
    )
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename

    from safepip.settings import read_toml

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


def _from_python(python: str) -> list[AuditInput]:
    from safepip.journal import recover
    from safepip.target import installed_distributions, probe

    target = probe(python)
    recover(target)
    return [
        AuditInput(name=d.name, version=d.version, location=(str(d.dist_info), None))
        for d in installed_distributions(target)
    ]


def _from_spec(text: str) -> AuditInput:
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


def _is_pylock(path: str) -> bool:
    # PEP 751 names: `pylock.toml` or `pylock.<name>.toml` (checked without importing
    # packaging.pylock, which costs more than the whole audit of a requirements file).
    name = Path(path).name
    if name == "pylock.toml" or (
        name.startswith("pylock.") and name.endswith(".toml") and name.count(".") == 2
    ):
        return True
    return path.endswith(".toml") and Path(path).is_file()


def collect_inputs(args: argparse.Namespace) -> list[AuditInput]:
    """Every package named by `-r` files, pylock files, `--python` and `NAME==VERSION` args."""
    inputs: list[AuditInput] = []
    requirement_files: list[str] = []
    for file in args.requirements:
        if _is_pylock(file):
            inputs += _from_pylock(Path(file))
        else:
            requirement_files.append(file)
    specs = []
    for target in args.targets:
        if _is_pylock(target):
            inputs += _from_pylock(Path(target))
        elif Path(target).is_file():
            requirement_files.append(target)
        else:
            specs.append(target)
    if requirement_files:
        inputs += _from_requirements(requirement_files)
    unpinned: list[tuple[str, str | None]] = []
    for spec in specs:
        try:
            inputs.append(_from_spec(spec))
        except UnpinnedRequirements as exc:
            unpinned += exc.unpinned
    if unpinned:
        raise UnpinnedRequirements(unpinned)
    if args.python:
        inputs += _from_python(args.python)
    if not (args.requirements or args.targets or args.python):
        raise UsageError(
            "Nothing to audit",
            hint="pass `-r requirements.txt`, a `pylock.toml`, `--python PATH` or `NAME==VERSION`",
        )
    return inputs


# --- handlers ---------------------------------------------------------------------------------


def run_audit(args: argparse.Namespace) -> int:
    """`safepip audit`: 0 clean, 5 vulnerable, 1 when anything could not be audited.

    With `--fix`: 0 when nothing vulnerable remains after the re-lock, 5 when something does
    (or with `--dry-run`, which changes nothing), 1 when a re-lock fails (no file is changed).
    """
    from safepip.audit import AuditOptions

    fix_paths = _fix_paths(args) if args.fix else []
    if args.dry_run and not args.fix:
        raise UsageError("`--dry-run` only applies to `--fix`", hint="add `--fix`")
    settings = _settings(args)
    inputs = collect_inputs(args)
    source = args.source or settings.audit.source
    if args.db is not None and source == "osv":
        raise UsageError("`--db` cannot be combined with `--source osv`")
    options = AuditOptions(
        source=source,
        db_path=args.db,
        osv_url=args.osv_url or settings.audit.osv_url,
        ignore_vulns=tuple(args.ignore_vuln),
        settings=settings,
        refresh=args.refresh,
    )
    if args.refresh and source == "osv":
        raise UsageError("`--refresh` updates the offline database; it has no effect on `osv`")
    report = _audit_inputs(inputs, options)
    _output(args, report, inputs)
    if args.fix and report.active_findings and _fix(args, report, fix_paths):
        report = _audit_fixed(args, replace(options, refresh=False))
    return _exit_code(report)


def _audit_inputs(inputs: list[AuditInput], options: AuditOptions) -> AuditReport:
    """Audit `inputs`; those without a version are reported as not audited."""
    from safepip.audit import SkippedPackage, audit_packages

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


def _exit_code(report: AuditReport) -> int:
    if report.vulnerability_count:
        return 5
    if report.skipped:
        return 1
    return 0


# --- --fix -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class LockToFix:
    """A lock file read for what re-locking it needs."""

    path: str
    pins: dict[NormalizedName, str]
    roots: tuple[str, ...]
    """Requirement lines (no version) for the packages the lock was made for: those whose `# via`
    names an input, or every package when the lock does not say."""
    sources: tuple[str, ...] = ()
    """Input files named by `# via -r FILE` that still exist; they stand for their roots."""
    index: SourceOptions
    """The indexes the lock names, else those of the command line."""
    command: str | None
    """The command in the file's header, or None when it has no header."""
    annotate: bool
    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    pre: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class FixedLock:
    """A lock re-locked with the vulnerable pins moved."""

    path: str
    text: str
    changes: tuple[str, ...]
    """`name old -> new`, `name new (added)`, `name old (removed)`."""


def _fix_paths(args: argparse.Namespace) -> list[str]:
    """The lock files `--fix` rewrites; anything else among the inputs is a usage error."""
    if args.python:
        raise FixUsageError(
            "`--fix` rewrites lock files; it cannot change the environment of `--python`",
            hint="fix the lock the environment was installed from (`safepip audit --fix -r "
            "requirements.txt`), then install it again",
        )
    paths = list(args.requirements)
    specs = []
    for target in args.targets:
        if _is_pylock(target) or Path(target).is_file():
            paths.append(target)
        else:
            specs.append(target)
    if specs:
        shown = ", ".join(f"`{s}`" for s in specs)
        raise FixUsageError(
            f"`--fix` rewrites lock files; it cannot change {shown}",
            hint="pin the fixed versions the report names yourself, or audit a lock "
            "(`-r requirements.txt` or a `pylock.toml`) with `--fix`",
        )
    if not paths:
        raise FixUsageError(
            "`--fix` needs a lock file to rewrite",
            hint="pass `-r requirements.txt` (hash-pinned, as `safepip lock` writes it) or a "
            "`pylock.toml`",
        )
    remote = [p for p in paths if "://" in p]
    if remote:
        raise FixUsageError(f"`--fix` cannot rewrite the remote file `{remote[0]}`")
    return paths


def _fix(args: argparse.Namespace, report: AuditReport, paths: list[str]) -> bool:
    """Re-lock every file with a vulnerable pin, then write them all (or with `--dry-run`, show
    the changes). True when files were written."""
    from rich.markup import escape

    from safepip.audit.report import plan_fixes
    from safepip.cli_lock import write_output
    from safepip.lock import read_existing_pins

    console = _console(args)
    targets = {(p.name, p.old_version): p.new_version for p in plan_fixes(report)}
    for (name, version), target in targets.items():
        if target is None:
            console.print(
                f"[yellow]warning:[/] `{name}=={version}`: no released version fixes every "
                "finding; its pin is left as it is"
            )
    reporter = _lock_reporter(args)
    fixed: list[FixedLock] = []
    for path in paths:
        pins = read_existing_pins(Path(path))
        moves = {
            name: target
            for name, version in pins.items()
            if (target := targets.get((name, version))) is not None
        }
        if moves:
            fixed.append(_relock(_read_lock(path, pins, args), moves, args, reporter))
    if not fixed:
        console.print("Nothing to fix: no vulnerable pin has a fixed version")
        return False
    verb = "Would change" if args.dry_run else "Changed"
    for lock_fixed in fixed:
        if not args.dry_run:
            write_output(lock_fixed.text, lock_fixed.path)
        console.print(f"{verb} `{escape(lock_fixed.path)}`:")
        for change in lock_fixed.changes:
            console.print(f"  {escape(change)}")
    if args.dry_run:
        console.print("Dry run: no file was written")
        return False
    return True


def _audit_fixed(args: argparse.Namespace, options: AuditOptions) -> AuditReport:
    """Audit the rewritten files as they are now on disk; print the findings left, if any."""
    from rich.markup import escape

    from safepip.audit import report as fmt

    report = _audit_inputs(collect_inputs(args), options)
    console = _console(args)
    for package in report.active_findings:
        ids = ", ".join(v.id for v in package.active)
        console.print(f"Still vulnerable: `{escape(package.name)}=={package.version}` ({ids})")
    console.print(escape(f"After the fix: {fmt.summary_line(report)}"))
    return report


def _lock_reporter(args: argparse.Namespace) -> Reporter:
    from safepip.cli import _reporter

    return _reporter(args)


_HEADER_COMMAND = re.compile(
    r"^#[ \t]*by the following command:[ \t]*\n#[ \t]*\n#[ \t]+(\S.*)$", re.M
)
_VIA = re.compile(r"^\s*#\s*via(?:\s+(?P<entry>\S.*))?$")


def _command_options(command: str) -> tuple[str | None, tuple[str, ...], bool]:
    """`--python-version`, `--platform` and `--pre` of a `safepip lock` command line."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return None, (), False
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
    return python_version, tuple(platforms), "--pre" in words


def _via(lines: list[str], start: int, end: int) -> list[str]:
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


def _source_options(args: argparse.Namespace) -> SourceOptions:
    from safepip.cli import source_options

    return source_options(args)


def _given_sources(options: SourceOptions) -> bool:
    return bool(
        options.index_url or options.extra_index_urls or options.no_index or options.find_links
    )


def _read_lock(path: str, pins: dict[NormalizedName, str], args: argparse.Namespace) -> LockToFix:
    from safepip import lock as lock_mod

    given = _source_options(args)
    if lock_mod.lock_format(path) is lock_mod.LockFormat.PYLOCK:
        return _read_pylock(path, pins, given)
    return _read_requirements_lock(path, pins, given)


def _read_requirements_lock(
    path: str, pins: dict[NormalizedName, str], given: SourceOptions
) -> LockToFix:
    from packaging.utils import canonicalize_name

    from safepip.requirements import IndexDirective, parse_requirements

    parsed = parse_requirements(files=[path])
    unhashed = [
        str(item.requirement or item.name) for item in parsed.requirements if not item.hashes
    ]
    if unhashed:
        raise FixUsageError(
            f"`--fix` rewrites hash-pinned locks, and `{path}` has requirements without "
            f"`--hash`: {', '.join(f'`{u}`' for u in unhashed)}",
            hint="change the pins by hand, or lock the file with `safepip lock` first",
        )
    for item in parsed.requirements:
        if item.url is not None or item.requirement is None:
            raise FixError(
                path,
                f"`{item.requirement or item.url}` ({item.location}) is a direct reference, "
                "which a re-lock cannot resolve from an index",
            )
    text = Path(path).read_text("utf-8", errors="replace")
    lines = text.splitlines()
    starts = sorted((item.location.line or 1) - 1 for item in parsed.requirements)
    annotate = any(_VIA.match(line) for line in lines)
    roots = []
    sources: list[str] = []
    for item in sorted(parsed.requirements, key=lambda i: i.location.line or 0):
        requirement = item.requirement
        assert requirement is not None
        start = (item.location.line or 1) - 1
        later = [s for s in starts if s > start]
        via = _via(lines, start, later[0] if later else len(lines))
        if annotate and via and all(canonicalize_name(v) in pins for v in via):
            continue
        # `# via -r requirements.in`: re-reading that input keeps its label (and its specifiers).
        files = [v[3:].strip() for v in via if v.startswith("-r ")]
        if files and all(Path(f).is_file() for f in files):
            sources += [f for f in files if f not in sources]
            if all(v.startswith("-r ") or canonicalize_name(v) in pins for v in via):
                continue
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        marker = f" ; {requirement.marker}" if requirement.marker else ""
        roots.append(f"{item.name}{extras}{marker}")
    index = given
    if not _given_sources(given):
        urls, no_index = parsed.apply_index_options([])
        has_index = any(o.kind is IndexDirective.INDEX_URL for o in parsed.index_options)
        index = replace(
            given,
            index_url=urls[0] if has_index and urls else None,
            extra_index_urls=tuple(urls[1:] if has_index else urls),
            no_index=no_index,
            find_links=parsed.find_links,
            trusted_hosts=(*given.trusted_hosts, *parsed.trusted_hosts),
        )
    match = _HEADER_COMMAND.search(text)
    command = match[1].strip() if match else None
    python_version, platforms, pre = _command_options(command) if command else (None, (), False)
    return LockToFix(
        path=path,
        pins=pins,
        roots=tuple(roots),
        sources=tuple(sources),
        index=index,
        command=command,
        annotate=annotate,
        python_version=python_version,
        platforms=platforms,
        pre=pre or parsed.pre,
    )


def _read_pylock(path: str, pins: dict[NormalizedName, str], given: SourceOptions) -> LockToFix:
    from packaging.utils import canonicalize_name

    from safepip.settings import read_toml

    packages = [p for p in read_toml(Path(path)).get("packages", []) if isinstance(p, dict)]
    unversioned = [str(p.get("name")) for p in packages if not p.get("version")]
    if unversioned:
        raise FixError(
            path,
            f"`{unversioned[0]}` is locked without a version (a direct reference), which a "
            "re-lock cannot resolve from an index",
        )
    needed = {
        canonicalize_name(str(d["name"]))
        for p in packages
        for d in p.get("dependencies") or ()
        if isinstance(d, dict) and d.get("name")
    }
    roots = []
    for package in packages:
        name = canonicalize_name(str(package["name"]))
        if name in needed:
            continue
        marker = f" ; {package['marker']}" if package.get("marker") else ""
        roots.append(f"{name}{marker}")
    index = given
    if not _given_sources(given):
        urls = list(dict.fromkeys(str(p["index"]) for p in packages if p.get("index")))
        if urls:
            index = replace(given, index_url=urls[0], extra_index_urls=tuple(urls[1:]))
    return LockToFix(
        path=path, pins=pins, roots=tuple(roots), index=index, command=None, annotate=True
    )


def _relock(
    lock: LockToFix, moves: dict[NormalizedName, str], args: argparse.Namespace, reporter: Reporter
) -> FixedLock:
    """Resolve the lock again: the other pins preferred, each moved package constrained to its
    fixed version (`==`, or `>=` when exactly that version does not resolve)."""
    import tempfile

    from safepip.cli_lock import LockOptions, run_lock
    from safepip.errors import SafepipError
    from safepip.plan import ResolutionError

    with tempfile.TemporaryDirectory(prefix="safepip-fix-") as tmp:
        constraints = Path(tmp) / "fixed-versions.txt"
        outcome = None
        for operator in ("==", ">="):
            constraints.write_text(
                "".join(f"{name}{operator}{version}\n" for name, version in moves.items()),
                "utf-8",
            )
            options = LockOptions(
                sources=lock.sources,
                requirements=lock.roots,
                constraint_files=(str(constraints),),
                output=lock.path,
                upgrade_packages=tuple(moves),
                pre=lock.pre,
                python_version=lock.python_version,
                platforms=lock.platforms,
                index=lock.index,
                cache_dir=args.cache_dir,
                no_cache=args.no_cache,
                header=lock.command is not None,
                annotate=lock.annotate,
                command=lock.command or "",
            )
            try:
                outcome = run_lock(options, reporter)
                break
            except ResolutionError as exc:
                if operator == ">=":
                    raise FixError(lock.path, f"the re-lock failed: {exc}", hint=exc.hint) from exc
            except SafepipError as exc:
                raise FixError(lock.path, f"the re-lock failed: {exc}", hint=exc.hint) from exc
    assert outcome is not None
    new = {pin.name: pin.version for pin in outcome.resolution.pins}
    return FixedLock(path=lock.path, text=outcome.text, changes=_changes(lock.pins, new))


def _changes(old: dict[NormalizedName, str], new: dict[NormalizedName, str]) -> tuple[str, ...]:
    changes = []
    for name in sorted({*old, *new}):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            changes.append(f"{name} {after} (added)")
        elif after is None:
            changes.append(f"{name} {before} (removed)")
        else:
            changes.append(f"{name} {before} -> {after}")
    return tuple(changes)


def _output(args: argparse.Namespace, report: AuditReport, inputs: list[AuditInput]) -> None:
    from safepip.audit import report as fmt

    match args.format:
        case "json":
            sys.stdout.write(fmt.render_json(report))
        case "markdown":
            sys.stdout.write(fmt.render_markdown(report))
        case "cyclonedx":
            sys.stdout.write(fmt.render_cyclonedx(report))
        case "sarif":
            locations = {str(i.name): i.location for i in inputs if i.location is not None}
            sys.stdout.write(fmt.render_sarif(report, locations=locations))
        case _:
            pass
    sys.stdout.flush()
    console = _console(args)
    quiet = bool(getattr(args, "quiet", 0))
    if args.format == "table":
        if quiet and not (report.findings or report.skipped or report.warnings):
            return
        fmt.print_table(report, console)
        return
    from rich.markup import escape

    for skip in report.skipped:
        console.print(
            f"[yellow]warning:[/] not audited: `{escape(skip.name)}`: {escape(skip.reason)}"
        )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if not quiet:
        console.print(escape(fmt.data_line(report)))
        console.print(escape(fmt.summary_line(report)))


def _print_info(info: Any, *, bundled: bool) -> None:
    lines = [
        f"Database:  {info.path} ({'bundled with safepip' if bundled else info.origin})",
        f"Source:    {info.source}",
        f"Data date: {info.data_date.isoformat() if info.data_date else 'unknown'}",
        f"Records:   {info.records} ({info.packages} packages; "
        f"{info.withdrawn} withdrawn records left out)",
    ]
    if info.skipped:
        lines.append(
            f"Skipped:   {info.skipped} files that are not OSV records"
            + (f", e.g. {'; '.join(info.skipped_examples)}" if info.skipped_examples else "")
        )
    if info.source_sha256:
        lines.append(f"Source SHA-256: {info.source_sha256}")
    sys.stdout.write("\n".join(lines) + "\n")


def run_db_status(args: argparse.Namespace) -> int:
    """`safepip db status`: which database an audit would use, its date, size and digest."""
    import json

    from safepip.audit import database

    settings = _settings(args)
    db_path = args.db or settings.audit.db
    db = (
        database.open_database(db_path)
        if db_path
        else database.default_database(database.user_data_dir())
    )
    info = db.info()
    digest = database.file_sha256(info.path) if info.path.is_file() else None
    if args.format == "json":
        document = {
            "path": str(info.path),
            "origin": info.origin,
            "source": info.source,
            "date": info.data_date.isoformat() if info.data_date else None,
            "records": info.records,
            "packages": info.packages,
            "withdrawn": info.withdrawn,
            "skipped": info.skipped,
            "skipped_examples": list(info.skipped_examples),
            "sha256": digest,
            "source_sha256": info.source_sha256,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        _print_info(info, bundled=info.origin == "bundled")
        if digest:
            sys.stdout.write(f"SHA-256:   {digest}\n")
    for warning in db.warnings:
        _console(args).print(f"[yellow]warning:[/] {warning}")
    return 0


def _report_replaced(args: argparse.Namespace, verb: str, info: Any) -> None:
    from rich.markup import escape

    if info.skipped:
        examples = "; ".join(info.skipped_examples)
        _console(args).print(
            f"[yellow]warning:[/] skipped {info.skipped} files that are not OSV records: "
            f"{escape(examples)}{' and more' if info.skipped > len(info.skipped_examples) else ''}"
        )
    if getattr(args, "quiet", 0):
        return

    date = info.data_date.isoformat() if info.data_date else "unknown date"
    _console(args).print(
        f"[green]{verb} the advisory database:[/] {info.records} records for "
        f"{info.packages} packages, data as of {date} (`{escape(str(info.path))}`)"
    )


def run_db_import(args: argparse.Namespace) -> int:
    """`safepip db import PATH`: replace the user database with an OSV zip or folder."""
    from safepip.audit import database

    info = database.import_database(args.path, data_dir=database.user_data_dir(), date=args.date)
    _report_replaced(args, "Imported", info)
    return 0


def run_db_update(args: argparse.Namespace) -> int:
    """`safepip db update [--from URL|PATH]`: download OSV data and replace the user database."""
    from safepip.audit import database

    settings = _settings(args)
    source = args.source or settings.audit.update_url
    info = database.update_database(source, data_dir=database.user_data_dir(), date=args.date)
    _report_replaced(args, "Updated", info)
    return 0
