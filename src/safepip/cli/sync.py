"""`safepip sync`: make an environment exactly a lock (install what it pins, remove the rest)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from safepip import pipeline
from safepip.cli import options
from safepip.errors import ExitCode
from safepip.sync import plan_lines, summary

if TYPE_CHECKING:
    import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync = subparsers.add_parser(
        "sync",
        help="make an environment exactly a hash-pinned lock (removes what it does not list)",
        description=(
            "Make the environment exactly the lock: install what it pins (verified and audited "
            "as `install` does) and, in the same transaction, remove every distribution it does "
            "not select (never pip, setuptools, wheel or safepip itself)."
        ),
    )
    options.requirements_group(sync)
    options.sources_group(sync)
    options.target_group(sync)
    options.cache_group(sync)
    options.audit_group(sync)
    opts = sync.add_argument_group("sync")
    opts.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    opts.add_argument(
        "--bundle", type=Path, metavar="FILE", help="sync to a `.safepip` bundle (offline)"
    )
    opts.add_argument("--expect-sha256", metavar="HEX", help="the bundle's published sha256")
    opts.add_argument("--compile", action="store_true", help="write .pyc files (all cores)")
    opts.add_argument(
        "--copy", action="store_true", help="copy files from the cache instead of hard-linking"
    )
    options.output_group(sync)
    sync.set_defaults(handler=run, sync=True)


def run(args: argparse.Namespace) -> int:
    install_options = options.install_options(args)
    reporter = options.reporter(args)
    started = time.perf_counter()
    outcome = pipeline.install(install_options, reporter)
    lines = plan_lines(outcome.changes)
    if outcome.result is None:
        reporter.info("Would change:" if lines else "Nothing to change")
    for line in lines:
        reporter.info(line)
    seconds = time.perf_counter() - started
    reporter.success(summary(outcome.changes, dry_run=outcome.result is None, seconds=seconds))
    return ExitCode.OK
