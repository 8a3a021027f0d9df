"""Tests for the target environment: the interpreter, its probe, PEP 668, installed dists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.tags import Tag, sys_tags

from safepip import target as target_mod
from safepip.errors import UsageError
from safepip.target import (
    ExternallyManagedError,
    SchemePaths,
    Target,
    TargetError,
    check_externally_managed,
    find_python,
    installed_distributions,
    probe,
    synthetic_target,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Cli


def make_target(tmp_path: Path, **overrides: Any) -> Target:
    site = tmp_path / "site-packages"
    values: dict[str, Any] = {
        "python": Path("/usr/bin/python3"),
        "version": (3, 11, 4),
        "markers": {"python_version": "3.11"},
        "tags": (Tag("py3", "none", "any"),),
        "paths": SchemePaths(
            purelib=site,
            platlib=site,
            scripts=tmp_path / "bin",
            data=tmp_path,
            headers=tmp_path / "include",
        ),
        "prefix": Path("/usr"),
        "is_virtualenv": False,
        "externally_managed": None,
        "kind": "env",
    }
    values.update(overrides)
    return Target(**values)


@pytest.fixture
def venv(venv_factory: Callable[..., Path]) -> Path:
    return venv_factory()


class TestFindPython:
    def test_explicit_interpreter(self, venv: Path) -> None:
        python = venv / "bin" / "python"
        assert find_python(str(python), system=False, environ={}) == python

    def test_venv_folder(self, venv: Path) -> None:
        found = find_python(str(venv), system=True, environ={"VIRTUAL_ENV": "/elsewhere"})
        # the venv's own `bin/python` (not the interpreter its symlink points at)
        assert found == venv / "bin" / "python"

    def test_virtual_env_variable(self, venv: Path) -> None:
        assert find_python(None, system=False, environ={"VIRTUAL_ENV": str(venv)}) == (
            venv / "bin" / "python"
        )

    def test_dot_venv_in_the_current_folder(
        self, venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)
        monkeypatch.chdir(tmp_path)
        assert find_python(None, system=False, environ={}) == tmp_path / ".venv" / "bin" / "python"

    def test_system_uses_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = tmp_path / "python3"
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", str(tmp_path))
        monkeypatch.chdir(tmp_path)
        assert find_python(None, system=True, environ={"VIRTUAL_ENV": "/x"}) == fake

    def test_name_on_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = tmp_path / "python3.99"
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", str(tmp_path))
        monkeypatch.chdir(tmp_path.parent)
        assert find_python("python3.99", system=False, environ={}) == fake

    def test_error_no_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(TargetError) as info:
            find_python(None, system=False, environ={})
        assert str(info.value) == (
            "No virtual environment to install into: `VIRTUAL_ENV` is not set and there is no "
            "`.venv`"
        )
        assert info.value.hint == (
            "pass `--python PATH` (an interpreter or a venv folder), create one with "
            "`python -m venv .venv`, or use `--system` to install into the system interpreter"
        )

    def test_error_no_system_python(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(TargetError) as info:
            find_python(None, system=True, environ={})
        assert str(info.value) == "No `python3` found on `PATH` for `--system`"

    def test_error_folder_without_python(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError) as info:
            find_python(str(tmp_path), system=False, environ={})
        assert str(info.value) == f"`{tmp_path}` is a folder but has no `bin/python`"
        assert info.value.hint == (
            "pass a virtual environment folder or the path of a Python interpreter"
        )

    def test_error_missing_interpreter(self, tmp_path: Path) -> None:
        missing = str(tmp_path / "nope" / "python")
        with pytest.raises(UsageError) as info:
            find_python(missing, system=False, environ={})
        assert str(info.value) == f"Python interpreter `{missing}` does not exist"


class TestProbe:
    def test_venv(self, venv: Path) -> None:
        python = venv / "bin" / "python"
        target = probe(python)
        assert target.python == python
        assert target.version == tuple(sys.version_info[:3])
        assert target.python_version == "{}.{}.{}".format(*sys.version_info[:3])
        assert target.is_virtualenv
        assert target.kind == "env"
        assert target.prefix == venv
        assert target.paths.purelib.is_relative_to(venv)
        assert target.paths.scripts == venv / "bin"
        assert target.markers["python_version"] == "{}.{}".format(*sys.version_info[:2])
        assert target.markers["sys_platform"] == sys.platform
        assert Tag("py3", "none", "any") in target.tags
        priority = target.tag_priority()
        assert priority[target.tags[0]] == 0
        assert priority[Tag("py3", "none", "any")] > 0
        assert target.site_dirs()[0] == target.paths.purelib
        version = "{}.{}".format(*sys.version_info[:2])
        # pip's header folder for venvs; sysconfig's `include` is the base interpreter's
        assert target.paths.headers == venv / "include" / "site" / f"python{version}"

    def test_target_dir(self, venv: Path, tmp_path: Path) -> None:
        out = tmp_path / "out"
        target = probe(venv / "bin" / "python", target_dir=out)
        assert target.kind == "target"
        version = "{}.{}".format(*sys.version_info[:2])
        assert target.paths == SchemePaths(
            purelib=out,
            platlib=out,
            scripts=out / "bin",
            data=out,
            headers=out / "include" / "site" / f"python{version}",
        )
        assert target.site_dirs() == (out,)

    def test_prefix(self, venv: Path, tmp_path: Path) -> None:
        prefix = tmp_path / "prefix"
        target = probe(venv / "bin" / "python", prefix=prefix)
        assert target.kind == "prefix"
        version = "{}.{}".format(*sys.version_info[:2])
        assert target.paths.purelib == prefix / "lib" / f"python{version}" / "site-packages"
        assert target.paths.scripts == prefix / "bin"
        assert target.paths.data == prefix
        assert target.paths.headers == prefix / "include" / "site" / f"python{version}"

    def test_cache_answers_the_second_probe(
        self, venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        python = venv / "bin" / "python"
        cache = tmp_path / "cache"
        first = probe(python, cache_dir=cache)
        assert len(list((cache / "targets").glob("[!v]*.json"))) == 1
        calls: list[object] = []
        monkeypatch.setattr("safepip.target.subprocess.run", lambda *a, **k: calls.append(a))
        assert probe(python, cache_dir=cache) == first
        assert calls == []

    @pytest.mark.parametrize(("mode", "where"), [("env", ""), ("prefix", "/opt/some prefix")])
    def test_running_interpreter_answers_in_process_as_its_probe_does(
        self, mode: str, where: str
    ) -> None:
        """safepip's own interpreter is asked in this process; the answer is the probe
        subprocess's, to the byte."""
        import packaging

        parent = str(Path(packaging.__file__).resolve().parent.parent)
        proc = subprocess.run(
            [sys.executable, "-I", "-c", target_mod._PROBE, parent, mode, where],
            capture_output=True,
            text=True,
            check=True,
        )
        here = json.dumps(target_mod._probe_here(mode, where), default=str)
        assert json.loads(here) == json.loads(proc.stdout)

    def test_running_interpreter_starts_no_process(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PYTHONHOME", raising=False)
        monkeypatch.setattr(
            "safepip.target.subprocess.run", lambda *a, **k: pytest.fail("probe subprocess")
        )
        found = probe(sys.executable)
        assert found.python == Path(sys.executable)
        assert found.prefix == Path(sys.prefix)
        assert found.tags[0] == next(iter(sys_tags()))

    @pytest.mark.parametrize("variable", ["PYTHONHOME", "PYTHONPLATLIBDIR"])
    def test_running_interpreter_is_probed_apart_when_the_environment_moves_it(
        self, variable: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`-I` ignores PYTHONHOME and friends: with one set, this process may not answer what
        the interpreter answers on its own, so the subprocess is asked."""
        monkeypatch.setenv(variable, "/nowhere")
        calls: list[object] = []

        def fake_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
            calls.append(args)
            return subprocess.CompletedProcess([], 1, "", "asked\n")

        monkeypatch.setattr("safepip.target.subprocess.run", fake_run)
        with pytest.raises(TargetError, match="asked"):
            probe(sys.executable)
        assert len(calls) == 1

    def test_cache_is_keyed_by_mode(
        self, venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        python = venv / "bin" / "python"
        cache = tmp_path / "cache"
        probe(python, cache_dir=cache)
        calls: list[object] = []

        def fake_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
            calls.append(args)
            return subprocess.CompletedProcess([], 1, "", "not from the cache\n")

        monkeypatch.setattr("safepip.target.subprocess.run", fake_run)
        with pytest.raises(TargetError):
            probe(python, prefix=tmp_path / "p", cache_dir=cache)
        assert len(calls) == 1

    def test_cache_invalidated_when_the_venv_changes(
        self, venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        python = venv / "bin" / "python"
        cache = tmp_path / "cache"
        probe(python, cache_dir=cache)
        cfg = venv / "pyvenv.cfg"
        cfg.write_text(cfg.read_text() + "prompt = changed\n")
        calls: list[object] = []

        def fake_run(*args: object, **kwargs: object) -> object:
            calls.append(args)
            raise OSError(2, "No such file or directory")

        monkeypatch.setattr("safepip.target.subprocess.run", fake_run)
        with pytest.raises(TargetError):
            probe(python, cache_dir=cache)
        assert len(calls) == 1

    def test_corrupt_cache_entry_is_ignored(self, venv: Path, tmp_path: Path) -> None:
        python = venv / "bin" / "python"
        cache = tmp_path / "cache"
        first = probe(python, cache_dir=cache)
        for entry in (cache / "targets").glob("*.json"):
            entry.write_text("{not json")
        assert probe(python, cache_dir=cache) == first
        for entry in (cache / "targets").glob("*.json"):
            assert entry.read_text().startswith("{")
        assert probe(python, cache_dir=cache) == first

    def test_one_probe_serves_every_venv_of_a_base_interpreter(
        self, venv_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A new venv (a Dockerfile, a CI job) costs no interpreter start when another venv of
        the same base interpreter and settings was probed: its answer, with the folder swapped,
        is exactly what the interpreter says."""
        cache = tmp_path / "cache"
        probe(venv_factory() / "bin" / "python", cache_dir=cache)
        other = venv_factory() / "bin" / "python"
        expected = probe(other)  # a real probe, no cache
        calls: list[object] = []
        monkeypatch.setattr("safepip.target.subprocess.run", lambda *a, **k: calls.append(a))
        assert probe(other, cache_dir=cache) == expected
        assert calls == []
        assert expected.paths.purelib.is_relative_to(other.parent.parent)

    @pytest.mark.parametrize("change", ["settings", "copies"])
    def test_venv_of_other_settings_is_probed(
        self,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        change: str,
    ) -> None:
        cache = tmp_path / "cache"
        probe(venv_factory() / "bin" / "python", cache_dir=cache)
        other = venv_factory()
        python = other / "bin" / "python"
        if change == "settings":
            cfg = other / "pyvenv.cfg"
            cfg.write_text(
                cfg.read_text().replace(
                    "include-system-site-packages = false", "include-system-site-packages = true"
                )
            )
        else:
            real = python.resolve()
            python.unlink()
            python.write_bytes(real.read_bytes())
            python.chmod(0o755)
        real_run = subprocess.run
        calls: list[object] = []

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return real_run(*args, **kwargs)

        monkeypatch.setattr("safepip.target.subprocess.run", counted)
        probe(python, cache_dir=cache)
        assert len(calls) == 1

    def test_error_interpreter_fails(self, tmp_path: Path) -> None:
        fake = tmp_path / "python"
        fake.write_text(
            "#!/bin/sh\necho 'first line' >&2\necho 'SyntaxError: old python' >&2\nexit 1\n"
        )
        fake.chmod(0o755)
        with pytest.raises(TargetError) as info:
            probe(fake)
        assert str(info.value) == (
            f"`{fake}` is not a usable Python interpreter: it exited with status 1 "
            "(SyntaxError: old python)"
        )
        assert info.value.exit_code == 2
        assert info.value.hint == "safepip supports target interpreters of Python 3.8 and newer"

    def test_error_interpreter_cannot_run(self, tmp_path: Path) -> None:
        fake = tmp_path / "python"
        fake.write_text("not executable")
        with pytest.raises(TargetError) as info:
            probe(fake)
        assert str(info.value) == (
            f"`{fake}` is not a Python interpreter: it cannot be run (Permission denied)"
        )


EXTERNALLY_MANAGED = """\
[externally-managed]
Error=To install Python packages system-wide, use apt.
 If you wish to install a non-packaged Python package,
 create a virtual environment.
"""


class TestExternallyManaged:
    @pytest.fixture
    def marker(self, tmp_path: Path) -> Path:
        path = tmp_path / "EXTERNALLY-MANAGED"
        path.write_text(EXTERNALLY_MANAGED)
        return path

    def test_error_externally_managed(self, tmp_path: Path, marker: Path) -> None:
        target = make_target(tmp_path, externally_managed=marker)
        with pytest.raises(ExternallyManagedError) as info:
            check_externally_managed(target, break_system_packages=False)
        assert str(info.value) == (
            "Refusing to install into `/usr/bin/python3`: it is externally managed (PEP 668)\n"
            "\n"
            "To install Python packages system-wide, use apt.\n"
            "If you wish to install a non-packaged Python package,\n"
            "create a virtual environment."
        )
        assert info.value.hint == (
            "create a virtual environment (`python -m venv .venv`) and pass `--python .venv`, "
            "or override with `--break-system-packages`"
        )
        assert info.value.python == Path("/usr/bin/python3")

    @pytest.mark.parametrize(
        "content",
        ["", "[externally-managed]\n", "no section header\n", "[other]\nError=x\n"],
    )
    def test_unusable_marker_still_refuses_with_default_text(
        self, tmp_path: Path, marker: Path, content: str
    ) -> None:
        marker.write_text(content)
        target = make_target(tmp_path, externally_managed=marker)
        with pytest.raises(ExternallyManagedError) as info:
            check_externally_managed(target, break_system_packages=False)
        assert str(info.value).endswith("\n\nThe interpreter is managed by its distributor.")

    @pytest.mark.parametrize(
        "overrides",
        [
            {"is_virtualenv": True},
            {"kind": "target"},
            {"kind": "prefix"},
            {"externally_managed": None},
        ],
    )
    def test_not_applied(self, tmp_path: Path, marker: Path, overrides: dict[str, Any]) -> None:
        target = make_target(tmp_path, **{"externally_managed": marker, **overrides})
        check_externally_managed(target, break_system_packages=False)

    def test_break_system_packages(self, tmp_path: Path, marker: Path) -> None:
        target = make_target(tmp_path, externally_managed=marker)
        check_externally_managed(target, break_system_packages=True)


def write_dist(site: Path, folder: str, metadata: str | None, installer: str | None = None) -> Path:
    path = site / folder
    path.mkdir(parents=True)
    if metadata is not None:
        (path / "METADATA").write_text(metadata)
    if installer is not None:
        (path / "INSTALLER").write_text(installer)
    return path


class TestInstalledDistributions:
    def test_reads_dist_info_folders(self, tmp_path: Path) -> None:
        target = make_target(tmp_path)
        site = target.paths.purelib
        write_dist(
            site,
            "Foo_Bar-1.0.dist-info",
            "Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n\nName: body\n",
            installer="pip\n",
        )
        write_dist(site, "baz-2.0.dist-info", "Version: 2.0\nName: baz\n", installer="\n")
        write_dist(site, "broken-1.0.dist-info", None)
        write_dist(site, "noversion-1.0.dist-info", "Name: noversion\n\nVersion: 1.0\n")
        write_dist(site, "old-1.0.egg-info", "Name: old\nVersion: 1.0\n")
        (site / "stray.dist-info").write_text("a file, not a folder")
        found = {str(d.name): d for d in installed_distributions(target)}
        assert sorted(found) == ["baz", "foo-bar"]
        foo = found["foo-bar"]
        assert (foo.display_name, foo.version, foo.installer) == ("Foo_Bar", "1.0", "pip")
        assert foo.dist_info == site / "Foo_Bar-1.0.dist-info"
        assert found["baz"].installer is None
        assert foo.read_text("METADATA") is not None
        assert foo.read_text("RECORD") is None

    def test_purelib_wins_over_platlib(self, tmp_path: Path) -> None:
        pure, plat = tmp_path / "pure", tmp_path / "plat"
        target = make_target(
            tmp_path,
            paths=SchemePaths(
                purelib=pure, platlib=plat, scripts=tmp_path, data=tmp_path, headers=tmp_path
            ),
        )
        write_dist(pure, "a-1.0.dist-info", "Name: a\nVersion: 1.0\n")
        write_dist(plat, "a-2.0.dist-info", "Name: A\nVersion: 2.0\n")
        write_dist(plat, "b-1.0.dist-info", "Name: b\nVersion: 1.0\n")
        found = installed_distributions(target)
        assert [(d.name, d.version) for d in found] == [("a", "1.0"), ("b", "1.0")]

    def test_missing_site_folder(self, tmp_path: Path) -> None:
        assert installed_distributions(make_target(tmp_path)) == ()

    def test_probed_venv_starts_empty(self, venv: Path) -> None:
        assert installed_distributions(probe(venv / "bin" / "python")) == ()


class TestSyntheticTarget:
    def test_linux_tags_and_markers(self) -> None:
        target = synthetic_target("3.11", ["manylinux_2_28_x86_64"])
        assert target.version == (3, 11, 0)
        assert target.tags[0] == Tag("cp311", "cp311", "manylinux_2_28_x86_64")
        assert Tag("cp311", "abi3", "manylinux2014_x86_64") in target.tags
        assert Tag("cp311", "cp311", "linux_x86_64") in target.tags
        assert Tag("py3", "none", "any") in target.tags
        assert Tag("cp311", "cp311", "manylinux_2_29_x86_64") not in target.tags
        assert target.markers["sys_platform"] == "linux"
        assert target.markers["platform_machine"] == "x86_64"
        assert target.markers["python_full_version"] == "3.11.0"

    def test_windows_and_mac(self) -> None:
        win = synthetic_target("3.12.4", ["win_amd64"])
        assert win.markers["sys_platform"] == "win32"
        assert win.markers["platform_machine"] == "AMD64"
        assert win.tags[0] == Tag("cp312", "cp312", "win_amd64")
        mac = synthetic_target("3.10", ["macosx_14_0_arm64"])
        assert mac.markers["sys_platform"] == "darwin"
        assert Tag("cp310", "cp310", "macosx_11_0_arm64") in mac.tags

    def test_error_bad_python_version(self) -> None:
        with pytest.raises(UsageError) as info:
            synthetic_target("three")
        assert str(info.value) == "`--python-version three` is not a Python 3 version"

    @given(
        st.sampled_from(["x86_64", "aarch64", "i686"]),
        st.integers(min_value=5, max_value=40),
    )
    def test_manylinux_widening_includes_every_older_glibc(self, arch: str, minor: int) -> None:
        widened = target_mod._widen_platform(f"manylinux_2_{minor}_{arch}")
        assert widened[0] == f"manylinux_2_{minor}_{arch}"
        assert {f"manylinux_2_{m}_{arch}" for m in range(5, minor + 1)} <= set(widened)
        assert widened[-1] == f"linux_{arch}"
        assert ("manylinux2014_" + arch in widened) == (minor >= 17)


def _layout(root: Path) -> tuple[dict[str, str], set[tuple[str, ...]]]:
    """Files under `root` (relative path -> sha256) and the rows of every RECORD, without the
    files that only say which installer ran (`INSTALLER`, safepip's own record, RECORD itself)
    and without bytecode."""
    import csv
    import hashlib

    own = ("INSTALLER", "RECORD", "safepip.json", "safepip.seal", "direct_url.json")
    files: dict[str, str] = {}
    rows: set[tuple[str, ...]] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        if path.parent.name.endswith(".dist-info") and path.name == "RECORD":
            rows |= {
                tuple(row)
                for row in csv.reader(path.read_text().splitlines())
                if row and row[0].rsplit("/", 1)[-1] not in own
            }
        if not (path.parent.name.endswith(".dist-info") and path.name in own):
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files, rows


def test_headers_root_outside_a_venv() -> None:
    """`--target` from a system interpreter: pip's `posix_home` scheme (`<dir>/include/python`)."""
    assert target_mod._headers_root(Path("/t"), [3, 12, 1], False) == Path("/t/include/python")


class TestHeadersLikePip:
    """`.data/headers` land where pip puts them; pip is the oracle (`pip --python VENV`)."""

    @pytest.fixture
    def lock(self, static_index: Callable[..., Any], tmp_path: Path) -> tuple[Path, str]:
        from wheelbuild import build_wheel, sha256_file

        wheel = build_wheel(
            tmp_path / "w",
            "hdrpkg",
            "1.0",
            data_files={"headers/hdrpkg.h": "#define HDR 1\n", "headers/sub/inner.h": "int x;\n"},
        )
        index = static_index()
        index.add(wheel)
        reqs = tmp_path / "requirements.txt"
        reqs.write_text(f"hdrpkg==1.0 --hash=sha256:{sha256_file(wheel)}\n")
        return reqs, str(index.url)

    def _pip(self, venv: Path, lock: tuple[Path, str | None], *where: str) -> None:
        reqs, url = lock
        index = ["-i", url] if url else []
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "--isolated", "--no-compile", "-q", "-r", str(reqs), *index, *where],
            check=True, capture_output=True,
        )  # fmt: skip

    def _safepip(self, cli: Cli, venv: Path, lock: tuple[Path, str | None], *where: str) -> None:
        reqs, url = lock
        index = ["-i", url] if url else []
        argv = ["install", "--isolated", "-q", "-r", str(reqs), *index, "--python", str(venv)]
        result = cli(*argv, *where)
        assert result.code == 0, result.err

    @pytest.mark.network
    def test_greenlet_from_the_real_index(
        self, cli: Cli, venv_factory: Callable[..., Path]
    ) -> None:
        """greenlet (a dependency of SQLAlchemy and gevent) ships `greenlet.h`."""
        lock = (Path(__file__).parent / "data" / "locks" / "greenlet.txt", None)
        ours, pips = venv_factory(), venv_factory()
        self._safepip(cli, ours, lock)
        self._pip(pips, lock)
        version = "{}.{}".format(*sys.version_info[:2])
        assert (
            ours / "include" / "site" / f"python{version}" / "greenlet" / "greenlet.h"
        ).is_file()
        assert _layout(ours) == _layout(pips)

    def test_venv(
        self, cli: Cli, venv_factory: Callable[..., Path], lock: tuple[Path, str]
    ) -> None:
        base_include = Path(sys.base_prefix) / "include"
        before = sorted(base_include.rglob("*")) if base_include.is_dir() else []
        ours, pips = venv_factory(), venv_factory()
        self._safepip(cli, ours, lock)
        self._pip(pips, lock)
        version = "{}.{}".format(*sys.version_info[:2])
        header = ours / "include" / "site" / f"python{version}" / "hdrpkg" / "sub" / "inner.h"
        assert header.read_text() == "int x;\n"
        assert _layout(ours) == _layout(pips)
        # nothing outside the venv: RECORD paths stay inside it, the base `include` is untouched
        site = next((ours / "lib").glob("python3*/site-packages"))
        for row in (site / "hdrpkg-1.0.dist-info" / "RECORD").read_text().splitlines():
            assert (site / row.split(",")[0]).resolve().is_relative_to(ours.resolve()), row
        assert (sorted(base_include.rglob("*")) if base_include.is_dir() else []) == before

    @pytest.mark.parametrize("option", ["--target", "--prefix"])
    def test_target_and_prefix(
        self,
        cli: Cli,
        venv_factory: Callable[..., Path],
        lock: tuple[Path, str],
        tmp_path: Path,
        option: str,
    ) -> None:
        venv = venv_factory()
        ours, pips = tmp_path / "ours", tmp_path / "pips"
        self._safepip(cli, venv, lock, option, str(ours))
        self._pip(venv, lock, option, str(pips))
        files, rows = _layout(ours)
        assert any("include/site/python" in path for path in files)
        pip_files, pip_rows = _layout(pips)
        assert files == pip_files
        if option == "--target":
            # pip writes these rows relative to the temporary `lib/python` it installs into
            # before moving the files, so they point outside the target folder; ours are right
            pip_rows = {(path.removeprefix("../../"), *rest) for path, *rest in pip_rows}
        assert rows == pip_rows


