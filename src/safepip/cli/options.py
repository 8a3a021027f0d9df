"""Option groups shared by several commands, and what they turn into: the reporter, the
source and install options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from safepip.errors import UsageError
from safepip.linking import DEFAULT_LINK_MODE, LinkMode
from safepip.report import ConsoleReporter

if TYPE_CHECKING:
    from rich.console import Console

    from safepip.pipeline import InstallOptions
    from safepip.settings import Settings
    from safepip.sources import SourceOptions


def output_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="count", default=0, help="less output (repeatable)")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    group.add_argument("--no-color", action="store_true", help="no colour (also `NO_COLOR`)")


def sources_group(
    parser: argparse.ArgumentParser,
    *,
    title: str = "package sources and trust",
) -> None:
    """pip's source and trust options; `-f` is `--find-links` in every command (pip's meaning)."""
    group = parser.add_argument_group(title)
    group.add_argument("-i", "--index-url", help="base URL of the package index (PEP 503/691)")
    group.add_argument(
        "--extra-index-url", action="append", default=[], help="more indexes, consulted in order"
    )
    group.add_argument("--no-index", action="store_true", help="use only `--find-links`")
    group.add_argument(
        "-f",
        "--find-links",
        action="append",
        default=[],
        help="a folder or page of files",
    )
    group.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also accept files from HOST (artifact URLs on other hosts are refused)",
    )
    group.add_argument(
        "--trusted-host",
        action="append",
        default=[],
        metavar="HOST",
        help="allow plain HTTP for HOST (pip's meaning; printed as a warning)",
    )
    group.add_argument("--cert", help="a CA bundle added to the system trust store")
    group.add_argument("--client-cert", help="a client certificate (PEM with key)")
    group.add_argument("--timeout", type=float, help="network timeout in seconds (default 15)")
    group.add_argument("--retries", type=int, help="retries on transient errors (default 3)")
    group.add_argument("--proxy", help="proxy URL")
    group.add_argument(
        "--keyring-provider",
        choices=("auto", "disabled", "import", "subprocess"),
        help="ask a keyring for index credentials after a 401, as pip does (default: `auto`, "
        "off under `--no-input`; also `PIP_KEYRING_PROVIDER`)",
    )
    group.add_argument(
        "--no-input",
        action="store_true",
        help="never ask anything; with `--keyring-provider auto` the keyring is not asked "
        "(pip's meaning; also `PIP_NO_INPUT`)",
    )
    group.add_argument(
        "--isolated",
        action="store_true",
        help="ignore pip's and safepip's configuration files and PIP_* variables",
    )


def target_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target environment")
    group.add_argument(
        "-p",
        "--python",
        help="interpreter or virtual environment to install into "
        "(default: `$VIRTUAL_ENV`, then `./.venv`)",
    )
    group.add_argument("--system", action="store_true", help="install into the system interpreter")
    group.add_argument(
        "--break-system-packages",
        action="store_true",
        help="install into an externally managed interpreter (PEP 668) anyway",
    )
    group.add_argument("-t", "--target", type=Path, help="install packages into this folder")
    group.add_argument("--prefix", type=Path, help="install under this prefix")


def requirements_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("requirements")
    group.add_argument("requirements", nargs="*", metavar="REQUIREMENT", help="`name==version` …")
    group.add_argument(
        "-r",
        "--requirement",
        action="append",
        default=[],
        metavar="FILE",
        dest="req_files",
        help="a requirements file (pip's format) or a `pylock.toml`; path or URL (repeatable)",
    )
    constraint_option(group)
    group.add_argument(
        "--require-hashes", action="store_true", help="require a hash for every requirement"
    )
    group.add_argument(
        "--pre",
        action="store_true",
        help="consider pre-releases of every package when resolving (without it, only where "
        "a specifier names one or no final release fits, as PEP 440 says)",
    )
    group.add_argument("--no-deps", action="store_true", help="do not check dependencies")
    group.add_argument(
        "--allow-unhashed",
        action="store_true",
        help="outside hash mode, accept index files that have no published hash",
    )
    group.add_argument(
        "--allow-build",
        action="append",
        default=[],
        metavar="NAME",
        help="build NAME from its pinned sdist when no wheel fits (repeatable; `:all:` is refused)",
    )
    group.add_argument(
        "--build-constraint",
        type=Path,
        metavar="FILE",
        help="build dependencies pinned with `==` and hashes (`safepip lock --build` writes one)",
    )
    # Accepted for pip compatibility; safepip installs wheels only and never upgrades past a pin.
    for flag in ("--only-binary", "--no-binary"):
        group.add_argument(flag, action="append", default=[], help=argparse.SUPPRESS)
    for flag in ("-U", "--upgrade", "--prefer-binary", "--disable-pip-version-check"):
        group.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    group.add_argument("--progress-bar", help=argparse.SUPPRESS)


def constraint_option(group: argparse._ActionsContainer) -> None:
    """`-c/--constraint FILE`, pip's meaning (`install`, `download`, `sync`, `lock`, `bundle`)."""
    group.add_argument(
        "-c",
        "--constraint",
        action="append",
        default=[],
        metavar="FILE",
        dest="constraint_files",
        help="limit the versions of packages that are needed, without requiring them "
        "(pip's constraints file; repeatable)",
    )


