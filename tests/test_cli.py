"""The command line as a whole: help for every option, one meaning per option name."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

import pytest

from safepip.cli import COMMANDS, build_parser, main

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

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
        assert "-r FILE, --requirement FILE a requirements file" in out
        assert "-c FILE, --constraint FILE limit the versions" in out
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
