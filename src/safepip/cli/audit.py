"""`safepip audit`: check pinned packages for known vulnerabilities, and `--fix` a lock."""

from __future__ import annotations

import contextlib
import gc
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from safepip.audit import AuditOptions
from safepip.audit import report as fmt
from safepip.audit.sources import audit_inputs, collect_inputs
from safepip.cli import options
from safepip.errors import UsageError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence

    from safepip.audit import AuditReport
    from safepip.audit.sources import AuditInput
    from safepip.settings import Settings

FORMATS = ("table", "json", "markdown", "cyclonedx", "sarif")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    audit.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="`table` on stderr (default), or a report on stdout (`-f` is `--find-links`, "
        "as in every safepip and pip command)",
    )
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
    # `safepip install`'s source options (`-f` is `--find-links` here too, pip's meaning).
    options.sources_group(audit, title="package sources for `--fix` (default: those of the lock)")
    options.cache_group(audit)
    options.output_group(audit)
    audit.set_defaults(handler=run)


def _check_find_links(find_links: Sequence[str]) -> None:
    """`-f json` (pip-audit's `--format`) would otherwise be a find-links location that only
    `--fix` reads, and the report the user asked for would silently not be written."""
    for location in find_links:
        if location in FORMATS and not Path(location).exists():
            raise UsageError(
                f"`-f {location}` is `--find-links {location}` (pip's meaning of `-f`), and no "
                f"folder `{location}` exists",
                hint=f"for a {location} report use `--format {location}`",
            )


def _collect_inputs(args: argparse.Namespace) -> list[AuditInput]:
    return collect_inputs(requirements=args.requirements, targets=args.targets, python=args.python)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off: reading, auditing and reporting thousands of pins
    allocates hundreds of thousands of objects without cycles (pins, advisories, findings),
    and the collector's full passes over them freed nothing while costing a sixth of a
    10,000-pin audit (issue 11). `--fix` (the resolver, the network) runs with it on."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def run(args: argparse.Namespace) -> int:
    """`safepip audit`: 0 clean, 5 vulnerable, 1 when anything could not be audited.

    With `--fix`: 0 when nothing vulnerable remains after the re-lock, 5 when something does
    (or with `--dry-run`, which changes nothing), 1 when a re-lock fails (no file is changed).
    """
    paths: list[str] = []
    if args.fix:
        # `--fix` re-locks: the lock, resolver and network stack are imported only then (an
        # audit without it starts about 0.2 s sooner; `python -X importtime`).
        from safepip.audit.fix import fix_paths

        paths = fix_paths(requirements=args.requirements, targets=args.targets, python=args.python)
    if args.dry_run and not args.fix:
        raise UsageError("`--dry-run` only applies to `--fix`", hint="add `--fix`")
    _check_find_links(args.find_links)
    settings = options.settings(args)
    with _collector_paused():
        report, audit_options = _audit(args, settings)
    if args.fix and report.active_findings and _fix(args, report, paths):
        report = _audit_fixed(args, replace(audit_options, refresh=False))
    return _exit_code(report)


def _audit(args: argparse.Namespace, settings: Settings) -> tuple[AuditReport, AuditOptions]:
    """Read the inputs, audit them and show the report."""
    inputs = _collect_inputs(args)
    source = args.source or settings.audit.source
    if args.db is not None and source == "osv":
        raise UsageError("`--db` cannot be combined with `--source osv`")
    audit_options = AuditOptions(
        source=source,
        db_path=args.db,
        osv_url=args.osv_url or settings.audit.osv_url,
        ignore_vulns=tuple(args.ignore_vuln),
        settings=settings,
        refresh=args.refresh,
    )
    if args.refresh and source == "osv":
        raise UsageError("`--refresh` updates the offline database; it has no effect on `osv`")
    report = audit_inputs(inputs, audit_options)
    if report.stale is not None:
        # Once, before the results (`--fix` audits again, and says nothing more about it).
        options.reporter(args).notice(report.stale)
    _output(args, report, inputs)
    return report, audit_options


def _exit_code(report: AuditReport) -> int:
    if report.vulnerability_count:
        return 5
    if report.skipped:
        return 1
    return 0


def _fix(args: argparse.Namespace, report: AuditReport, paths: list[str]) -> bool:
    """Re-lock every file with a vulnerable pin, then write them all (or with `--dry-run`, show
    the changes). True when files were written."""
    from safepip.audit.fix import fix_targets, relock_vulnerable
    from safepip.lock import write_lock

    console = options.console(args)
    targets = fix_targets(report)
    for (name, version), target in targets.items():
        if target is None:
            console.print(
                f"[yellow]warning:[/] `{name}=={version}`: no released version fixes every "
                "finding; its pin is left as it is"
            )
    fixed = relock_vulnerable(
        paths,
        targets,
        options.reporter(args),
        given=options.source_options(args),
        cache_dir=args.cache_dir,
        no_cache=args.no_cache,
    )
    if not fixed:
        console.print("Nothing to fix: no vulnerable pin has a fixed version")
        return False
    verb = "Would change" if args.dry_run else "Changed"
    for lock_fixed in fixed:
        if not args.dry_run:
            write_lock(lock_fixed.text, lock_fixed.path)
        console.print(f"{verb} `{escape(lock_fixed.path)}`:")
        for change in lock_fixed.changes:
            console.print(f"  {escape(change)}")
    if args.dry_run:
        console.print("Dry run: no file was written")
        return False
    return True


def _audit_fixed(args: argparse.Namespace, audit_options: AuditOptions) -> AuditReport:
    """Audit the rewritten files as they are now on disk; print the findings left, if any."""
    report = audit_inputs(_collect_inputs(args), audit_options)
    console = options.console(args)
    for package in report.active_findings:
        ids = ", ".join(v.id for v in package.active)
        console.print(f"Still vulnerable: `{escape(package.name)}=={package.version}` ({ids})")
    console.print(escape(f"After the fix: {fmt.summary_line(report)}"))
    return report


def _output(args: argparse.Namespace, report: AuditReport, inputs: list[AuditInput]) -> None:
    match args.format:
        case "json":
            fmt.write_json(report, sys.stdout)
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
    console = options.console(args)
    quiet = bool(getattr(args, "quiet", 0))
    if args.format == "table":
        if quiet and not (report.findings or report.skipped or report.warnings):
            return
        fmt.print_table(report, console)
        return
    for skip in report.skipped:
        console.print(
            f"[yellow]warning:[/] not audited: `{escape(skip.name)}`: {escape(skip.reason)}"
        )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if not quiet:
        console.print(escape(fmt.data_line(report)))
        console.print(escape(fmt.summary_line(report)))
