"""`safepip lock`: resolve requirements into a hash-pinned lock."""

from __future__ import annotations

import argparse
import atexit
import gc
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from safepip.cli import options
from safepip.errors import ExitCode, UsageError
from safepip.lock import LockOptions, run_lock, write_lock
from safepip.report import plural
from safepip.settings import allow_build_names
from safepip.urls import without_credentials

if TYPE_CHECKING:
    from collections.abc import Sequence


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lock = subparsers.add_parser(
        "lock",
        help="resolve requirements into a hash-pinned lock",
        description=(
            "Resolve requirements files or a pyproject.toml into a lock: a requirements file "
            "with a hash for every file of each pinned version, or a PEP 751 pylock.toml when "
            "the output is named `pylock.toml` or `pylock.<name>.toml`."
        ),
    )
    lock.add_argument(
        "inputs",
        nargs="*",
        metavar="SRC",
        help="requirements files, `pyproject.toml`, or requirements such as `requests>=2`",
    )
    lock.add_argument("-o", "--output-file", dest="output", metavar="OUT", help="`-` for stdout")
    options.constraint_option(lock)
    lock.add_argument("--extra", action="append", default=[], help="a pyproject.toml extra")
    lock.add_argument(
        "--group", action="append", default=[], help="a PEP 735 dependency group of pyproject.toml"
    )
    lock.add_argument("-U", "--upgrade", action="store_true", help="ignore the pins in OUT")
    lock.add_argument(
        "-P",
        "--upgrade-package",
        action="append",
        default=[],
        metavar="NAME",
        help="release the pin of NAME in OUT (repeatable)",
    )
    lock.add_argument(
        "--pre",
        action="store_true",
        help="consider pre-releases of every package (without it, only where a specifier "
        "names one or no final release fits, as PEP 440 says)",
    )
    lock.add_argument("-p", "--python", help="lock for this interpreter or virtual environment")
    lock.add_argument("--python-version", metavar="X.Y", help="lock for another Python version")
    lock.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="TAG",
        help="lock for another platform, e.g. `manylinux_2_28_x86_64` (repeatable)",
    )
    lock.add_argument(
        "--allow-build",
        action="append",
        default=[],
        metavar="NAME",
        help="lock NAME from its sdist when no wheel fits (repeatable; `:all:` is refused)",
    )
    lock.add_argument(
        "--build-constraint",
        type=Path,
        metavar="FILE",
        help="hash-pinned build dependencies, for sdists that must be built to be locked",
    )
    lock.add_argument(
        "--build",
        action="store_true",
        help="write the lock of the build requirements of the sdists the inputs lock to",
    )
    lock.add_argument("--no-header", action="store_true", help="omit the comment header")
    lock.add_argument("--no-annotate", action="store_true", help="omit the `# via` comments")
    lock.add_argument(
        "--emit-index-url",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the `--index-url`/`--extra-index-url` lines (default; never credentials)",
    )
    options.sources_group(lock)
    options.cache_group(lock)
    options.output_group(lock)
    lock.set_defaults(handler=run)


def _looks_like_file(text: str) -> bool:
    if Path(text).exists() or "://" in text:
        return True
    return text.endswith((".in", ".txt", ".toml"))


def lock_command(
    args: argparse.Namespace, files: Sequence[str], requirements: Sequence[str], output: str
) -> str:
    """The command that regenerates the lock, for its header (URLs without credentials)."""
    parts = ["safepip", "lock", *files, *requirements]
    parts += ["-o", output]
    for flag, values in (
        ("-c", args.constraint_files),
        ("--extra", args.extra),
        ("--group", args.group),
        ("--platform", args.platform),
        ("--extra-index-url", [without_credentials(u) for u in args.extra_index_url]),
        ("-f", [without_credentials(u) for u in args.find_links]),
    ):
        for value in values:
            parts += [flag, value]
    for name in args.allow_build:
        parts += ["--allow-build", name]
    if args.build_constraint:
        parts += ["--build-constraint", str(args.build_constraint)]
    if args.build:
        parts.append("--build")
    if args.pre:
        parts.append("--pre")
    if args.python_version:
        parts += ["--python-version", args.python_version]
    if args.index_url:
        parts += ["-i", without_credentials(args.index_url)]
    if args.no_index:
        parts.append("--no-index")
    if not args.emit_index_url:
        parts.append("--no-emit-index-url")
    return shlex.join(parts)


def _no_last_collection() -> None:
    """A lock's process ends soon after the resolution, holding what the index pages decoded
    to (hundreds of thousands of objects for a large stack): the collector's last pass at
    interpreter exit would walk them all to free nothing that exiting does not free anyway.
    `gc.freeze` at exit takes them out of that pass (once per process, whatever the number of
    runs in it)."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def run(args: argparse.Namespace) -> int:
    _no_last_collection()
    reporter = options.reporter(args)
    started = time.perf_counter()
    files = [i for i in args.inputs if _looks_like_file(i)]
    requirements = [i for i in args.inputs if not _looks_like_file(i)]
    output = args.output
    if output is None:
        if len(files) == 1 and files[0].endswith(".in"):
            output = files[0][: -len(".in")] + ".txt"
        else:
            raise UsageError(
                "Where should the lock go? Give `-o OUT`",
                hint="for example `-o requirements.txt`, `-o pylock.toml`, or `-o -` for stdout",
            )
    for given in files:
        if "://" not in given and not Path(given).is_file():
            raise UsageError(f"Input file `{given}` does not exist")
    try:
        allow_build = allow_build_names(args.allow_build)
    except ValueError as exc:
        raise UsageError(f"`--allow-build`: {exc}") from None
    lock_options = LockOptions(
        sources=tuple(files),
        requirements=tuple(requirements),
        constraint_files=tuple(args.constraint_files),
        extras=tuple(args.extra),
        groups=tuple(args.group),
        output=output,
        upgrade=args.upgrade,
        upgrade_packages=tuple(args.upgrade_package),
        pre=args.pre,
        python=args.python,
        python_version=args.python_version,
        platforms=tuple(args.platform),
        index=options.source_options(args),
        cache_dir=args.cache_dir,
        no_cache=args.no_cache,
        header=not args.no_header,
        annotate=not args.no_annotate,
        emit_index_url=args.emit_index_url,
        command=lock_command(args, files, requirements, output),
        allow_build=allow_build,
        build_constraint=args.build_constraint,
        build=args.build,
    )
    outcome = run_lock(lock_options, reporter)
    write_lock(outcome.text, output)
    where = "stdout" if output == "-" else f"`{output}`"
    seconds = time.perf_counter() - started
    reporter.info(
        f"Locked {plural(len(outcome.resolution.pins), 'package')} for Python "
        f"{outcome.target.python_version} to {where} in {seconds:.1f} s"
    )
    return ExitCode.OK
