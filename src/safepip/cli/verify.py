"""`safepip verify`: check an installed environment against its RECORD files (and a lock)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safepip.cli import options
from safepip.envlock import hold
from safepip.errors import ExitCode, SafepipError, UsageError
from safepip.journal import recover
from safepip.plan import merge_requirements
from safepip.report import plural
from safepip.requirements import parse_requirements
from safepip.target import find_python, installed_distributions, probe
from safepip.verify import VerificationFailed, verify_environment

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from packaging.utils import NormalizedName

    from safepip.target import Target


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = subparsers.add_parser(
        "verify",
        help="check an installed environment against RECORD files (and a lock)",
        description=(
            "Hash every file listed in each installed distribution's RECORD and report files "
            "that were modified or removed (exit 3); with `-r LOCK`, also check that exactly "
            "the locked packages are installed from files whose hash the lock pins."
        ),
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
    options.output_group(verify)
    verify.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reporter = options.reporter(args)
    target = probe(find_python(args.python, system=False))
    lock = _lock_pins(args.req_files, target) if args.req_files else None
    with hold(target, on_wait=reporter.warn):
        recover(target, on_note=reporter.warn)
        dists = installed_distributions(target, damaged=True)
        report = verify_environment(target, dists, lock=lock)
    for note in report.unverifiable:
        reporter.warn(f"`{note.package}`: {note.note}")
    if not report.ok:
        raise VerificationFailed(report)
    if args.strict and report.unverifiable:
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
    parsed = parse_requirements(files=files)
    wanted, _, _ = merge_requirements(parsed.requirements, (), target.markers)
    pins: dict[NormalizedName, tuple[str, frozenset[str]]] = {}
    for name, w in wanted.items():
        version = w.pinned_version
        if version is None:
            raise UsageError(
                f"`{w.display_name}{w.specifier}` is not pinned ({w.where})",
                hint="verify against a hash-pinned lock",
            )
        pins[name] = (version, frozenset(w.hashes or ()))
    return pins
