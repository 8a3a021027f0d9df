"""`safepip lock` and `safepip freeze`: argument parsers, the lock run and the handlers."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import NormalizedName, canonicalize_name

from safepip.errors import ExitCode, UsageError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from safepip.pipeline import Reporter, SourceOptions
    from safepip.policy import HostPolicy
    from safepip.resolver import Resolution
    from safepip.target import Target


# --- options and the run --------------------------------------------------------------------


def _default_sources() -> SourceOptions:
    from safepip.pipeline import SourceOptions

    return SourceOptions()


@dataclass(frozen=True, kw_only=True, slots=True)
class LockOptions:
    """Everything `safepip lock` was asked to do."""

    sources: tuple[str, ...] = ()
    """Requirements files and `pyproject.toml` files."""
    requirements: tuple[str, ...] = ()
    """Requirements given on the command line."""
    constraint_files: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    output: str
    """A path, or `-` for stdout."""
    upgrade: bool = False
    upgrade_packages: tuple[str, ...] = ()
    pre: bool = False
    python: str | None = None
    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    index: SourceOptions = field(default_factory=_default_sources)
    cache_dir: Path | None = None
    no_cache: bool = False
    header: bool = True
    annotate: bool = True
    command: str = "safepip lock"
    """The command line shown in the header (credentials removed)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LockOutcome:
    resolution: Resolution
    target: Target
    text: str
    """The lock as written."""
    kept: tuple[str, ...] = ()
    """Pins from the existing lock that were kept."""


def lock_target(options: LockOptions) -> Target:
    """The environment to lock for: a synthetic one for `--python-version`/`--platform`, else
    `--python`, else the active virtual environment or `./.venv`, else safepip's interpreter."""
    from safepip import target as target_mod
    from safepip.target import synthetic_target

    if options.python_version or options.platforms:
        if options.python is not None:
            raise UsageError(
                "`--python` cannot be combined with `--python-version` or `--platform`",
                hint="use `--python` to lock for an interpreter you have, or the other two to "
                "lock for another machine",
            )
        version = options.python_version or "{}.{}".format(*sys.version_info[:2])
        return synthetic_target(version, options.platforms)
    try:
        python = target_mod.find_python(options.python, system=False)
    except target_mod.TargetError:
        python = target_mod.current_python()
    return target_mod.probe(python)


def _pip_config(options: LockOptions, target: Target) -> object | None:
    from safepip.pipeline import load_pip_config

    try:
        return load_pip_config(options.index, None if target.kind == "synthetic" else target)
    except ImportError:  # pragma: no cover - until pip configuration support lands
        return None


def _files_host(policy: HostPolicy) -> HostPolicy:
    """pypi.org serves its files from files.pythonhosted.org; that host comes with the index."""
    # TODO(issue 3): move into `pipeline.decide_sources` so that install gets it as well.
    if "pypi.org" in policy.allowed_hosts:
        return policy.with_hosts("files.pythonhosted.org")
    return policy


