"""pip's configuration (pip.conf files and `PIP_*` variables), read the way pip reads it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safepip.errors import ExitCode, SafepipError
from safepip.requirements import update_format_control

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["PipConfig", "PipConfigError", "config_files", "load_pip_config"]

_TRUE = frozenset({"y", "yes", "t", "true", "on", "1"})
_FALSE = frozenset({"n", "no", "f", "false", "off", "0"})
_ENV_IGNORED = frozenset({"version", "help"})
_SECTIONS = ("global", "install")
KEYRING_PROVIDERS = ("auto", "disabled", "import", "subprocess")
"""pip's `--keyring-provider` choices."""
SYSTEM_CONFIG_DIR = Path("/etc")
"""Where pip looks for `pip.conf` after the XDG folders (on Linux and other Unixes)."""


class PipConfigError(SafepipError):
    """A pip configuration file or `PIP_*` variable cannot be used."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, source: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.source = source


@dataclass(frozen=True, kw_only=True, slots=True)
class PipConfig:
    """The settings safepip takes from pip's configuration; None/empty means "not configured"."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    no_index: bool = False
    find_links: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    client_cert: str | None = None
    timeout: float | None = None
    retries: int | None = None
    proxy: str | None = None
    constraints: tuple[str, ...] = ()
    """Constraints files (`constraint`/`PIP_CONSTRAINT`), as written (relative to the current
    directory, like pip)."""
    require_hashes: bool = False
    only_binary: frozenset[str] = frozenset()
    no_binary: frozenset[str] = frozenset()
    pre: bool = False
    prefer_binary: bool = False
    keyring_provider: str | None = None
    """`keyring-provider`: `auto`, `import`, `subprocess` or `disabled` (checked here)."""
    no_input: bool = False
    """`no-input`: with `keyring-provider` `auto`, the keyring is not asked (pip's rule)."""
    break_system_packages: bool = False
    """`break-system-packages` / `PIP_BREAK_SYSTEM_PACKAGES` (PEP 668 override, as pip)."""
    sources: tuple[str, ...] = ()
    """The files and variables that set something, in precedence order (later wins)."""


@dataclass(frozen=True, slots=True)
class _Value:
    key: str
    value: str
    source: str


def _home(environ: Mapping[str, str], home: Path | None) -> Path:
    if home is not None:
        return home
    return Path(environ.get("HOME") or os.path.expanduser("~"))


def _expand(path: str, home: Path) -> str:
    if path == "~" or path.startswith("~/"):
        return str(home) + path[1:]
    return path


def config_files(
    *, environ: Mapping[str, str], site_prefix: Path | None, home: Path | None = None
) -> list[tuple[str, Path]]:
    """pip's configuration files in override order (later wins), as `(kind, path)`, whether or
    not they exist: global, user (the legacy file, then the XDG one), site, `PIP_CONFIG_FILE`.

    No files at all when `PIP_CONFIG_FILE` is `os.devnull`; no user files when it names an
    existing file.
    """
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home_dir = _home(environ, home)
    name = "pip.ini" if sys.platform == "win32" else "pip.conf"
    files: list[tuple[str, Path]] = []
    if sys.platform == "win32":
        program_data = environ.get("PROGRAMDATA", r"C:\ProgramData")
        files.append(("global", Path(program_data) / "pip" / name))
        user = [
            home_dir / "pip" / name,
            Path(environ.get("APPDATA") or home_dir / "AppData" / "Roaming") / "pip" / name,
        ]
    elif sys.platform == "darwin":
        files.append(("global", Path("/Library/Application Support/pip") / name))
        mac_user = home_dir / "Library" / "Application Support" / "pip"
        xdg_home = environ.get("XDG_CONFIG_HOME", "").strip() or str(home_dir / ".config")
        user_dir = mac_user if mac_user.is_dir() else Path(_expand(xdg_home, home_dir)) / "pip"
        user = [home_dir / ".pip" / name, user_dir / name]
    else:
        xdg_dirs = environ.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
        for folder in xdg_dirs.split(os.pathsep):
            files.append(("global", Path(_expand(folder, home_dir)) / "pip" / name))
        files.append(("global", SYSTEM_CONFIG_DIR / name))
        xdg_home = environ.get("XDG_CONFIG_HOME", "").strip() or str(home_dir / ".config")
        user = [home_dir / ".pip" / name, Path(_expand(xdg_home, home_dir)) / "pip" / name]
    if not (env_file and os.path.exists(env_file)):
        files.extend(("user", path) for path in user)
    if site_prefix is not None:
        files.append(("site", site_prefix / name))
    if env_file:
        files.append(("env", Path(env_file)))
    return files