def _fake_python(folder: Path, body: str) -> Path:
    """A program that plays an interpreter: a shell script with `body`."""
    script = folder / "bin" / "python3"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


class TestBadInterpreter:
    """`--python` naming something that is not a Python: one line, exit 2, no traceback."""

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("text", "is not a Python interpreter: it cannot be run (Exec format error)"),
            ("devnull", "is not a Python interpreter: it cannot be run (Permission denied)"),
            ("fails", "is not a usable Python interpreter: it exited with status 3 (boom)"),
            ("not-json", "is not a Python interpreter: it did not answer safepip's probe"),
            ("wrong-json", "is not a Python interpreter: it did not answer safepip's probe"),
        ],
    )
    def test_error_not_an_interpreter(
        self,
        kind: str,
        expected: str,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        if kind == "text":
            python = tmp_path / "notes.txt"
            python.write_text("just some text\n")
            python.chmod(0o755)
        elif kind == "devnull":
            python = Path(os.devnull)
        elif kind == "fails":
            python = _fake_python(tmp_path, "echo boom >&2; exit 3")
        elif kind == "not-json":
            python = _fake_python(tmp_path, "echo 'Python 3.12.0'")
        else:
            python = _fake_python(tmp_path, "echo '{\"version\": 3}'")
        argv = ["install", "attrs==24.2.0", "--python", str(python), "--no-cache"]
        code, _, err = cli(*argv)
        assert code == 2
        assert err.startswith(f"error: `{python}` {expected}\n")
        assert "Traceback" not in err


class TestExternallyManagedEveryRun:
    """PEP 668's marker is checked on every run, not cached with the probe (issue 9)."""

    @pytest.fixture
    def system_python(self, venv: Path, tmp_path: Path) -> tuple[Path, Path]:
        """A fake system interpreter (not a venv) whose folders are all under tmp_path: it
        answers the probe with a real venv's answer, moved there."""
        real = target_mod._run_probe(venv / "bin" / "python", "env", "", None)
        root = tmp_path / "system"
        site = root / "lib" / "site-packages"
        site.mkdir(parents=True)
        (root / "stdlib").mkdir()
        answer = {
            **real,
            "prefix": str(root),
            "base_prefix": str(root),
            "stdlib": str(root / "stdlib"),
            "paths": {
                "purelib": str(site),
                "platlib": str(site),
                "scripts": str(root / "bin"),
                "data": str(root),
                "include": str(root / "include"),
            },
        }
        (tmp_path / "answer.json").write_text(json.dumps(answer))
        python = _fake_python(root, f"cat '{tmp_path / 'answer.json'}'")
        return python, root

    def test_marker_added_then_removed(
        self,
        system_python: tuple[Path, Path],
        static_index: Callable[..., Any],
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        from wheelbuild import build_wheel, sha256_file

        python, root = system_python
        wheel = build_wheel(tmp_path / "w", "mpkg", "1.0")
        index = static_index()
        index.add(wheel)
        line = f"mpkg==1.0 --hash=sha256:{sha256_file(wheel)}"
        argv = ["install", line, "--python", str(python), "-i", str(index.url)]
        argv += ["--cache-dir", str(tmp_path / "cache"), "--force-reinstall"]
        marker = root / "stdlib" / "EXTERNALLY-MANAGED"
        assert cli(*argv).code == 0  # probed and cached
        marker.write_text("[externally-managed]\nError=Use apt, not pip\n")
        refused = cli(*argv)
        assert refused.code == 4
        assert "Use apt, not pip" in refused.err
        marker.unlink()  # the Dockerfile step that removes it
        assert cli(*argv).code == 0
        assert (root / "lib" / "site-packages" / "mpkg" / "__init__.py").is_file()

    @pytest.mark.parametrize(
        ("variable", "config", "extra", "code"),
        [
            ("1", None, [], 0),
            ("yes", None, [], 0),
            ("0", None, [], 4),
            ("1", None, ["--isolated"], 4),
            (None, "[install]\nbreak-system-packages = true\n", [], 0),
            (None, "[global]\nbreak-system-packages = false\n", [], 4),
        ],
    )
    def test_pip_break_system_packages_setting(
        self,
        variable: str | None,
        config: str | None,
        extra: list[str],
        code: int,
        system_python: tuple[Path, Path],
        static_index: Callable[..., Any],
        tmp_path: Path,
        cli: Cli,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """pip's `PIP_BREAK_SYSTEM_PACKAGES` and `break-system-packages` in pip.conf count as
        `--break-system-packages` (not with `--isolated`, which ignores pip's settings)."""
        from conftest import snapshot_tree
        from wheelbuild import build_wheel, sha256_file

        python, root = system_python
        (root / "stdlib" / "EXTERNALLY-MANAGED").write_text(
            "[externally-managed]\nError=Use apt, not pip\n"
        )
        if variable is not None:
            monkeypatch.setenv("PIP_BREAK_SYSTEM_PACKAGES", variable)
        if config is not None:
            conf = tmp_path / "pip.conf"
            conf.write_text(config)
            monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
        wheel = build_wheel(tmp_path / "w", "bpkg", "1.0")
        index = static_index()
        index.add(wheel)
        line = f"bpkg==1.0 --hash=sha256:{sha256_file(wheel)}"
        argv = ["install", line, "--python", str(python), "-i", str(index.url), *extra]
        argv += ["--cache-dir", str(tmp_path / "cache")]
        before = snapshot_tree(root)
        result = cli(*argv)
        assert result.code == code, result.err
        err = result.err
        installed = root / "lib" / "site-packages" / "bpkg" / "__init__.py"
        if code == 0:
            assert installed.is_file()
        else:
            assert "it is externally managed (PEP 668)" in err
            assert "Use apt, not pip" in err
            assert snapshot_tree(root) == before


@pytest.mark.parametrize("option", ["--target", "--prefix"])
def test_target_and_prefix_without_python_use_the_running_interpreter(
    option: str,
    static_index: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    """pip's rule: the interpreter running safepip, whatever `python3` is first on PATH."""
    import platform

    from wheelbuild import build_wheel, sha256_file

    decoy = _fake_python(tmp_path / "decoy", "exit 7")  # must never be asked
    monkeypatch.setenv("PATH", str(decoy.parent))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.chdir(tmp_path)
    wheel = build_wheel(tmp_path / "w", "tpkg", "1.0")
    index = static_index()
    index.add(wheel)
    out = tmp_path / "out"
    argv = ["install", f"tpkg==1.0 --hash=sha256:{sha256_file(wheel)}", option, str(out)]
    argv += ["-i", str(index.url), "--cache-dir", str(tmp_path / "cache"), "--report", "-"]
    result = cli(*argv)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["environment"]["python_full_version"] == platform.python_version()
    assert [p.name for p in out.rglob("__init__.py")] == ["__init__.py"]