def run_lock(options: LockOptions, reporter: Reporter) -> LockOutcome:
    """Parse the inputs, resolve them for the target, hash every file and render the lock.

    Nothing is written here; the caller writes `LockOutcome.text`.
    """
    from safepip import lock as lock_mod
    from safepip import pipeline
    from safepip.fetch import Cache
    from safepip.index import IndexClient
    from safepip.net import NetConfig, Session
    from safepip.resolver import resolve_requirements

    target = lock_target(options)
    reporter.detail(f"Locking for Python {target.python_version} ({target.tags[0]})")
    pip_config = _pip_config(options, target)
    files = [s for s in options.sources if Path(s).name != "pyproject.toml"]
    pyprojects = [Path(s) for s in options.sources if Path(s).name == "pyproject.toml"]
    if (options.extras or options.groups) and not pyprojects:
        raise UsageError("`--extra` and `--group` need a `pyproject.toml` input")
    parsed = pipeline.parse_inputs(
        pipeline.InstallOptions(
            requirement_files=tuple(files),
            constraint_files=options.constraint_files,
            requirements=options.requirements,
            sources=options.index,
        ),
        pip_config,
        reporter,
    )
    requirements = list(parsed.requirements)
    for path in pyprojects:
        requirements += lock_mod.pyproject_requirements(
            path, extras=options.extras, groups=options.groups
        )
    if not requirements:
        raise UsageError(
            "Nothing to lock: the inputs name no requirements",
            hint="give a requirements file, a `pyproject.toml`, or requirements as arguments",
        )
    sources = pipeline.decide_sources(options.index, parsed, pip_config)
    for host in sources.trusted_hosts:
        reporter.warn(f"`--trusted-host {host}`: plain HTTP is allowed for `{host}`")
    preferred: dict[NormalizedName, str] = {}
    if options.output != "-" and not options.upgrade:
        preferred = lock_mod.read_existing_pins(Path(options.output))
        for name in options.upgrade_packages:
            preferred.pop(canonicalize_name(name.split("==", 1)[0].strip()), None)
    config = pipeline._net_config(options.index, _files_host(sources.policy), pip_config)
    assert isinstance(config, NetConfig)
    cache_options = pipeline.InstallOptions(cache_dir=options.cache_dir, no_cache=options.no_cache)
    with Session(config) as session, pipeline._TempCache(cache_options) as cache:
        assert isinstance(cache, Cache)
        index = IndexClient(
            session,
            index_urls=sources.index_urls,
            find_links=sources.find_links,
            cache_dir=cache.root / "http",
        )
        resolution = resolve_requirements(
            requirements,
            parsed.constraints,
            index=index,
            target=target,
            pre=options.pre or parsed.pre,
            preferred=preferred,
            allow_unhashed=True,
            session=session,
            cache=cache,
        )
        for warning in (*index.find_links_warnings, *resolution.warnings):
            reporter.warn(warning)
        for note in resolution.notes:
            reporter.detail(note)
        locked_files = lock_mod.lock_files(resolution, session=session, cache=cache)
    if lock_mod.lock_format(options.output) is lock_mod.LockFormat.PYLOCK:
        text = lock_mod.render_pylock(resolution, locked_files)
    else:
        text = lock_mod.render_requirements(
            resolution,
            locked_files,
            command=options.command if options.header else None,
            python_version="{}.{}".format(*target.version[:2]),
            index_urls=sources.index_urls,
            default_index=pipeline.default_index_url(),
            annotate=options.annotate,
        )
    kept = tuple(
        p.spec for p in resolution.pins if preferred.get(p.name) == p.version and preferred
    )
    return LockOutcome(resolution=resolution, target=target, text=text, kept=kept)


def write_output(text: str, output: str) -> None:
    """Write `text` to `output` atomically (a temporary file renamed into place), or stdout."""
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output)
    parent = path.absolute().parent
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the command line -----------------------------------------------------------------------


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lock` and `freeze` to the root parser's subcommands."""
    from safepip.cli import _cache, _sources

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
    lock.add_argument(
        "-c", "--constraint", action="append", default=[], dest="constraint_files", metavar="FILE"
    )
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
    lock.add_argument("--pre", action="store_true", help="consider pre-releases")
    lock.add_argument("-p", "--python", help="lock for this interpreter or virtual environment")
    lock.add_argument("--python-version", metavar="X.Y", help="lock for another Python version")
    lock.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="TAG",
        help="lock for another platform, e.g. `manylinux_2_28_x86_64` (repeatable)",
    )
    lock.add_argument("--no-header", action="store_true", help="omit the comment header")
    lock.add_argument("--no-annotate", action="store_true", help="omit the `# via` comments")
    _sources(lock)
    _cache(lock)
    lock.set_defaults(handler=cmd_lock)

    freeze = subparsers.add_parser(
        "freeze",
        help="print the environment as a hash-pinned requirements file",
        description=(
            "Print the packages installed in the target environment as pinned requirements "
            "with hashes, usable as a lock. Packages without a known hash are commented out "
            "and reported on stderr."
        ),
    )
    freeze.add_argument(
        "-p",
        "--python",
        help="interpreter or virtual environment (default: `$VIRTUAL_ENV`, then `./.venv`)",
    )
    freeze.add_argument("--system", action="store_true", help="the system interpreter")
    freeze.add_argument(
        "--all", action="store_true", help="include pip, setuptools, wheel and distribute"
    )
    _sources(freeze)
    freeze.set_defaults(handler=cmd_freeze)


