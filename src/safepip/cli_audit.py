"""`safepip audit` and `safepip db`: argument parsers, input collection and handlers."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safepip.audit import AuditError
from safepip.errors import UsageError

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.utils import NormalizedName
    from rich.console import Console

    from safepip.audit import AuditReport

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


class FixNeedsLock(AuditError):
    """`--fix` rewrites pins with fresh hashes, which needs the lock machinery."""

    def __init__(self, moves: list[str]) -> None:
        self.moves = moves
        super().__init__(
            "`--fix` needs `safepip lock` to rewrite pins with fresh hashes, and it is not "
            "available yet; nothing was changed",
            hint="apply the planned moves above by hand, then re-lock and re-run `safepip audit`",
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
            "not be audited."
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
    audit.add_argument(
        "--fix",
        action="store_true",
        help="move vulnerable pins to the smallest fixed versions (needs `safepip lock`)",
    )
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
    from safepip.target import installed_distributions, probe

    target = probe(python)
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
    """`safepip audit`: 0 clean, 5 vulnerable, 1 when anything could not be audited."""
    from safepip.audit import AuditOptions, SkippedPackage, audit_packages

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
    auditable = [(i.name, i.version) for i in inputs if i.version is not None]
    report = audit_packages(auditable, options)
    direct = tuple(
        SkippedPackage(name=i.name, version=i.version, reason=i.skip_reason or "no version")
        for i in inputs
        if i.version is None
    )
    if direct:
        from dataclasses import replace

        report = replace(report, skipped=(*report.skipped, *direct))
    _output(args, report, inputs)
    if args.fix and report.active_findings:
        _refuse_fix(args, report)
    if report.vulnerability_count:
        return 5
    if report.skipped:
        return 1
    return 0


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


def _refuse_fix(args: argparse.Namespace, report: AuditReport) -> None:
    from rich.markup import escape

    from safepip.audit.report import plan_fixes

    console = _console(args)
    moves = []
    for fix in plan_fixes(report):
        if fix.new_version:
            moves.append(f"{fix.name}: {fix.old_version} -> {fix.new_version}")
        else:
            moves.append(f"{fix.name}: {fix.old_version} -> (no fixed version)")
    console.print("Planned moves:")
    for move in moves:
        console.print(f"  {escape(move)}")
    raise FixNeedsLock(moves)


def _print_info(info: Any, *, bundled: bool) -> None:
    lines = [
        f"Database:  {info.path} ({'bundled with safepip' if bundled else info.origin})",
        f"Source:    {info.source}",
        f"Data date: {info.data_date.isoformat() if info.data_date else 'unknown'}",
        f"Records:   {info.records} ({info.packages} packages; "
        f"{info.withdrawn} withdrawn records left out)",
    ]
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
    if getattr(args, "quiet", 0):
        return
    from rich.markup import escape

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
