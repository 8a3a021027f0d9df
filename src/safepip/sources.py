"""Where packages come from: indexes, find-links and trusted hosts, the host policy they imply.

The command line, pip's configuration and the requirements files each name sources; this module
merges them in that precedence, derives the `HostPolicy` that every request is checked against,
and reads the requirements files themselves (remote ones over HTTPS, policy-checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safepip import pipconfig
from safepip.credentials import CredentialStore, KeyringProvider
from safepip.net import NetConfig, Session
from safepip.pipconfig import PipConfig
from safepip.policy import HostPolicy
from safepip.requirements import ParsedRequirements, parse_requirements
from safepip.urls import host_port_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from safepip.target import Target


PYPI_SIMPLE_URL = "https://pypi.org/simple"
"""pip's default index (pip's `--index-url` default); safepip follows pip."""

PYPI_FILE_HOST = "files.pythonhosted.org"
"""The host that serves the default index's files (it differs from the index's host)."""


def default_index_url() -> str:
    """pip's default index; safepip follows pip."""
    return PYPI_SIMPLE_URL


def default_index_file_host() -> str:
    """The host that serves the default index's files (it differs from the index's host)."""
    return PYPI_FILE_HOST


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceOptions:
    """Where packages may come from, as given on the command line."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    no_index: bool = False
    find_links: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    client_cert: str | None = None
    timeout: float | None = None
    retries: int | None = None
    proxy: str | None = None
    isolated: bool = False
    keyring_provider: str | None = None
    """pip's `--keyring-provider` (`auto`, `import`, `subprocess`, `disabled`); None: pip's
    configuration, else `auto`."""
    no_input: bool = False
    """pip's `--no-input`: with `auto`, the keyring is not asked."""
    offline: bool = False
    """No index, no find-links, no allowed host: every file must come from a local path
    (installs from a bundle)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Sources:
    index_urls: tuple[str, ...]
    find_links: tuple[str, ...]
    policy: HostPolicy
    trusted_hosts: tuple[str, ...]
    login_urls: tuple[str, ...] = ()
    """Every index and find-links URL named anywhere (command line, pip's configuration,
    the requirements files), with any credentials: logins for a host and path come from them
    even where a file's `--index-url` replaced the URL that carried them."""


def load_pip_config(sources: SourceOptions, target: Target | None) -> PipConfig | None:
    """pip's configuration for `target` (its site config file included); None with `--isolated`."""
    if sources.isolated:
        return None
    return pipconfig.load_pip_config(isolated=False, site_prefix=target.prefix if target else None)


def net_config(
    sources: SourceOptions,
    policy: HostPolicy,
    pip_config: PipConfig | None,
    *,
    login_urls: Sequence[str] = (),
) -> NetConfig:
    """TLS, timeouts, retries, proxy and credentials: the command line, else pip's
    configuration. Logins come from the command line's and the configuration's index URLs,
    from `login_urls` (`Sources.login_urls`), netrc and the keyring (`credentials.py`)."""
    config = pip_config or PipConfig()
    timeout = sources.timeout or config.timeout or 15.0
    retries = sources.retries if sources.retries is not None else config.retries
    provider = sources.keyring_provider or config.keyring_provider or "auto"
    credentials = CredentialStore(
        index_urls=[*_configured_urls(sources, config), *login_urls],
        keyring_provider=KeyringProvider(provider),
        no_input=sources.no_input or config.no_input,
    )
    return NetConfig(
        policy=policy,
        cert=sources.cert or config.cert,
        client_cert=sources.client_cert or config.client_cert,
        timeout=float(timeout),
        retries=3 if retries is None else int(retries),
        proxy=sources.proxy or config.proxy,
        credentials=credentials,
    )


def _configured_urls(options: SourceOptions, config: PipConfig) -> list[str]:
    urls = [
        *([options.index_url] if options.index_url else []),
        *options.extra_index_urls,
        *options.find_links,
        *([config.index_url] if config.index_url else []),
        *config.extra_index_urls,
        *config.find_links,
    ]
    return [u for u in urls if "://" in u]


def parse_inputs(
    *,
    requirement_files: Sequence[str] = (),
    constraint_files: Sequence[str] = (),
    requirements: Sequence[str] = (),
    sources: SourceOptions,
    pip_config: PipConfig | None,
) -> ParsedRequirements:
    """Read every requirements and constraints file (remote ones over HTTPS, policy-checked).

    The caller shows `ParsedRequirements.warnings`.
    """
    remote = [f for f in (*requirement_files, *constraint_files) if "://" in f]
    constraints = list(constraint_files)
    configured = pip_config.constraints if pip_config else ()
    constraints += [c for c in configured if c not in constraints]
    policy = HostPolicy(
        allowed_hosts=frozenset(host_port_of(u) for u in remote if not u.startswith("file:"))
        | frozenset(sources.allow_hosts),
        trusted_hosts=frozenset(sources.trusted_hosts),
    )
    session: Session | None = None

    def fetch(url: str) -> bytes:
        nonlocal session
        if session is None:
            session = Session(net_config(sources, policy, pip_config))
        return session.get(url, purpose="a requirements file").content

    try:
        return parse_requirements(
            files=requirement_files, constraints=constraints, lines=requirements, fetch=fetch
        )
    finally:
        if session is not None:
            session.close()


def decide_sources(
    options: SourceOptions, parsed: ParsedRequirements, pip_config: PipConfig | None
) -> Sources:
    """Indexes, find-links and the host policy: command line, then pip config, then files."""
    if options.offline:
        nowhere = HostPolicy(allowed_hosts=frozenset(), trusted_hosts=frozenset())
        return Sources(index_urls=(), find_links=(), policy=nowhere, trusted_hosts=())
    config = pip_config or PipConfig()
    index = options.index_url or config.index_url or default_index_url()
    extras = [*config.extra_index_urls, *options.extra_index_urls]
    base = [index, *[e for e in extras if e != index]]
    no_index = options.no_index or config.no_index
    index_urls, files_no_index = parsed.apply_index_options(base)
    if no_index or files_no_index:
        index_urls = []
    find_links = [*config.find_links, *options.find_links, *parsed.find_links]
    trusted = [*config.trusted_hosts, *options.trusted_hosts, *parsed.trusted_hosts]
    allowed = {host_port_of(u) for u in [*index_urls, *find_links] if "://" in u}
    allowed |= {h.lower() for h in options.allow_hosts}
    if default_index_url() in index_urls:
        allowed.add(default_index_file_host())
    policy = HostPolicy(allowed_hosts=frozenset(allowed), trusted_hosts=frozenset(trusted))
    named = [o.url for o in parsed.index_options if o.url is not None]
    login_urls = [*_configured_urls(options, config), *named, *index_urls, *find_links]
    return Sources(
        index_urls=tuple(dict.fromkeys(index_urls)),
        find_links=tuple(dict.fromkeys(_abs_link(f) for f in find_links)),
        policy=policy,
        trusted_hosts=tuple(dict.fromkeys(trusted)),
        login_urls=tuple(dict.fromkeys(u for u in login_urls if "://" in u)),
    )


def _abs_link(location: str) -> str:
    if "://" in location:
        return location
    return str(Path(location).expanduser().absolute())