def cache_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cache")
    group.add_argument("--cache-dir", type=Path, help="cache folder (also `SAFEPIP_CACHE_DIR`)")
    group.add_argument(
        "--no-cache", "--no-cache-dir", action="store_true", help="use a throwaway cache"
    )


def audit_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("vulnerability audit")
    group.add_argument(
        "--no-audit", action="store_true", help="skip the vulnerability check (said loudly)"
    )
    group.add_argument(
        "--ignore-vuln",
        action="append",
        default=[],
        metavar="ID",
        help="accept this advisory (id or alias, e.g. a CVE) for this run (repeatable)",
    )
    group.add_argument("--db", type=Path, help="an OSV zip or folder to audit against")
    group.add_argument(
        "--audit-source",
        choices=("local", "osv"),
        default="local",
        help="the offline advisory database (`local`, the default) or the OSV API (`osv`)",
    )
    group.add_argument("--osv-url", help="base URL of the OSV API")
    group.add_argument("--refresh", action="store_true", help="update the database first")


def reporter(args: argparse.Namespace) -> ConsoleReporter:
    """The console reporter for the output options (`-q`, `-v`, `--no-color`)."""
    verbosity = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    color = False if getattr(args, "no_color", False) else None
    return ConsoleReporter(verbosity=verbosity, color=color)


def console(args: argparse.Namespace) -> Console:
    """A rich console on stderr (the audit's tables), honouring `--no-color`."""
    from rich.console import Console

    return Console(
        stderr=True,
        no_color=True if getattr(args, "no_color", False) else None,
        highlight=False,
    )


def settings(args: argparse.Namespace) -> Settings:
    """safepip's settings files (none with `--isolated`)."""
    # Imported here: `hash` and `verify` never read settings (about 5-10 ms of
    # start-up, `python -X importtime`).
    from safepip.settings import load_settings

    return load_settings(isolated=bool(getattr(args, "isolated", False)))


def source_options(args: argparse.Namespace) -> SourceOptions:
    """The options of the `package sources and trust` group (`sources_group`) as one value."""
    # Imported here, not at the top: `hash`, `verify`, `audit` and `db` never load the sources
    # and the network stack (about 75 ms of start-up, `python -X importtime`).
    from safepip.sources import SourceOptions

    return SourceOptions(
        index_url=args.index_url,
        extra_index_urls=tuple(args.extra_index_url),
        no_index=args.no_index,
        find_links=tuple(args.find_links),
        allow_hosts=tuple(args.allow_host),
        trusted_hosts=tuple(args.trusted_host),
        cert=args.cert,
        client_cert=args.client_cert,
        timeout=args.timeout,
        retries=args.retries,
        proxy=args.proxy,
        isolated=args.isolated,
        keyring_provider=args.keyring_provider,
        no_input=bool(getattr(args, "no_input", False)),
    )


def install_options(args: argparse.Namespace) -> InstallOptions:
    """`install` and `download`: requirements, sources, target, cache and audit options."""
    # Imported here: every command imports this module, and the pipeline costs the others
    # about 250 ms of start-up (`python -X importtime`).
    from safepip.pipeline import AuditChoice, InstallOptions, TargetOptions
    from safepip.settings import allow_build_names

    try:
        allow_build = allow_build_names(getattr(args, "allow_build", ()))
    except ValueError as exc:
        raise UsageError(f"`--allow-build`: {exc}") from None
    bundle = getattr(args, "bundle", None)
    if not args.req_files and not args.requirements and bundle is None:
        raise UsageError(
            "Nothing to install: give requirements or `-r FILE`",
            hint="for example `safepip install -r requirements.txt`",
        )
    return InstallOptions(
        requirement_files=tuple(args.req_files),
        constraint_files=tuple(args.constraint_files),
        requirements=tuple(args.requirements),
        sources=source_options(args),
        target=TargetOptions(
            python=getattr(args, "python", None),
            system=getattr(args, "system", False),
            break_system_packages=getattr(args, "break_system_packages", False),
            target_dir=getattr(args, "target", None),
            prefix=getattr(args, "prefix", None),
        ),
        require_hashes=args.require_hashes,
        no_deps=args.no_deps,
        allow_unhashed=args.allow_unhashed,
        pre=getattr(args, "pre", False),
        cache_dir=args.cache_dir,
        no_cache=args.no_cache,
        dry_run=getattr(args, "dry_run", False),
        compile=getattr(args, "compile", False) and not getattr(args, "no_compile", False),
        reinstall=getattr(args, "reinstall", False),
        link_mode=LinkMode(getattr(args, "link_mode", DEFAULT_LINK_MODE.value)),
        audit=AuditChoice(
            enabled=not args.no_audit,
            ignore_vulns=tuple(args.ignore_vuln),
            db=args.db,
            source=args.audit_source,
            osv_url=args.osv_url,
            refresh=args.refresh,
        ),
        sync=getattr(args, "sync", False),
        extras=tuple(getattr(args, "extras", ())),
        groups=tuple(getattr(args, "groups", ())),
        bundle=bundle,
        expect_sha256=getattr(args, "expect_sha256", None),
        allow_build=allow_build,
        build_constraint=getattr(args, "build_constraint", None),
    )
