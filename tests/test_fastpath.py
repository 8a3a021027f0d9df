"""The no-op fast path: a stamped no-op is replayed only while every input is unchanged.

Each test installs a small lock, which leaves the stamp of the next identical run (the check
after an install), or runs it again (a full no-op run that writes the stamp); shows the next run
is replayed without the full pipeline; then changes one input and shows the next run is a full
one again. The tests of what a stamp binds run with both kinds of stamp.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from safepip import cli, fastpath
from safepip import install as install_stage
from wheelbuild import build_wheel, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from servers import StaticIndex


@dataclass
class Run:
    code: int
    out: str
    err: str
    full: bool
    """Whether the full pipeline ran (False: the stamp was replayed)."""


@dataclass
class Env:
    venv: Path
    site: Path
    reqs: Path
    cache: Path
    index: StaticIndex
    wheels: dict[str, Path]
    run: Callable[..., Run]
    origin: str = "noop-run"
    """Who writes the stamp `stamped` replays: a full no-op run, or the install before it."""

    def argv(self, *extra: str) -> list[str]:
        return [
            "install",
            "-r",
            str(self.reqs),
            "--python",
            str(self.venv),
            "-i",
            self.index.url,
            "--cache-dir",
            str(self.cache),
            *extra,
        ]

    def stamps(self) -> list[Path]:
        folder = self.cache / fastpath.STAMP_FOLDER
        return sorted(folder.iterdir()) if folder.exists() else []

    def stamped(self, *extra: str) -> Run:
        """Run until the stamp is written (by the install, or by a full no-op run after the
        install's stamp is removed), then once more; that run must be a replay."""
        first = self.run(*self.argv(*extra))
        assert first.code == 0, first.err
        if self.origin == "noop-run":
            for stamp in self.stamps():
                stamp.unlink()
            second = self.run(*self.argv(*extra))
            assert second.code == 0, second.err
            assert second.full
        else:
            assert "Installed 0 packages" not in first.err
            assert self.stamps(), "the install left no stamp"
        third = self.run(*self.argv(*extra))
        assert third.code == 0, third.err
        assert not third.full, "the no-op was not replayed"
        return third


def _lock_line(wheel: Path) -> str:
    name, version = wheel.name.split("-")[:2]
    return f"{name}=={version} --hash=sha256:{sha256_file(wheel)}"


@pytest.fixture
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    static_index: Callable[..., StaticIndex],
    venv_factory: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Env:
    # The repository root is on `sys.path` under `python -m pytest`; other workers write files
    # there, which (rightly) counts as a change. The tests run from their own folder.
    root = os.getcwd()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and os.path.abspath(p) != root])
    monkeypatch.chdir(tmp_path)
    wheels = {}
    for name, requires in (("alpha", ["beta>=1"]), ("beta", [])):
        folder = tmp_path / "wheels" / name
        folder.mkdir(parents=True)
        wheels[name] = build_wheel(folder, name, "1.0", requires=requires)
    index = static_index()
    for wheel in wheels.values():
        index.add(wheel)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("".join(_lock_line(w) + "\n" for w in wheels.values()))
    venv = venv_factory()
    real_main = cli.main

    def run(*argv: str) -> Run:
        calls: list[int] = []

        def counted(args: list[str]) -> int:
            calls.append(1)
            return real_main(args)

        monkeypatch.setattr(cli, "main", counted)
        code = fastpath.main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err, bool(calls))

    return Env(
        venv=venv,
        site=next((venv / "lib").glob("python3*/site-packages")),
        reqs=reqs,
        cache=tmp_path / "cache",
        index=index,
        wheels=wheels,
        run=run,
        origin=getattr(request, "param", "noop-run"),
    )


BOTH_ORIGINS = pytest.mark.parametrize("env", ["noop-run", "install"], indirect=True)
"""For the tests of what a stamp binds: a stamp the install left must bind the same."""


def _age(path: Path) -> None:
    """Wait out the racy window so that a change is the test's, not the clock's."""
    time.sleep(0.06)


