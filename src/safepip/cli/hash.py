"""`safepip hash`: print the hash of files, in pip's format."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from safepip.cli import options
from safepip.errors import ExitCode, UsageError
from safepip.hashes import ALLOWED_ALGORITHMS

if TYPE_CHECKING:
    import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hasher = subparsers.add_parser(
        "hash",
        help="print the hash of files, in pip's format",
        description="Print each file's digest as a `--hash=ALGORITHM:DIGEST` line for a "
        "requirements file.",
    )
    hasher.add_argument("files", nargs="+", type=Path, metavar="FILE", help="files to hash")
    hasher.add_argument(
        "-a",
        "--algorithm",
        choices=ALLOWED_ALGORITHMS,
        default="sha256",
        help="the hash algorithm (default sha256)",
    )
    options.output_group(hasher)
    hasher.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
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
