"""Building sdists the user allowed (safepip.build, issue 13): policy, options and settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from safepip.cli import main
from safepip.settings import SettingsError, allow_build_names, load_settings
from wheelbuild import build_sdist, sdist_marker_path, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from servers import StaticIndex

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., Result]:
    cache = tmp_path / "cache"

    def invoke(*args: str) -> Result:
        argv = list(args)
        if argv and argv[0] in ("install", "download", "sync"):
            argv += ["--cache-dir", str(cache)]
        code = main(argv)
        captured = capsys.readouterr()
        err = "".join(
            line
            for line in ANSI.sub("", captured.err).splitlines(keepends=True)
            if not line.startswith("warning: The advisory data is from")
        )
        return Result(code, ANSI.sub("", captured.out), err)

    return invoke


class TestPolicy:
    def test_names_are_canonical(self) -> None:
        assert allow_build_names(["Foo.Bar", "baz_qux"]) == {"foo-bar", "baz-qux"}

    @pytest.mark.parametrize("value", [":all:", "*", ":none:"])
    def test_error_blanket_permission_is_refused(self, value: str) -> None:
        with pytest.raises(ValueError, match="name each project whose sdist may be built"):
            allow_build_names([value])

    def test_settings_file(self, tmp_path: Path) -> None:
        (tmp_path / "pyproject.toml").write_text('[tool.safepip]\nallow-build = ["Odd_Name"]\n')
        assert load_settings(tmp_path).allow_build == {"odd-name"}

    def test_error_settings_all(self, tmp_path: Path) -> None:
        (tmp_path / "safepip.toml").write_text('allow-build = [":all:"]\n')
        with pytest.raises(SettingsError) as info:
            load_settings(tmp_path)
        assert str(info.value) == (
            f"Invalid setting `allow-build` in `{tmp_path / 'safepip.toml'}`: `:all:` is not "
            "accepted; name each project whose sdist may be built"
        )

    def test_error_settings_not_a_list(self, tmp_path: Path) -> None:
        (tmp_path / "pyproject.toml").write_text('[tool.safepip]\nallow-build = "foo"\n')
        with pytest.raises(SettingsError, match=r"`tool\.safepip\.allow-build`.*array of project"):
            load_settings(tmp_path)

    def test_isolated_ignores_the_file(self, tmp_path: Path) -> None:
        (tmp_path / "safepip.toml").write_text('allow-build = ["foo"]\n')
        assert load_settings(tmp_path, isolated=True).allow_build == frozenset()


class TestOptions:
    def test_error_allow_build_all(self, run: Callable[..., Result]) -> None:
        result = run("install", "x==1", "--allow-build", ":all:", "--python", "/nonexistent")
        assert result.code == 2
        assert result.err.startswith(
            "error: `--allow-build`: `:all:` is not accepted; name each project whose sdist "
            "may be built"
        )

    def test_error_allow_build_invalid_name(self, run: Callable[..., Result]) -> None:
        result = run("download", "x==1", "--allow-build", "no good", "-d", "out")
        assert result.code == 2
        assert "error: `--allow-build`: `no good` is not a valid project name" in result.err


class TestRefusal:
    def test_error_sdist_names_package_and_option(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        venv = venv_factory()
        before = tree_snapshot(venv)
        index = static_index()
        sdist = build_sdist(tmp_path / "sd", "Theta_Pkg", "1.0")
        index.add(sdist)
        line = f"Theta_Pkg==1.0 --hash=sha256:{sha256_file(sdist)}"
        # allowing another package does not allow this one
        result = run("install", line, "--python", str(venv), "-i", index.url, "--allow-build", "x")
        assert result.code == 4
        assert result.err.startswith(
            "error: Refusing to install:\n    `theta-pkg==1.0` has only a source distribution; "
            "building it would run the package's code (<command line>:1); allow it with "
            "`--allow-build theta-pkg`\n\nhint: safepip builds only the sdists you name"
        )
        assert not sdist_marker_path(tmp_path / "sd", "Theta_Pkg").exists()
        assert tree_snapshot(venv) == before

    def test_error_direct_url_sdist_names_option(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        venv = venv_factory()
        index = static_index()
        sdist = build_sdist(tmp_path / "sd", "iota", "1.0")
        index.add(sdist)
        url = f"{index.base_url}/files/{sdist.name}"
        result = run(
            "install",
            f"iota @ {url}#sha256={sha256_file(sdist)}",
            "--python",
            str(venv),
            "-i",
            index.url,
        )
        assert result.code == 4
        assert "which is not a wheel; building it would run the package's code" in result.err
        assert "allow it with `--allow-build iota`" in result.err
