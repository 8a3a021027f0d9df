"""`safepip install`: install requirements into an environment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from safepip import pipeline
from safepip.cli import options
from safepip.errors import ExitCode
from safepip.linking import DEFAULT_LINK_MODE, LinkMode
from safepip.report import capped, installation_report, summary, write_json
from safepip.sync import plan_lines

if TYPE_CHECKING:
    import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = subparsers.add_parser(
        "install",
        help="install requirements into an environment",
        description=(
            "Install requirements (arguments, `-r` requirements files or a `pylock.toml`) into "
            "a virtual environment. Every file is hash-checked while it streams, every wheel's "
            "RECORD is validated and every package is audited before anything is written; the "
            "install is one transaction that rolls back on failure. Hash-pinned files are "
            "installed as pinned; anything else is resolved and checked against the index's "
            "hashes. Exit codes: 0 ok, 1 failure, 2 usage, 3 integrity, 4 policy, 5 a known "
            "vulnerability."
        ),
    )
    options.requirements_group(install)
    options.sources_group(install)
    options.target_group(install)
    options.cache_group(install)
    options.audit_group(install)
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
        "--link-mode",
        choices=[m.value for m in LinkMode],
        default=DEFAULT_LINK_MODE.value,
        help=(
            "how files come from the cache: `reflink` (default; a copy where the file system "
            "has no reflinks), `copy`, or `hardlink` (shared with the cache and every other "
            "environment)"
        ),
    )
    opts.add_argument(
        "--copy",
        action="store_const",
        const=LinkMode.COPY.value,
        dest="link_mode",
        help="the same as `--link-mode copy`",
    )
    opts.add_argument(
        "--bundle", type=Path, metavar="FILE", help="install a `.safepip` bundle (offline)"
    )
    opts.add_argument("--expect-sha256", metavar="HEX", help="the bundle's published sha256")
    opts.add_argument(
        "--extra",
        action="append",
        default=[],
        dest="extras",
        metavar="NAME",
        help="with `-r pylock.toml`: also install this extra (PEP 751; repeatable)",
    )
    opts.add_argument(
        "--group",
        action="append",
        default=[],
        dest="groups",
        metavar="NAME",
        help="with `-r pylock.toml`: also install this dependency group (repeatable)",
    )
    options.output_group(install)
    install.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    install_options = options.install_options(args)
    reporter = options.reporter(args)
    started = time.perf_counter()
    outcome = pipeline.install(install_options, reporter)
    if args.report:
        write_json(installation_report(outcome), args.report)
    lines = plan_lines(outcome.changes)
    if outcome.result is None and lines:
        reporter.info("Would change:")
    for line in capped(lines, everything=args.verbose > 0):
        reporter.info(line)
    reporter.success(summary(outcome, time.perf_counter() - started))
    return ExitCode.OK
