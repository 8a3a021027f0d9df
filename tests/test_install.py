"""End-to-end installs through the CLI against real loopback servers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wheelbuild import build_sdist, build_wheel, sdist_marker_path, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Cli, Environment, TreeSnapshot
    from servers import FileServer, PypiServer, StaticIndex


def other_python() -> str | None:
    """An interpreter of another minor version than the one running the tests, if any."""
    import glob
    import shutil

    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [shutil.which(f"python{v}") for v in ("3.12", "3.10", "3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1*/bin/python3")))
    for candidate in candidates:
        if not candidate:
            continue
        proc = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        version = proc.stdout.strip()
        if (
            proc.returncode == 0
            and version != mine
            and tuple(map(int, version.split("."))) >= (3, 8)
        ):
            return candidate
    return None


def pip_dry_run_report(tmp_path: Path, *args: str) -> dict[str, Any]:
    """pip's own answer (the oracle): its installation report for a dry run."""
    report = tmp_path / "pip-report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "-q",
            "--report",
            str(report),
            *args,
        ],
        check=True,
        capture_output=True,
    )
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def report_pins(report: dict[str, Any], *, with_hash: bool = False) -> set[tuple[str, ...]]:
    """(name, version[, sha256]) of every distribution an installation report installs."""
    pins: set[tuple[str, ...]] = set()
    for item in report["install"]:
        name, version = item["metadata"]["name"].lower(), item["metadata"]["version"]
        sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
        pins.add((name, version, sha) if with_hash else (name, version))
    return pins


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def py(venv: Path, code: str) -> str:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def lock_line(path: Path, name: str | None = None, version: str | None = None) -> str:
    stem = path.name.split("-")
    return f"{name or stem[0]}=={version or stem[1]} --hash=sha256:{sha256_file(path)}"


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    """Build a wheel under tmp_path/wheels."""
    folder = tmp_path / "wheels"
    folder.mkdir()

    def make(name: str, version: str, **kwargs: Any) -> Path:
        dest = folder / f"{name}-{version}-{len(list(folder.iterdir()))}"
        dest.mkdir()
        return build_wheel(dest, name, version, **kwargs)

    return make


@pytest.fixture
def serve(static_index: Callable[..., StaticIndex]) -> Callable[..., StaticIndex]:
    """`serve(*wheels, mode=...)`: a loopback index serving these wheels."""

    def make(*wheels: Path, mode: str = "auto") -> StaticIndex:
        index = static_index(mode=mode)
        for wheel in wheels:
            index.add(wheel)
        return index

    return make


@pytest.fixture
def two_packages(project: Callable[..., Path]) -> tuple[Path, Path]:
    alpha = project(
        "alpha",
        "1.0",
        requires=["beta>=1"],
        entry_points={"console_scripts": {"alpha-cli": "alpha:main"}},
        files={
            "alpha/__init__.py": "__version__ = '1.0'\ndef main():\n    print('alpha says hi')\n"
        },
    )
    beta = project("beta", "1.2")
    return alpha, beta


