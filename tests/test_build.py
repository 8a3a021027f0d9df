"""Building sdists the user allowed (safepip.build, issue 13): policy, options and settings."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from safepip import build
from safepip.build import network_namespace
from safepip.cli import main
from safepip.settings import SettingsError, allow_build_names, load_settings
from sdists import FLIT_CORE, FLIT_CORE_SHA256, flit_sdist, intree_sdist, write_sdist
from wheelbuild import build_sdist, build_wheel, sdist_marker_path, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from servers import StaticIndex
    from wheelbuild import WheelFactory

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
        if argv and argv[0] in ("install", "download", "sync", "lock", "bundle"):
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


# --- building ------------------------------------------------------------------------------


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def import_value(venv: Path, module: str) -> str:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.VALUE)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


@pytest.fixture
def backend_index(static_index: Callable[..., StaticIndex]) -> StaticIndex:
    """A loopback index serving the committed flit_core wheel (the pinned build backend)."""
    index = static_index()
    index.add(FLIT_CORE)
    return index


@pytest.fixture
def flit_constraint(tmp_path: Path) -> Path:
    path = tmp_path / "build-constraints.txt"
    path.write_text(f"flit_core==3.10.1 --hash=sha256:{FLIT_CORE_SHA256}\n")
    return path


needs_netns = pytest.mark.skipif(
    network_namespace() is not None, reason="no network namespace on this machine"
)


class TestBuild:
    def test_flit_sdist_built_from_pinned_backend(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        flit_constraint: Path,
        tmp_path: Path,
    ) -> None:
        sdist = flit_sdist(tmp_path / "sd", "built-pkg", "1.2")
        backend_index.add(sdist)
        sha = sha256_file(sdist)
        reqs = tmp_path / "requirements.txt"
        reqs.write_text(f"built-pkg==1.2 --hash=sha256:{sha}\n")
        venv = venv_factory()
        args = (
            "-r",
            str(reqs),
            "-i",
            backend_index.url,
            "--build-constraint",
            str(flit_constraint),
        )
        report = tmp_path / "report.json"
        result = run(
            "install",
            *args,
            "--python",
            str(venv),
            "--allow-build",
            "Built_Pkg",
            "--report",
            str(report),
        )
        assert result.code == 0, result.err
        (item,) = json.loads(report.read_text())["install"]
        assert item["download_info"]["url"].endswith("/files/built_pkg-1.2.tar.gz")
        assert item["download_info"]["archive_info"]["hashes"] == {"sha256": sha}
        assert f"Building `built-pkg==1.2` from `built_pkg-1.2.tar.gz` (sha256 {sha})" in result.err
        assert import_value(venv, "built_pkg") == "1.2"
        (dist_info,) = site_packages(venv).glob("built_pkg-1.2.dist-info")
        record = json.loads((dist_info / "safepip.json").read_text())
        assert record["filename"] == "built_pkg-1.2-py2.py3-none-any.whl"
        assert record["built_from"]["filename"] == "built_pkg-1.2.tar.gz"
        assert record["built_from"]["sha256"] == sha
        assert record["built_from"]["backend"] == "flit_core.buildapi"
        assert record["built_from"]["build_dependencies"] == [
            {"name": "flit-core", "version": "3.10.1", "sha256": FLIT_CORE_SHA256}
        ]
        # the build environment held only the backend: nothing of it reached the target
        assert not list(site_packages(venv).glob("flit_core*"))
        # installed again: kept (the record vouches for the pinned sdist), nothing rebuilt
        again = run("install", *args, "--python", str(venv), "--allow-build", "built-pkg")
        assert again.code == 0, again.err
        assert "Building" not in again.err
        # freeze gives the sdist's hash back, and verify against the lock passes
        frozen = run("freeze", "--python", str(venv))
        assert "# built-pkg: built from its sdist; needs `--allow-build built-pkg`" in frozen.out
        assert f"--hash=sha256:{sha}" in frozen.out
        assert run("verify", "--python", str(venv), "-r", str(reqs)).code == 0
        # a fresh environment reuses the cached build
        other = venv_factory()
        third = run("install", *args, "--python", str(other), "--allow-build", "built-pkg")
        assert third.code == 0, third.err
        assert "Using the wheel built earlier from `built_pkg-1.2.tar.gz`" in third.err
        assert import_value(other, "built_pkg") == "1.2"

    def test_allowed_in_the_settings_file(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        flit_constraint: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        sdist = flit_sdist(tmp_path / "sd", "settled", "2.0")
        backend_index.add(sdist)
        (tmp_path / "pyproject.toml").write_text('[tool.safepip]\nallow-build = ["settled"]\n')
        monkeypatch.chdir(tmp_path)
        venv = venv_factory()
        line = f"settled==2.0 --hash=sha256:{sha256_file(sdist)}"
        result = run(
            "install",
            line,
            "-i",
            backend_index.url,
            "--build-constraint",
            str(flit_constraint),
            "--python",
            str(venv),
        )
        assert result.code == 0, result.err
        assert import_value(venv, "settled") == "2.0"

    def test_error_build_dependency_not_pinned(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        sdist = flit_sdist(tmp_path / "sd", "needy", "1.0")
        backend_index.add(sdist)
        venv = venv_factory()
        before = tree_snapshot(venv)
        line = f"needy==1.0 --hash=sha256:{sha256_file(sdist)}"
        result = run(
            "install",
            line,
            "-i",
            backend_index.url,
            "--python",
            str(venv),
            "--allow-build",
            "needy",
        )
        assert result.code == 3
        assert result.err.split("\n", 1)[1].startswith(
            "error: Cannot build `needy-1.0.tar.gz`: its build dependencies must be pinned with "
            "`==` and a hash in a `--build-constraint` file; these are not:\n"
            f"    flit-core==3.10.1 --hash=sha256:{FLIT_CORE_SHA256}  # `[build-system] requires` "
            "of `needy-1.0.tar.gz`\n\nhint: put the lines in a file, check them, and pass it "
            "with `--build-constraint FILE`"
        )
        assert tree_snapshot(venv) == before

    @pytest.mark.parametrize(
        "entry",
        ['gadget>=1 ; os_name ~= "a"', "gadget >= 1 ;; nonsense"],
        ids=["marker-cannot-be-evaluated", "not-a-requirement"],
    )
    def test_error_build_dependency_with_a_broken_requires_dist(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
        entry: str,
    ) -> None:
        """A pinned build dependency whose metadata has an entry that cannot be used is
        refused, naming it and the entry: its dependencies were left out without a word."""
        helper = build_wheel(tmp_path / "w", "buildhelper", "1.0", requires=[entry])
        backend_index.add(helper)
        sdist = flit_sdist(
            tmp_path / "sd", "needy", "1.0", requires=("flit_core>=3.2,<4", "buildhelper==1.0")
        )
        backend_index.add(sdist)
        constraint = tmp_path / "build-constraints.txt"
        constraint.write_text(
            f"flit_core==3.10.1 --hash=sha256:{FLIT_CORE_SHA256}\n"
            f"buildhelper==1.0 --hash=sha256:{sha256_file(helper)}\n"
        )
        venv = venv_factory()
        before = tree_snapshot(venv)
        result = run(
            "install",
            f"needy==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            backend_index.url,
            "--python",
            str(venv),
            "--allow-build",
            "needy",
            "--build-constraint",
            str(constraint),
        )
        assert result.code == 1, result.err
        assert "Traceback" not in result.err
        assert (
            f"error: Refusing `buildhelper==1.0`: its metadata has a `Requires-Dist` entry "
            f"`{entry}` that cannot be used: "
        ) in result.err
        assert tree_snapshot(venv) == before

    def test_error_build_dependency_wrong_hash(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        sdist = flit_sdist(tmp_path / "sd", "needy", "1.0")
        backend_index.add(sdist)
        bad = tmp_path / "bad-constraints.txt"
        bad.write_text(f"flit_core==3.10.1 --hash=sha256:{'0' * 64}\n")
        venv = venv_factory()
        before = tree_snapshot(venv)
        line = f"needy==1.0 --hash=sha256:{sha256_file(sdist)}"
        result = run(
            "install",
            line,
            "-i",
            backend_index.url,
            "--python",
            str(venv),
            "--allow-build",
            "needy",
            "--build-constraint",
            str(bad),
        )
        assert result.code == 3
        assert "No file on the index matches a pinned hash for these requirements:" in result.err
        assert "`flit-core==3.10.1` (from `[build-system] requires` of `needy-1.0.tar.gz`)" in (
            result.err
        )
        assert f"expected: sha256:{'0' * 64}" in result.err
        assert tree_snapshot(venv) == before

    def test_error_build_dependency_served_tampered(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        flit_constraint: Path,
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        # an index without published hashes serving other bytes under the backend's name
        index = static_index()
        fake = tmp_path / "fake" / FLIT_CORE.name
        fake.parent.mkdir()
        fake.write_bytes(FLIT_CORE.read_bytes() + b"\0")
        index.add(fake, hash_in_listing=False)
        sdist = flit_sdist(tmp_path / "sd", "needy", "1.0")
        index.add(sdist)
        venv = venv_factory()
        before = tree_snapshot(venv)
        result = run(
            "install",
            f"needy==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv),
            "--allow-build",
            "needy",
            "--build-constraint",
            str(flit_constraint),
        )
        assert result.code == 3
        assert "Hash mismatch" in result.err
        assert tree_snapshot(venv) == before

    def test_error_dynamic_requirement_not_pinned(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        tmp_path: Path,
    ) -> None:
        sdist = intree_sdist(tmp_path / "sd", "dyn", "1.0", dynamic=("flit_core>=3",))
        backend_index.add(sdist)
        venv = venv_factory()
        result = run(
            "install",
            f"dyn==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            backend_index.url,
            "--python",
            str(venv),
            "--allow-build",
            "dyn",
        )
        assert result.code == 3
        assert (
            f"    flit-core==3.10.1 --hash=sha256:{FLIT_CORE_SHA256}  # asked for by the backend "
            "of `dyn-1.0.tar.gz`"
        ) in result.err

    def test_dynamic_requirement_from_the_constraint_file(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        flit_constraint: Path,
        tmp_path: Path,
    ) -> None:
        prelude = "import flit_core  # installed because get_requires_for_build_wheel asked\n"
        sdist = intree_sdist(
            tmp_path / "sd", "dyn", "1.0", dynamic=("flit_core>=3",), prelude=prelude
        )
        backend_index.add(sdist)
        venv = venv_factory()
        result = run(
            "install",
            f"dyn==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            backend_index.url,
            "--python",
            str(venv),
            "--allow-build",
            "dyn",
            "--build-constraint",
            str(flit_constraint),
        )
        assert result.code == 0, result.err
        record = json.loads(
            next(site_packages(venv).glob("dyn-1.0.dist-info")).joinpath("safepip.json").read_text()
        )
        assert [d["name"] for d in record["built_from"]["build_dependencies"]] == ["flit-core"]
        # the build environment held the pinned backend and nothing else
        seen = json.loads((site_packages(venv) / "dyn" / "buildenv.json").read_text())
        assert {n for n in seen["site"] if not n.startswith(("_", "."))} == {
            "flit_core",
            "flit_core-3.10.1.dist-info",
        }

    def test_backend_runs_clean_and_private(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("PIP_INDEX_URL", "https://user:secret@example.invalid/simple")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.invalid:3128")
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "envy", "1.0")
        index.add(sdist)
        venv = venv_factory()
        result = run(
            "install",
            f"envy==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv),
            "--allow-build",
            "envy",
        )
        assert result.code == 0, result.err
        seen = json.loads((site_packages(venv) / "envy" / "buildenv.json").read_text())
        env = seen["env"]
        assert not [k for k in env if k.startswith("PIP_") or "SECRET" in k]
        assert "secret" not in json.dumps(env)
        assert seen["home"] != os.path.expanduser("~")
        assert seen["home"].startswith(tempfile.gettempdir())
        assert env["PYTHONNOUSERSITE"] == "1"
        if network_namespace() is None:
            assert not [k for k in env if "proxy" in k.lower()]

    def test_without_network_namespace_proxies_point_at_a_closed_port(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(build, "network_namespace", lambda: "`unshare` is not available")
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "envy", "1.0")
        index.add(sdist)
        venv = venv_factory()
        result = run(
            "install",
            f"envy==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv),
            "--allow-build",
            "envy",
        )
        assert result.code == 0, result.err
        assert (
            "warning: No network namespace for the build of `envy-1.0.tar.gz`: `unshare` is not "
            "available; its proxy variables point at a closed port (http://127.0.0.1:9), which "
            "stops only programs that honour them"
        ) in result.err
        env = json.loads((site_packages(venv) / "envy" / "buildenv.json").read_text())["env"]
        assert env["https_proxy"] == env["HTTP_PROXY"] == "http://127.0.0.1:9"

    @needs_netns
    def test_error_backend_cannot_open_a_socket(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        prelude = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
            except OSError as exc:
                raise SystemExit("the backend could not connect: " + type(exc).__name__)
            raise SystemExit("the backend reached the network")
        """
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "phoner", "1.0", prelude=prelude)
        index.add(sdist)
        venv = venv_factory()
        before = tree_snapshot(venv)
        try:
            result = run(
                "install",
                f"phoner==1.0 --hash=sha256:{sha256_file(sdist)}",
                "-i",
                index.url,
                "--python",
                str(venv),
                "--allow-build",
                "phoner",
            )
            with pytest.raises(TimeoutError):
                listener.accept()
        finally:
            listener.close()
        assert result.code == 1
        assert result.err.split("\n", 1)[1].startswith(
            "error: Building `phoner-1.0.tar.gz` failed: the backend's `build_wheel` exited "
            "with 1; its last output:\n"
        )
        assert "| the backend could not connect: " in result.err
        assert tree_snapshot(venv) == before

    def test_error_time_limit(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("SAFEPIP_BUILD_TIMEOUT", "3")
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "slow", "1.0", prelude="import time; time.sleep(60)")
        index.add(sdist)
        started = time.monotonic()
        result = run(
            "install",
            f"slow==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv_factory()),
            "--allow-build",
            "slow",
        )
        assert result.code == 1
        assert "error: Building `slow-1.0.tar.gz` took longer than 3 s and was stopped" in (
            result.err
        )
        assert time.monotonic() - started < 30

    def test_error_pkg_info_names_another_project(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        marker = tmp_path / "ran"
        sdist = intree_sdist(
            tmp_path / "sd",
            "honest",
            "1.0",
            pkg_info_name="other",
            prelude=f"open({str(marker)!r}, 'w').close()",
        )
        index.add(sdist)
        result = run(
            "install",
            f"honest==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv_factory()),
            "--allow-build",
            "honest",
        )
        assert result.code == 3
        assert (
            "error: `honest-1.0.tar.gz` declares `other 1.0` in its `PKG-INFO`, not "
            "`honest==1.0`" in result.err
        )
        assert not marker.exists()

    def test_error_wheel_of_another_project(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        sdist = intree_sdist(
            tmp_path / "sd", "honest", "1.0", wheel_name="requests-9.0-py3-none-any.whl"
        )
        index.add(sdist)
        result = run(
            "install",
            f"honest==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv_factory()),
            "--allow-build",
            "honest",
        )
        assert result.code == 3
        assert (
            "error: The backend of `honest-1.0.tar.gz` built `requests-9.0-py3-none-any.whl`, "
            "which is not `honest==1.0`" in result.err
        )

    def test_error_built_wheel_with_a_wrong_record(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "liar", "1.0", bad_record=True)
        index.add(sdist)
        venv = venv_factory()
        before = tree_snapshot(venv)
        result = run(
            "install",
            f"liar==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv),
            "--allow-build",
            "liar",
        )
        assert result.code == 3
        assert "liar-1.0-py3-none-any.whl" in result.err
        assert "liar/__init__.py" in result.err
        assert tree_snapshot(venv) == before

    def test_error_sdist_hash_mismatch(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        marker = tmp_path / "ran"
        sdist = intree_sdist(
            tmp_path / "sd", "pinned", "1.0", prelude=f"open({str(marker)!r}, 'w').close()"
        )
        index.add(sdist, hash_in_listing=False)
        result = run(
            "install",
            f"pinned==1.0 --hash=sha256:{'1' * 64}",
            "-i",
            index.url,
            "--python",
            str(venv_factory()),
            "--allow-build",
            "pinned",
        )
        assert result.code == 3
        assert "Hash mismatch" in result.err
        assert f"expected: sha256:{'1' * 64}" in result.err
        assert not marker.exists()

    def test_error_built_wheel_for_another_platform(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        sdist = intree_sdist(
            tmp_path / "sd", "odd", "1.0", wheel_name="odd-1.0-cp27-cp27mu-win32.whl"
        )
        index.add(sdist)
        result = run(
            "install",
            f"odd==1.0 --hash=sha256:{sha256_file(sdist)}",
            *("-i", index.url, "--python", str(venv_factory()), "--allow-build", "odd"),
        )
        assert result.code == 1
        assert (
            "error: The wheel built from `odd-1.0.tar.gz` (`odd-1.0-cp27-cp27mu-win32.whl`) does "
            "not fit the target" in result.err
        )

    def test_error_legacy_sdist_needs_setuptools_pinned(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        sdist = build_sdist(tmp_path / "sd", "legacy", "1.0")  # setup.py, no pyproject.toml
        index.add(sdist)
        result = run(
            "install",
            f"legacy==1.0 --hash=sha256:{sha256_file(sdist)}",
            *("-i", index.url, "--python", str(venv_factory()), "--allow-build", "legacy"),
        )
        assert result.code == 3
        assert (
            "    setuptools  # no version on the index satisfies `setuptools>=40.8.0`  # "
            "`[build-system] requires` of `legacy-1.0.tar.gz`" in result.err
        )
        assert not sdist_marker_path(tmp_path / "sd", "legacy").exists()

    def test_tampered_cached_build_is_rebuilt(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "cachy", "1.0")
        index.add(sdist)
        args = (f"cachy==1.0 --hash=sha256:{sha256_file(sdist)}", "-i", index.url)
        first = run("install", *args, "--python", str(venv_factory()), "--allow-build", "cachy")
        assert first.code == 0, first.err
        (wheel,) = (tmp_path / "cache" / "built").glob("*/*/cachy-1.0-py3-none-any.whl")
        wheel.write_bytes(wheel.read_bytes() + b"\0")
        venv = venv_factory()
        second = run("install", *args, "--python", str(venv), "--allow-build", "cachy")
        assert second.code == 0, second.err
        assert "warning: The cached wheel built from `cachy-1.0.tar.gz` was modified" in second.err
        assert "Building `cachy==1.0`" in second.err
        assert import_value(venv, "cachy") == "1.0"

    def test_error_sdist_with_a_link(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        sdist = write_sdist(
            tmp_path / "sd",
            "linky",
            "1.0",
            {"PKG-INFO": "Metadata-Version: 2.1\nName: linky\nVersion: 1.0\n\n"},
            symlinks={"setup.py": "/etc/passwd"},
        )
        index.add(sdist)
        result = run(
            "install",
            f"linky==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "--python",
            str(venv_factory()),
            "--allow-build",
            "linky",
        )
        assert result.code == 3
        assert (
            "error: `linky-1.0.tar.gz` (the sdist of `linky==1.0`) cannot be unpacked safely: "
            "member `linky-1.0/setup.py` is a link or special file" in result.err
        )

    def test_error_sdist_escaping_its_folder(self, tmp_path: Path) -> None:
        sdist = write_sdist(tmp_path, "esc", "1.0", {"../evil": "x"}, top="esc-1.0")
        with pytest.raises(build.SdistError, match="would be written outside its folder"):
            build.extract_sdist(sdist, tmp_path / "out", "esc==1.0")
        assert not (tmp_path / "evil").exists()

    def test_direct_url_and_find_links_sdists(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        by_url = intree_sdist(tmp_path / "sd", "by-url", "1.0")
        index.add(by_url)
        folder = tmp_path / "folder"
        in_folder = intree_sdist(folder, "in-folder", "1.0")
        url = f"{index.base_url}/files/{by_url.name}#sha256={sha256_file(by_url)}"
        reqs = tmp_path / "requirements.txt"
        reqs.write_text(f"by-url @ {url}\nin-folder==1.0 --hash=sha256:{sha256_file(in_folder)}\n")
        venv = venv_factory()
        common = ("-r", str(reqs), "--python", str(venv), "-i", index.url, "-f", str(folder))
        refused = run("install", *common, "--allow-build", "by-url")
        assert refused.code == 4
        assert "allow it with `--allow-build in-folder`" in refused.err
        result = run("install", *common, "--allow-build", "by-url", "--allow-build", "in-folder")
        assert result.code == 0, result.err
        assert import_value(venv, "by_url") == "1.0"
        assert import_value(venv, "in_folder") == "1.0"
        direct = json.loads(
            next(site_packages(venv).glob("by_url-1.0.dist-info"))
            .joinpath("direct_url.json")
            .read_text()
        )
        assert direct["url"].endswith("/files/by_url-1.0.tar.gz")

    def test_error_bundle_carries_wheels_only(
        self,
        run: Callable[..., Result],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "bundled", "1.0")
        index.add(sdist)
        (tmp_path / "safepip.toml").write_text('allow-build = ["bundled"]\n')
        monkeypatch.chdir(tmp_path)
        reqs = tmp_path / "requirements.txt"
        reqs.write_text(f"bundled==1.0 --hash=sha256:{sha256_file(sdist)}\n")
        result = run("bundle", "-r", str(reqs), "-o", str(tmp_path / "b.safepip"), "-i", index.url)
        assert result.code == 4
        assert (
            "error: A bundle carries wheels only; `bundled==1.0` would be built from its sdist"
            in result.err
        )
        assert not (tmp_path / "b.safepip").exists()

    def test_two_runs_build_the_same_sdist_at_once(
        self,
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "twice", "1.0", prelude="import time; time.sleep(1)")
        index.add(sdist)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        venvs = [venv_factory(), venv_factory()]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "safepip",
                    "install",
                    f"twice==1.0 --hash=sha256:{sha256_file(sdist)}",
                    *("-i", index.url, "--python", str(venv), "--allow-build", "twice"),
                    *("--cache-dir", str(tmp_path / "shared-cache"), "--no-audit"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for venv in venvs
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        for venv in venvs:
            assert import_value(venv, "twice") == "1.0"
        # one cache entry for the build, whichever run stored it
        assert len(list((tmp_path / "shared-cache" / "built").glob("*/*/built.json"))) == 1

    def test_sdist_used_when_no_wheel_fits(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        tmp_path: Path,
    ) -> None:
        index = static_index()
        windows = wheel_factory("both", "1.0", tag="py3-none-win_amd64")
        sdist = intree_sdist(tmp_path / "sd", "both", "1.0")
        index.add(windows)
        index.add(sdist)
        line = f"both==1.0 --hash=sha256:{sha256_file(windows)} --hash=sha256:{sha256_file(sdist)}"
        venv = venv_factory()
        plain = run("install", line, "-i", index.url, "--python", str(venv))
        assert plain.code == 1
        assert "No wheel of `both==1.0` fits the target" in plain.err
        built = run(
            "install", line, "-i", index.url, "--python", str(venv), "--allow-build", "both"
        )
        assert built.code == 0, built.err
        assert "Building `both==1.0` from `both-1.0.tar.gz`" in built.err
        assert import_value(venv, "both") == "1.0"

    def test_error_folders_and_vcs_stay_refused(
        self, run: Callable[..., Result], venv_factory: Callable[..., Path], tmp_path: Path
    ) -> None:
        project = tmp_path / "proj"
        project.mkdir()
        (project / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "1"\n')
        venv = str(venv_factory())
        common = ("--allow-build", "proj", "--python", venv, "--no-index", "--no-audit")
        folder = run("install", str(project), *common)
        assert folder.code == 4
        assert "which is neither a wheel nor an sdist; building it would run" in folder.err
        assert "allow it with" not in folder.err
        vcs = run("install", "proj @ git+https://127.0.0.1/proj.git", *common)
        assert vcs.code == 3
        assert "cannot be hash-checked (editable installs, VCS URLs and local folders" in vcs.err

    def test_download_keeps_the_verified_sdist(
        self,
        run: Callable[..., Result],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "fetched", "1.0")
        index.add(sdist)
        out = tmp_path / "out"
        result = run(
            "download",
            f"fetched==1.0 --hash=sha256:{sha256_file(sdist)}",
            "-i",
            index.url,
            "-d",
            str(out),
            "--allow-build",
            "fetched",
        )
        assert result.code == 0, result.err
        assert [p.name for p in out.iterdir()] == [sdist.name]
        assert sha256_file(out / sdist.name) == sha256_file(sdist)


# --- locking ------------------------------------------------------------------------------


class TestLock:
    def test_pep643_sdist_locks_without_building(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        wheel_factory: WheelFactory,
        tmp_path: Path,
    ) -> None:
        marker = tmp_path / "backend-ran"
        sdist = intree_sdist(
            tmp_path / "sd",
            "static-meta",
            "1.0",
            metadata_version="2.2",
            dependencies=("dep>=1",),
            prelude=f"open({str(marker)!r}, 'w').close()",
        )
        backend_index.add(sdist)
        dep = wheel_factory("dep", "1.5")
        backend_index.add(dep)
        venv = venv_factory()
        out = tmp_path / "requirements.txt"
        # no `--allow-build` needed: reading PKG-INFO runs nothing
        result = run(
            "lock",
            "static-meta",
            "-o",
            str(out),
            "-i",
            backend_index.url,
            "--python",
            str(venv),
            "--isolated",
        )
        assert result.code == 0, result.err
        assert not marker.exists()  # PKG-INFO was enough: nothing ran
        text = out.read_text()
        assert f"static-meta==1.0 \\\n    --hash=sha256:{sha256_file(sdist)}" in text
        assert f"dep==1.5 \\\n    --hash=sha256:{sha256_file(dep)}" in text
        assert (
            "warning: `static-meta==1.0` has no wheel for the target: its sdist "
            "`static_meta-1.0.tar.gz` is used, and installing it needs "
            "`--allow-build static-meta`" in result.err
        )
        # the lock installs with the option, building the sdist then
        installed = run(
            "install",
            "-r",
            str(out),
            "-i",
            backend_index.url,
            "--python",
            str(venv),
            "--allow-build",
            "static-meta",
        )
        assert installed.code == 0, installed.err
        assert marker.exists()
        assert import_value(venv, "static_meta") == "1.0"

    def test_dynamic_sdist_is_built_to_be_locked(
        self,
        run: Callable[..., Result],
        backend_index: StaticIndex,
        tmp_path: Path,
    ) -> None:
        # Metadata-Version 2.1: nothing says the dependencies are static, so only a build tells
        sdist = intree_sdist(tmp_path / "sd", "dynamic-meta", "1.0", dependencies=("dep",))
        backend_index.add(sdist)
        backend_index.add(FLIT_CORE)
        refused = run("lock", "dynamic-meta", "-o", "-", "-i", backend_index.url, "--isolated")
        assert refused.code == 4
        assert (
            "hint: its sdists do not declare their dependencies in `PKG-INFO` (PEP 643), so only "
            "a build can tell them: allow it with `--allow-build dynamic-meta`" in refused.err
        )
        backend_index.add(sdist)
        result = run(
            "lock",
            "dynamic-meta",
            "-o",
            "-",
            "-i",
            backend_index.url,
            "--isolated",
            "--allow-build",
            "dynamic-meta",
        )
        assert result.code == 1  # `dep`, which only the built wheel declares, is not served
        assert "No version of `dep`" in result.err or "`dep` was not found" in result.err
        assert (
            "`dynamic-meta==1.0` does not declare its dependencies statically (PEP 643); "
            "building it to read them" in result.err
        )

    def test_dynamic_sdist_is_built_and_lock_build_writes_the_constraint(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        backend_index: StaticIndex,
        wheel_factory: WheelFactory,
        tmp_path: Path,
    ) -> None:
        sdist = flit_sdist(
            tmp_path / "sd", "flitty", "3.0", dependencies=("dep>=1",), metadata_version="2.1"
        )
        backend_index.add(sdist)
        dep = wheel_factory("dep", "1.0")
        backend_index.add(dep)
        venv = venv_factory()
        common = ("-i", backend_index.url, "--python", str(venv), "--isolated")
        constraints = tmp_path / "build-constraints.txt"
        written = run(
            "lock", "flitty", "--allow-build", "flitty", "--build", "-o", str(constraints), *common
        )
        assert written.code == 0, written.err
        assert (
            "warning: `flitty==3.0`: its `PKG-INFO` does not declare its dependencies statically "
            "(PEP 643); `--build` reads them from it without building" in written.err
        )
        assert f"flit-core==3.10.1 \\\n    --hash=sha256:{FLIT_CORE_SHA256}" in (
            constraints.read_text()
        )
        assert "# via build requirement of flitty-3.0.tar.gz" in constraints.read_text()
        lock = tmp_path / "requirements.txt"
        locked = run(
            "lock",
            "flitty",
            "--allow-build",
            "flitty",
            "--build-constraint",
            str(constraints),
            "-o",
            str(lock),
            *common,
        )
        assert locked.code == 0, locked.err
        assert "building it to read them" in locked.err
        assert f"dep==1.0 \\\n    --hash=sha256:{sha256_file(dep)}" in lock.read_text()
        installed = run(
            "install",
            "-r",
            str(lock),
            "--allow-build",
            "flitty",
            "--build-constraint",
            str(constraints),
            *common,
        )
        assert installed.code == 0, installed.err
        # the build made for locking is reused
        assert "Using the wheel built earlier from `flitty-3.0.tar.gz`" in installed.err
        assert import_value(venv, "flitty") == "3.0"

    def test_pylock_with_an_sdist(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        index = static_index()
        sdist = intree_sdist(tmp_path / "sd", "locked", "2.0", metadata_version="2.2")
        index.add(sdist)
        venv = venv_factory()
        lock = tmp_path / "pylock.toml"
        common = ("-i", index.url, "--python", str(venv))
        made = run("lock", "locked", "--allow-build", "locked", "-o", str(lock), *common)
        assert made.code == 0, made.err
        assert sha256_file(sdist) in lock.read_text()
        before = tree_snapshot(venv)
        refused = run("install", "-r", str(lock), *common)
        assert refused.code == 4
        assert "`locked==2.0` is locked only as a sdist source; allow it with" in refused.err
        assert tree_snapshot(venv) == before
        result = run("install", "-r", str(lock), *common, "--allow-build", "locked")
        assert result.code == 0, result.err
        assert import_value(venv, "locked") == "2.0"

    def test_unhashed_install_resolves_to_the_sdist(
        self,
        run: Callable[..., Result],
        venv_factory: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
        tmp_path: Path,
    ) -> None:
        index = static_index()
        index.add(intree_sdist(tmp_path / "sd", "loose", "1.0", metadata_version="2.2"))
        venv = venv_factory()
        refused = run("install", "loose", "-i", index.url, "--python", str(venv))
        assert refused.code == 4
        result = run(
            "install", "loose", "-i", index.url, "--python", str(venv), "--allow-build", "loose"
        )
        assert result.code == 0, result.err
        assert import_value(venv, "loose") == "1.0"
