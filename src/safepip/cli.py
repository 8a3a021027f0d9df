"""The command line: parse arguments, run the pipeline, render the outcome, return an exit code."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from safepip import __version__
from safepip.errors import ExitCode, SafepipError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from packaging.utils import NormalizedName

    from safepip.pipeline import SourceOptions
    from safepip.report import ConsoleReporter
    from safepip.target import Target


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="count", default=0, help="less output (repeatable)")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    group.add_argument("--no-color", action="store_true", help="no colour (also `NO_COLOR`)")


def _sources(
    parser: argparse.ArgumentParser,
    *,
    title: str = "package sources and trust",
    short_find_links: bool = True,
) -> None:
    """pip's source and trust options; `short_find_links=False` where `-f` means something else."""
    group = parser.add_argument_group(title)
    group.add_argument("-i", "--index-url", help="base URL of the package index (PEP 503/691)")
    group.add_argument(
        "--extra-index-url", action="append", default=[], help="more indexes, consulted in order"
    )
    group.add_argument("--no-index", action="store_true", help="use only `--find-links`")
    group.add_argument(
        *(["-f"] if short_find_links else []),
        "--find-links",
        action="append",
        default=[],
        help="a folder or page of files",
    )
    group.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also accept files from HOST (artifact URLs on other hosts are refused)",
    )
    group.add_argument(
        "--trusted-host",
        action="append",
        default=[],
        metavar="HOST",
        help="allow plain HTTP for HOST (pip's meaning; printed as a warning)",
    )
    group.add_argument("--cert", help="a CA bundle added to the system trust store")
    group.add_argument("--client-cert", help="a client certificate (PEM with key)")
    group.add_argument("--timeout", type=float, help="network timeout in seconds (default 15)")
    group.add_argument("--retries", type=int, help="retries on transient errors (default 3)")
    group.add_argument("--proxy", help="proxy URL")
    group.add_argument(
        "--isolated",
        action="store_true",
        help="ignore pip's and safepip's configuration files and PIP_* variables",
    )


