"""Tests for safepip.pipconfig, with pip's own option parser as the oracle."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from safepip import pipconfig
from safepip.errors import ExitCode
from safepip.pipconfig import PipConfig, PipConfigError, config_files, load_pip_config

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A fake home, XDG folders, `/etc` and a target prefix: none of them the machine's own."""
    monkeypatch.setattr(pipconfig, "SYSTEM_CONFIG_DIR", tmp_path / "etc")
    layout = {
        "etc": tmp_path / "etc",
        "home": tmp_path / "home",
        "xdg_home": tmp_path / "xdg-home",
        "xdg_dir1": tmp_path / "xdg-dir1",
        "xdg_dir2": tmp_path / "xdg-dir2",
        "prefix": tmp_path / "venv",
    }
    for path in layout.values():
        path.mkdir()
    return layout


def environ_for(dirs: dict[str, Path], **extra: str) -> dict[str, str]:
    return {
        "HOME": str(dirs["home"]),
        "XDG_CONFIG_HOME": str(dirs["xdg_home"]),
        "XDG_CONFIG_DIRS": f"{dirs['xdg_dir1']}{os.pathsep}{dirs['xdg_dir2']}",
        **extra,
    }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(dirs: dict[str, Path], **extra: str) -> PipConfig:
    return load_pip_config(
        isolated=False, environ=environ_for(dirs, **extra), site_prefix=dirs["prefix"]
    )


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG layout")
def test_config_files_in_pip_order(dirs: dict[str, Path]) -> None:
    files = config_files(environ=environ_for(dirs), site_prefix=dirs["prefix"])
    assert files == [
        ("global", dirs["xdg_dir1"] / "pip/pip.conf"),
        ("global", dirs["xdg_dir2"] / "pip/pip.conf"),
        ("global", dirs["etc"] / "pip.conf"),
        ("user", dirs["home"] / ".pip/pip.conf"),
        ("user", dirs["xdg_home"] / "pip/pip.conf"),
        ("site", dirs["prefix"] / "pip.conf"),
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG layout")
def test_config_files_agree_with_pip(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pip._internal.configuration import Kind, get_configuration_files

    monkeypatch.setattr(pipconfig, "SYSTEM_CONFIG_DIR", Path("/etc"))
    for key, value in environ_for(dirs).items():
        monkeypatch.setenv(key, value)
    pip_files = get_configuration_files()
    ours = config_files(environ=environ_for(dirs), site_prefix=Path(sys.prefix))
    by_kind: dict[str, list[str]] = {}
    for kind, path in ours:
        by_kind.setdefault(kind, []).append(str(path))
    assert by_kind["global"] == pip_files[Kind.GLOBAL]
    assert by_kind["user"] == pip_files[Kind.USER]
    assert by_kind["site"] == pip_files[Kind.SITE]


def test_default_xdg_folders(dirs: dict[str, Path]) -> None:
    files = config_files(environ={"HOME": str(dirs["home"])}, site_prefix=None)
    if sys.platform == "linux":
        assert files[0] == ("global", Path("/etc/xdg/pip/pip.conf"))
        assert ("user", dirs["home"] / ".config/pip/pip.conf") in files


def test_devnull_config_file_loads_no_files(dirs: dict[str, Path]) -> None:
    assert (
        config_files(environ=environ_for(dirs, PIP_CONFIG_FILE=os.devnull), site_prefix=None) == []
    )
    write(dirs["xdg_home"] / "pip/pip.conf", "[global]\nindex-url = https://user.example/simple\n")
    config = load(dirs, PIP_CONFIG_FILE=os.devnull, PIP_PRE="yes")
    assert config.index_url is None
    assert config.pre  # variables still apply
    assert config.sources == ("$PIP_PRE",)


def test_existing_config_file_variable_skips_user_files(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    write(dirs["xdg_home"] / "pip/pip.conf", "[global]\nindex-url = https://user.example/simple\n")
    env_file = write(tmp_path / "env.conf", "[global]\ntimeout = 7\n")
    config = load(dirs, PIP_CONFIG_FILE=str(env_file))
    assert (config.index_url, config.timeout) == (None, 7.0)
    missing = load(dirs, PIP_CONFIG_FILE=str(tmp_path / "missing.conf"))
    assert missing.index_url == "https://user.example/simple"


def test_isolated_is_empty(dirs: dict[str, Path]) -> None:
    write(dirs["xdg_home"] / "pip/pip.conf", "[global]\nindex-url = https://user.example/simple\n")
    config = load_pip_config(
        isolated=True, environ=environ_for(dirs, PIP_INDEX_URL="x"), site_prefix=dirs["prefix"]
    )
    assert config == PipConfig()


def test_precedence(dirs: dict[str, Path]) -> None:
    write(
        dirs["xdg_dir1"] / "pip/pip.conf",
        "[global]\nindex-url = https://global.example/simple\ntimeout = 1\nretries = 9\n",
    )
    write(dirs["home"] / ".pip/pip.conf", "[global]\ntimeout = 2\n")
    write(
        dirs["xdg_home"] / "pip/pip.conf",
        "[global]\ntimeout = 3\nextra-index-url =\n  https://a.example/simple\n"
        "  https://b.example/simple\n[install]\nextra-index-url = https://c.example/simple\n"
        "[freeze]\ntimeout = 99\n",
    )
    write(dirs["prefix"] / "pip.conf", "[global]\ntimeout = 4\n")
    config = load(dirs, PIP_RETRIES="1", PIP_INSTALL_TIMEOUT="5")
    assert config.index_url == "https://global.example/simple"
    assert config.timeout == 4.0  # the site file wins over user and global files
    assert config.extra_index_urls == ("https://c.example/simple",)  # [install] replaces [global]
    assert config.retries == 1  # variables win
    assert config.sources == (
        str(dirs["xdg_dir1"] / "pip/pip.conf"),
        str(dirs["xdg_home"] / "pip/pip.conf"),
        str(dirs["prefix"] / "pip.conf"),
        "$PIP_RETRIES",
    )


def test_lists_booleans_and_paths(dirs: dict[str, Path]) -> None:
    write(
        dirs["xdg_home"] / "pip/pip.conf",
        "[global]\nfind-links = /opt/wheels\n  https://links.example/\n"
        "trusted-host = a.example b.example:8080\nno_index = on\ncert = ~/ca.pem\n"
        "--prefer-binary = 1\nno-binary = :all:\nconstraint = c1.txt c2.txt\n"
        "require-hashes = false\nproxy = http://proxy:3128\n",
    )
    config = load(dirs, PIP_ONLY_BINARY="lxml", PIP_PRE="", PIP_CLIENT_CERT="~/client.pem")
    assert config.find_links == ("/opt/wheels", "https://links.example/")
    assert config.trusted_hosts == ("a.example", "b.example:8080")
    assert config.no_index
    assert config.cert == str(dirs["home"] / "ca.pem")
    assert config.client_cert == str(dirs["home"] / "client.pem")
    assert config.prefer_binary
    assert (config.no_binary, config.only_binary) == (frozenset({":all:"}), frozenset({"lxml"}))
    assert config.constraints == ("c1.txt", "c2.txt")
    assert not config.require_hashes
    assert not config.pre  # an empty value is ignored
    assert config.proxy == "http://proxy:3128"


# --- pip as the oracle ----------------------------------------------------------------------

SCENARIOS: dict[str, dict[str, Any]] = {
    "sections_and_env": {
        "global": "[global]\nindex-url = https://g.example/simple\nno-binary = foo,bar\n"
        "timeout = 10\n",
        "user": "[install]\nonly-binary = foo\nextra-index-url = https://e1.example e2\n"
        "pre = yes\n[global]\nretries = 3\n",
        "site": "[global]\ntrusted-host = t1 t2\nfind-links = f1\n",
        "env": {"PIP_DEFAULT_TIMEOUT": "42.5", "PIP_NO_BINARY": ":none:", "PIP_PREFER_BINARY": "1"},
    },
    "env_overrides_lists": {
        "global": "[global]\nfind-links = a b\nextra-index-url = x\n",
        "user": "",
        "site": "[install]\nrequire-hashes = true\nno-index = off\nconstraint = c.txt\n",
        "env": {"PIP_FIND_LINKS": "c", "PIP_NO_INDEX": "true", "PIP_CERT": "/ca.pem"},
    },
    "binary_sequencing": {
        "global": "[global]\nonly-binary = :all:\n",
        "user": "[install]\nno-binary = Some_Pkg\n",
        "site": "",
        "env": {"PIP_ONLY_BINARY": ":none:,other", "PIP_PROXY": "http://p:1"},
    },
}


@pytest.fixture
def pip_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.usefixtures("pip_environment")
def test_agrees_with_pip(
    name: str, dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pip._internal import configuration
    from pip._internal.commands import create_command

    scenario = SCENARIOS[name]
    global_file = write(dirs["xdg_dir1"] / "pip/pip.conf", scenario["global"])
    user_file = write(dirs["xdg_home"] / "pip/pip.conf", scenario["user"])
    site_file = write(dirs["prefix"] / "pip.conf", scenario["site"])

    def iter_config_files(self: object) -> Iterator[tuple[Any, list[str]]]:
        yield configuration.Kind.GLOBAL, [str(global_file)]
        yield configuration.Kind.USER, [str(user_file)]
        yield configuration.Kind.SITE, [str(site_file)]
        yield configuration.Kind.ENV, []

    monkeypatch.setattr(configuration.Configuration, "iter_config_files", iter_config_files)
    for key, value in scenario["env"].items():
        monkeypatch.setenv(key, value)
    options, _ = create_command("install").parse_args([])

    ours = load_pip_config(
        isolated=False,
        environ={**environ_for(dirs, XDG_CONFIG_DIRS=str(dirs["xdg_dir1"])), **scenario["env"]},
        site_prefix=dirs["prefix"],
    )
    from pip._internal.models.index import PyPI

    assert (ours.index_url or PyPI.simple_url) == options.index_url
    assert list(ours.extra_index_urls) == options.extra_index_urls
    assert ours.no_index == options.no_index
    assert list(ours.find_links) == options.find_links
    assert list(ours.trusted_hosts) == options.trusted_hosts
    assert ours.cert == options.cert
    assert ours.client_cert == options.client_cert
    assert (ours.timeout if ours.timeout is not None else 15) == options.timeout
    assert (ours.retries if ours.retries is not None else 5) == options.retries
    assert (ours.proxy or None) == (options.proxy or None)
    assert list(ours.constraints) == options.constraints
    assert ours.require_hashes == options.require_hashes
    assert ours.only_binary == options.format_control.only_binary
    assert ours.no_binary == options.format_control.no_binary
    assert ours.pre == options.pre
    assert ours.prefer_binary == options.prefer_binary


# --- errors -----------------------------------------------------------------------------------


def test_error_invalid_boolean(dirs: dict[str, Path]) -> None:
    with pytest.raises(PipConfigError) as info:
        load(dirs, PIP_NO_INDEX="maybe")
    assert info.value.exit_code is ExitCode.USAGE
    assert str(info.value) == "`maybe` is not a valid value for `no-index` (from `$PIP_NO_INDEX`)"
    assert info.value.hint == "Use a boolean such as yes/no, true/false or 1/0"
    assert info.value.source == "$PIP_NO_INDEX"


def test_keyring_provider_and_no_input(dirs: dict[str, Path]) -> None:
    write(dirs["xdg_home"] / "pip/pip.conf", "[global]\nkeyring-provider = import\n")
    assert (load(dirs).keyring_provider, load(dirs).no_input) == ("import", False)
    env = load(dirs, PIP_KEYRING_PROVIDER="Subprocess", PIP_NO_INPUT="yes")
    assert (env.keyring_provider, env.no_input) == ("subprocess", True)


def test_error_invalid_keyring_provider(dirs: dict[str, Path]) -> None:
    with pytest.raises(PipConfigError) as info:
        load(dirs, PIP_KEYRING_PROVIDER="gnome")
    assert str(info.value) == (
        "`gnome` is not a valid value for `keyring-provider` (from `$PIP_KEYRING_PROVIDER`)"
    )
    assert info.value.hint == "Use one of auto, disabled, import, subprocess"


def test_error_invalid_number(dirs: dict[str, Path]) -> None:
    path = write(dirs["xdg_home"] / "pip/pip.conf", "[global]\ntimeout = soon\n")
    with pytest.raises(PipConfigError) as info:
        load(dirs)
    assert str(info.value) == f"`soon` is not a valid value for `timeout` (from `{path}`)"


def test_error_unparseable_file(dirs: dict[str, Path]) -> None:
    path = write(dirs["xdg_home"] / "pip/pip.conf", "index-url = https://no-section.example\n")
    with pytest.raises(PipConfigError) as info:
        load(dirs)
    assert str(info.value) == (
        f"Cannot parse pip configuration file `{path}`: File contains no section headers."
    )
    assert info.value.hint == (
        "Fix the file, or run with `--isolated` to ignore pip's configuration"
    )
    assert info.value.source == str(path)


def test_error_undecodable_file(dirs: dict[str, Path]) -> None:
    path = dirs["prefix"] / "pip.conf"
    path.write_bytes(b"[global]\nproxy = \xff\n")
    with pytest.raises(PipConfigError) as info:
        load(dirs)
    assert str(info.value) == f"pip configuration file `{path}` is not valid UTF-8"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root reads all")
def test_error_unreadable_file(dirs: dict[str, Path]) -> None:
    path = write(dirs["prefix"] / "pip.conf", "[global]\n")
    path.chmod(0)
    with pytest.raises(PipConfigError) as info:
        load(dirs)
    assert str(info.value) == f"Cannot read pip configuration file `{path}`: Permission denied"


def test_error_binary_option_value(dirs: dict[str, Path]) -> None:
    with pytest.raises(PipConfigError) as info:
        load(dirs, PIP_ONLY_BINARY="--pre")
    assert str(info.value) == (
        "`only-binary` expects `:all:`, `:none:` or comma-separated names (from `$PIP_ONLY_BINARY`)"
    )


def test_default_index_is_pips() -> None:
    """safepip carries pip's default index and file host as constants (no runtime dependency on
    pip); pip, the oracle, must agree."""
    from pip._internal.models.index import PyPI

    from safepip.sources import default_index_file_host, default_index_url

    assert default_index_url() == PyPI.simple_url
    assert default_index_file_host() == PyPI.file_storage_domain