class TestReplay:
    @BOTH_ORIGINS
    def test_replay_prints_the_no_op_output_with_its_own_time(
        self, env: Env, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        replay = env.stamped()
        with monkeypatch.context() as m:
            m.setenv(fastpath.DISABLE_ENV, "1")
            full = env.run(*env.argv())
        assert full.full
        assert replay.code == 0
        assert replay.out == full.out
        assert replay.err.rsplit(" in ", 1)[0] == full.err.rsplit(" in ", 1)[0]
        assert "kept 2 already installed in " in replay.err
        assert replay.err.endswith("s\n")
        stamps = env.stamps()
        assert len(stamps) == 1
        assert stamps[0].stat().st_mode & 0o777 == 0o600

    def test_replay_imports_only_the_fast_path(self, env: Env) -> None:
        """Through the real `python -m safepip`: the replay never loads the CLI."""
        command = [sys.executable, "-X", "importtime", "-m", "safepip", *env.argv()]
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        for _ in range(2):
            subprocess.run(command, check=True, capture_output=True, env=environ)
        last = subprocess.run(command, check=True, capture_output=True, text=True, env=environ)
        imported = {line.rsplit("|", 1)[-1].strip() for line in last.stderr.splitlines()}
        assert "safepip.fastpath" in imported
        assert not {"safepip.cli", "safepip.pipeline", "argparse", "hashlib"} & imported
        assert "kept 2 already installed" in last.stderr

    @pytest.mark.parametrize(
        "extra",
        [["--dry-run"], ["--no-cache"], ["--report", "report.json"]],
        ids=["dry-run", "no-cache", "report"],
    )
    def test_not_stamped(self, env: Env, extra: list[str]) -> None:
        first = env.run(*env.argv(*extra))  # installs (but for --dry-run), leaving no stamp
        assert first.code == 0, first.err
        assert not env.stamps()
        for _ in range(3):
            again = env.run(*env.argv(*extra))
            assert again.code == 0, again.err
            assert again.full
        assert not env.stamps()

    @BOTH_ORIGINS
    def test_report_to_stdout_is_replayed(self, env: Env) -> None:
        replay = env.stamped("--report", "-")
        assert json.loads(replay.out)["install"][0]["safepip"]["action"] == "keep"

    def test_disabled_by_environment(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        env.stamped()
        monkeypatch.setenv(fastpath.DISABLE_ENV, "1")
        assert env.run(*env.argv()).full


@BOTH_ORIGINS
class TestFallThrough:
    """Every input the full run depends on: changing it means a full run."""

    def test_requirements_file_changed(self, env: Env) -> None:
        env.stamped()
        env.reqs.write_text(env.reqs.read_text() + "# a comment\n")
        assert env.run(*env.argv()).full

    def test_requirements_file_rewritten_with_the_same_bytes_is_still_replayed(
        self, env: Env
    ) -> None:
        env.stamped()
        env.reqs.write_bytes(env.reqs.read_bytes())
        assert not env.run(*env.argv()).full

    def test_nested_requirements_file_touched(self, env: Env, tmp_path: Path) -> None:
        nested = tmp_path / "nested.txt"
        nested.write_text(env.reqs.read_text())
        env.reqs.write_text(f"-r {nested.name}\n")
        env.stamped()
        _age(nested)
        nested.write_text(nested.read_text())
        assert env.run(*env.argv()).full

    def test_pip_config_file_appears(
        self, env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        config = tmp_path / "pip.conf"
        monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
        env.stamped()
        config.write_text("[global]\ntimeout = 30\n")
        assert env.run(*env.argv()).full

    def test_environment_variable_changed(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        env.stamped()
        monkeypatch.setenv("PIP_TIMEOUT", "30")
        assert env.run(*env.argv()).full

    def test_arguments_changed(self, env: Env) -> None:
        env.stamped()
        assert env.run(*env.argv("-q")).full

    def test_working_folder_changed(
        self, env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        env.stamped()
        other = tmp_path / "elsewhere"
        other.mkdir()
        monkeypatch.chdir(other)
        assert env.run(*env.argv()).full

    def test_date_changed(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        env.stamped()
        real = time.strftime
        monkeypatch.setattr(
            time, "strftime", lambda fmt, *t: "2099-01-01" if fmt == "%Y-%m-%d" else real(fmt, *t)
        )
        assert env.run(*env.argv()).full

    def test_install_record_edited_in_place_with_its_times_put_back(self, env: Env) -> None:
        env.stamped()
        record = env.site / "beta-1.0.dist-info" / "safepip.json"
        _age(record)
        before = record.stat()
        data = record.read_bytes()
        sha = json.loads(data)["sha256"]
        record.write_bytes(
            data.replace(sha.encode(), (sha[:-1] + "0" if sha[-1] != "0" else "1").encode())
        )
        os.utime(record, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert record.stat().st_size == before.st_size
        again = env.run(*env.argv())
        assert again.full
        assert "Installed 1 package" in again.err  # the full run no longer trusts the record

    def test_distribution_added_by_another_installer(self, env: Env) -> None:
        env.stamped()
        extra = env.site / "gamma-1.0.dist-info"
        extra.mkdir()
        (extra / "METADATA").write_text("Metadata-Version: 2.1\nName: gamma\nVersion: 1.0\n\n")
        assert env.run(*env.argv()).full

    def test_distribution_removed(self, env: Env) -> None:
        env.stamped()
        dist = env.site / "beta-1.0.dist-info"
        for child in dist.iterdir():
            child.unlink()
        dist.rmdir()
        again = env.run(*env.argv())
        assert again.full
        assert "Installed 1 package" in again.err

    def test_file_added_to_a_dist_info(self, env: Env) -> None:
        env.stamped()
        (env.site / "alpha-1.0.dist-info" / "direct_url.json").write_text("{}")
        assert env.run(*env.argv()).full

    def test_interrupted_install_journal(self, env: Env) -> None:
        env.stamped()
        (env.site / ".safepip-txn-test").mkdir()
        assert env.run(*env.argv()).full

    def test_advisory_database_replaced(
        self, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = tmp_path / "data"
        monkeypatch.setenv("SAFEPIP_DATA_DIR", str(data))
        env.stamped()
        data.mkdir(exist_ok=True)
        (data / "advisory-db.zip").write_bytes(b"not a database")
        again = env.run(*env.argv())
        assert again.full
        assert again.code != 0

    def test_target_interpreter_configuration_changed(self, env: Env) -> None:
        env.stamped()
        cfg = env.venv / "pyvenv.cfg"
        _age(cfg)
        cfg.write_text(cfg.read_text())
        assert env.run(*env.argv()).full

    def test_module_of_safepip_edited(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        env.stamped()
        own = Path(fastpath.__file__).parent / "report.py"
        before = own.stat()
        # Not edited for real: the check sees the path's state, so a stand-in changes it.
        stand_in = Path(env.cache.parent) / "report.py"
        stand_in.write_bytes(own.read_bytes())
        real_lstat = os.lstat

        def lstat(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> os.stat_result:
            if os.fspath(path) == str(own):
                return real_lstat(stand_in)
            return real_lstat(path, *args, **kwargs)

        monkeypatch.setattr(os, "lstat", lstat)
        assert own.stat() == before
        assert env.run(*env.argv()).full


@BOTH_ORIGINS
class TestStampTrust:
    def _stamp(self, env: Env) -> Path:
        env.stamped()
        (stamp,) = (env.cache / fastpath.STAMP_FOLDER).iterdir()
        return stamp

    def test_tampered_stamp_is_ignored(self, env: Env) -> None:
        stamp = self._stamp(env)
        data = stamp.read_bytes()
        stamp.write_bytes(data.replace(b"\nx 0", b"\nx 5"))
        again = env.run(*env.argv())
        assert again.full
        assert again.code == 0

    def test_stamp_for_another_key_is_ignored(self, env: Env) -> None:
        stamp = self._stamp(env)
        key = stamp.name
        other = stamp.with_name("0" * 64)
        other.write_bytes(stamp.read_bytes().replace(key.encode(), other.name.encode()))
        stamp.unlink()
        stamp.write_bytes(other.read_bytes())  # the right name, another key inside
        assert env.run(*env.argv()).full

    @pytest.mark.parametrize("where", ["stamp", "folder", "cache"])
    def test_stamp_others_can_write_is_never_read(self, env: Env, where: str) -> None:
        stamp = self._stamp(env)
        target = {"stamp": stamp, "folder": stamp.parent, "cache": env.cache}[where]
        target.chmod(target.stat().st_mode | 0o020)
        again = env.run(*env.argv())
        assert again.full
        if where != "stamp":
            assert again.code == 4  # the full run refuses such a cache (the trust model)

    def test_symlinked_stamp_is_never_read(self, env: Env, tmp_path: Path) -> None:
        stamp = self._stamp(env)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.write_bytes(stamp.read_bytes())
        stamp.unlink()
        stamp.symlink_to(elsewhere)
        assert env.run(*env.argv()).full

    def test_old_stamps_are_pruned(self, env: Env) -> None:
        stamp = self._stamp(env)
        old = stamp.with_name("f" * 64)
        old.write_text("old")
        os.utime(old, (time.time() - 4 * 86400,) * 2)
        env.reqs.write_text(env.reqs.read_text() + "\n")
        env.run(*env.argv())
        assert not old.exists()


def _stamp_lines(stamp: Path) -> tuple[set[str], list[str]]:
    """A stamp's paths and its recorded output lines (decoded)."""
    paths: set[str] = set()
    output: list[str] = []
    for line in stamp.read_text().splitlines()[1:]:
        kind, _, rest = line.partition(" ")
        if kind in ("f", "w"):
            paths.add(rest)
        elif kind == "o":
            output.append(bytes.fromhex(rest.partition(" ")[2]).decode())
    return paths, output


class TestAfterInstall:
    """An install that committed leaves the stamp of the next identical run: the same no-op
    check as a full run's, run in the same process right after the install, recorded."""

    def test_the_stamp_is_the_one_a_no_op_run_in_a_new_process_writes(
        self, env: Env, tmp_path: Path
    ) -> None:
        """Through `python -m safepip`: every path the stamp of a separate full no-op run lists
        (with every module it imports) is in the stamp the install left, and both record the
        same output."""
        command = [sys.executable, "-m", "safepip", *env.argv()]
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        installed = subprocess.run(
            command, check=False, capture_output=True, text=True, env=environ
        )
        assert installed.returncode == 0, installed.stderr
        assert "Installed 2 packages" in installed.stderr
        (left,) = env.stamps()
        after_install = _stamp_lines(left)
        left.unlink()
        noop = subprocess.run(command, check=False, capture_output=True, text=True, env=environ)
        assert noop.returncode == 0, noop.stderr
        (written,) = env.stamps()
        assert written.name == left.name
        by_noop_run = _stamp_lines(written)
        # (a new process's tempfile module tries a file of a random name in the temporary
        # folder once: it never decides anything, and is absent afterwards)
        tmp = os.path.realpath(tempfile.gettempdir()) + "/"
        missing = {p for p in by_noop_run[0] - after_install[0] if not p.startswith(tmp)}
        assert not missing
        assert [o.rsplit(" in ", 1)[0] for o in after_install[1]] == [
            o.rsplit(" in ", 1)[0] for o in by_noop_run[1]
        ]
        replay = subprocess.run(command, check=False, capture_output=True, text=True, env=environ)
        assert replay.returncode == 0
        assert replay.stderr.rsplit(" in ", 1)[0] == noop.stderr.rsplit(" in ", 1)[0]

    def test_a_refused_install_leaves_no_stamp(self, env: Env) -> None:
        good = env.reqs.read_text()
        env.reqs.write_text(good.replace(sha256_file(env.wheels["beta"]), "0" * 64))
        refused = env.run(*env.argv())
        assert refused.code == 3, refused.err
        assert not env.stamps()
        assert not list(env.site.glob("*.dist-info"))

    def test_an_interrupted_install_leaves_no_stamp(
        self, env: Env, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_apply = install_stage.apply

        def interrupted(*args: Any, **kwargs: Any) -> Any:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the install writes
            return real_apply(*args, **kwargs)

        monkeypatch.setattr(install_stage, "apply", interrupted)
        stopped = env.run(*env.argv())
        assert stopped.code == 130, stopped.err
        assert not env.stamps()
        monkeypatch.setattr(install_stage, "apply", real_apply)
        again = env.run(*env.argv())
        assert again.full
        assert "Installed 2 packages" in again.err

    def test_the_check_writes_nothing_but_the_cache(self, env: Env, tmp_path: Path) -> None:
        """`--report FILE` after an install: the check would write the file again, so it stops
        before it does; the install's report stays and no stamp is written."""
        report = tmp_path / "report.json"
        first = env.run(*env.argv("--report", str(report)))
        assert first.code == 0, first.err
        actions = [i["safepip"]["action"] for i in json.loads(report.read_text())["install"]]
        assert actions == ["install", "install"]
        assert not env.stamps()

    def test_a_check_that_would_change_something_stops_first(
        self, env: Env, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`--force-reinstall` reinstalls on every run: the check after the install would
        reinstall again, and stops before it does."""
        applied: list[int] = []
        real_apply = install_stage.apply

        def counted(*args: Any, **kwargs: Any) -> Any:
            applied.append(1)
            return real_apply(*args, **kwargs)

        monkeypatch.setattr(install_stage, "apply", counted)
        first = env.run(*env.argv("--force-reinstall"))
        assert first.code == 0, first.err
        assert applied == [1]
        assert not env.stamps()

    def test_concurrent_installs(self, env: Env) -> None:
        """Two installs of the same environment at once (real processes): both succeed, and
        what stamp is left replays exactly what a full no-op run prints."""
        command = [sys.executable, "-m", "safepip", *env.argv()]
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        procs = [
            subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        names = sorted(p.name for p in env.site.glob("*.dist-info"))
        assert names == ["alpha-1.0.dist-info", "beta-1.0.dist-info"]
        next_run = env.run(*env.argv())
        assert next_run.code == 0
        assert "kept 2 already installed" in next_run.err
        environ[fastpath.DISABLE_ENV] = "1"
        full = subprocess.run(command, check=False, env=environ, capture_output=True, text=True)
        assert next_run.err.rsplit(" in ", 1)[0] == full.stderr.rsplit(" in ", 1)[0]
        assert not env.run(*env.argv()).full

    def test_no_stamp_when_the_install_changed_code_this_process_runs(
        self, env: Env, tmp_path: Path
    ) -> None:
        """safepip installing into the environment it runs from: the install puts a module
        safepip has already imported (here `platformdirs`, shadowing the one it runs with)
        on its own `sys.path`. The check after the install would run the code loaded before
        the install, which a new process no longer runs; so it leaves no stamp, and the next
        run is a full one with the new code (which here refuses to import: exit 1, not the
        replay of a no-op)."""
        folder = tmp_path / "wheels" / "platformdirs"
        folder.mkdir(parents=True)
        shadow = build_wheel(
            folder,
            "platformdirs",
            "99.0",
            files={"platformdirs/__init__.py": "raise RuntimeError('new platformdirs')\n"},
        )
        env.index.add(shadow)
        env.reqs.write_text(env.reqs.read_text() + _lock_line(shadow) + "\n")
        command = [sys.executable, "-m", "safepip", *env.argv()]
        path = [str(env.site), *(p for p in sys.path if p)]
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        installed = subprocess.run(
            command, check=False, capture_output=True, text=True, env=environ
        )
        assert installed.returncode == 0, installed.stderr
        assert "Installed 3 packages" in installed.stderr
        assert (env.site / "platformdirs" / "__init__.py").is_file()
        assert not env.stamps()
        again = subprocess.run(command, check=False, capture_output=True, text=True, env=environ)
        assert again.returncode != 0
        assert "new platformdirs" in again.stderr


class TestUnits:
    def test_input_files(self, tmp_path: Path) -> None:
        argv = ["install", "-r", "a.txt", "-cb.txt", "--requirement=c.txt", "--constraint", "d"]
        found = fastpath.input_files(argv)
        assert found is not None
        assert [os.path.basename(p) for p in found] == ["a.txt", "b.txt", "c.txt", "d"]
        assert fastpath.input_files(["install", "-r", "-"]) is None
        assert fastpath.input_files(["install", "-r", "https://h/r.txt"]) == []

    def test_fingerprint_sees_a_same_size_rewrite(self, tmp_path: Path) -> None:
        path = tmp_path / "f"
        path.write_text("one")
        before = fastpath.fingerprint([(str(path), False)])[0]
        time.sleep(0.01)
        st = path.stat()
        path.write_text("two")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert fastpath.fingerprint([(str(path), False)])[0] != before

    def test_fingerprint_tells_a_fifo_from_files_and_folders(self, tmp_path: Path) -> None:
        """A stamp is never written over a FIFO or a device (their contents are not in their
        state), named directly or through a symbolic link."""
        (tmp_path / "f").write_text("x")
        (tmp_path / "d").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "f")
        plain = [(str(tmp_path / n), False) for n in ("f", "d", "link", "absent")]
        assert fastpath.fingerprint(plain)[2]
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
        for name in ("fifo", "to-fifo"):
            assert not fastpath.fingerprint([*plain, (str(tmp_path / name), False)])[2]

    def test_weak_folder_ignores_new_entries_but_not_mode(self, tmp_path: Path) -> None:
        folder = tmp_path / "d"
        folder.mkdir()
        before = fastpath.fingerprint([(str(folder), True)])[0]
        (folder / "x").write_text("")
        assert fastpath.fingerprint([(str(folder), True)])[0] == before
        assert fastpath.fingerprint([(str(folder), False)])[0] != before
        folder.chmod(0o777)
        assert fastpath.fingerprint([(str(folder), True)])[0] != before


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/proc/sys/kernel/random/boot_id", True),
        ("/proc/4242/stat", True),
        ("/proc/self/ns/pid", True),
        ("/proc/thread-self/ns/time", True),
        ("/proc/4242/environ", False),
        ("/proc/self/fd/0", False),
        ("/proc/sys/kernel/random/uuid", False),
        ("/procfs/1/stat", False),
    ],
)
def test_process_identity_files_are_not_inputs(path: str, expected: bool) -> None:
    """What `filelock` reads to tell whether a lock's holder lives never decides a run; any
    other `/proc` file (stdin through `/proc/self/fd/0`, say) keeps a run from being stamped."""
    assert fastpath._not_input(path) is expected


@pytest.mark.parametrize(
    "action", ["message", "write", "network", "network from a thread", "binary output"]
)
def test_the_check_after_an_install_stops_before_what_no_stamp_follows(
    tmp_path: Path, action: str
) -> None:
    """The check that follows a committed install stops (and writes no stamp) before an
    operation that would keep its run from being stamped: a one-time message, a write outside
    the cache and lock folders, the network (also from a thread the check started, such as
    the index's fetch threads: no request, so no credential helper asked after a 401), binary
    output. The install's result stands."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    lock = tmp_path / "requirements.txt"
    lock.write_text("demo==1.0\n")
    outside = tmp_path / "outside.txt"
    reached: list[str] = []

    def run(argv: Sequence[str]) -> int:
        if not reached:  # the install
            reached.append("install")
            fastpath.not_noop("it changes the environment")
            fastpath.committed(cache_root=str(cache), lock_folder=None)
            return 0
        reached.append("check")
        if action == "message":
            fastpath.not_noop("a one-time message")
        elif action == "write":
            outside.write_text("the check wrote this")
        elif action == "network":
            socket.getaddrinfo("localhost", 80)
        elif action == "network from a thread":
            with ThreadPoolExecutor(1) as pool:
                pool.submit(socket.getaddrinfo, "localhost", 80).result()
        else:
            sys.stdout.buffer.write(b"x")
        reached.append("went on")
        fastpath.mark_noop(cache_root=str(cache), lock_folder=None)
        return 0

    argv = ["install", "-r", str(lock), "--cache-dir", str(cache)]
    assert fastpath.record_and_run(argv, run) == 0
    assert reached == ["install", "check"]
    assert not outside.exists()
    assert not (cache / fastpath.STAMP_FOLDER).exists()
    assert fastpath._State.recorder is None


def test_no_stamp_after_an_install_that_the_clock_would_make_wait_long(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the install's own files are too recent for the file system's clock (a coarse
    one), the check writes no stamp rather than hold the install up; the next run is full."""
    with monkeypatch.context() as m:
        m.setattr(fastpath, "_RACY_NS", 10_000_000_000)
        assert env.run(*env.argv()).code == 0
    assert not env.stamps()
    assert env.run(*env.argv()).full


def test_a_signal_as_the_check_after_an_install_starts_ends_it_quietly(
    env: Env, tmp_path: Path
) -> None:
    """SIGTERM (`docker stop`) as the check after an install starts, outside the pipeline that
    turns it into an exception: the install is committed and reported, so the run exits 0
    without a traceback (it was killed by the signal), and leaves no stamp."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal\n"
        "from safepip import fastpath\n"
        "real, calls = fastpath.stamp_key, []\n"
        "def stamp_key(*args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:  # replay, the install, then the check after it\n"
        f"        open({str(tmp_path / 'sent')!r}, 'w').close()\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*args, **kwargs)\n"
        "fastpath.stamp_key = stamp_key\n"
    )
    time.sleep(0.1)  # (older than the install: not code the install changed)
    command = [sys.executable, "-m", "safepip", *env.argv()]
    path = [str(hook), *(p for p in sys.path if p)]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=environ)
    assert (tmp_path / "sent").exists()
    assert done.returncode == 0, done.stderr
    assert "Installed 2 packages" in done.stderr
    assert "Traceback" not in done.stderr
    assert not env.stamps()


@pytest.mark.parametrize("env", ["install"], indirect=True)
def test_the_stamp_waits_out_the_coarsest_clock_among_its_files(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment on a file system with one-second times (its files' times whole
    seconds), the cache on one with nanoseconds: a file the install wrote keeps its time for
    up to a second after, so the stamp must wait that out (here: too long after an install,
    so none is written), not only the finer clock of the newest file."""
    real_write, real_lstat = fastpath.write_stamp, os.lstat
    site = str(env.site) + os.sep

    class Coarse:
        def __init__(self, st: os.stat_result) -> None:
            self._st = st
            self.st_mode = st.st_mode
            self.st_mtime_ns = st.st_mtime_ns - st.st_mtime_ns % 1_000_000_000
            self.st_ctime_ns = st.st_ctime_ns - st.st_ctime_ns % 1_000_000_000

        def __getitem__(self, index: Any) -> Any:
            return self._st[index]

    def coarse_lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        st = real_lstat(path, *args, **kwargs)
        return Coarse(st) if str(path).startswith(site) else st

    written: list[bool] = []

    def write_stamp(*args: Any, **kwargs: Any) -> bool:
        with monkeypatch.context() as m:
            m.setattr(os, "lstat", coarse_lstat)
            written.append(real_write(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(fastpath, "write_stamp", write_stamp)
    assert env.run(*env.argv()).code == 0
    assert written == [False, False]  # (the install's own run, then the check)
    assert not env.stamps()


@BOTH_ORIGINS
def test_a_change_between_the_no_op_decision_and_the_stamp_is_not_stamped(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another install takes the environment's lock as soon as a no-op run (or the check after
    an install) lets go of it, before its stamp is taken: here it installs beta 2.0 (a real
    process) where the requirements pin beta 1.0. The stamp would bind the state the other
    install left, which the run never read, and the next run would replay "kept 2 already
    installed" over beta 2.0; it writes none, and the next run puts beta 1.0 back."""
    folder = tmp_path / "wheels" / "beta2"
    folder.mkdir(parents=True)
    beta2 = build_wheel(folder, "beta", "2.0")
    env.index.add(beta2)
    other = tmp_path / "other.txt"
    other.write_text(_lock_line(beta2) + "\n")
    real_write = fastpath.write_stamp
    raced: list[int] = []

    def racing(recorder: Any, *args: Any, **kwargs: Any) -> bool:
        if recorder.refused is None and not raced:
            raced.append(1)
            environ = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                fastpath.DISABLE_ENV: "1",
            }
            command = [sys.executable, "-m", "safepip", "install", "-r", str(other)]
            command += ["--python", str(env.venv), "-i", env.index.url]
            command += ["--cache-dir", str(env.cache)]
            done = subprocess.run(command, check=False, env=environ, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        return real_write(recorder, *args, **kwargs)

    if env.origin == "noop-run":  # (the install's check stamps; a no-op run stamps again)
        assert env.run(*env.argv()).code == 0
        for stamp in env.stamps():
            stamp.unlink()
    monkeypatch.setattr(fastpath, "write_stamp", racing)
    assert env.run(*env.argv()).code == 0
    assert raced
    assert (env.site / "beta-2.0.dist-info").is_dir()
    monkeypatch.setattr(fastpath, "write_stamp", real_write)
    after = env.run(*env.argv())
    assert after.full, after.err
    assert (env.site / "beta-1.0.dist-info").is_dir()


def test_no_check_after_an_install_whose_stamp_would_never_be_found(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the fast path would look for stamps in another folder than the install's cache
    (it guesses the default cache folder on Linux only), the check is not run at all."""
    checked: list[int] = []
    real = fastpath._recorded

    def recorded(*args: Any, **kwargs: Any) -> int:
        checked.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fastpath, "_recorded", recorded)
    monkeypatch.setattr(fastpath, "cache_root", lambda argv: "/elsewhere")
    assert env.run(*env.argv()).code == 0
    assert checked == [1]  # the install's own run only
    assert not env.stamps()


def test_recording_stops_once_the_run_changes_something(tmp_path: Path) -> None:
    """An install that changes the environment will write no stamp, so from the moment the
    pipeline knows it, its file operations are no longer recorded (issue 14: a warm install
    stats, opens and links tens of thousands of files)."""
    lock = tmp_path / "requirements.txt"
    lock.write_text("demo==1.0\n")
    original = os.stat
    seen: dict[str, object] = {}

    def run(argv: Sequence[str]) -> int:
        seen["wrapped"] = os.stat is not original
        fastpath.not_noop("it changes the environment")
        seen["restored"] = os.stat is original
        seen["recorder"] = fastpath._State.recorder
        os.stat(tmp_path)  # not recorded, and no error
        return 0

    assert fastpath.record_and_run(["install", "-r", str(lock)], run) == 0
    assert seen == {"wrapped": True, "restored": True, "recorder": None}
    assert os.stat is original
    assert not (tmp_path / "noop").exists()


def test_the_command_ends_without_finalizing_when_nothing_needs_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`safepip` (the console script) ends with the code of its run, its output flushed, and
    without finalizing the interpreter (which freed and walked an install's whole heap for
    nothing, issue 14), but the ordinary way when the exit's handlers may be needed: another
    thread, multiprocessing, coverage; its heap frozen either way."""
    import gc
    import threading

    ended: list[tuple[str, int]] = []

    def run_once() -> str:
        class Ended(BaseException):
            pass

        def fake_exit(code: int) -> None:
            ended.append(("os._exit", code))
            raise Ended

        monkeypatch.setattr(os, "_exit", fake_exit)
        try:
            fastpath.run()
        except Ended:
            return "os._exit"
        except SystemExit as exc:
            ended.append(("sys.exit", int(exc.code or 0)))
            return "sys.exit"
        finally:
            gc.unfreeze()
        raise AssertionError("run() returned")

    def main(argv: object = None) -> int:
        print("done")
        return 3

    monkeypatch.setattr(fastpath, "main", main)
    modules = dict(sys.modules)
    for name in ("coverage", "multiprocessing"):
        modules.pop(name, None)
    monkeypatch.setattr(sys, "modules", modules)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert run_once() == "os._exit"
    assert capsys.readouterr().out == "done\n"
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert run_once() == "sys.exit"
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    for name in ("coverage", "multiprocessing"):
        monkeypatch.setitem(sys.modules, name, sys)
        assert run_once() == "sys.exit"
        del sys.modules[name]
    assert ended == [("os._exit", 3)] + [("sys.exit", 3)] * 3