def _target(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target environment")
    group.add_argument(
        "-p",
        "--python",
        help="interpreter or virtual environment to install into "
        "(default: `$VIRTUAL_ENV`, then `./.venv`)",
    )
    group.add_argument("--system", action="store_true", help="install into the system interpreter")
    group.add_argument(
        "--break-system-packages",
        action="store_true",
        help="install into an externally managed interpreter (PEP 668) anyway",
    )
    group.add_argument("-t", "--target", type=Path, help="install packages into this folder")
    group.add_argument("--prefix", type=Path, help="install under this prefix")


def _inputs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("requirements")
    group.add_argument("requirements", nargs="*", metavar="REQUIREMENT", help="`name==version` …")
    group.add_argument(
        "-r", "--requirement", action="append", default=[], metavar="FILE", dest="req_files"
    )
    group.add_argument(
        "-c", "--constraint", action="append", default=[], metavar="FILE", dest="constraint_files"
    )
    group.add_argument(
        "--require-hashes", action="store_true", help="require a hash for every requirement"
    )
    group.add_argument("--no-deps", action="store_true", help="do not check dependencies")
    group.add_argument(
        "--allow-unhashed",
        action="store_true",
        help="outside hash mode, accept index files that have no published hash",
    )
    # Accepted for pip compatibility; safepip installs wheels only and never upgrades past a pin.
    for flag in ("--only-binary", "--no-binary"):
        group.add_argument(flag, action="append", default=[], help=argparse.SUPPRESS)
    for flag in ("-U", "--upgrade", "--prefer-binary", "--no-input", "--disable-pip-version-check"):
        group.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    group.add_argument("--progress-bar", help=argparse.SUPPRESS)


def _cache(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cache")
    group.add_argument("--cache-dir", type=Path, help="cache folder (also `SAFEPIP_CACHE_DIR`)")
    group.add_argument(
        "--no-cache", "--no-cache-dir", action="store_true", help="use a throwaway cache"
    )


def _audit(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("vulnerability audit")
    group.add_argument(
        "--no-audit", action="store_true", help="skip the vulnerability check (said loudly)"
    )
    group.add_argument("--ignore-vuln", action="append", default=[], metavar="ID")
    group.add_argument("--db", type=Path, help="an OSV zip or folder to audit against")
    group.add_argument("--audit-source", choices=("local", "osv"), default="local")
    group.add_argument("--osv-url", help="base URL of the OSV API")
    group.add_argument("--refresh", action="store_true", help="update the database first")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only` (the command being run), the other commands' parsers are
    not built (their modules are not even imported: a no-op install should start fast)."""
    parser = argparse.ArgumentParser(
        prog="safepip",
        description="Install pinned, hashed, audited wheels from trusted hosts only.",
    )
    parser.add_argument("--version", action="version", version=f"safepip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    install = sub.add_parser("install", help="install requirements into an environment")
    _inputs(install)
    _sources(install)
    _target(install)
    _cache(install)
    _audit(install)
    opts = install.add_argument_group("install")
    opts.add_argument("--dry-run", action="store_true", help="decide and verify, write nothing")
    opts.add_argument("--report", metavar="FILE", help="write a JSON report (`-` for stdout)")
    opts.add_argument("--compile", action="store_true", help="write .pyc files (all cores)")
    opts.add_argument("--no-compile", action="store_true", help="do not write .pyc (default)")
    opts.add_argument(
        "--force-reinstall",
        "--reinstall",
        action="store_true",
        dest="reinstall",
        help="reinstall even what is already installed as pinned",
    )
    opts.add_argument(
        "--copy", action="store_true", help="copy files from the cache instead of hard-linking"
    )
    _common(install)
    install.set_defaults(handler=cmd_install)

    download = sub.add_parser("download", help="fetch and verify wheels into a folder")
    _inputs(download)
    _sources(download)
    download.add_argument("-d", "--dest", type=Path, required=True, help="destination folder")
    download.add_argument("--python", "-p", dest="python", help="interpreter whose tags to use")
    _cache(download)
    _audit(download)
    _common(download)
    download.set_defaults(handler=cmd_download)

    verify = sub.add_parser(
        "verify", help="check an installed environment against RECORD files (and a lock)"
    )
    verify.add_argument(
        "-p", "--python", help="environment to check (default: `$VIRTUAL_ENV`, then `./.venv`)"
    )
    verify.add_argument(
        "-r",
        "--requirement",
        dest="req_files",
        action="append",
        default=[],
        metavar="LOCK",
        help="also check that exactly these hash-pinned packages are installed",
    )
    verify.add_argument(
        "--strict", action="store_true", help="fail on packages not installed by safepip"
    )
    _common(verify)
    verify.set_defaults(handler=cmd_verify)

    hasher = sub.add_parser("hash", help="print the hash of files, in pip's format")
    hasher.add_argument("files", nargs="+", type=Path)
    hasher.add_argument(
        "-a", "--algorithm", choices=("sha256", "sha384", "sha512"), default="sha256"
    )
    _common(hasher)
    hasher.set_defaults(handler=cmd_hash)

    before = set(sub.choices)
    if only in (None, "lock", "freeze"):
        from safepip import cli_lock

        cli_lock.add_parsers(sub)
    if only in (None, "audit", "db"):
        from safepip import cli_audit

        cli_audit.add_parsers(sub)
    for name in set(sub.choices) - before:
        if not any(a.dest == "quiet" for a in sub.choices[name]._actions):
            _common(sub.choices[name])
    return parser


_CORE = ("install", "download", "hash", "verify")


def _reporter(args: argparse.Namespace) -> ConsoleReporter:
    from safepip.report import ConsoleReporter

    verbosity = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    color = False if getattr(args, "no_color", False) else None
    return ConsoleReporter(verbosity=verbosity, color=color)


def source_options(args: argparse.Namespace) -> SourceOptions:
    """The options of the `package sources and trust` group (`_sources`) as one value."""
    from safepip.pipeline import SourceOptions

    return SourceOptions(
        index_url=args.index_url,
        extra_index_urls=tuple(args.extra_index_url),
        no_index=args.no_index,
        find_links=tuple(args.find_links),
        allow_hosts=tuple(args.allow_host),
        trusted_hosts=tuple(args.trusted_host),
        cert=args.cert,
        client_cert=args.client_cert,
        timeout=args.timeout,
        retries=args.retries,
        proxy=args.proxy,
        isolated=args.isolated,
    )


def _install_options(args: argparse.Namespace) -> object:
    from safepip.pipeline import AuditChoice, InstallOptions, TargetOptions

    return InstallOptions(
        requirement_files=tuple(args.req_files),
        constraint_files=tuple(args.constraint_files),
        requirements=tuple(args.requirements),
        sources=source_options(args),
        target=TargetOptions(
            python=getattr(args, "python", None),
            system=getattr(args, "system", False),
            break_system_packages=getattr(args, "break_system_packages", False),
            target_dir=getattr(args, "target", None),
            prefix=getattr(args, "prefix", None),
        ),
        require_hashes=args.require_hashes,
        no_deps=args.no_deps,
        allow_unhashed=args.allow_unhashed,
        cache_dir=args.cache_dir,
        no_cache=args.no_cache,
        dry_run=getattr(args, "dry_run", False),
        compile=getattr(args, "compile", False) and not getattr(args, "no_compile", False),
        reinstall=getattr(args, "reinstall", False),
        link=not getattr(args, "copy", False),
        audit=AuditChoice(
            enabled=not args.no_audit,
            ignore_vulns=tuple(args.ignore_vuln),
            db=args.db,
            source=args.audit_source,
            osv_url=args.osv_url,
            refresh=args.refresh,
        ),
    )


def _check_inputs(args: argparse.Namespace) -> None:
    from safepip.errors import UsageError

    if not args.req_files and not args.requirements:
        raise UsageError(
            "Nothing to install: give requirements or `-r FILE`",
            hint="for example `safepip install -r requirements.txt`",
        )


def cmd_install(args: argparse.Namespace) -> int:
    from safepip import pipeline
    from safepip.report import installation_report, summary, write_json

    _check_inputs(args)
    reporter = _reporter(args)
    started = time.perf_counter()
    options = _install_options(args)
    assert isinstance(options, pipeline.InstallOptions)
    outcome = pipeline.install(options, reporter)
    if args.report:
        write_json(installation_report(outcome), args.report)
    if outcome.result is None:
        for pin in outcome.changes.install:
            reporter.info(f"Would install {pin.display_name}=={pin.version}")
    else:
        for dist in outcome.changes.remove:
            reporter.detail(f"Removed {dist.display_name}=={dist.version}")
        for pin in outcome.changes.install:
            reporter.detail(f"Installed {pin.display_name}=={pin.version}")
    reporter.success(summary(outcome, time.perf_counter() - started))
    return ExitCode.OK


def cmd_download(args: argparse.Namespace) -> int:
    from safepip import pipeline
    from safepip.report import plural

    _check_inputs(args)
    reporter = _reporter(args)
    options = _install_options(args)
    assert isinstance(options, pipeline.InstallOptions)
    outcome = pipeline.download(options, args.dest, reporter)
    for path in outcome.files:
        reporter.detail(f"Saved {path}")
    reporter.success(f"Saved {plural(len(outcome.files), 'file')} to {args.dest}")
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace) -> int:
    from safepip.envlock import hold
    from safepip.journal import recover
    from safepip.report import plural
    from safepip.target import find_python, installed_distributions, probe
    from safepip.verify import VerificationFailed, verify_environment

    reporter = _reporter(args)
    target = probe(find_python(args.python, system=False))
    lock = _lock_pins(args.req_files, target) if args.req_files else None
    with hold(target, on_wait=reporter.warn):
        recover(target, on_note=reporter.warn)
        dists = installed_distributions(target)
        report = verify_environment(target, dists, lock=lock)
    for note in report.unverifiable:
        reporter.warn(f"`{note.package}`: {note.note}")
    if not report.ok:
        raise VerificationFailed(report)
    if args.strict and report.unverifiable:
        from safepip.errors import SafepipError

        raise SafepipError(
            f"{plural(len(report.unverifiable), 'package')} not installed by safepip",
            hint="reinstall them with `safepip install --force-reinstall`",
        )
    reporter.success(
        f"Verified {plural(report.packages, 'package')} and {plural(report.files, 'file')}"
    )
    return ExitCode.OK


def _lock_pins(
    files: Sequence[str], target: Target
) -> dict[NormalizedName, tuple[str, frozenset[str]]]:
    from safepip.plan import merge_requirements, pinned_sha256
    from safepip.requirements import parse_requirements

    parsed = parse_requirements(files=files)
    wanted, _, _ = merge_requirements(parsed.requirements, (), target.markers)
    pins: dict[NormalizedName, tuple[str, frozenset[str]]] = {}
    for name, w in wanted.items():
        version = w.pinned_version
        if version is None:
            from safepip.errors import UsageError

            raise UsageError(
                f"`{w.display_name}{w.specifier}` is not pinned ({w.where})",
                hint="verify against a hash-pinned lock",
            )
        pins[name] = (version, pinned_sha256(w))
    return pins


def cmd_hash(args: argparse.Namespace) -> int:
    import hashlib

    from safepip.errors import UsageError

    for path in args.files:
        digest = hashlib.new(args.algorithm)
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            raise UsageError(f"Cannot read `{path}`: {exc.strerror}") from exc
        sys.stdout.write(f"{path}:\n--hash={args.algorithm}:{digest.hexdigest()}\n")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run safepip with `argv`; return the exit code (see README for their meaning)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in (*_CORE, "lock", "freeze", "audit", "db") else None
    parser = build_parser(command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from safepip import signals

    try:
        with signals.handled():
            return int(args.handler(args))
    except SafepipError as exc:
        from safepip.urls import redact_text

        reporter = _reporter(args)
        reporter.error(redact_text(str(exc)), redact_text(exc.hint) if exc.hint else None)
        return int(exc.exit_code)
    except KeyboardInterrupt as exc:
        return signals.report_interrupt(exc)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
