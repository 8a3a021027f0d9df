"""safepip's own configuration: `safepip.toml`, or `[tool.safepip]` in `pyproject.toml`.

The file is looked up in the current directory only. `safepip.toml` holds the same keys as
`[tool.safepip]` at its top level and wins when both files exist. `--isolated` ignores both.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safepip.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from packaging.utils import NormalizedName

DEFAULT_OSV_URL = "https://api.osv.dev"
DEFAULT_UPDATE_URL = "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip"
DEFAULT_MAX_AGE_DAYS = 90

_AUDIT_KEYS = frozenset(
    {"ignore", "max-age-days", "refuse-stale", "update-url", "osv-url", "source", "db"}
)
_IGNORE_KEYS = frozenset({"id", "reason", "until"})


class SettingsError(UsageError):
    """A configuration file that cannot be used as written."""

    def __init__(self, path: Path, key: str | None, problem: str) -> None:
        where = f"`{key}` in `{path}`" if key else f"`{path}`"
        super().__init__(
            f"Invalid setting {where}: {problem}",
            hint="see the Configuration section of the README for the accepted keys",
        )
        self.path = path
        self.key = key
        self.problem = problem


@dataclass(frozen=True, kw_only=True, slots=True)
class IgnoreRule:
    """An advisory the user accepts, matched against finding ids and aliases."""

    id: str
    reason: str
    until: dt.date | None = None
    """The last day the rule applies; afterwards the finding counts again."""
    origin: str = ""
    """Where the rule came from (a file, `--ignore-vuln`), for messages."""

    def matches(self, ids: tuple[str, ...]) -> bool:
        wanted = self.id.casefold()
        return any(i.casefold() == wanted for i in ids)

    def expired(self, today: dt.date) -> bool:
        return self.until is not None and today > self.until


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditSettings:
    """`[tool.safepip.audit]`."""

    ignore: tuple[IgnoreRule, ...] = ()
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    """Advisory data older than this is stale: a warning, or a refusal with `refuse_stale`."""
    refuse_stale: bool = False
    update_url: str = DEFAULT_UPDATE_URL
    """Where `safepip db update` downloads an OSV `all.zip` (an internal mirror, say)."""
    osv_url: str = DEFAULT_OSV_URL
    source: str = "local"
    db: Path | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Everything read from the configuration file (defaults when there is none)."""

    path: Path | None = None
    audit: AuditSettings = field(default_factory=AuditSettings)
    allow_build: frozenset[NormalizedName] = frozenset()
    """`allow-build`: the projects whose sdists may be built (issue 13)."""
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The whole `[tool.safepip]` table, for sections other modules own."""


def user_data_dir() -> Path:
    """Where safepip keeps its data (the advisory database, the install key):
    `SAFEPIP_DATA_DIR`, else the platform's user data folder for `safepip`."""
    override = os.environ.get("SAFEPIP_DATA_DIR")
    if override:
        return Path(override)
    # platformdirs takes ~70 us per call, and every seal check asks (twice per installed
    # distribution in a no-op): remembered per value of what it reads (environment, uid).
    env = os.environ
    key = (
        env.get("XDG_DATA_HOME"),
        env.get("HOME"),
        env.get("APPDATA"),
        env.get("LOCALAPPDATA"),
        env.get("USERPROFILE"),
        os.getuid() if hasattr(os, "getuid") else None,
    )
    known = _data_dirs.get(key)
    if known is None:
        import platformdirs

        known = _data_dirs[key] = Path(platformdirs.user_data_dir("safepip", appauthor=False))
    return known