def _read_file(path: Path) -> Iterator[tuple[str, str, str]]:
    """`(section, key, value)` from one file; keys normalised like pip (lower case, `_` -> `-`,
    no leading `--`)."""
    import configparser  # only when a file is there to read (1 ms of a lock's start-up)

    parser = configparser.RawConfigParser()
    parser.optionxform = _normalise  # type: ignore[assignment,method-assign]
    try:
        with path.open(encoding="utf-8") as stream:
            parser.read_file(stream, source=str(path))
    except UnicodeDecodeError as exc:
        raise PipConfigError(
            f"pip configuration file `{path}` is not valid UTF-8", source=str(path)
        ) from exc
    except configparser.Error as exc:
        reason = str(exc).splitlines()[0]
        raise PipConfigError(
            f"Cannot parse pip configuration file `{path}`: {reason}",
            source=str(path),
            hint="Fix the file, or run with `--isolated` to ignore pip's configuration",
        ) from exc
    except OSError as exc:
        raise PipConfigError(
            f"Cannot read pip configuration file `{path}`: {exc.strerror or exc}",
            source=str(path),
            hint="Fix its permissions, or run with `--isolated` to ignore pip's configuration",
        ) from exc
    for section in parser.sections():
        for key, value in parser.items(section):
            yield section, key, value


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").removeprefix("--")


def _collect(
    environ: Mapping[str, str], site_prefix: Path | None, home: Path | None
) -> tuple[list[_Value], list[str]]:
    """Every setting in the order pip applies it: `[global]`, then `[install]`, then `PIP_*`
    variables; within a section a later file overrides an earlier one, and empty values are
    dropped."""
    merged: dict[str, dict[str, tuple[str, str]]] = {section: {} for section in _SECTIONS}
    order: list[str] = []
    for _kind, path in config_files(environ=environ, site_prefix=site_prefix, home=home):
        if not path.exists():
            continue
        order.append(str(path))
        for section, key, value in _read_file(path):
            if section in merged:
                merged[section][key] = (value, str(path))
    values = [
        _Value(key, value, source)
        for section in _SECTIONS
        for key, (value, source) in merged[section].items()
        if value
    ]
    # PIP_INSTALL_X is just an unknown option `install-x`: pip applies variables to every
    # command, without a command prefix.
    env: dict[str, _Value] = {}
    for name, value in environ.items():
        if name.startswith("PIP_") and name[4:].lower() not in _ENV_IGNORED:
            key = _normalise(name[4:])
            env[key] = _Value(key, value, f"${name}")
    values.extend(v for v in env.values() if v.value)
    order.extend(v.source for v in env.values())
    return values, order


def _boolean(value: _Value) -> bool:
    lowered = value.value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise PipConfigError(
        f"`{value.value}` is not a valid value for `{value.key}` (from `{value.source}`)",
        source=value.source,
        hint="Use a boolean such as yes/no, true/false or 1/0",
    )


def _number(value: _Value, kind: Callable[[str], float]) -> float:
    try:
        return kind(value.value.strip())
    except ValueError:
        raise PipConfigError(
            f"`{value.value}` is not a valid value for `{value.key}` (from `{value.source}`)",
            source=value.source,
            hint="Use a number",
        ) from None


