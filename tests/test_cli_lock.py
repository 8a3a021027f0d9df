"""`safepip lock` and `safepip freeze` end to end on loopback indexes."""

from __future__ import annotations

import atexit
import gc
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from sealed import write_sealed_record

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from packaging.utils import NormalizedName

    from conftest import Cli
    from servers import StaticIndex
    from wheelbuild import WheelFactory


@pytest.fixture
def index(static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory) -> StaticIndex:
    served = static_index()
    served.add(wheel_factory("app", "1.0", requires=["dep>=1", "winonly; sys_platform == 'win32'"]))
    served.add(wheel_factory("dep", "1.0"))
    served.add(wheel_factory("dep", "2.0"))
    served.add(wheel_factory("winonly", "1.0", tag="py3-none-win_amd64"))
    served.add(wheel_factory("other", "1.0", requires=["dep<2"]))
    served.add(wheel_factory.sdist("built", "1.0"))
    return served


def lock_args(index: StaticIndex, *args: str) -> list[str]:
    return ["lock", *args, "--index-url", index.url, "--python-version", "3.11", "--isolated"]


class TestLock:
    def test_requirements_lock(self, index: StaticIndex, tmp_path: Path, cli: Cli) -> None:
        source = tmp_path / "requirements.in"
        source.write_text("app\n", "utf-8")
        out = tmp_path / "requirements.txt"
        code, stdout, stderr = cli(*lock_args(index, str(source), "-o", str(out)))
        assert code == 0, stderr
        assert stdout == ""
        assert "Locked 2 packages for Python 3.11.0 to" in stderr
        text = out.read_text("utf-8")
        sha = {e.filename: e.sha256 for es in index.projects.values() for e in es}
        assert (
            f"app==1.0 \\\n    --hash=sha256:{sha['app-1.0-py3-none-any.whl']}\n"
            f"    # via -r {source}\n"
        ) in text
        assert f"dep==2.0 \\\n    --hash=sha256:{sha['dep-2.0-py3-none-any.whl']}\n" in text
        assert f"#    safepip lock {source} -o {out} --python-version 3.11 -i {index.url}\n" in text
        assert f"--index-url {index.url}\n" in text

    def test_stdout_and_command_line_requirements(self, index: StaticIndex, cli: Cli) -> None:
        code, stdout, stderr = cli(*lock_args(index, "app", "other", "-o", "-"))
        assert code == 0, stderr
        assert "dep==1.0 \\" in stdout
        assert "    # via\n    #   app\n    #   other\n" in stdout
        assert "Locked" not in stdout
        assert "to stdout" in stderr

    def test_other_platform(self, index: StaticIndex, cli: Cli) -> None:
        code, stdout, _ = cli(*lock_args(index, "app", "-o", "-"), "--platform", "win_amd64")
        assert code == 0
        assert "winonly==1.0" in stdout

    def test_pylock_output(self, index: StaticIndex, tmp_path: Path, cli: Cli) -> None:
        out = tmp_path / "pylock.toml"
        code, _, stderr = cli(*lock_args(index, "app", "-o", str(out)))
        assert code == 0, stderr
        data = tomllib.loads(out.read_text("utf-8"))
        assert [(p["name"], p["version"]) for p in data["packages"]] == [
            ("app", "1.0"),
            ("dep", "2.0"),
        ]
        assert data["packages"][0]["dependencies"] == [{"name": "dep"}]
        # what the lock was made for (PEP 751): no other Python silently misses a dependency
        assert data["requires-python"] == "==3.11.*"
        [made_for] = data["environments"]
        assert made_for.startswith('python_version == "3.11" and implementation_name == "cpython"')
        assert f'sys_platform == "{sys.platform}"' in made_for

    def test_pylock_names_the_platform_it_was_made_for(
        self,
        index: StaticIndex,
        tmp_path: Path,
        venv_factory: Callable[..., Path],
        cli: Cli,
    ) -> None:
        """A lock for Windows is refused on this machine instead of installing without
        `winonly` (whose marker was true when the lock was made)."""
        out = tmp_path / "pylock.toml"
        argv = lock_args(index, "app", "-o", str(out), "--platform", "win_amd64")
        code, _, stderr = cli(*argv)
        assert code == 0, stderr
        data = tomllib.loads(out.read_text("utf-8"))
        assert [p["name"] for p in data["packages"]] == ["app", "dep", "winonly"]
        assert 'sys_platform == "win32"' in data["environments"][0]
        venv = venv_factory()
        code, _, stderr = cli(*["install", "-r", str(out), "--python", str(venv)])
        assert code == 2, stderr
        assert "cannot be installed on the target" in stderr

    def test_extras_stay_on_the_pin_line_and_pip_accepts_them(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        import subprocess

        served = static_index()
        served.add(wheel_factory("web", "1.0", extras={"socks": ["pysocks"]}))
        served.add(wheel_factory("pysocks", "1.7"))
        out = tmp_path / "requirements.txt"
        argv = ["lock", "web[socks]", "-o", str(out), "--index-url", served.url, "--isolated"]
        code, _, stderr = cli(*argv)
        assert code == 0, stderr
        text = out.read_text("utf-8")
        assert "\nweb[socks]==1.0 \\\n" in text
        assert "\npysocks==1.7 \\\n" in text
        report = tmp_path / "pip.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "-q",
             "--ignore-installed", "--require-hashes", "--report", str(report), "-r", str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        installs = json.loads(report.read_text())["install"]
        assert sorted(i["metadata"]["name"] for i in installs) == ["pysocks", "web"]
        assert [i["requested_extras"] for i in installs if i["metadata"]["name"] == "web"] == [
            ["socks"]
        ]
        venv = venv_factory()
        argv = ["install", "-q", "-r", str(out), "--python", str(venv)]
        code, _, stderr = cli(*[*argv, "--cache-dir", str(tmp_path / "cache")])
        assert code == 0, stderr
        assert sorted(p.name for p in venv.rglob("*.dist-info")) == [
            "pysocks-1.7.dist-info",
            "web-1.0.dist-info",
        ]

    def test_existing_pins_are_kept_until_released(
        self, index: StaticIndex, tmp_path: Path, cli: Cli
    ) -> None:
        out = tmp_path / "requirements.txt"
        out.write_text("app==1.0\ndep==1.0\n", "utf-8")
        code, _, _ = cli(*lock_args(index, "app", "-o", str(out)))
        assert code == 0
        assert "dep==1.0 \\" in out.read_text("utf-8")
        code, _, _ = cli(*[*lock_args(index, "app", "-o", str(out)), "-P", "dep"])
        assert code == 0
        assert "dep==2.0 \\" in out.read_text("utf-8")
        out.write_text("app==1.0\ndep==1.0\n", "utf-8")
        code, _, _ = cli(*[*lock_args(index, "app", "-o", str(out)), "--upgrade"])
        assert "dep==2.0 \\" in out.read_text("utf-8")

    def test_pyproject_extra_and_group(self, index: StaticIndex, tmp_path: Path, cli: Cli) -> None:
        pyproject = tmp_path / "pyproject.toml"
        pyproject.write_text(
            '[project]\nname = "x"\nversion = "1"\ndependencies = []\n'
            '[project.optional-dependencies]\nfull = ["app"]\n'
            '[dependency-groups]\ndev = ["other"]\n',
            "utf-8",
        )
        argv = lock_args(index, str(pyproject), "-o", "-", "--extra", "full", "--group", "dev")
        code, stdout, stderr = cli(*argv)
        assert code == 0, stderr
        assert [line.split(" ")[0] for line in stdout.splitlines() if "==" in line] == [
            "app==1.0",
            "dep==1.0",
            "other==1.0",
        ]
        assert f"    # via {pyproject}\n" in stdout

    def test_the_interpreter_probe_is_kept_in_the_cache(
        self,
        index: StaticIndex,
        venv_factory: Callable[..., Path],
        cli: Cli,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`lock --python VENV` asks the interpreter once; later locks read the answer from the
        cache (keyed by the interpreter's files, as for `install`)."""
        venv = venv_factory()
        argv = ["lock", "app", "-o", "-", "-i", index.url, "--python", str(venv), "--isolated"]
        first = cli(*argv)
        assert first.code == 0, first.err
        monkeypatch.setattr(
            "safepip.target.subprocess.run", lambda *a, **k: pytest.fail("probed again")
        )
        again = cli(*argv)
        assert (again.code, again.out) == (0, first.out)

    def test_error_conflict_exit_code(self, index: StaticIndex, cli: Cli, tmp_path: Path) -> None:
        out = tmp_path / "requirements.txt"
        code, stdout, stderr = cli(*lock_args(index, "other", "dep>=2", "-o", str(out)))
        assert code == 1
        assert stdout == ""
        assert stderr == (
            "error: Cannot find versions that satisfy every requirement on `dep`:\n"
            "    `<command line>:2` requires `dep>=2`\n"
            "    `other==1.0` requires `dep<2`\n"
            "    available versions of `dep`: 2.0, 1.0\n\n"
            "hint: loosen one of these requirements, or pin a parent to a version whose "
            "requirements agree\n"
        )
        assert not out.exists()

    def test_error_sdist_only_is_a_policy_refusal(self, index: StaticIndex, cli: Cli) -> None:
        code, _, stderr = cli(*lock_args(index, "built", "-o", "-"))
        assert code == 4
        assert "error: Refusing `built`" in stderr

    def test_error_needs_output(self, cli: Cli) -> None:
        code, _, stderr = cli(*["lock", "app"])
        assert code == 2
        assert "error: Where should the lock go? Give `-o OUT`" in stderr

    def test_credentials_are_not_shown(self, index: StaticIndex, cli: Cli) -> None:
        url = index.url.replace("http://", "http://alice:s3cret@")
        argv = ["lock", "app", "-o", "-", "--index-url", url, "--python-version", "3.11"]
        code, stdout, stderr = cli(*[*argv, "--isolated"])
        assert code == 0, stderr
        assert "s3cret" not in stdout + stderr
        assert f"--index-url {index.url}\n" in stdout


def test_the_last_collection_is_skipped_once_per_process(
    index: StaticIndex, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[object] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(
        atexit, "unregister", lambda f: registered.remove(f) if f in registered else None
    )
    for _ in range(2):
        assert cli(*lock_args(index, "app", "-o", "-")).code == 0
    assert registered == [gc.freeze]


def test_a_lock_from_a_json_index_imports_only_what_it_needs(
    static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory, tmp_path: Path
) -> None:
    """Start-up is most of a small lock's time: html.parser (HTML pages), zipfile (a wheel
    without a `.metadata` file), configparser (a pip configuration file) and the wheel
    unpacker are imported only when a lock needs them (issue 14)."""
    served = static_index(mode="json-only")
    served.add(wheel_factory("app", "1.0", requires=["dep>=1"]))
    served.add(wheel_factory("dep", "1.0"))
    args = [*lock_args(served, "app", "-o", str(tmp_path / "lock.txt"))]
    args.remove("--isolated")
    lazy = ("html.parser", "zipfile", "configparser", "safepip.wheelzip")
    code = (
        "import sys\n"
        "from safepip.cli import main\n"
        f"code = main({args!r})\n"
        f"print(code, sorted(m for m in {lazy!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    assert done.stdout.strip() == "0 []", done.stderr
    assert "dep==1.0" in (tmp_path / "lock.txt").read_text("utf-8")


class TestPagesAreCheckedWhole:
    """The files of a JSON page are made only for the versions the resolver looks at; the
    checks that decide whether a page may be used at all still cover every entry."""

    @pytest.fixture
    def served(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> StaticIndex:
        served = static_index(mode="json-only")
        served.absolute_links = True
        served.add(wheel_factory("app", "1.0", requires=["dep>=2"]))
        for version in ("0.1", "1.0", "2.0"):
            served.add(wheel_factory("dep", version))
        return served

    def test_a_local_link_of_an_old_version_is_refused(
        self, served: StaticIndex, tmp_path: Path, cli: Cli
    ) -> None:
        served.projects[canonicalize_name("dep")][0].link = "file:///dev/zero"
        out = tmp_path / "requirements.txt"
        code, stdout, stderr = cli(*lock_args(served, "app", "-o", str(out)))
        assert code == 4, stderr
        assert stdout == ""
        assert (
            f"error: Refusing the link `file:///dev/zero` on the page `{served.project_url('dep')}`"
            ": a page served over HTTP(S) may not link local `file:` URLs\n"
        ) in stderr
        assert not out.exists()

    def test_a_malformed_entry_of_an_old_version_fails_the_lock(
        self, served: StaticIndex, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        render = served._project_json

        def without_url(name: NormalizedName, entries: list[Any]) -> bytes:
            page = json.loads(render(name, entries))
            if name == "dep":
                del page["files"][0]["url"]
            return json.dumps(page).encode()

        monkeypatch.setattr(served, "_project_json", without_url)
        out = tmp_path / "requirements.txt"
        code, stdout, stderr = cli(*lock_args(served, "app", "-o", str(out)))
        assert code == 1, stderr
        assert stdout == ""
        assert stderr.startswith(
            f"error: Could not read the index page `{served.project_url('dep')}`: entry 0 of "
            "`files` lacks `filename` or `url`\n"
        )
        assert not out.exists()

    def test_a_bad_field_of_an_old_version_does_not_matter(
        self, served: StaticIndex, tmp_path: Path, cli: Cli
    ) -> None:
        served.projects[canonicalize_name("dep")][0].requires_python = "python3"
        code, stdout, stderr = cli(*lock_args(served, "app", "-o", "-", "--no-header"))
        assert code == 0, stderr
        sha = {e.filename: e.sha256 for es in served.projects.values() for e in es}
        assert f"dep==2.0 \\\n    --hash=sha256:{sha['dep-2.0-py3-none-any.whl']}\n" in stdout
        assert "python3" not in stderr


class TestFreeze:
    def test_freeze(
        self,
        venv_factory: Callable[..., Path],
        cli: Cli,
    ) -> None:
        venv = venv_factory()
        site = next((venv / "lib").glob("python3*/site-packages"))
        for name, record in (
            ("kept", {"sha256": "d" * 64, "version_installed": "1.0"}),
            ("bare", None),
        ):
            info = site / f"{name}-1.0.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Name: {name}\nVersion: 1.0\n", "utf-8")
            if record:
                write_sealed_record(info, {"name": name, **record})
        code, stdout, stderr = cli(*["freeze", "--python", str(venv), "--no-index"])
        assert code == 0
        assert stdout == (
            "# bare==1.0  # no hash available: not installed by safepip, and no index is "
            f"configured\nkept==1.0 \\\n    --hash=sha256:{'d' * 64}\n"
        )
        assert "warning: `bare==1.0` has no hash" in stderr


def _uv() -> str | None:
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


@pytest.mark.network
@pytest.mark.parametrize("requirement", ["requests", "httpx[http2]"])
def test_pins_match_uv_on_the_real_index(requirement: str, tmp_path: Path, cli: Cli) -> None:
    import subprocess

    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed")
    source = tmp_path / "requirements.in"
    source.write_text(requirement + "\n", "utf-8")
    argv = ["lock", str(source), "-o", "-", "--python-version", "3.11", "--isolated"]
    argv += ["--index-url", "https://pypi.org/simple", "--no-header", "--no-annotate"]
    code, ours, stderr = cli(*argv)
    assert code == 0, stderr
    uv_args = ["pip", "compile", str(source), "--python-version", "3.11", "--no-config", "-q"]
    uv_args += ["--index-url", "https://pypi.org/simple", "--no-header", "--no-annotate"]
    uv_args += ["--no-cache", "--python-platform", "x86_64-manylinux_2_17"]
    proc = subprocess.run(
        [uv, *uv_args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr

    def pins(text: str) -> set[str]:
        # `name[extras]==version`: uv leaves the extras out of its lines, safepip keeps them
        specs = [line.split()[0] for line in text.splitlines() if "==" in line and line[0] != "#"]
        pairs = [spec.split("==", 1) for spec in specs]
        return {f"{name.split('[')[0]}=={version}" for name, version in pairs}

    assert pins(ours) == pins(proc.stdout)


class TestPylockExtrasAndGroups:
    """`install -r pylock.toml --extra X --group Y` selects as PEP 751 defines."""

    @pytest.fixture
    def pylock(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory, tmp_path: Path
    ) -> tuple[Path, str]:
        from wheelbuild import sha256_file

        index = static_index()
        packages = []
        for name, marker in [
            ("base", None),
            ("webdep", "'web' in extras"),
            ("testdep", "'test' in dependency_groups"),
            ("coredep", "'core' in dependency_groups"),
        ]:
            wheel = wheel_factory(name, "1.0")
            index.add(wheel)
            entry = (
                f'[[packages]]\nname = "{name}"\nversion = "1.0"\n'
                + (f'marker = "{marker}"\n' if marker else "")
                + f'wheels = [{{ url = "{index.files_url}{wheel.name}", '
                f'hashes = {{ sha256 = "{sha256_file(wheel)}" }} }}]\n'
            )
            packages.append(entry)
        path = tmp_path / "pylock.toml"
        path.write_text(
            'lock-version = "1.0"\ncreated-by = "hand"\nextras = ["web"]\n'
            'dependency-groups = ["core", "test"]\ndefault-groups = ["core"]\n\n'
            + "\n".join(packages),
            "utf-8",
        )
        return path, index.url

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            ((), ["base", "coredep"]),
            (("--extra", "web"), ["base", "coredep", "webdep"]),
            (("--group", "test"), ["base", "coredep", "testdep"]),
            (("--extra", "web", "--group", "test"), ["base", "coredep", "testdep", "webdep"]),
        ],
    )
    def test_selection(
        self,
        pylock: tuple[Path, str],
        options: tuple[str, ...],
        expected: list[str],
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        path, url = pylock
        venv = venv_factory()
        argv = ["install", "-r", str(path), "--python", str(venv), "-i", url, *options]
        code, _, stderr = cli(*[*argv, "--cache-dir", str(tmp_path / "cache")])
        assert code == 0, stderr
        installed = sorted(p.name.split("-")[0] for p in venv.rglob("*.dist-info"))
        assert installed == expected

    def test_error_undeclared_extra(
        self,
        pylock: tuple[Path, str],
        venv_factory: Callable[..., Path],
        cli: Cli,
    ) -> None:
        path, url = pylock
        venv = venv_factory()
        argv = ["install", "-r", str(path), "--python", str(venv), "-i", url, "--extra", "nope"]
        code, _, stderr = cli(*[*argv, "--no-cache"])
        assert code == 2
        assert "Undeclared extras: nope" in stderr

    def test_error_extra_without_pylock(self, venv_factory: Callable[..., Path], cli: Cli) -> None:
        argv = ["install", "attrs==24.2.0", "--extra", "web", "--python", str(venv_factory())]
        code, _, stderr = cli(*[*argv, "--no-cache"])
        assert code == 2
        assert stderr.startswith(
            "error: `--extra` and `--group` select from a PEP 751 lock; "
            "no `pylock.toml` was given\n"
        )


def pip_picks(index: StaticIndex, tmp_path: Path, *requirements: str) -> tuple[dict[str, str], str]:
    """pip's choice (the oracle) for `requirements` on `index`: name -> version, and stderr."""
    report = tmp_path / "pip-report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--isolated",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            "--index-url",
            index.url,
            *requirements,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(report.read_text("utf-8"))
    picked = {i["metadata"]["name"]: i["metadata"]["version"] for i in data["install"]}
    return picked, proc.stderr


def pins_of(lock_text: str) -> dict[str, str]:
    return dict(
        line.split(" ")[0].split("==", 1) for line in lock_text.splitlines() if "==" in line
    )


class TestResolverBehaviour:
    """PEP 440 pre-releases, unknown extras and conflict explanations, through `safepip lock`,
    with pip as the oracle for what is chosen."""

    @pytest.fixture
    def releases(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> StaticIndex:
        served = static_index()
        for name, version in (
            ("onlypre", "1.0a1"),
            ("onlypre", "1.0b2"),
            ("prerel", "1.0"),
            ("prerel", "2.0b1"),
            ("other", "1.0"),
            ("other", "1.1rc1"),
        ):
            served.add(wheel_factory(name, version))
        served.add(wheel_factory("app", "1.0", extras={"web": ["other"]}))
        return served

    def test_a_project_with_only_pre_releases_is_locked(
        self, releases: StaticIndex, cli: Cli, tmp_path: Path
    ) -> None:
        code, stdout, stderr = cli(*lock_args(releases, "onlypre", "prerel", "-o", "-"))
        assert code == 0, stderr
        assert pins_of(stdout) == {"onlypre": "1.0b2", "prerel": "1.0"}
        assert pip_picks(releases, tmp_path, "onlypre", "prerel")[0] == pins_of(stdout)

    def test_a_pre_release_specifier_opts_in_that_project_only(
        self, releases: StaticIndex, cli: Cli, tmp_path: Path
    ) -> None:
        code, stdout, stderr = cli(*lock_args(releases, "prerel>=2.0b1", "other", "-o", "-"))
        assert code == 0, stderr
        assert pins_of(stdout) == {"other": "1.0", "prerel": "2.0b1"}
        assert pip_picks(releases, tmp_path, "prerel>=2.0b1", "other")[0] == pins_of(stdout)

    def test_pre_opens_every_project(self, releases: StaticIndex, cli: Cli) -> None:
        code, stdout, stderr = cli(*lock_args(releases, "prerel", "other", "--pre", "-o", "-"))
        assert code == 0, stderr
        assert pins_of(stdout) == {"other": "1.1rc1", "prerel": "2.0b1"}
        assert "safepip lock prerel other -o - --pre" in stdout

    def test_pip_pre_setting_opens_every_project(
        self, releases: StaticIndex, cli: Cli, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PIP_PRE", "1")
        argv = ["lock", "prerel", "other", "-o", "-", "--index-url", releases.url]
        code, stdout, stderr = cli(*argv, "--python-version", "3.11")
        assert code == 0, stderr
        assert pins_of(stdout) == {"other": "1.1rc1", "prerel": "2.0b1"}
        code, stdout, stderr = cli(*argv, "--python-version", "3.11", "--isolated")
        assert code == 0, stderr
        assert pins_of(stdout) == {"other": "1.0", "prerel": "1.0"}

    def test_unknown_extra_is_a_warning(
        self, releases: StaticIndex, cli: Cli, tmp_path: Path
    ) -> None:
        code, stdout, stderr = cli(*lock_args(releases, "app[nope,web]", "-o", "-"))
        assert code == 0, stderr
        assert pins_of(stdout) == {"app[nope,web]": "1.0", "other": "1.0"}
        assert (
            "warning: `app==1.0` has no extra `nope` (it declares: `web`); `app` is installed "
            "without it\n"
        ) in stderr
        # pip warns too, and installs the same.
        picked, pip_err = pip_picks(releases, tmp_path, "app[nope,web]")
        assert "does not provide the extra 'nope'" in pip_err
        assert picked == {"app": "1.0", "other": "1.0"}

    def test_known_extras_give_no_warning(self, releases: StaticIndex, cli: Cli) -> None:
        code, _, stderr = cli(*lock_args(releases, "app[web]", "-o", "-"))
        assert code == 0, stderr
        assert "warning" not in stderr

    def test_error_conflict_after_backtracking_is_explained_from_the_failed_state(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        cli: Cli,
    ) -> None:
        # Every acc-a==N requires acc-b==N, and every acc-b requires acc-c>=2: with acc-c
        # pinned to 1.0.0 the resolver backtracks through all 30 versions of acc-a.
        served = static_index()
        for n in range(1, 31):
            served.add(wheel_factory("acc-a", f"{n}.0.0", requires=[f"acc-b=={n}.0.0"]))
            served.add(wheel_factory("acc-b", f"{n}.0.0", requires=["acc-c>=2"]))
        served.add(wheel_factory("acc-c", "1.0.0"))
        served.add(wheel_factory("acc-c", "2.0.0"))
        code, stdout, stderr = cli(*lock_args(served, "acc-a", "acc-c==1.0.0", "-o", "-"))
        assert code == 1
        assert stdout == ""
        assert stderr == (
            "error: Cannot find versions that satisfy every requirement on `acc-c`:\n"
            "    `<command line>:2` requires `acc-c==1.0.0`\n"
            "    `acc-b==1.0.0` requires `acc-c>=2` (via `acc-a==1.0.0` -> `acc-b==1.0.0`)\n"
            "    every version of `acc-a` that fits was tried (30, 30.0.0 … 1.0.0); each one "
            "leads to this conflict\n"
            "    available versions of `acc-c`: 2.0.0, 1.0.0\n\n"
            "hint: loosen one of these requirements, or pin a parent to a version whose "
            "requirements agree\n"
        )


@pytest.mark.network
def test_a_project_with_only_pre_releases_matches_pip_on_the_real_index(
    tmp_path: Path, cli: Cli
) -> None:
    """The issue's example: every release of `opentelemetry-instrumentation-flask` is a
    pre-release (`0.NNbN`); pip and safepip both lock it, to the same versions."""
    requirement = "opentelemetry-instrumentation-flask"
    code, stdout, stderr = cli("lock", requirement, "-o", "-", "--isolated")
    assert code == 0, stderr
    ours = {canonicalize_name(n): v for n, v in pins_of(stdout).items()}
    report = tmp_path / "pip-report.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--isolated", "--dry-run"),
            *("--ignore-installed", "-q", "--report", str(report), requirement),
        ],
        capture_output=True,
        check=True,
    )
    installs = json.loads(report.read_text("utf-8"))["install"]
    pips = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    assert ours == pips
    assert Version(ours[canonicalize_name(requirement)]).is_prerelease