def write_reqs(tmp_path: Path, *lines: str, name: str = "requirements.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


class TestInstallHappyPath:
    @pytest.mark.parametrize("mode", ["auto", "html-only", "json-only"])
    def test_installs_hash_pinned_lock(
        self,
        mode: str,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta, mode=mode)
        venv = venv_factory()
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))

        result = cli("install", "-r", str(reqs), "--python", str(venv), "-i", index.url)

        assert result.code == 0, result.err
        assert "Installed 2 packages" in result.err
        assert (
            py(venv, "import alpha, beta; print(alpha.__version__, beta.__version__)") == "1.0 1.2"
        )
        site = site_packages(venv)
        dist_info = site / "alpha-1.0.dist-info"
        assert (dist_info / "INSTALLER").read_text() == "safepip\n"
        assert (dist_info / "REQUESTED").exists()
        record = json.loads((dist_info / "safepip.json").read_text())
        assert record["sha256"] == sha256_file(alpha)
        assert record["filename"] == alpha.name
        assert record["hash_source"] == "pinned"
        assert not (dist_info / "direct_url.json").exists()
        script = venv / "bin" / "alpha-cli"
        assert subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout == (
            "alpha says hi\n"
        )
        assert script.read_text().startswith(f"#!{venv / 'bin' / 'python'}")
        # RECORD lists every installed file, pip can read it.
        rows = (dist_info / "RECORD").read_text().splitlines()
        assert any(r.startswith("alpha/__init__.py,sha256=") for r in rows)
        assert any("bin/alpha-cli" in r for r in rows)

    def test_reinstall_is_a_no_op_and_version_change_replaces(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        old = project("gamma", "1.0", files={"gamma/__init__.py": "V = 1\n", "gamma/old.py": ""})
        new = project("gamma", "2.0", files={"gamma/__init__.py": "V = 2\n"})
        index = serve(old, new)
        venv = venv_factory()
        site = site_packages(venv)
        assert cli("install", lock_line(old), "--python", str(venv), "-i", index.url).code == 0
        assert (site / "gamma" / "old.py").exists()

        again = cli("install", lock_line(old), "--python", str(venv), "-i", index.url)
        assert again.code == 0
        assert "kept 1 already installed" in again.err

        upgraded = cli("install", lock_line(new), "--python", str(venv), "-i", index.url)
        assert upgraded.code == 0, upgraded.err
        assert "replaced 1" in upgraded.err
        assert py(venv, "import gamma; print(gamma.V)") == "2"
        assert not (site / "gamma" / "old.py").exists()
        assert not (site / "gamma-1.0.dist-info").exists()

    def test_package_installed_by_another_tool_is_reinstalled_from_the_verified_file(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        wheel = project("delta", "1.0")
        index = serve(wheel)
        venv = venv_factory()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(venv / "bin" / "python"),
                "install",
                "--no-deps",
                "--no-index",
                str(wheel),
            ],
            check=True,
            capture_output=True,
        )
        dist_info = site_packages(venv) / "delta-1.0.dist-info"
        assert (dist_info / "INSTALLER").read_text().strip() == "pip"
        result = cli("install", lock_line(wheel), "--python", str(venv), "-i", index.url)
        assert result.code == 0, result.err
        assert "replaced 1" in result.err
        assert (dist_info / "INSTALLER").read_text() == "safepip\n"

    def test_pypiserver_index(
        self,
        cli: Cli,
        pypiserver_url: str,
        pypiserver: PypiServer,
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        pypiserver.add(alpha)
        pypiserver.add(beta)
        venv = venv_factory()
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))
        result = cli("install", "-r", str(reqs), "--python", str(venv), "-i", pypiserver_url)
        assert result.code == 0, result.err
        assert py(venv, "import alpha, beta; print('ok')") == "ok"

    def test_tls_index_with_cert(
        self,
        cli: Cli,
        tls_index: StaticIndex,
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        tls_index.add(alpha)
        tls_index.add(beta)
        venv = venv_factory()
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))
        without = cli("install", "-r", str(reqs), "--python", str(venv), "-i", tls_index.url)
        assert without.code == 1
        assert "could not be verified" in without.err
        assert "--cert" in without.err
        result = cli(
            "install",
            "-r",
            str(reqs),
            "--python",
            str(venv),
            "-i",
            tls_index.url,
            "--cert",
            str(tls_index.ca_bundle),
        )
        assert result.code == 0, result.err
        assert py(venv, "import alpha; print('ok')") == "ok"

    def test_target_and_prefix(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta)
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))
        target = tmp_path / "target"
        result = cli("install", "-r", str(reqs), "--target", str(target), "-i", index.url)
        assert result.code == 0, result.err
        assert (target / "alpha" / "__init__.py").exists()
        assert (target / "bin" / "alpha-cli").exists()
        prefix = tmp_path / "prefix"
        result = cli("install", "-r", str(reqs), "--prefix", str(prefix), "-i", index.url)
        assert result.code == 0, result.err
        assert list(prefix.glob("lib/python3*/site-packages/alpha/__init__.py"))
        assert (prefix / "bin" / "alpha-cli").exists()

    def test_dry_run_writes_nothing_and_reports(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        tree_snapshot: Callable[[Path], TreeSnapshot],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta)
        venv = venv_factory()
        before = tree_snapshot(venv)
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))
        result = cli(
            "install",
            "-r",
            str(reqs),
            "--python",
            str(venv),
            "-i",
            index.url,
            "--dry-run",
            "--report",
            "-",
        )
        assert result.code == 0, result.err
        assert tree_snapshot(venv) == before
        report = json.loads(result.out)
        assert report["version"] == "1"
        assert report["dry_run"] is True
        names = {i["metadata"]["name"]: i for i in report["install"]}
        assert set(names) == {"alpha", "beta"}
        assert names["alpha"]["download_info"]["archive_info"]["hashes"]["sha256"] == sha256_file(
            alpha
        )
        assert "Would change:\n+ alpha==1.0\n+ beta==1.2\nWould install 2 packages in" in result.err

    def test_other_python_version(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        other = other_python()
        if other is None:
            pytest.skip("no second Python version (3.10, 3.12 or 3.13) on this machine")
        tagged = project("eps", "1.0", requires_python=">=3.8")
        index = serve(tagged)
        venv = venv_factory(other)
        result = cli("install", lock_line(tagged), "--python", str(venv), "-i", index.url)
        assert result.code == 0, result.err
        out = py(venv, "import eps, sys; print(eps.__version__, sys.version_info[:2] != (3, 11))")
        assert out.startswith("1.0")

    def test_direct_url_requirement_writes_direct_url_json(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        wheel = project("zeta", "1.0")
        index = serve(wheel)
        venv = venv_factory()
        url = index.file_url(wheel.name)
        result = cli(
            "install",
            f"zeta @ {url}#sha256={sha256_file(wheel)}",
            "--python",
            str(venv),
            "-i",
            index.url,
        )
        assert result.code == 0, result.err
        direct = json.loads(
            (site_packages(venv) / "zeta-1.0.dist-info" / "direct_url.json").read_text()
        )
        assert direct["url"] == url
        assert direct["archive_info"]["hashes"]["sha256"] == sha256_file(wheel)


class TestRefusals:
    """Every refusal names what is wrong and leaves the environment byte-for-byte unchanged."""

    @pytest.fixture
    def index(self, serve: Callable[..., StaticIndex]) -> StaticIndex:
        """The index of the refused installs; each test adds the wheels it needs."""
        return serve()

    @pytest.fixture
    def env(
        self, environment: Environment, index: StaticIndex, project: Callable[..., Path]
    ) -> Environment:
        """A venv with `base==1.0` installed by safepip from `index`."""
        base = project("base", "1.0")
        index.add(base)
        installed = environment.install(lock_line(base), "-i", index.url)
        assert installed.code == 0, installed.err
        return environment

    def test_error_hash_mismatch(
        self,
        env: Environment,
        index: StaticIndex,
        project: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        good = project("eta", "1.0")
        evil = project("eta", "1.0", salt="evil")
        assert good.name == evil.name
        index.add(good)
        index.serve_bytes_override[good.name] = evil.read_bytes()
        result = env.install(lock_line(good), "-i", index.url)
        assert result.code == 3
        url = index.file_url(good.name)
        assert result.err == (
            "error: 1 hash-checking problem\n\n"
            "Hash mismatch: these files do not match any hash in the requirements; someone may "
            "have tampered with them:\n"
            f"    `eta==1.0`\n"
            f"        file:     {url}\n"
            f"        expected: sha256:{sha256_file(good)}\n"
            f"        got:      sha256:{sha256_file(evil)}\n"
            "\n"
            "hint: if the requirements file is right, the index served other bytes than were "
            "locked; do not install them, and regenerate the lock only if you trust the new files\n"
        )
        env.assert_unchanged()
        cache = tmp_path / "cache" / "artifacts"
        assert not any(p.name == good.name for p in cache.rglob("*.whl"))

    def test_error_missing_dependency(
        self,
        env: Environment,
        index: StaticIndex,
        two_packages: tuple[Path, Path],
    ) -> None:
        alpha, beta = two_packages
        index.add(alpha)
        index.add(beta)
        result = env.install(lock_line(alpha), "-i", index.url)
        assert result.code == 3
        assert result.err == (
            "error: 1 hash-checking problem\n\n"
            "In hash-checking mode every dependency must be pinned and hashed in the requirements "
            "files; these are missing (add the lines below after checking them):\n"
            f"    beta==1.2 --hash=sha256:{sha256_file(beta)}  # required by alpha -> beta>=1\n"
            "\n"
            "hint: regenerate the lock with `safepip lock` (or `pip-compile --generate-hashes`)\n"
        )
        env.assert_unchanged()

    def test_error_missing_hash_and_unpinned(
        self,
        env: Environment,
        index: StaticIndex,
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        index.add(alpha)
        index.add(beta)
        reqs = write_reqs(tmp_path, "alpha>=1.0", "beta==1.2", "--require-hashes")
        result = env.install("-r", str(reqs), "-i", index.url)
        assert result.code == 3
        assert "these are not:\n    `alpha>=1.0` (from " in result.err
        assert f"    beta==1.2 --hash=sha256:{sha256_file(beta)}  # {reqs}:2" in result.err
        env.assert_unchanged()

    def test_error_sdist_only(
        self,
        env: Environment,
        index: StaticIndex,
        tmp_path: Path,
    ) -> None:
        folder = tmp_path / "sd"
        folder.mkdir()
        sdist = build_sdist(folder, "theta", "1.0")
        index.add(sdist)
        line = f"theta==1.0 --hash=sha256:{sha256_file(sdist)}"
        result = env.install(line, "-i", index.url)
        assert result.code == 4
        assert result.err.startswith(
            "error: Refusing to install:\n    `theta==1.0` has only a source distribution; "
            "building it would run the package's code (<command line>:1); allow it with "
            "`--allow-build theta`\n\nhint: "
        )
        assert not sdist_marker_path(folder, "theta").exists()
        env.assert_unchanged()

    def test_artifact_on_foreign_host_is_refused_then_allowed(
        self,
        env: Environment,
        index: StaticIndex,
        project: Callable[..., Path],
        foreign_server: FileServer,
        venv_factory: Callable[..., Path],
    ) -> None:
        wheel = project("iota", "1.0")
        foreign_server.add(wheel)
        index.add(wheel, url_host=foreign_server.url)
        result = env.install(lock_line(wheel), "-i", index.url)
        assert result.code == 4
        assert "host `127.0.0.2:" in result.err
        assert "is not a trusted host" in result.err
        assert (
            "hint: if `127.0.0.2` is a host you trust, add `--allow-host 127.0.0.2`" in result.err
        )
        env.assert_unchanged()
        allowed = env.install(
            lock_line(wheel),
            "-i",
            index.url,
            "--allow-host",
            "127.0.0.2",
        )
        assert allowed.code == 0, allowed.err

    def test_redirect_off_host_is_refused(
        self,
        env: Environment,
        index: StaticIndex,
        project: Callable[..., Path],
        foreign_server: FileServer,
    ) -> None:
        wheel = project("kappa", "1.0")
        index.add(wheel)
        elsewhere = foreign_server.add(wheel)
        path = "/" + index.file_url(wheel.name).split("/", 3)[3]
        index.redirect[path] = elsewhere
        result = env.install(lock_line(wheel), "-i", index.url)
        assert result.code == 4
        assert "Refusing redirect from" in result.err
        assert "127.0.0.2" in result.err
        env.assert_unchanged()

    def test_path_traversal_wheel(
        self,
        env: Environment,
        index: StaticIndex,
        project: Callable[..., Path],
    ) -> None:
        wheel = project("lam", "1.0", extra_members={"../../evil.py": b"print('owned')\n"})
        index.add(wheel, metadata=False)
        result = env.install(lock_line(wheel), "-i", index.url)
        assert result.code == 3
        assert result.err.startswith(
            f"error: Refusing wheel `{wheel.name}`: unsafe path in archive (member `../../evil.py`)"
        )
        env.assert_unchanged()

    def test_lying_record(
        self,
        env: Environment,
        index: StaticIndex,
        project: Callable[..., Path],
    ) -> None:

        def lie(record: str) -> str:
            return re.sub(r"(mu/__init__\.py,sha256=)[^,]+", r"\1AAAA", record)

        wheel = project("mu", "1.0", record_override=lie)
        index.add(wheel)
        result = env.install(lock_line(wheel), "-i", index.url)
        assert result.code == 3
        assert "content does not match its RECORD digest (member `mu/__init__.py`)" in result.err
        env.assert_unchanged()

    def test_truncated_download(
        self,
        env: Environment,
        index: StaticIndex,
        project: Callable[..., Path],
    ) -> None:
        wheel = project("nu", "1.0", files={"nu/__init__.py": "x = 1\n" * 5000})
        index.add(wheel)
        index.truncate[wheel.name] = 100
        result = env.install(lock_line(wheel), "-i", index.url)
        assert result.code == 1
        # How much arrives before the cut depends on buffering; the rest is exact.
        assert re.fullmatch(
            rf"error: Download of `{re.escape(wheel.name)}` was cut short: "
            rf"got \d+ of {wheel.stat().st_size} bytes\n\n"
            r"hint: retry; if it keeps happening the server or a proxy is at fault\n",
            result.err,
        ), result.err
        env.assert_unchanged()

    def test_failure_midway_is_rolled_back(
        self, env: Environment, index: StaticIndex, project: Callable[..., Path]
    ) -> None:
        base_v2 = project("base", "2.0")
        good = project("aaa", "1.0")
        blocked = project("zzz", "1.0", files={"zzz.py": "x = 1\n"})
        for w in (base_v2, good, blocked):
            index.add(w)
        # A folder where the last wheel wants to write a file: the install fails late.
        (env.site_packages / "zzz.py").mkdir()
        result = env.install(
            lock_line(base_v2), lock_line(good), lock_line(blocked), "-i", index.url
        )
        assert result.code == 1
        assert "a folder is in the way" in result.err
        env.assert_unchanged()

    def test_a_file_where_a_folder_goes_is_refused(
        self, env: Environment, index: StaticIndex, project: Callable[..., Path]
    ) -> None:
        """A file where a wheel's folder goes (its sub-folders are never looked at: inside a
        folder the install makes, nothing exists yet), and the environment is unchanged."""
        wheel = project("deep", "1.0", files={"deep/sub/inner/mod.py": "x = 1\n"})
        index.add(wheel)
        (env.site_packages / "deep").write_text("in the way\n")
        result = env.install(lock_line(wheel), "-i", index.url)
        assert result.code == 1
        assert f"Cannot create folder `{env.site_packages}/deep" in result.err
        assert "a file is in the way" in result.err
        env.assert_unchanged()

    def test_error_first_index_wins(
        self,
        env: Environment,
        index: StaticIndex,
        project: Callable[..., Path],
        static_index: Callable[..., StaticIndex],
    ) -> None:
        private = index
        public = static_index()
        mine = project("corp-lib", "1.0")
        attack = project("corp-lib", "9.0")
        private.add(mine)
        public.add(attack)
        result = env.install(
            lock_line(attack, "corp-lib", "9.0"),
            "-i",
            private.url,
            "--extra-index-url",
            public.url,
        )
        assert result.code == 1
        assert "error: No file for `corp-lib==9.0` on the index" in result.err
        assert not any(r.path.startswith("/simple/corp-lib") for r in public.requests)
        env.assert_unchanged()

    def test_error_bad_requirements_file(
        self,
        env: Environment,
        tmp_path: Path,
    ) -> None:
        reqs = write_reqs(tmp_path, "good==1.0", "bad=>1.0", name="broken.txt")
        result = env.install("-r", str(reqs))
        assert result.code == 2
        assert f"{reqs}:2" in result.err
        env.assert_unchanged()


class TestOracle:
    def test_same_distributions_as_pip(
        self,
        cli: Cli,
        static_index: Callable[..., StaticIndex],
        project: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        """pip's dry-run report and safepip's agree on what a lock installs."""
        wheels = [
            project("one", "1.0", requires=["two>=1", "three; python_version < '3'"]),
            project("two", "2.0", requires=["four[fast]"]),
            project("four", "1.1", extras={"fast": ["five"]}),
            project("five", "0.5"),
            project("three", "3.0"),
        ]
        index = static_index()
        for w in wheels:
            index.add(w)
        reqs = write_reqs(
            tmp_path,
            *(lock_line(w) for w in wheels[:4]),
            lock_line(wheels[4]),
            "three==3.0 ; python_version < '3'",
        )
        pip_report = pip_dry_run_report(tmp_path, "-r", str(reqs), "--index-url", index.url)
        ours = cli(
            "install",
            "-r",
            str(reqs),
            "--target",
            str(tmp_path / "t"),
            "-i",
            index.url,
            "--dry-run",
            "--report",
            "-",
        )
        assert ours.code == 0, ours.err
        assert report_pins(json.loads(ours.out)) == report_pins(pip_report)


class TestDownloadAndHash:
    def test_download_feeds_pip_offline(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
        venv_factory: Callable[..., Path],
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta)
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))
        dest = tmp_path / "wheelhouse"
        result = cli("download", "-r", str(reqs), "-d", str(dest), "-i", index.url)
        assert result.code == 0, result.err
        assert sorted(p.name for p in dest.iterdir()) == sorted([alpha.name, beta.name])
        target = tmp_path / "pip-target"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-index",
                "-f",
                str(dest),
                "--require-hashes",
                "-r",
                str(reqs),
                "--target",
                str(target),
                "-q",
            ],
            check=True,
            capture_output=True,
        )
        assert (target / "alpha" / "__init__.py").exists()
        # …and safepip installs from it offline.
        venv = venv_factory()
        offline = cli(
            "install", "-r", str(reqs), "--no-index", "-f", str(dest), "--python", str(venv)
        )
        assert offline.code == 0, offline.err

    def test_hash_matches_pip(self, cli: Cli, project: Callable[..., Path]) -> None:
        wheel = project("xi", "1.0")
        ours = cli("hash", str(wheel))
        pips = subprocess.run(
            [sys.executable, "-m", "pip", "hash", str(wheel)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert ours.code == 0
        assert ours.out == pips


@pytest.mark.network
def test_real_index_lock_installs_and_imports(cli: Cli, venv_factory: Callable[..., Path]) -> None:
    """A uv-written hash-pinned lock from the real package index installs and imports."""
    lock = Path(__file__).parent.parent / "examples" / "requirements.txt"
    venv = venv_factory()
    result = cli("install", "-r", str(lock), "--python", str(venv), "--isolated")
    assert result.code == 0, result.err
    assert py(venv, "import requests; print(requests.__name__)") == "requests"


class TestResolvingAndLocks:
    def test_unpinned_requirements_resolve_and_use_index_hashes(
        self,
        cli: Cli,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        index = static_index()
        for wheel in (
            project("alpha", "1.0", requires=["beta>=1"]),
            project("beta", "1.2"),
            project("beta", "2.0"),
        ):
            index.add(wheel)
        venv = venv_factory()
        result = cli("install", "alpha", "beta<2", "--python", str(venv), "-i", index.url)
        assert result.code == 0, result.err
        assert py(venv, "import alpha, beta; print(beta.__version__)") == "1.2"
        record = json.loads(
            (site_packages(venv) / "beta-1.2.dist-info" / "safepip.json").read_text()
        )
        assert record["hash_source"] == "index"
        assert (site_packages(venv) / "beta-1.2.dist-info" / "REQUESTED").exists()

    def test_error_unpinned_index_file_without_hash(
        self,
        cli: Cli,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        tree_snapshot: Callable[[Path], TreeSnapshot],
    ) -> None:
        index = static_index()
        index.add(project("omega", "1.0"), hash_in_listing=False)
        venv = venv_factory()
        before = tree_snapshot(venv)
        refused = cli("install", "omega", "--python", str(venv), "-i", index.url)
        assert refused.code == 3, refused.err
        assert "omega" in refused.err
        assert tree_snapshot(venv) == before
        allowed = cli(
            "install", "omega", "--python", str(venv), "-i", index.url, "--allow-unhashed"
        )
        assert allowed.code == 0, allowed.err

    @pytest.mark.parametrize("output", ["requirements.txt", "pylock.toml"])
    def test_lock_then_install_then_freeze(
        self,
        output: str,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta)
        venv = venv_factory()
        lock = tmp_path / output
        locked = cli("lock", "alpha", "-o", str(lock), "-i", index.url, "--python", str(venv))
        assert locked.code == 0, locked.err
        installed = cli("install", "-r", str(lock), "--python", str(venv), "-i", index.url)
        assert installed.code == 0, installed.err
        assert py(venv, "import alpha, beta; print('ok')") == "ok"
        frozen = cli("freeze", "--python", str(venv))
        assert frozen.code == 0, frozen.err
        assert f"alpha==1.0 \\\n    --hash=sha256:{sha256_file(alpha)}" in frozen.out
        # The frozen output is itself a hash-mode lock that reinstalls the same environment.
        refrozen = write_reqs(tmp_path, frozen.out, name="frozen.txt")
        again = cli("install", "-r", str(refrozen), "--python", str(venv), "-i", index.url)
        assert again.code == 0, again.err
        assert "kept 2 already installed" in again.err


class TestConfigurationAndSources:
    def test_pip_configuration_is_honoured_unless_isolated(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        wheel = project("pi", "1.0")
        index = serve(wheel)
        conf = tmp_path / "pip.conf"
        conf.write_text(f"[global]\nindex-url = {index.url}\n")
        monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
        venv = venv_factory()
        result = cli("install", lock_line(wheel), "--python", str(venv))
        assert result.code == 0, result.err
        isolated = cli(
            "install",
            lock_line(wheel),
            "--python",
            str(venv_factory()),
            "--isolated",
            "--no-index",
            "--cache-dir",
            str(tmp_path / "other-cache"),
        )
        assert isolated.code == 1
        assert "`pi` was not found on the find-links locations" in isolated.err

    def test_remote_requirements_file_with_nested_include(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        foreign_server: FileServer,
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta)
        server = foreign_server
        server.add_bytes("locks/base.txt", (lock_line(beta) + "\n").encode())
        top = server.add_bytes(
            "locks/top.txt", f"-r base.txt\n--index-url {index.url}\n{lock_line(alpha)}\n".encode()
        )
        venv = venv_factory()
        result = cli("install", "-r", top, "--python", str(venv))
        assert result.code == 0, result.err
        assert py(venv, "import alpha, beta; print('ok')") == "ok"

    def test_error_credentials_are_never_shown(
        self,
        cli: Cli,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        good = project("rho", "1.0")
        evil = project("rho", "1.0", salt="x")
        index = static_index()
        index.basic_auth = ("user", "s3cret-token")
        index.add(good)
        index.serve_bytes_override[good.name] = evil.read_bytes()
        secret_url = index.url.replace("://", "://user:s3cret-token@")
        venv = venv_factory()
        result = cli(
            "install", lock_line(good), "--python", str(venv), "-i", secret_url, "--report", "-"
        )
        assert result.code == 3
        assert "Hash mismatch" in result.err
        assert "s3cret-token" not in result.err + result.out

    def test_two_processes_share_one_cache(
        self,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta)
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))
        venvs = [venv_factory(), venv_factory()]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "safepip",
                    "install",
                    "-r",
                    str(reqs),
                    "--python",
                    str(v),
                    "-i",
                    index.url,
                    "--cache-dir",
                    str(tmp_path / "shared-cache"),
                    "-q",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for v in venvs
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
        for v in venvs:
            assert py(v, "import alpha, beta; print('ok')") == "ok"


class TestVerify:
    def test_verify_detects_a_modified_file_and_checks_a_lock(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        two_packages: tuple[Path, Path],
        tmp_path: Path,
    ) -> None:
        alpha, beta = two_packages
        index = serve(alpha, beta)
        venv = venv_factory()
        reqs = write_reqs(tmp_path, lock_line(alpha), lock_line(beta))
        assert cli("install", "-r", str(reqs), "--python", str(venv), "-i", index.url).code == 0
        clean = cli("verify", "--python", str(venv), "-r", str(reqs))
        assert clean.code == 0, clean.err
        assert "Verified 2 packages" in clean.err
        only_alpha = write_reqs(tmp_path, lock_line(alpha), name="alpha-only.txt")
        extra = cli("verify", "--python", str(venv), "-r", str(only_alpha))
        assert extra.code == 3
        assert "1 problem in the environment" in extra.err
        assert "`beta==1.2`: installed but not in the lock" in extra.err
        target = site_packages(venv) / "beta" / "__init__.py"
        target.write_text("print('tampered')\n")
        tampered = cli("verify", "--python", str(venv))
        assert tampered.code == 3
        assert f"`beta==1.2`: {target} is modified" in tampered.err

    def test_an_edit_in_one_environment_never_reaches_the_next_install(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        """Installed files are hard links into the cache; editing one in place must not change
        what a later install gets."""
        wheel = project("sigma", "1.0", files={"sigma/__init__.py": "VALUE = 'original'\n"})
        index = serve(wheel)
        first = venv_factory()
        assert cli("install", lock_line(wheel), "--python", str(first), "-i", index.url).code == 0
        installed = site_packages(first) / "sigma" / "__init__.py"
        with installed.open("r+") as fh:  # same size, in place: the shared inode changes
            fh.write("VALUE = 'tampere'\n")
        second = venv_factory()
        result = cli("install", lock_line(wheel), "--python", str(second), "-i", index.url)
        assert result.code == 0, result.err
        assert py(second, "import sigma; print(sigma.VALUE)") == "original"


class TestCompile:
    def test_compile_writes_bytecode_for_the_target_interpreter(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        wheel = project("tau", "1.0")
        index = serve(wheel)
        venv = venv_factory()
        plain = cli("install", lock_line(wheel), "--python", str(venv), "-i", index.url)
        assert plain.code == 0, plain.err
        assert not list(site_packages(venv).rglob("*.pyc"))
        venv2 = venv_factory()
        compiled = cli(
            "install", lock_line(wheel), "--python", str(venv2), "-i", index.url, "--compile"
        )
        assert compiled.code == 0, compiled.err
        tag = py(venv2, "import sys; print(sys.implementation.cache_tag)")
        assert (site_packages(venv2) / "tau" / "__pycache__" / f"__init__.{tag}.pyc").exists()


@pytest.mark.network
@pytest.mark.parametrize("lock", ["small.pip-compile.txt", "small.uv.txt"])
def test_real_index_same_distributions_as_pip(lock: str, cli: Cli, tmp_path: Path) -> None:
    """The 'done when' of the install issue: a lock written by pip-compile or uv installs
    exactly the distributions pip would install from it."""
    path = Path(__file__).parent / "data" / "locks" / lock
    pip_report = pip_dry_run_report(tmp_path, "-r", str(path), "--target", str(tmp_path / "p"))
    ours = cli(
        "install",
        "-r",
        str(path),
        "--target",
        str(tmp_path / "t"),
        "--isolated",
        "--dry-run",
        "--report",
        "-",
    )
    assert ours.code == 0, ours.err
    assert report_pins(json.loads(ours.out), with_hash=True) == report_pins(
        pip_report, with_hash=True
    )


class TestNoForeignCode:
    def test_error_editable_and_vcs_requirements_are_refused(
        self,
        cli: Cli,
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], TreeSnapshot],
        tmp_path: Path,
    ) -> None:
        project_dir = tmp_path / "src-tree"
        project_dir.mkdir()
        (project_dir / "setup.py").write_text("raise SystemExit('must never run')\n")
        venv = venv_factory()
        before = tree_snapshot(venv)
        editable = write_reqs(tmp_path, f"-e {project_dir}", name="editable.txt")
        refused = cli("install", "-r", str(editable), "--python", str(venv), "--no-index")
        assert refused.code == 4, refused.err
        assert "is an editable install; building it runs its code" in refused.err
        hashed = write_reqs(
            tmp_path, f"-e {project_dir}", "--require-hashes", name="editable-hashed.txt"
        )
        in_hash_mode = cli("install", "-r", str(hashed), "--python", str(venv), "--no-index")
        assert in_hash_mode.code == 3, in_hash_mode.err
        assert "cannot be hash-checked" in in_hash_mode.err
        assert tree_snapshot(venv) == before


class TestPipLaunchers:
    def test_pip_gets_versioned_launchers_like_pip(
        self,
        cli: Cli,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        """Installing pip creates `pip`, `pip3` and `pip3.X` for the target, as pip and uv do,
        and not the versioned launcher the wheel names for the Python that built it."""
        main_ep = "pip._internal.cli.main:main"
        wheel = build_wheel(
            tmp_path / "w",
            "pip",
            "99.0",
            files={"pip/__init__.py": "", "pip/_internal/__init__.py": ""},
            entry_points={"console_scripts": {"pip": main_ep, "pip3": main_ep, "pip3.8": main_ep}},
        )
        index = static_index()
        index.add(wheel)
        reqs = write_reqs(tmp_path, lock_line(wheel))
        ours, pips = venv_factory(), venv_factory()
        argv = ["install", "-q", "-r", str(reqs), "-i", index.url, "--python", str(ours)]
        assert cli(*argv).code == 0
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(pips / "bin" / "python"), "install",
             "--isolated", "--no-compile", "-q", "-r", str(reqs), "-i", index.url],
            check=True, capture_output=True,
        )  # fmt: skip
        minor = "{}.{}".format(*sys.version_info[:2])
        launchers = sorted(p.name for p in (ours / "bin").glob("pip*"))
        assert launchers == sorted(["pip", "pip3", f"pip{minor}"])
        assert launchers == sorted(p.name for p in (pips / "bin").glob("pip*"))


class TestPreReleasesAndExtras:
    """PEP 440 pre-releases and unknown extras end to end (the resolver's rules: test_resolver)."""

    def test_a_project_with_only_pre_releases_installs(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        index = serve(project("onlypre", "1.0a1"), project("onlypre", "1.0b2"))
        venv = venv_factory()
        result = cli("install", "onlypre", "--python", str(venv), "-i", index.url)
        assert result.code == 0, result.err
        assert (site_packages(venv) / "onlypre-1.0b2.dist-info").is_dir()

    def test_pre_opens_every_project(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        index = serve(project("mixed", "1.0"), project("mixed", "2.0rc1"))
        venv = venv_factory()
        plain = cli("install", "mixed", "--python", str(venv), "-i", index.url, "--dry-run")
        assert plain.code == 0, plain.err
        assert "Would change:\n+ mixed==1.0\n" in plain.err
        result = cli("install", "mixed", "--pre", "--python", str(venv), "-i", index.url)
        assert result.code == 0, result.err
        assert (site_packages(venv) / "mixed-2.0rc1.dist-info").is_dir()

    def test_pip_pre_setting(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        index = serve(project("mixed", "1.0"), project("mixed", "2.0rc1"))
        monkeypatch.setenv("PIP_PRE", "1")
        venv = venv_factory()
        isolated = cli("install", "mixed", "--python", str(venv), "-i", index.url, "--isolated")
        assert "+ mixed==1.0\n" in isolated.err
        result = cli(
            "install", "mixed", "--python", str(venv), "-i", index.url, "--dry-run", "--report", "-"
        )
        assert result.code == 0, result.err
        assert "~ mixed 1.0 -> 2.0rc1\n" in result.err

    def test_unknown_extra_in_hash_mode_is_a_warning(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        wheel = project("withextra", "1.0", extras={"web": []})
        index = serve(wheel)
        reqs = write_reqs(tmp_path, lock_line(wheel).replace("withextra==", "withextra[nope]=="))
        venv = venv_factory()
        result = cli("install", "-r", str(reqs), "--python", str(venv), "-i", index.url)
        assert result.code == 0, result.err
        assert (
            "warning: `withextra==1.0` has no extra `nope` (it declares: `web`); `withextra` is "
            "installed without it\n"
        ) in result.err
        assert (site_packages(venv) / "withextra-1.0.dist-info").is_dir()


class TestChangesShown:
    """After an install, one line per package that changed (uv's notation), capped for big
    installs and silenced by `-q`."""

    def test_added_replaced_and_reinstalled(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        old, new, other = project("gamma", "1.0"), project("gamma", "2.0"), project("delta", "3")
        index = serve(old, new, other)
        venv = venv_factory()
        first = cli(
            "install", lock_line(old), lock_line(other), "--python", str(venv), "-i", index.url
        )
        assert first.code == 0, first.err
        assert first.err.startswith("+ delta==3\n+ gamma==1.0\nInstalled 2 packages in "), first.err
        second = cli(
            "install", lock_line(new), lock_line(other), "--python", str(venv), "-i", index.url
        )
        assert second.code == 0, second.err
        assert second.err.startswith(
            "~ gamma 1.0 -> 2.0\nInstalled 1 package, replaced 1, kept 1 already installed in "
        ), second.err
        again = cli(
            "install", lock_line(new), "--force-reinstall", "--python", str(venv), "-i", index.url
        )
        assert again.code == 0, again.err
        assert again.err.startswith("~ gamma==2.0 (reinstalled)\n"), again.err
        nothing = cli("install", lock_line(new), "--python", str(venv), "-i", index.url)
        assert nothing.code == 0, nothing.err
        assert nothing.err.startswith("Installed 0 packages, kept 1 already installed in "), (
            nothing.err
        )

    def test_quiet_prints_nothing(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
    ) -> None:
        wheel = project("quietpkg", "1.0")
        index = serve(wheel)
        venv = venv_factory()
        result = cli("install", lock_line(wheel), "--python", str(venv), "-i", index.url, "-q")
        assert result.code == 0, result.err
        assert (result.out, result.err) == ("", "")
        assert (site_packages(venv) / "quietpkg-1.0.dist-info").is_dir()

    def test_big_installs_are_capped_and_v_lists_all(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        wheels = [project(f"many{i:02d}", "1.0") for i in range(45)]
        index = serve(*wheels)
        reqs = write_reqs(tmp_path, *(lock_line(w) for w in wheels))
        venv = venv_factory()
        result = cli("install", "-r", str(reqs), "--python", str(venv), "-i", index.url)
        assert result.code == 0, result.err
        lines = result.err.splitlines()
        assert lines[:39] == [f"+ many{i:02d}==1.0" for i in range(39)]
        assert lines[39] == "… and 6 more (`-v` lists every change)"
        assert lines[40].startswith("Installed 45 packages in ")
        verbose = cli(
            "install", "-r", str(reqs), "--python", str(venv_factory()), "-i", index.url, "-v"
        )
        assert verbose.code == 0, verbose.err
        shown = [line for line in verbose.err.splitlines() if line.startswith("+ ")]
        assert shown == [f"+ many{i:02d}==1.0" for i in range(45)]


class TestMessagesForNewUsers:
    def test_error_requirements_file_without_r(
        self,
        cli: Cli,
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "requirements.txt").write_text("attrs==24.2.0\n")
        venv = venv_factory()
        before = tree_snapshot(venv)
        result = cli("install", "requirements.txt", "--python", str(venv), "--isolated")
        assert result.code == 2
        assert result.err == (
            "error: `requirements.txt` is a file, not a requirement\n"
            "  --> <command line>:1\n"
            "   | requirements.txt\n"
            "   | ^^^^^^^^^^^^^^^^\n\n"
            "hint: did you mean `-r requirements.txt`? (`-r FILE` reads the requirements a file "
            "lists)\n"
        )
        assert tree_snapshot(venv) == before

    def test_error_missing_requirements_file_without_r(
        self,
        cli: Cli,
        serve: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        index = serve(project("attrs", "24.2.0"))
        venv = venv_factory()
        result = cli("install", "requirements.txt", "--python", str(venv), "-i", index.url)
        assert result.code == 1
        assert result.err.startswith(f"error: `requirements-txt` was not found on `{index.url}`")
        assert result.err.endswith(
            "hint: a requirements file? `-r requirements.txt` reads the requirements a file lists\n"
        )

    def test_error_requires_python_names_the_specifier(
        self,
        cli: Cli,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        project: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
    ) -> None:
        new = project("newpy", "2.0", requires_python=">=3.99")
        index = static_index()
        index.add(project("newpy", "1.0"))
        index.add(new, requires_python=">=3.99")
        venv = venv_factory()
        before = tree_snapshot(venv)
        python = py(venv, "import platform; print(platform.python_version())")
        resolved = cli("install", "newpy>=2", "--python", str(venv), "-i", index.url)
        assert resolved.code == 1
        assert resolved.err.startswith(
            "error: No version of `newpy` satisfies `newpy>=2`\n"
            "    `<command line>:1` requires `newpy>=2`\n"
            f"    2.0: requires Python `>=3.99` (Requires-Python); the target is Python {python}\n"
        ), resolved.err
        pinned = cli("install", lock_line(new), "--python", str(venv), "-i", index.url)
        assert pinned.code == 1
        assert pinned.err == (
            f"error: `newpy==2.0` requires Python `>=3.99` (Requires-Python); the target is "
            f"Python {python} (<command line>:1)\n"
        )
        assert tree_snapshot(venv) == before


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            # No NUL: no path holds one, and csv before Python 3.11 cannot write it.
            st.text(min_size=1).filter(lambda text: "\x00" not in text),
            st.sampled_from(["", "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"]),
            st.one_of(st.integers(min_value=0), st.just("")),
        ),
        max_size=8,
    )
)
def test_record_text_is_what_csv_writes(rows: list[tuple[str, str, int | str]]) -> None:
    """RECORD is joined directly unless a field needs csv's quoting (a path with `,`, `"`,
    `\\r` or `\\n`): the text is csv.writer's either way (issue 14)."""
    import csv
    import io

    from safepip.install import _record_text

    out = io.StringIO()
    csv.writer(out, delimiter=",", quotechar='"', lineterminator="\n").writerows(rows)
    assert _record_text(rows) == out.getvalue()


@pytest.mark.parametrize(
    "kind", ["plain", "data", "pycache", "generated", "platlib", "empty", "long"]
)
def test_plain_wheels_are_laid_out_as_member_by_member(
    tmp_path: Path, venv_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A wheel whose members are all plain files of its root scheme is laid out a list at a
    time (issue 14: 18,000 members in the large lock); the layout (links, sizes, executable
    bits, files written with RECORD and the seal, the journal's paths) is exactly the one the
    member-by-member loop makes, which every other wheel still takes."""
    from safepip import install as install_stage
    from safepip import target as target_mod
    from safepip.fetch import unpack_wheel
    from safepip.journal import environment_roots

    files: dict[str, bytes | str] = {f"pkg/m{i}.py": f"x = {i}\n" for i in range(40)}
    extra: dict[str, Any] = {"entry_points": {"console_scripts": {"pkg-cli": "pkg:main"}}}
    if kind == "data":
        extra["data_files"] = {"scripts/run": "#!python\nprint(1)\n", "data/share/x": "x"}
    elif kind == "pycache":
        files["pkg/__pycache__/m0.cpython-311.pyc"] = b"\0"
    elif kind == "generated":
        files["pkg-1.0.dist-info/INSTALLER"] = "pip\n"  # safepip writes its own
        files["pkg-1.0.dist-info/safepip.json"] = "{}"
    elif kind == "platlib":
        extra["root_is_purelib"] = False
        extra["tag"] = "cp311-cp311-linux_x86_64"
    elif kind == "empty":
        files = {}
        extra = {}
    elif kind == "long":
        files["pkg/" + "n" * 250 + ".py"] = ""
    wheel = build_wheel(tmp_path, "pkg", "1.0", files=files, **extra)
    unpacked = unpack_wheel(wheel, sha256_file(wheel), str(tmp_path / "cache"))
    venv = venv_factory()
    target = target_mod.probe(target_mod.find_python(str(venv), system=False))
    roots = environment_roots(target)
    index = {
        d: roots.index(d) for d in {os.path.abspath(v) for v in target.paths.as_dict().values()}
    }
    key = b"k" * 32

    def layout() -> Any:
        site = install_stage._Site(target, index)
        extra = {"INSTALLER": b"safepip\n", "safepip.json": b"{}"}
        made = install_stage._layout_wheel(unpacked, site, extra, "pkg", key)
        return made.links, made.sizes, made.executable, made.writes, made.creates

    plain = install_stage._plain_members(unpacked, str(target.paths.purelib) + os.sep, 255, set())
    fast = layout()
    monkeypatch.setattr(install_stage, "_plain_members", lambda *args: None)
    assert fast == layout()
    assert (plain is not None) == (kind in ("plain", "generated", "platlib", "empty"))


def test_generated_files_never_write_through_what_is_there(
    tmp_path: Path, venv_factory: Callable[..., Path]
) -> None:
    """RECORD, seals and launchers are written to a new file each time (issue 14: written with
    `O_EXCL`, without a look first): a hard link into the cache or a symlink left at the path
    is replaced, never written through; a launcher is executable."""
    from safepip import install as install_stage
    from safepip import target as target_mod

    target = target_mod.probe(target_mod.find_python(str(venv_factory()), system=False))
    txn = install_stage.Transaction(target)
    site = site_packages(target.prefix)
    cached = tmp_path / "cached"
    cached.write_bytes(b"cache\n")
    os.link(cached, site / "linked")
    os.symlink(cached, site / "symlinked")
    txn.write(str(site / "linked"), b"new\n")
    txn.write(str(site / "symlinked"), b"other\n", executable=True)
    txn.write(str(site / "fresh"), b"")
    assert cached.read_bytes() == b"cache\n"
    assert (site / "linked").read_bytes() == b"new\n"
    assert os.stat(site / "linked").st_nlink == 1
    assert not (site / "symlinked").is_symlink()
    assert (site / "symlinked").read_bytes() == b"other\n"
    assert (site / "symlinked").stat().st_mode & 0o777 == 0o755
    assert (site / "fresh").read_bytes() == b""
