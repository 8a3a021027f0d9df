"""`safepip bundle`: write a self-verifying `.safepip` bundle; `safepip bundle verify FILE`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import parse_wheel_filename

from safepip import pipeline
from safepip.cli import options
from safepip.errors import ExitCode, UsageError
from safepip.report import plural

if TYPE_CHECKING:
    import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bundle",
        help="write a self-verifying bundle of a lock's wheels for offline installs",
        usage="safepip bundle -r LOCK -o FILE [options]\n       safepip bundle verify FILE "
        "[--expect-sha256 HEX]",
        description=(
            "Write one deterministic file with a lock's verified wheels, the advisory data and "
            "a manifest of sizes and hashes, for installs with no network "
            "(`safepip install --bundle FILE`)."
        ),
    )
    group = parser.add_argument_group("lock")
    group.add_argument(
        "-r",
        "--requirement",
        action="append",
        default=[],
        metavar="LOCK",
        dest="req_files",
        help="a hash-pinned requirements file or `pylock.toml`",
    )
    options.constraint_option(group)
    parser.set_defaults(
        requirements=[], require_hashes=False, no_deps=False, allow_unhashed=False, action=None
    )
    options.sources_group(parser)
    group = parser.add_argument_group("bundle")
    group.add_argument("-o", "--output", type=Path, metavar="FILE", help="the bundle to write")
    group.add_argument(
        "-p",
        "--python",
        action="append",
        default=[],
        help="an interpreter or virtual environment to bundle for (repeatable)",
    )
    group.add_argument(
        "--python-version",
        action="append",
        default=[],
        metavar="X.Y",
        help="another machine's Python (repeatable; every version with every `--platform`)",
    )
    group.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="TAG",
        help="another machine's platform tag, e.g. `manylinux_2_28_x86_64` (repeatable)",
    )
    group.add_argument(
        "--print-digest", action="store_true", help="print the bundle's sha256 on stdout"
    )
    options.cache_group(parser)
    options.audit_group(parser)
    options.output_group(parser)
    parser.set_defaults(handler=run)
    actions = parser.add_subparsers(dest="action", metavar="verify")
    verify_parser = actions.add_parser(
        "verify",
        help="check a bundle without installing it",
        description="Check a bundle as `install --bundle` does, then list what it holds.",
    )
    verify_parser.add_argument("file", type=Path, metavar="FILE", help="the `.safepip` bundle")
    verify_parser.add_argument(
        "--expect-sha256", metavar="HEX", help="the digest the bundle must have"
    )
    options.output_group(verify_parser)
    verify_parser.set_defaults(handler=verify)


def run(args: argparse.Namespace) -> int:
    if not args.req_files or args.output is None:
        raise UsageError(
            "`safepip bundle` needs a lock and an output file",
            hint="for example `safepip bundle -r requirements.txt -o app.safepip`",
        )
    reporter = options.reporter(args)
    outcome = pipeline.bundle(
        pipeline.BundleOptions(
            install=options.install_options(args),
            output=args.output,
            pythons=tuple(args.python),
            python_versions=tuple(args.python_version),
            platforms=tuple(args.platform),
        ),
        reporter,
    )
    targets = ", ".join(f"`{t.describe()}`" for t in outcome.targets)
    reporter.success(
        f"Wrote `{outcome.path}`: {plural(outcome.packages, 'package')} "
        f"({plural(len(outcome.wheels), 'wheel')}) for {targets}, advisory data of "
        f"{outcome.advisory_date or 'unknown date'}; sha256 {outcome.sha256}"
    )
    if args.print_digest:
        sys.stdout.write(f"{outcome.sha256}\n")
    return ExitCode.OK


def verify(args: argparse.Namespace) -> int:
    reporter = options.reporter(args)
    with tempfile.TemporaryDirectory(prefix="safepip-bundle-") as tmp:
        opened = pipeline.open_bundle(args.file, Path(tmp), args.expect_sha256, reporter)
        manifest = opened.manifest
        for target in manifest.targets:
            reporter.info(f"Made for {target.describe()}")
        specs = sorted({"{}=={}".format(*parse_wheel_filename(n)[:2]) for n in opened.wheels})
        reporter.info(f"Holds {', '.join(specs)}")
        reporter.info(
            f"Advisory data of {manifest.advisory_date or 'unknown date'} "
            f"({manifest.advisory_source}); made by {manifest.created_by}"
        )
    reporter.success(f"Bundle `{args.file}` is intact")
    return ExitCode.OK