_data_dirs: dict[tuple[str | int | None, ...], Path] = {}


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (tomllib, or tomli on Python 3.10). Raises `OSError` or `ValueError`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    with path.open("rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    return data


def _load_toml(path: Path) -> dict[str, Any]:
    # An install reads the settings up to three times (options, build policy, audit gate):
    # the same bytes are parsed once per process.
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(path, None, f"cannot be read ({exc.strerror})") from exc
    known = _parsed.get(str(path))
    if known is not None and known[0] == data:
        return known[1]
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    try:
        table: dict[str, Any] = tomllib.loads(data.decode())
    except ValueError as exc:  # tomllib.TOMLDecodeError, UnicodeDecodeError
        raise SettingsError(path, None, f"not valid TOML ({exc})") from exc
    _parsed[str(path)] = (data, table)
    return table


_parsed: dict[str, tuple[bytes, dict[str, Any]]] = {}


def find_settings_file(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The configuration file in `directory` and its safepip table, or None."""
    own = directory / "safepip.toml"
    if own.is_file():
        return own, _load_toml(own)
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        table = _load_toml(pyproject).get("tool", {}).get("safepip")
        if table is not None:
            if not isinstance(table, dict):
                raise SettingsError(pyproject, "tool.safepip", "must be a table")
            return pyproject, table
    return None


def load_settings(directory: Path | None = None, *, isolated: bool = False) -> Settings:
    """Read the configuration file of `directory` (the current directory by default)."""
    if isolated:
        return Settings()
    found = find_settings_file(directory if directory is not None else Path.cwd())
    if found is None:
        return Settings()
    path, table = found
    prefix = "tool.safepip." if path.name == "pyproject.toml" else ""
    audit = table.get("audit", {})
    if not isinstance(audit, dict):
        raise SettingsError(path, f"{prefix}audit", "must be a table")
    allow = table.get("allow-build", [])
    if not isinstance(allow, list) or not all(isinstance(v, str) for v in allow):
        raise SettingsError(path, f"{prefix}allow-build", "must be an array of project names")
    try:
        allow_build = allow_build_names(allow)
    except ValueError as exc:
        raise SettingsError(path, f"{prefix}allow-build", str(exc)) from None
    return Settings(
        path=path,
        audit=_audit_settings(path, f"{prefix}audit", audit),
        allow_build=allow_build,
        raw=table,
    )


def allow_build_names(values: Iterable[str]) -> frozenset[NormalizedName]:
    """The canonical project names of `--allow-build` / `allow-build`.

    Raises `ValueError` for `:all:` (building is allowed one project at a time: a blanket
    permission would let any sdist in the tree run its code) and for invalid names.
    """
    from packaging.utils import InvalidName, canonicalize_name

    names: set[NormalizedName] = set()
    for value in values:
        text = value.strip()
        if text in (":all:", ":none:", "*"):
            raise ValueError(
                f"`{text}` is not accepted; name each project whose sdist may be built"
            )
        try:
            names.add(canonicalize_name(text, validate=True))
        except InvalidName:
            raise ValueError(f"`{text}` is not a valid project name") from None
    return frozenset(names)


def _audit_settings(path: Path, where: str, table: Mapping[str, Any]) -> AuditSettings:
    unknown = sorted(set(table) - _AUDIT_KEYS)
    if unknown:
        raise SettingsError(path, f"{where}.{unknown[0]}", "unknown key")
    max_age = table.get("max-age-days", DEFAULT_MAX_AGE_DAYS)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        raise SettingsError(path, f"{where}.max-age-days", "must be a whole number of days")
    refuse = table.get("refuse-stale", False)
    if not isinstance(refuse, bool):
        raise SettingsError(path, f"{where}.refuse-stale", "must be `true` or `false`")
    strings = {}
    for key, default in (
        ("update-url", DEFAULT_UPDATE_URL),
        ("osv-url", DEFAULT_OSV_URL),
        ("source", "local"),
    ):
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise SettingsError(path, f"{where}.{key}", "must be a non-empty string")
        strings[key] = value
    if strings["source"] not in ("local", "osv"):
        raise SettingsError(path, f"{where}.source", "must be `local` or `osv`")
    db = table.get("db")
    if db is not None and not isinstance(db, str):
        raise SettingsError(path, f"{where}.db", "must be a path")
    ignores = table.get("ignore", [])
    if not isinstance(ignores, list):
        raise SettingsError(path, f"{where}.ignore", "must be an array of tables")
    return AuditSettings(
        ignore=tuple(_ignore_rule(path, f"{where}.ignore[{i}]", r) for i, r in enumerate(ignores)),
        max_age_days=max_age,
        refuse_stale=refuse,
        update_url=strings["update-url"],
        osv_url=strings["osv-url"],
        source=strings["source"],
        db=(path.parent / db) if db else None,
    )


def _ignore_rule(path: Path, where: str, entry: object) -> IgnoreRule:
    if not isinstance(entry, dict):
        raise SettingsError(path, where, "must be a table with `id` and `reason`")
    unknown = sorted(set(entry) - _IGNORE_KEYS)
    if unknown:
        raise SettingsError(path, f"{where}.{unknown[0]}", "unknown key")
    rid, reason, until = entry.get("id"), entry.get("reason"), entry.get("until")
    if not isinstance(rid, str) or not rid.strip():
        raise SettingsError(path, f"{where}.id", "must name an advisory id or alias")
    if not isinstance(reason, str) or not reason.strip():
        raise SettingsError(path, f"{where}.reason", f"say why `{rid}` is ignored")
    if isinstance(until, str):
        try:
            until = dt.date.fromisoformat(until)
        except ValueError:
            raise SettingsError(path, f"{where}.until", "must be a date (YYYY-MM-DD)") from None
    if isinstance(until, dt.datetime):
        until = until.date()
    if until is not None and not isinstance(until, dt.date):
        raise SettingsError(path, f"{where}.until", "must be a date (YYYY-MM-DD)")
    return IgnoreRule(id=rid.strip(), reason=reason.strip(), until=until, origin=str(path))
