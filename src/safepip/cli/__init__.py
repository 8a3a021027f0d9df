"""The command line: parse arguments, run one command, render errors, return an exit code.

Each command is a module of this package with `add_parser(subparsers)`; its handler parses,
calls one service and renders the outcome. Shared option groups live in `cli/options.py`.
Command modules never import each other.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from typing import TYPE_CHECKING

from safepip import __version__, gcstate, signals
from safepip.cli import options
from safepip.errors import SafepipError
from safepip.urls import redact_text

if TYPE_CHECKING:
    from collections.abc import Sequence

COMMANDS = (
    "install",
    "sync",
    "download",
    "bundle",
    "verify",
    "hash",
    "lock",
    "freeze",
    "audit",
    "db",
)
"""In the order `safepip --help` lists them; each is the module `safepip.cli.<command>`."""


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
    for command in COMMANDS if only is None else (only,):
        importlib.import_module(f"safepip.cli.{command}").add_parser(sub)
    return parser


_YOUNG = 5000
"""Allocations between the cyclic collector's passes over young objects while a command runs."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run safepip with `argv`; return the exit code (see README for their meaning)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    # The command's modules (tens of thousands of objects, all alive until the end) are
    # imported with the cyclic collector off, then moved out of its view for the run: its
    # passes over them took about 15 ms of a lock of `medium.in` (six generation-1 passes,
    # each walking everything imported so far) and free nothing. The run's young objects are
    # collected every `_YOUNG` allocations instead of 700 (Python 3.11's default; 3.13 takes
    # 2,000): a lock of `medium.in` made 44 such passes and 4 older ones, 11 ms; now 17 and 2,
    # 5 ms. All given back at the end, so a caller in the same process finds the collector
    # as it was.
    uncollected = gc.isenabled() and gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    if uncollected:
        gc.disable()
    try:
        parser = build_parser(command)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0)
        if uncollected:
            gc.freeze()
            gcstate.set_frozen_by_command(True)
            gc.set_threshold(max(thresholds[0], _YOUNG), *thresholds[1:])
            gc.enable()
        return _run(args)
    finally:
        if uncollected:
            gcstate.set_frozen_by_command(False)
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            gc.enable()


def _run(args: argparse.Namespace) -> int:
    signals.command_started()
    try:
        with signals.handled():
            return int(args.handler(args))
    except SafepipError as exc:
        reporter = options.reporter(args)
        reporter.error(redact_text(str(exc)), redact_text(exc.hint) if exc.hint else None)
        return int(exc.exit_code)
    except KeyboardInterrupt as exc:
        return signals.report_interrupt(exc)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
