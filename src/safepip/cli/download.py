"""`safepip download`: fetch and verify wheels into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safepip import pipeline
from safepip.cli import options
from safepip.errors import ExitCode
from safepip.report import plural

if TYPE_CHECKING:
    import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    download = subparsers.add_parser(
        "download",
        help="fetch and verify wheels into a folder",
        description=(
            "Fetch, hash-check, validate and audit the wheels an install would use, then copy "
            "them into a folder usable as `--find-links` by safepip and pip."
        ),
    )
    options.requirements_group(download)
    options.sources_group(download)
    download.add_argument("-d", "--dest", type=Path, required=True, help="destination folder")
    download.add_argument("--python", "-p", dest="python", help="interpreter whose tags to use")
    options.cache_group(download)
    options.audit_group(download)
    options.output_group(download)
    download.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    install_options = options.install_options(args)
    reporter = options.reporter(args)
    outcome = pipeline.download(install_options, args.dest, reporter)
    for path in outcome.files:
        reporter.detail(f"Saved {path}")
    reporter.success(f"Saved {plural(len(outcome.files), 'file')} to {args.dest}")
    return ExitCode.OK
