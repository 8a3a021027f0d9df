"""The command line as a whole: help for every option, one meaning per option name."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

import pytest

from safepip.cli import COMMANDS, build_parser, main

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from servers import StaticIndex
    from wheelbuild import WheelFactory

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("safepip",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-command parser, with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def arguments(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(
            action, (argparse._SubParsersAction, argparse._HelpAction, argparse._VersionAction)
        ):
            yield action


ALL = list(parsers(build_parser()))


class TestHelp:
    def test_every_command_is_covered(self) -> None:
        assert {path[1] for path, _ in ALL if len(path) > 1} == set(COMMANDS)

    @pytest.mark.parametrize("path", [" ".join(p) for p, _ in ALL if len(p) > 1])
    def test_every_command_has_a_description(self, path: str) -> None:
        parser = dict((" ".join(p), q) for p, q in ALL)[path]
        assert parser.description, f"`{path}` has no description"

    @pytest.mark.parametrize("path", [" ".join(p) for p, _ in ALL])
    def test_every_option_has_help(self, path: str) -> None:
        parser = dict((" ".join(p), q) for p, q in ALL)[path]
        missing = [a.option_strings or [a.dest] for a in arguments(parser) if a.help is None]
        assert not missing, f"`{path}`: no help text for {missing}"

    def test_install_help_lists_the_options_with_their_help(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["install", "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "Install requirements" in out
        # Python 3.13's argparse names the metavar once: `-r, --requirement FILE`.
        assert re.search(r"-r( FILE)?, --requirement FILE a requirements file", out)
        assert re.search(r"-c( FILE)?, --constraint FILE limit the versions", out)
        assert "--ignore-vuln ID accept this advisory" in out
        assert "--audit-source {local,osv} the offline advisory database" in out


class TestOptionNames:
    def test_short_f_is_find_links_everywhere(self) -> None:
        seen = []
        for path, parser in ALL:
            for action in arguments(parser):
                if "-f" in action.option_strings:
                    assert action.dest == "find_links", (path, action.option_strings)
                    seen.append(path[1])
        assert {"install", "download", "sync", "lock", "bundle", "audit"} <= set(seen)

    @pytest.mark.parametrize(
        ("option", "dest"),
        [
            ("-c", "constraint_files"),
            ("-i", "index_url"),
            ("-p", "python"),
            ("-q", "quiet"),
            ("-v", "verbose"),
        ],
    )
    def test_short_options_mean_the_same_everywhere(self, option: str, dest: str) -> None:
        for path, parser in ALL:
            for action in arguments(parser):
                if option in action.option_strings:
                    assert action.dest == dest, (path, action.option_strings)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, " ".join(ANSI.sub("", captured.err).split())


class TestAuditFindLinks:
    def test_audit_accepts_f_as_find_links(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "wheelhouse").mkdir()
        lock = tmp_path / "lock.txt"
        lock.write_text("attrs==24.2.0\n")
        code, out, err = run(["audit", "-r", str(lock), "-f", "wheelhouse", "-q"], capsys)
        assert code == 0, err
        assert "invalid choice" not in err
        assert out == ""

    def test_error_f_with_a_format_name(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        code, out, err = run(["audit", "attrs==24.2.0", "-f", "json"], capsys)
        assert code == 2
        assert out == ""
        assert (
            "error: `-f json` is `--find-links json` (pip's meaning of `-f`), and no folder "
            "`json` exists hint: for a json report use `--format json`"
        ) in err

    def test_format_by_its_long_name(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        code, out, _ = run(["audit", "attrs==24.2.0", "--format", "json"], capsys)
        assert code == 0
        assert '"dependencies"' in out


STALE = re.compile(
    r"warning: The advisory data is from \d{4}-\d\d-\d\d, \d+ days? old \(the limit is 1 "
    r"day\); update it with `safepip db update`"
)


class TestStaleAdvisoryData:
    """The bundled data is older than `max-age-days`: said once, before the results, with its
    date, its age and the command that updates it; not with `-q`; refused when configured."""

    @pytest.fixture(autouse=True)
    def workdir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "userdata"))
        (work / "safepip.toml").write_text("[audit]\nmax-age-days = 1\n")
        return work

    def test_audit_table_once_before_the_results(self, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["audit", "jw.util==2.0", "attrs==24.2.0", "--no-color"])
        err = ANSI.sub("", capsys.readouterr().err)
        assert code == 5
        assert len(STALE.findall(err)) == 1
        assert STALE.match(err), err  # the first thing said
        assert err.index("Advisory data:") > err.index("PYSEC-2020-341")

    def test_audit_json_says_it_on_stderr_and_in_the_report(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import json

        code = main(["audit", "attrs==24.2.0", "--format", "json"])
        captured = capsys.readouterr()
        assert code == 0
        assert len(STALE.findall(captured.err)) == 1
        warnings = json.loads(captured.out)["warnings"]
        assert len(warnings) == 1
        assert STALE.match("warning: " + warnings[0])

    @pytest.mark.parametrize("form", [["--format", "json"], []])
    def test_audit_quiet_says_nothing(
        self, form: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["audit", "attrs==24.2.0", "-q", *form])
        assert code == 0
        assert capsys.readouterr().err == ""

    def test_error_refuse_stale_is_shown_even_with_q(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (workdir / "safepip.toml").write_text("[audit]\nmax-age-days = 1\nrefuse-stale = true\n")
        code = main(["audit", "attrs==24.2.0", "-q"])
        err = capsys.readouterr().err
        assert code == 1
        assert err.startswith(
            "error: Refusing to audit with stale data: the advisory data is from "
        )

    def _install(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        *extra: str,
    ) -> tuple[int, Path]:
        from wheelbuild import sha256_file

        wheel = wheel_factory("stalepkg", "1.0")
        index = static_index()
        index.add(wheel)
        venv = venv_factory()
        line = f"stalepkg==1.0 --hash=sha256:{sha256_file(wheel)}"
        argv = ["install", line, "--python", str(venv), "-i", index.url]
        argv += ["--cache-dir", str(tmp_path / "cache"), *extra]
        return main(argv), venv

    def test_install_once_before_the_changes(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        code, _ = self._install(static_index, wheel_factory, venv_factory, tmp_path)
        err = capsys.readouterr().err
        assert code == 0, err
        lines = err.splitlines()
        assert STALE.fullmatch(lines[0]), err
        assert lines[1] == "+ stalepkg==1.0"
        assert lines[2].startswith("Installed 1 package in ")
        assert len(lines) == 3

    def test_install_quiet_says_nothing(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        code, venv = self._install(static_index, wheel_factory, venv_factory, tmp_path, "-q")
        assert code == 0
        assert capsys.readouterr().err == ""
        assert list(venv.glob("lib/python3*/site-packages/stalepkg-1.0.dist-info"))

    def test_error_install_refuse_stale_is_shown_even_with_q(
        self,
        workdir: Path,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        (workdir / "safepip.toml").write_text("[audit]\nmax-age-days = 1\nrefuse-stale = true\n")
        code, venv = self._install(static_index, wheel_factory, venv_factory, tmp_path, "-q")
        err = capsys.readouterr().err
        assert code == 1
        assert err.startswith("error: Refusing to audit with stale data")
        assert not list(venv.glob("lib/python3*/site-packages/stalepkg*"))


class TestCollector:
    """The command's modules are imported with the cyclic collector off and kept out of its
    passes while the command runs; the caller gets the collector back as it was."""

    def test_frozen_while_the_command_runs_and_given_back(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import gc

        import safepip.cli.hash
        from safepip import gcstate

        seen: list[tuple[bool, int, tuple[int, int, int], bool]] = []
        real = safepip.cli.hash.run

        def run(args: argparse.Namespace) -> int:
            seen.append(
                (
                    gc.isenabled(),
                    gc.get_freeze_count(),
                    gc.get_threshold(),
                    gcstate.frozen_by_command(),
                )
            )
            return real(args)

        monkeypatch.setattr(safepip.cli.hash, "run", run)
        (tmp_path / "f").write_bytes(b"x")
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0
        before = gc.get_threshold()
        assert main(["hash", str(tmp_path / "f")]) == 0
        [(enabled, frozen, thresholds, ours)] = seen
        assert enabled
        assert frozen > 0
        assert ours  # what the resolver's pages may join
        assert not gcstate.frozen_by_command()
        assert thresholds == (max(before[0], 5000), *before[1:])
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before

    def test_given_back_after_a_usage_error(self) -> None:
        import gc

        assert main(["hash", "--no-such-option"]) == 2
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0

    @pytest.mark.parametrize("state", ["off", "frozen by the caller"])
    def test_left_alone_when_not_ours(self, state: str, tmp_path: Path) -> None:
        import gc

        (tmp_path / "f").write_bytes(b"x")
        if state == "off":
            gc.disable()
        else:
            gc.freeze()
        try:
            assert main(["hash", str(tmp_path / "f")]) == 0
            # (a frozen object freed meanwhile leaves the count one lower)
            assert gc.isenabled() == (state != "off")
            assert (gc.get_freeze_count() > 0) == (state != "off")
        finally:
            gc.unfreeze()
            gc.enable()