def load_pip_config(
    *,
    isolated: bool,
    environ: Mapping[str, str] | None = None,
    site_prefix: Path | None = None,
    home: Path | None = None,
) -> PipConfig:
    """Read pip's configuration for `pip install`, with pip's precedence.

    Files (see `config_files`; `site_prefix` should be the target environment's `sys.prefix`),
    sections `[global]` then `[install]`, then `PIP_<OPTION>` variables override. Lists
    (`extra-index-url`, `find-links`, `trusted-host`, `constraint`) are whitespace-separated,
    and a later source replaces an earlier list rather than adding to it; `only-binary` and
    `no-binary` accumulate like pip's `FormatControl`. Unknown keys are ignored, as pip ignores
    options other commands use.

    `isolated` returns an empty configuration. (pip's `--isolated` still reads the global and
    site files; safepip reads nothing.)
    """
    if isolated:
        return PipConfig()
    env = os.environ if environ is None else environ
    home_dir = _home(env, home)

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    cert: str | None = None
    client_cert: str | None = None
    timeout: float | None = None
    retries: int | None = None
    proxy: str | None = None
    keyring_provider: str | None = None
    no_index = require_hashes = pre = prefer_binary = no_input = break_system_packages = False
    only_binary: set[str] = set()
    no_binary: set[str] = set()
    sources: list[str] = []

    values, order = _collect(env, site_prefix, home)
    for value in values:
        text = value.value
        match value.key:
            case "index-url" | "pypi-url":
                index_url = text.strip()
            case "extra-index-url":
                extra_index_urls = tuple(text.split())
            case "find-links":
                find_links = tuple(text.split())
            case "trusted-host":
                trusted_hosts = tuple(text.split())
            case "constraint":
                constraints = tuple(text.split())
            case "no-index":
                no_index = _boolean(value)
            case "require-hashes":
                require_hashes = _boolean(value)
            case "pre":
                pre = _boolean(value)
            case "prefer-binary":
                prefer_binary = _boolean(value)
            case "break-system-packages":
                break_system_packages = _boolean(value)
            case "only-binary" | "no-binary":
                target, other = (
                    (only_binary, no_binary)
                    if value.key == "only-binary"
                    else (no_binary, only_binary)
                )
                try:
                    update_format_control(text, target, other)
                except ValueError as exc:
                    raise PipConfigError(
                        f"`{value.key}` {exc} (from `{value.source}`)", source=value.source
                    ) from None
            case "cert":
                cert = _expand(text.strip(), home_dir)
            case "client-cert":
                client_cert = _expand(text.strip(), home_dir)
            case "timeout" | "default-timeout":
                timeout = _number(value, float)
            case "retries":
                retries = int(_number(value, int))
            case "proxy":
                proxy = text.strip()
            case "keyring-provider":
                keyring_provider = text.strip().lower()
                if keyring_provider not in KEYRING_PROVIDERS:
                    raise PipConfigError(
                        f"`{value.value}` is not a valid value for `{value.key}` "
                        f"(from `{value.source}`)",
                        source=value.source,
                        hint="Use one of " + ", ".join(KEYRING_PROVIDERS),
                    )
            case "no-input":
                no_input = _boolean(value)
            case _:
                continue
        if value.source not in sources:
            sources.append(value.source)

    return PipConfig(
        index_url=index_url,
        extra_index_urls=extra_index_urls,
        no_index=no_index,
        find_links=find_links,
        trusted_hosts=trusted_hosts,
        cert=cert,
        client_cert=client_cert,
        timeout=timeout,
        retries=retries,
        proxy=proxy,
        constraints=constraints,
        require_hashes=require_hashes,
        only_binary=frozenset(only_binary),
        no_binary=frozenset(no_binary),
        pre=pre,
        prefer_binary=prefer_binary,
        keyring_provider=keyring_provider,
        no_input=no_input,
        break_system_packages=break_system_packages,
        sources=tuple(sorted(sources, key=order.index)),
    )