def _reporter(args: argparse.Namespace) -> Reporter:
    from safepip.cli import _reporter as reporter

    return reporter(args)


def _source_options(args: argparse.Namespace) -> SourceOptions:
    from safepip.cli import source_options

    return source_options(args)


def _looks_like_file(text: str) -> bool:
    if Path(text).exists() or "://" in text:
        return True
    return text.endswith((".in", ".txt", ".toml"))


def lock_command(args: argparse.Namespace, files: Sequence[str], output: str) -> str:
    """The command that regenerates the lock, for its header (URLs without credentials)."""
    import shlex

    from safepip.urls import without_credentials

    parts = ["safepip", "lock", *files, *args.requirements_text]
    parts += ["-o", output]
    for flag, values in (
        ("-c", args.constraint_files),
        ("--extra", args.extra),
        ("--group", args.group),
        ("--platform", args.platform),
        ("--extra-index-url", [without_credentials(u) for u in args.extra_index_url]),
        ("-f", args.find_links),
    ):
        for value in values:
            parts += [flag, value]
    if args.pre:
        parts.append("--pre")
    if args.python_version:
        parts += ["--python-version", args.python_version]
    if args.index_url:
        parts += ["-i", without_credentials(args.index_url)]
    if args.no_index:
        parts.append("--no-index")
    return shlex.join(parts)


def cmd_lock(args: argparse.Namespace) -> int:
    from safepip.report import plural

    reporter = _reporter(args)
    started = time.perf_counter()
    files = [i for i in args.inputs if _looks_like_file(i)]
    args.requirements_text = [i for i in args.inputs if not _looks_like_file(i)]
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
    options = LockOptions(
        sources=tuple(files),
        requirements=tuple(args.requirements_text),
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
        index=_source_options(args),
        cache_dir=args.cache_dir,
        no_cache=args.no_cache,
        header=not args.no_header,
        annotate=not args.no_annotate,
        command=lock_command(args, files, output),
    )
    outcome = run_lock(options, reporter)
    write_output(outcome.text, output)
    where = "stdout" if output == "-" else f"`{output}`"
    seconds = time.perf_counter() - started
    reporter.info(
        f"Locked {plural(len(outcome.resolution.pins), 'package')} for Python "
        f"{outcome.target.python_version} to {where} in {seconds:.1f} s"
    )
    return ExitCode.OK


def cmd_freeze(args: argparse.Namespace) -> int:
    from safepip import pipeline
    from safepip.index import IndexClient
    from safepip.lock import freeze_environment, render_freeze
    from safepip.net import NetConfig, Session
    from safepip.requirements import ParsedRequirements
    from safepip.target import find_python, probe

    reporter = _reporter(args)
    target = probe(find_python(args.python, system=args.system))
    sources_options = _source_options(args)
    try:
        pip_config = pipeline.load_pip_config(sources_options, target)
    except ImportError:  # pragma: no cover - until pip configuration support lands
        pip_config = None
    sources = pipeline.decide_sources(sources_options, ParsedRequirements(), pip_config)
    config = pipeline._net_config(sources_options, _files_host(sources.policy), pip_config)
    assert isinstance(config, NetConfig)
    with Session(config) as session:
        index = (
            IndexClient(session, index_urls=sources.index_urls, find_links=sources.find_links)
            if sources.index_urls or sources.find_links
            else None
        )
        packages = freeze_environment(target, index, include_all=args.all)
    sys.stdout.write(render_freeze(packages))
    sys.stdout.flush()
    for pkg in packages:
        if pkg.problem:
            reporter.warn(f"`{pkg.name}=={pkg.version}` has no hash: {pkg.problem}")
    return ExitCode.OK
