"""safepip's configuration file (safepip.settings)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING

import pytest

from safepip.settings import DEFAULT_UPDATE_URL, IgnoreRule, SettingsError, load_settings

if TYPE_CHECKING:
    from pathlib import Path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.path is None
    assert settings.audit.max_age_days == 90
    assert settings.audit.refuse_stale is False
    assert settings.audit.update_url == DEFAULT_UPDATE_URL


def test_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.safepip.audit]\nmax-age-days = 7\nrefuse-stale = true\n"
        'update-url = "https://mirror.example/osv/all.zip"\n'
        "[[tool.safepip.audit.ignore]]\n"
        'id = "PYSEC-2020-341"\nreason = "we never load YAML"\nuntil = 2027-01-01\n'
    )
    settings = load_settings(tmp_path)
    assert settings.path == tmp_path / "pyproject.toml"
    assert settings.audit.max_age_days == 7
    assert settings.audit.refuse_stale is True
    assert settings.audit.update_url == "https://mirror.example/osv/all.zip"
    (rule,) = settings.audit.ignore
    assert rule.id == "PYSEC-2020-341"
    assert rule.until == dt.date(2027, 1, 1)
    assert rule.matches(("X", "pysec-2020-341"))
    assert not rule.expired(dt.date(2027, 1, 1))
    assert rule.expired(dt.date(2027, 1, 2))


def test_safepip_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.safepip.audit]\nmax-age-days = 7\n")
    (tmp_path / "safepip.toml").write_text("[audit]\nmax-age-days = 3\n")
    assert load_settings(tmp_path).audit.max_age_days == 3


def test_isolated_ignores_files(tmp_path: Path) -> None:
    (tmp_path / "safepip.toml").write_text("[audit]\nmax-age-days = 3\n")
    assert load_settings(tmp_path, isolated=True).audit.max_age_days == 90


def test_pyproject_without_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_settings(tmp_path).path is None


def test_error_ignore_without_reason(tmp_path: Path) -> None:
    (tmp_path / "safepip.toml").write_text('[[audit.ignore]]\nid = "PYSEC-1"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path)
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f"Invalid setting `audit.ignore[0].reason` in `{tmp_path / 'safepip.toml'}`: "
        "say why `PYSEC-1` is ignored"
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[audit]\nmax-age-day = 3\n", "audit.max-age-day"),
        ("[audit]\nmax-age-days = -1\n", "audit.max-age-days"),
        ("[audit]\nrefuse-stale = 1\n", "audit.refuse-stale"),
        ('[audit]\nsource = "web"\n', "audit.source"),
        ('[[audit.ignore]]\nid = "A"\nreason = "r"\nuntil = "soon"\n', "audit.ignore[0].until"),
        ("[audit\n", None),
    ],
)
def test_error_invalid_values(tmp_path: Path, text: str, key: str | None) -> None:
    (tmp_path / "safepip.toml").write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path)
    assert info.value.key == key


def test_ignore_rule_without_until_never_expires() -> None:
    assert not IgnoreRule(id="A", reason="r").expired(dt.date(2999, 1, 1))


def test_user_data_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The folder is remembered per environment (platformdirs is slow to ask), never across a
    change of what platformdirs reads."""
    from safepip.settings import user_data_dir

    monkeypatch.delenv("SAFEPIP_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "one"))
    first = user_data_dir()
    assert user_data_dir() == first
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "two"))
    if sys.platform.startswith("linux"):
        assert first == tmp_path / "one" / "safepip"
        assert user_data_dir() == tmp_path / "two" / "safepip"
        monkeypatch.delenv("XDG_DATA_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert user_data_dir() == tmp_path / "home" / ".local" / "share" / "safepip"
    monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "own"))
    assert user_data_dir() == tmp_path / "own"


def test_a_changed_file_is_read_again_in_the_same_process(tmp_path: Path) -> None:
    """The parsed table is reused only for the same bytes (a rewrite of the same size in the
    same clock tick included)."""
    path = tmp_path / "safepip.toml"
    path.write_text("[audit]\nmax-age-days = 10\n")
    assert load_settings(tmp_path).audit.max_age_days == 10
    assert load_settings(tmp_path).audit.max_age_days == 10
    path.write_text("[audit]\nmax-age-days = 20\n")
    assert load_settings(tmp_path).audit.max_age_days == 20
    path.write_text("[audit]\nmax-age-days = 2x\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(tmp_path)
    path.write_bytes(b"[audit]\nmax-age-days = 10 # \xff\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(tmp_path)
