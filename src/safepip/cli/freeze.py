"""`safepip freeze`: print the environment as a hash-pinned requirements file."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from safepip.cli import options
from safepip.errors import ExitCode
from safepip.index import IndexClient
from safepip.lock import files_host, freeze_environment, render_freeze
from safepip.net import Session
from safepip.requirements import ParsedRequirements
from safepip.sources import decide_sources, load_pip_config, net_config
from safepip.target import find_python, probe

if TYPE_CHECKING:
    import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    options.sources_group(freeze)
    options.output_group(freeze)
    freeze.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reporter = options.reporter(args)
    target = probe(find_python(args.python, system=args.system))
    source_options = options.source_options(args)
    pip_config = load_pip_config(source_options, target)
    sources = decide_sources(source_options, ParsedRequirements(), pip_config)
    config = net_config(
        source_options, files_host(sources.policy), pip_config, login_urls=sources.login_urls
    )
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
