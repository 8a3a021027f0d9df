"""Tests for safepip.requirements: the tests/data/reqfiles corpus, pip as an oracle, properties."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import optparse
import re
import shlex
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement

from safepip.errors import ExitCode
from safepip.requirements import (
    COMMAND_LINE,
    IndexDirective,
    IndexOption,
    ParsedRequirement,
    ParsedRequirements,
    RequirementsError,
    SourceLocation,
    _logical_lines,
    _shell_split,
    _split_extras,
    _SplitError,
    _strip_comment,
    parse_requirement_line,
    parse_requirements,
    update_format_control,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

CORPUS = Path(__file__).parent / "data" / "reqfiles"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.json").is_file())
DEFAULT_INDEX = "https://default.example/simple"
SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64


def load_case(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / name / "case.json").read_text("utf-8"))
    return data


def run_case(name: str) -> ParsedRequirements:
    case = load_case(name)
    return parse_requirements(
        case["files"],
        case["constraints"],
        case["lines"],
        environ=case["environ"],
        cwd=CORPUS / name,
    )


def _placeholder(value: str, here: Path) -> str:
    return value.replace(str(here), "{here}")


def snapshot_requirement(req: ParsedRequirement, here: Path) -> dict[str, Any]:
    return {
        "name": req.name,
        "requirement": None
        if req.requirement is None
        else _placeholder(str(req.requirement), here),
        "url": None if req.url is None else _placeholder(req.url, here),
        "editable": req.editable,
        "constraint": req.constraint,
        "hashes": sorted(req.hashes),
        "extras": sorted(req.extras),
        "marker": None if req.marker is None else str(req.marker),
        "config_settings": [list(pair) for pair in req.config_settings],
        "location": str(req.location),
        "text": req.location.text,
        "pinned": req.is_pinned,
    }


def snapshot(result: ParsedRequirements, here: Path) -> dict[str, Any]:
    """A JSON-able picture of everything a parse produced, paths relative to `here`."""
    urls, no_index = result.apply_index_options([DEFAULT_INDEX])
    return {
        "requirements": [snapshot_requirement(r, here) for r in result.requirements],
        "constraints": [snapshot_requirement(r, here) for r in result.constraints],
        "index_options": [[o.kind.name, o.url, str(o.location)] for o in result.index_options],
        "index_urls": urls,
        "no_index": no_index,
        "find_links": [_placeholder(f, here) for f in result.find_links],
        "require_hashes": result.require_hashes,
        "hash_mode": result.hash_mode,
        "pre": result.pre,
        "prefer_binary": result.prefer_binary,
        "only_binary": sorted(result.only_binary),
        "no_binary": sorted(result.no_binary),
        "trusted_hosts": list(result.trusted_hosts),
        "use_features": list(result.use_features),
        "warnings": list(result.warnings),
    }


def snapshot_error(exc: RequirementsError) -> dict[str, Any]:
    return {"error": str(exc), "hint": exc.hint, "path": exc.path, "line": exc.line}


def outcome(name: str) -> dict[str, Any]:
    try:
        result = run_case(name)
    except RequirementsError as exc:
        return snapshot_error(exc)
    return snapshot(result, CORPUS / name)


# --- the corpus ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_corpus_case_matches_expected(name: str) -> None:
    expected = json.loads((CORPUS / name / "expected.json").read_text("utf-8"))
    assert outcome(name) == expected


def test_corpus_covers_the_odd_inputs() -> None:
    raw = {name: (CORPUS / name / "requirements.txt").read_bytes() for name in CASES}
    assert b"\r\n" in raw["crlf"]
    assert raw["encoding_bom"].startswith(b"\xef\xbb\xbf")
    assert raw["encoding_utf16"].startswith(b"\xff\xfe")
    with pytest.raises(UnicodeDecodeError):
        raw["encoding_latin1"].decode("utf-8")
    assert raw["continuation"].count(b"\\\n") >= 5
    assert set(CASES) >= {"nested", "envvars", "markers", "options", "error_cycle", "wheels"}


class PipOracle:
    """pip's own requirements-file parser, run on the same files."""

    def __init__(self, here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from pip._internal.index.collector import LinkCollector
        from pip._internal.index.package_finder import PackageFinder
        from pip._internal.models.format_control import FormatControl
        from pip._internal.models.search_scope import SearchScope
        from pip._internal.models.selection_prefs import SelectionPreferences
        from pip._internal.network.session import PipSession

        monkeypatch.chdir(here)
        self.session = PipSession()
        self.finder = PackageFinder.create(
            LinkCollector(
                self.session,
                SearchScope.create(find_links=[], index_urls=[DEFAULT_INDEX], no_index=False),
            ),
            SelectionPreferences(allow_yanked=True, format_control=FormatControl(set(), set())),
        )
        self.options = optparse.Values(
            {"require_hashes": False, "no_require_hashes": False, "features_enabled": []}
        )

    def close(self) -> None:
        self.session.close()

    def parse(self, case: dict[str, Any]) -> list[Any]:
        from pip._internal.req.constructors import (
            install_req_from_line,
            install_req_from_parsed_requirement,
        )
        from pip._internal.req.req_file import parse_requirements as pip_parse_requirements

        ireqs = []
        for path in case["constraints"]:
            for parsed in pip_parse_requirements(
                path, self.session, self.finder, self.options, constraint=True
            ):
                ireqs.append(install_req_from_parsed_requirement(parsed))
        ireqs.extend(install_req_from_line(line) for line in case["lines"])
        for path in case["files"]:
            for parsed in pip_parse_requirements(path, self.session, self.finder, self.options):
                ireqs.append(install_req_from_parsed_requirement(parsed))
        return ireqs


def _pip_view(ireq: Any) -> dict[str, Any]:
    from packaging.utils import canonicalize_name

    direct = ireq.link is not None
    return {
        "name": canonicalize_name(ireq.req.name) if ireq.req else None,
        "specifier": None if direct else str(ireq.req.specifier),
        "marker": None if ireq.markers is None else str(ireq.markers),
        "extras": sorted(canonicalize_name(e) for e in ireq.extras),
        "url": ireq.link.url if direct else None,
        "editable": ireq.editable,
        "constraint": ireq.constraint,
        "hashes": sorted(
            f"{alg}:{digest.lower()}"
            for alg, digests in (ireq.hash_options or {}).items()
            for digest in digests
        ),
    }


def _our_view(req: ParsedRequirement, pip_name: str | None) -> dict[str, Any]:
    # pip leaves an sdist URL without `#egg=` unnamed until it builds it; safepip names it from
    # the filename. Everything else must agree.
    name = req.name if pip_name is not None or not req.name else None
    return {
        "name": name or None,
        "specifier": None if req.url else str(req.requirement.specifier if req.requirement else ""),
        "marker": None if req.marker is None else str(req.marker),
        "extras": sorted(req.extras),
        "url": req.url,
        "editable": req.editable,
        "constraint": req.constraint,
        "hashes": sorted(req.hashes),
    }


@pytest.mark.parametrize("name", [c for c in CASES if load_case(c)["pip"] in ("same", "error")])
def test_corpus_agrees_with_pip(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    case = load_case(name)
    here = CORPUS / name
    for key in ("NOT_SET",):
        monkeypatch.delenv(key, raising=False)
    for key, value in case["environ"].items():
        monkeypatch.setenv(key, value)
    oracle = PipOracle(here, monkeypatch)
    caplog.set_level(logging.WARNING)
    try:
        if case["pip"] == "error":
            with pytest.raises(Exception):  # noqa: B017, PT011  (pip raises several types)
                oracle.parse(case)
            with pytest.raises(RequirementsError):
                run_case(name)
            return
        ireqs = oracle.parse(case)
        ours = run_case(name)
    finally:
        oracle.close()

    # safepip keeps constraints and requirements apart, each in pip's order.
    pip_views = [_pip_view(i) for i in ireqs]
    pip_ordered = sorted(pip_views, key=lambda v: not v["constraint"])
    ours_ordered = (*ours.constraints, *ours.requirements)
    assert len(ours_ordered) == len(pip_ordered)
    mine = [_our_view(r, p["name"]) for r, p in zip(ours_ordered, pip_ordered, strict=True)]
    assert mine == pip_ordered

    urls, no_index = ours.apply_index_options([DEFAULT_INDEX])
    assert urls == oracle.finder.index_urls
    assert no_index == oracle.finder.search_scope.no_index
    assert list(ours.find_links) == oracle.finder.find_links
    format_control = oracle.finder.format_control
    assert ours.only_binary == format_control.only_binary
    assert ours.no_binary == format_control.no_binary
    assert ours.prefer_binary == oracle.finder.prefer_binary
    pip_pre = oracle.finder.release_control is not None and (
        ":all:" in oracle.finder.release_control.all_releases
    )
    assert ours.pre == pip_pre
    assert [h.split(":")[0] for h in ours.trusted_hosts] == [
        host for host, _ in oracle.session.pip_trusted_origins
    ]
    assert ours.require_hashes == oracle.options.require_hashes
    assert list(ours.use_features) == oracle.options.features_enabled
    # pip warns about a `--hash` without a requirement too (in its log).
    pip_warned = any("has --hash but no requirement" in r.getMessage() for r in caplog.records)
    assert pip_warned == any("`--hash` on a line without" in w for w in ours.warnings)


# --- behaviour, one thing at a time ---------------------------------------------------------


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def parse_text(tmp_path: Path, text: str | bytes, **kwargs: Any) -> ParsedRequirements:
    write(tmp_path, "requirements.txt", text)
    kwargs.setdefault("environ", {})
    return parse_requirements(["requirements.txt"], cwd=tmp_path, **kwargs)


class TestLogicalLines:
    def test_joined_line_keeps_the_first_line_number(self) -> None:
        assert list(_logical_lines("a \\\nb \\\nc\nd\n", {})) == [(1, "a b c"), (4, "d")]

    def test_comment_line_ending_in_backslash_does_not_continue(self) -> None:
        assert list(_logical_lines("# note \\\nfoo\n", {})) == [(2, "foo")]

    def test_comment_line_ends_a_continuation(self) -> None:
        assert list(_logical_lines("foo \\\n# bar\nbaz\n", {})) == [(1, "foo"), (3, "baz")]

    def test_hash_without_whitespace_is_not_a_comment(self) -> None:
        lines = list(_logical_lines("https://h/x.whl#sha256=ab # real\n", {}))
        assert lines == [(1, "https://h/x.whl#sha256=ab")]

    def test_env_expansion_happens_after_comment_stripping(self) -> None:
        lines = list(_logical_lines("x==${V} # ${V}\n", {"V": "1 #2"}))
        assert lines == [(1, "x==1 #2")]

    @pytest.mark.parametrize(
        ("text", "environ", "expected"),
        [
            ("${A_1}", {"A_1": "x"}, "x"),
            ("${a}", {"a": "x"}, "${a}"),
            ("$A", {"A": "x"}, "$A"),
            ("%A%", {"A": "x"}, "%A%"),
            ("${A}", {"A": ""}, "${A}"),
            ("${A}", {}, "${A}"),
            ("${A}${A}", {"A": "y"}, "yy"),
        ],
    )
    def test_env_expansion(self, text: str, environ: dict[str, str], expected: str) -> None:
        assert list(_logical_lines(text, environ)) == [(1, expected)]


class TestShellSplit:
    @given(st.text(alphabet=" \t\"'\\abc-=", max_size=30))
    @example('a"b c"d')
    @example('\'a\'"b\\""')
    def test_agrees_with_shlex(self, text: str) -> None:
        try:
            expected = shlex.split(text)
        except ValueError as exc:
            reason = str(exc)
            with pytest.raises(_SplitError, match=reason):
                _shell_split(text, 0)
            return
        tokens = _shell_split(text, 0)
        assert [t.value for t in tokens] == expected
        ends = [0] + [t.end for t in tokens]
        for token, previous_end in zip(tokens, ends, strict=False):
            assert previous_end <= token.start < token.end
            assert text[token.start] not in " \t"


class TestParseRequirementLine:
    def parse(self, text: str, **kwargs: Any) -> ParsedRequirement:
        location = SourceLocation(path=COMMAND_LINE, line=1, text=text)
        return parse_requirement_line(text, location, **kwargs)

    def test_pep508(self) -> None:
        req = self.parse("Foo.Bar[Baz]==1.0 ; python_version >= '3'")
        assert req.name == "foo-bar"
        assert req.extras == {"baz"}
        assert str(req.marker) == 'python_version >= "3"'
        assert req.url is None
        assert req.is_pinned

    @pytest.mark.parametrize(
        ("text", "pinned"),
        [
            ("a==1.0", True),
            ("a===1.0", True),
            ("a==1.*", False),
            ("a>=1", False),
            ("a==1.0,<2", False),
            ("a", False),
            ("a @ https://h/a-1.0-py3-none-any.whl", True),
            ("a @ https://h/a-1.0.tar.gz", True),
            ("a @ git+https://h/a.git", False),
            ("a @ https://h/project/", False),
        ],
    )
    def test_is_pinned(self, text: str, pinned: bool) -> None:
        assert self.parse(text).is_pinned is pinned

    def test_wheel_url_is_named_from_the_filename(self) -> None:
        url = "https://h/pkgs/Some_Thing-2.0-py3-none-any.whl#sha256=" + "A" * 64
        req = self.parse(url)
        assert req.name == "some-thing"
        assert req.url == url
        assert req.requirement == Requirement(f"Some_Thing @ {url}")
        assert req.url_hashes == {"sha256:" + "a" * 64}

    def test_url_fragment_does_not_turn_on_hash_mode(self, tmp_path: Path) -> None:
        result = parse_text(tmp_path, "https://h/a-1.0-py3-none-any.whl#sha256=" + "a" * 64)
        assert not result.hash_mode

    def test_local_wheel_is_relative_to_cwd(self, tmp_path: Path) -> None:
        write(tmp_path, "dist/a-1.0-py3-none-any.whl", b"")
        req = self.parse("./dist/a-1.0-py3-none-any.whl", cwd=tmp_path)
        assert req.url == (tmp_path / "dist/a-1.0-py3-none-any.whl").as_uri()
        assert req.local_path == tmp_path / "dist/a-1.0-py3-none-any.whl"
        assert req.is_pinned

    def test_local_directory(self, tmp_path: Path) -> None:
        write(tmp_path, "proj/pyproject.toml", "")
        req = self.parse("./proj", cwd=tmp_path)
        assert req.name == ""
        assert req.requirement is None
        assert req.url == (tmp_path / "proj").as_uri()
        assert not req.is_pinned

    def test_editable_vcs_needs_a_name(self) -> None:
        req = self.parse("git+https://h/r.git#egg=thing", editable=True)
        assert (req.name, req.editable, req.is_vcs, req.is_pinned) == ("thing", True, True, False)
        with pytest.raises(RequirementsError, match="Cannot tell the project name"):
            self.parse("git+https://h/r.git", editable=True)

    def test_editable_shorthand_vcs_scheme(self) -> None:
        req = self.parse("git://h/r.git#egg=thing", editable=True)
        assert req.url == "git+git://h/r.git#egg=thing"

    def test_editable_constraint_is_refused(self) -> None:
        with pytest.raises(RequirementsError, match="not allowed as constraints"):
            self.parse("git+https://h/r.git#egg=x", editable=True, constraint=True)

    def test_unnamed_constraint_is_refused(self, tmp_path: Path) -> None:
        write(tmp_path, "proj/setup.py", "")
        with pytest.raises(RequirementsError, match="Unnamed requirements"):
            self.parse("./proj", cwd=tmp_path, constraint=True)

    def test_name_at_url_with_marker(self) -> None:
        req = self.parse('x @ https://h/x-1.0.tar.gz ; python_version > "3"')
        assert req.url == "https://h/x-1.0.tar.gz"
        assert str(req.marker) == 'python_version > "3"'

    def test_url_keeps_semicolons_not_followed_by_space(self) -> None:
        req = self.parse("https://h/a;b/x-1.0-py3-none-any.whl")
        assert req.url == "https://h/a;b/x-1.0-py3-none-any.whl"
        assert req.marker is None


class TestOptions:
    def test_hashes_are_lowercased_and_merged(self, tmp_path: Path) -> None:
        digest = "Ab" * 32
        result = parse_text(
            tmp_path, f"a==1 --hash=sha256:{digest} \\\n --hash sha256:{'c' * 64}\n"
        )
        assert result.requirements[0].hashes == {"sha256:" + "ab" * 32, "sha256:" + "c" * 64}
        assert result.hash_mode

    def test_no_require_hashes_keeps_hash_mode_off(self, tmp_path: Path) -> None:
        result = parse_text(tmp_path, f"--no-require-hashes\na==1 --hash={SHA_A}\n")
        assert not result.hash_mode

    def test_require_hashes(self, tmp_path: Path) -> None:
        result = parse_text(tmp_path, "--require-hashes\na==1\n")
        assert result.require_hashes
        assert result.hash_mode

    def test_constraint_hashes_turn_on_hash_mode(self, tmp_path: Path) -> None:
        write(tmp_path, "c.txt", f"a==1 --hash={SHA_A}\n")
        result = parse_requirements([], ["c.txt"], cwd=tmp_path, environ={})
        assert result.hash_mode
        assert result.constraints[0].constraint

    @pytest.mark.parametrize(
        "line",
        ["-rother.txt", "-r other.txt", "--requirement=other.txt", "--requirement other.txt"],
    )
    def test_include_spellings(self, tmp_path: Path, line: str) -> None:
        write(tmp_path, "other.txt", "a==1\n")
        assert parse_text(tmp_path, line + "\n").requirements[0].name == "a"

    def test_pypi_url_alias_and_abbreviation(self, tmp_path: Path) -> None:
        result = parse_text(tmp_path, "--pypi-url https://x.example/simple\n--extra-index y\n")
        assert result.apply_index_options([]) == (["https://x.example/simple", "y"], False)

    def test_apply_index_options(self) -> None:
        def opt(kind: IndexDirective, url: str | None = None) -> IndexOption:
            return IndexOption(
                kind=kind, url=url, location=SourceLocation(path="f", line=1, text="")
            )

        parsed = ParsedRequirements(
            index_options=(
                opt(IndexDirective.EXTRA_INDEX_URL, "e1"),
                opt(IndexDirective.INDEX_URL, "i"),
                opt(IndexDirective.EXTRA_INDEX_URL, "e2"),
            )
        )
        assert parsed.apply_index_options(["cli", "cli-extra"]) == (["i", "e2"], False)
        after_no_index = ParsedRequirements(
            index_options=(opt(IndexDirective.NO_INDEX), opt(IndexDirective.INDEX_URL, "i"))
        )
        assert after_no_index.apply_index_options(["cli"]) == ([], True)

    @pytest.mark.parametrize(
        ("values", "only", "no"),
        [
            ([("only", ":all:")], {":all:"}, set()),
            ([("only", ":all:"), ("no", "Foo_Bar")], {":all:"}, {"foo-bar"}),
            ([("only", "a,b"), ("no", "b")], {"a"}, {"b"}),
            ([("only", "a"), ("only", ":none:")], set(), set()),
            ([("no", ":all:,:none:,x")], set(), {"x"}),
            ([("no", "x"), ("only", ":all:")], {":all:"}, set()),
        ],
    )
    def test_update_format_control(
        self, values: list[tuple[str, str]], only: set[str], no: set[str]
    ) -> None:
        only_binary: set[str] = set()
        no_binary: set[str] = set()
        for which, value in values:
            if which == "only":
                update_format_control(value, only_binary, no_binary)
            else:
                update_format_control(value, no_binary, only_binary)
        assert (only_binary, no_binary) == (only, no)

    def test_find_links_relative_to_the_file(self, tmp_path: Path) -> None:
        write(tmp_path, "sub/r.txt", "-f ../wheels\n--find-links=https://h/links/\n")
        result = parse_requirements(["sub/r.txt"], cwd=tmp_path, environ={})
        assert result.find_links == (str(tmp_path / "wheels"), "https://h/links/")

    def test_editable_line_config_settings(self, tmp_path: Path) -> None:
        write(tmp_path, "proj/pyproject.toml", "")
        result = parse_text(tmp_path, "-e ./proj -C a=b --config-settings a=c\n")
        req = result.requirements[0]
        assert req.editable
        assert req.config_settings == (("a", "b"), ("a", "c"))

    def test_lines_and_editables_arguments(self, tmp_path: Path) -> None:
        result = parse_requirements(
            lines=["a==1", "b>=2"], editables=["git+https://h/c.git#egg=c"], cwd=tmp_path
        )
        assert [(r.name, r.editable, str(r.location)) for r in result.requirements] == [
            ("a", False, "<command line>:1"),
            ("b", False, "<command line>:2"),
            ("c", True, "<command line>:3"),
        ]

    def test_credentials_from_env_are_redacted_in_text(self, tmp_path: Path) -> None:
        result = parse_text(
            tmp_path, "-i https://u:${TOKEN}@h.example/simple\n", environ={"TOKEN": "hunter2"}
        )
        option = result.index_options[0]
        assert option.url == "https://u:hunter2@h.example/simple"
        assert "hunter2" not in option.location.text


# --- errors: exact text, once per kind ------------------------------------------------------


def error_of(tmp_path: Path, text: str | bytes, **kwargs: Any) -> RequirementsError:
    with pytest.raises(RequirementsError) as info:
        parse_text(tmp_path, text, **kwargs)
    assert info.value.exit_code is ExitCode.USAGE
    return info.value


def test_error_invalid_requirement(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "ok==1\nbad==1.0 extra\n")
    assert (exc.path, exc.line, exc.column, exc.width) == ("requirements.txt", 2, 9, 5)
    assert str(exc) == (
        "Invalid requirement: Expected comma (within version specifier), semicolon "
        "(after version specifier) or end\n"
        "  --> requirements.txt:2\n"
        "   | bad==1.0 extra\n"
        "   |          ^^^^^"
    )
    assert exc.hint is None


def test_error_invalid_requirement_hint(tmp_path: Path) -> None:
    assert error_of(tmp_path, "a=1\n").hint == "`=` is not a valid operator; did you mean `==`?"


def test_error_invalid_marker(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "a==1 ; python_version >> '3'\n")
    assert str(exc) == (
        "Invalid environment marker: Expected a marker variable or quoted string\n"
        "  --> requirements.txt:1\n"
        "   | a==1 ; python_version >> '3'\n"
        "   |                        ^"
    )


def test_error_unknown_option(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "--frobnicate yes\n")
    assert str(exc) == (
        "Unknown option `--frobnicate`\n"
        "  --> requirements.txt:1\n"
        "   | --frobnicate yes\n"
        "   | ^^^^^^^^^^^^"
    )
    assert exc.hint is not None
    assert exc.hint.startswith("Requirements files accept `-r`")


def test_error_ambiguous_option(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "--no x\n")
    assert exc.message == (
        "Ambiguous option `--no` (could be `--no-binary`, `--no-index`, `--no-require-hashes`)"
    )


def test_error_option_value(tmp_path: Path) -> None:
    assert error_of(tmp_path, "-r\n").message == "Option `--requirement` requires a value"
    assert error_of(tmp_path, "--pre=yes\n").message == "Option `--pre` does not take a value"


def test_error_hash_algorithm(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "a==1 \\\n  --hash=md5:" + "0" * 32 + "\n")
    assert str(exc) == (
        "Unsupported hash algorithm `md5` in `--hash`\n"
        "  --> requirements.txt:1\n"
        f"   | a==1   --hash=md5:{'0' * 32}\n"
        f"   |        {'^' * 43}"
    )
    assert exc.hint == "pip accepts `sha256`, `sha384` and `sha512`"


def test_error_hash_digest(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "a==1 --hash=sha256:abc\n")
    assert exc.message == "Invalid sha256 digest `abc` in `--hash`: expected 64 hex digits"
    assert error_of(tmp_path, "a==1 --hash=abc\n").message == (
        "`--hash` expects `<algorithm>:<hex digest>`, got `abc`"
    )


def test_error_include_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "-r sub/b.txt\n")
    write(tmp_path, "sub/b.txt", "-c ../a.txt\n")
    exc = error_of(tmp_path, "-r a.txt\n")
    assert str(exc) == (
        "Requirements file `a.txt` includes itself: `requirements.txt` -> `a.txt` -> "
        "`sub/b.txt` -> `a.txt`\n"
        "  --> sub/b.txt:1\n"
        "   | -c ../a.txt\n"
        "   |    ^^^^^^^^"
    )


def test_error_self_include(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "-r ./requirements.txt\n")
    assert exc.message == (
        "Requirements file `requirements.txt` includes itself: `requirements.txt` -> "
        "`requirements.txt`"
    )


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RequirementsError) as info:
        parse_requirements(["nope.txt"], cwd=tmp_path)
    assert str(info.value) == (
        "Could not open requirements file `nope.txt`: No such file or directory\n  --> nope.txt"
    )
    exc = error_of(tmp_path, "a==1\n-r nope.txt\n")
    assert (exc.path, exc.line, exc.text, exc.column) == ("requirements.txt", 2, "-r nope.txt", 3)


def test_error_decode(tmp_path: Path) -> None:
    exc = error_of(tmp_path, b"a==1\nb==1 ; os_name == '\xe9'\n")
    assert str(exc) == "Requirements file is not valid utf-8 (byte 24)\n  --> requirements.txt:2"
    assert exc.hint is not None


def test_error_unknown_encoding(tmp_path: Path) -> None:
    exc = error_of(tmp_path, b"# coding: klingon\na==1\n")
    assert exc.message == "Unknown encoding `klingon` declared in requirements file"


def test_error_unclosed_quote(tmp_path: Path) -> None:
    exc = error_of(tmp_path, 'a==1 -C "k=v\n')
    assert str(exc) == (
        "Could not split options: No closing quotation\n"
        "  --> requirements.txt:1\n"
        '   | a==1 -C "k=v\n'
        "   |         ^"
    )


def test_error_stray_argument(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "--pre forgotten==1.0\n")
    assert exc.message == "Unexpected argument `forgotten==1.0` after an option"
    assert exc.column == 6


def test_error_missing_local_wheel(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "./dist/a-1.0-py3-none-any.whl\n")
    assert exc.message == (
        "Requirement `./dist/a-1.0-py3-none-any.whl` looks like a file name, but the file "
        "does not exist"
    )
    assert exc.hint == (
        f"Paths are relative to the current directory (`{tmp_path}`), not to the requirements file"
    )


def test_error_directory_not_installable(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    exc = error_of(tmp_path, "./empty\n")
    assert exc.message == (
        "Directory `./empty` is not installable: it has neither `pyproject.toml` nor `setup.py`"
    )


def test_error_editable_after_requirement(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "a==1 -e ./x\n")
    assert exc.message == "`--editable` cannot follow a requirement"


def test_error_invalid_editable(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "-e https://h/x.tar.gz\n")
    assert exc.message == "`https://h/x.tar.gz` is not a valid editable requirement"


def test_error_constraint_extras(tmp_path: Path) -> None:
    write(tmp_path, "c.txt", "a[x]==1\n")
    exc = error_of(tmp_path, "-c c.txt\n")
    assert (exc.message, exc.path, exc.line) == ("Constraints cannot have extras", "c.txt", 1)


def test_error_config_settings(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "a==1 -C novalue\n")
    assert exc.message == "`--config-settings` expects `KEY=VALUE`, got `novalue`"


def test_error_binary_option_without_value(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "--only-binary --pre\n")
    assert exc.message == (
        "Option `--only-binary` expects `:all:`, `:none:` or comma-separated names"
    )


def test_error_require_and_no_require_hashes(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "--require-hashes\n--no-require-hashes\n")
    assert exc.message == "`--require-hashes` and `--no-require-hashes` cannot be used together"
    assert exc.hint == "`--require-hashes` is set at `requirements.txt:1`"


def test_error_invalid_wheel_filename(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "https://h/not-a-wheel.whl\n")
    assert exc.message.startswith("Invalid wheel filename `not-a-wheel.whl`: ")


def test_error_egg_fragment(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "https://h/x.tar.gz#egg=bad!name\n")
    assert exc.message == "Invalid `#egg=` fragment `bad!name`: it must be a project name"
    assert exc.hint == "Write the requirement as `name @ url` instead"


def test_error_redacts_credentials(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "https://u:pw@h/x-1.0.whl\n")
    assert "pw" not in str(exc)
    assert "***" in str(exc)


# --- remote files ---------------------------------------------------------------------------


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- long lines (issue 8, item 9): linear time, short errors ----------------------------------

MEGABYTE = 1_000_000
LONG_LINES = {
    # Each shape was quadratic (or worse) before: comment stripping over a run of spaces, URL
    # redaction over a long word, extras splitting over many `[`, duplicate checks in lists.
    "spaces": "a==1.0" + " " * MEGABYTE + "# comment",
    "long name": "a" * MEGABYTE + "==1.0",
    "many brackets": "./a" + "[x" * (MEGABYTE // 2) + ".whl",
    "many hashes": "a==1.0 " + " ".join([f"--hash={SHA_A}"] * (MEGABYTE // 72)),
    "quoted value": "a==1.0 --hash='" + "x" * MEGABYTE + "'",
    "trusted hosts": " ".join(f"--trusted-host h{i}" for i in range(MEGABYTE // 22)),
    "binary controls": "--no-binary " + ",".join([":all:", ":none:"] * (MEGABYTE // 13)),
    "many options": "--pre " * (MEGABYTE // 6),
}
_TIMING_SCRIPT = """
import json, sys, time
from pathlib import Path
from safepip.requirements import RequirementsError, parse_requirements
result = {}
for file in sys.argv[1:]:
    start = time.process_time()
    try:
        parse_requirements([file], environ={}, cwd=Path(file).parent)
        outcome = "parsed"
    except RequirementsError as exc:
        outcome = str(exc)
    result[Path(file).stem] = [time.process_time() - start, outcome]
print(json.dumps(result))
"""


def test_megabyte_lines_parse_or_fail_in_linear_time(tmp_path: Path) -> None:
    files = []
    for number, text in enumerate(LONG_LINES.values()):
        files.append(tmp_path / f"{number}.txt")
        files[-1].write_text(text + "\n")
    # In a child process, so that a quadratic parser fails by the timeout instead of hanging
    # the suite (the spaces line alone took hours before).
    proc = subprocess.run(
        [sys.executable, "-c", _TIMING_SCRIPT, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(proc.stdout)
    for number, shape in enumerate(LONG_LINES):
        seconds, outcome = result[str(number)]
        # Generous for a loaded CI machine; each took well under 1 s of CPU here, and the
        # quadratic versions took minutes to hours.
        assert seconds < 2.0, (shape, seconds)
        # An error about such a line stays short: the line is shown around the caret only.
        assert len(outcome) < 1000, (shape, outcome[:200])


@given(st.text(alphabet="a# \t\u3000x[]", max_size=12))
def test_property_linear_helpers_match_pips_regular_expressions(text: str) -> None:
    comment = re.sub(r"(^|\s+)#.*$", "", text).strip()
    assert _strip_comment(text).strip() == comment
    extras = re.match(r"^(.+)(\[[^\]]+\])$", text)
    assert _split_extras(text) == (extras.group(1, 2) if extras else None)


def test_error_requirement_too_long(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "a" * 70_000 + "==1.0\n")
    assert (
        exc.message == "The requirement is 70,005 characters long; safepip accepts at most 65,536"
    )
    assert exc.exit_code == ExitCode.USAGE
    assert str(exc).splitlines()[2:] == ["   | " + "a" * 100 + "…", "   | " + "^" * 100]
    exc = error_of(tmp_path, "-e " + "x" * 70_000 + "\n")
    assert (
        exc.message == "The requirement is 70,000 characters long; safepip accepts at most 65,536"
    )


def test_requirement_at_the_length_limit_parses(tmp_path: Path) -> None:
    extras = ",".join(["x"] * 32_000)
    line = f"a[{extras}]==1.0"
    assert len(line) <= 65_536
    (tmp_path / "requirements.txt").write_text(line + "\n")
    parsed = parse_requirements(["requirements.txt"], cwd=tmp_path)
    assert parsed.requirements[0].extras == frozenset({"x"})


def test_error_long_line_is_shown_around_the_caret(tmp_path: Path) -> None:
    exc = error_of(tmp_path, "a==1.0" + " " * 5000 + "--bogus" + " x" * 5000 + "\n")
    lines = str(exc).splitlines()
    assert lines[0] == "Unknown option `--bogus`"
    assert lines[2] == "   | …" + " " * 25 + "--bogus" + " x" * 34 + "…"
    assert lines[3] == "   | " + " " * 26 + "^" * 7
    exc = error_of(tmp_path, "a==1.0 --hash=sha256:" + "f" * 5000 + "\n")
    assert str(exc).splitlines()[0] == (
        "Invalid sha256 digest `" + "f" * 60 + "…` in `--hash`: expected 64 hex digits"
    )


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def urllib_fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the connection open otherwise
        raise


class TestRemote:
    def test_nested_includes_are_url_joined(self, tmp_path: Path) -> None:
        write(tmp_path, "srv/reqs/main.txt", "a==1\n-r sub/more.txt\n-c ../cons.txt\n-f wheels/\n")
        write(tmp_path, "srv/reqs/sub/more.txt", "b==2\n")
        write(tmp_path, "srv/cons.txt", "a<2\n")
        fetched: list[str] = []

        def fetch(url: str) -> bytes:
            fetched.append(url)
            return urllib_fetch(url)

        with serve(tmp_path / "srv") as base:
            result = parse_requirements([f"{base}/reqs/main.txt"], fetch=fetch, cwd=tmp_path)
        assert fetched == [
            f"{base}/reqs/main.txt",
            f"{base}/reqs/sub/more.txt",
            f"{base}/cons.txt",
        ]
        assert [r.name for r in result.requirements] == ["a", "b"]
        assert [str(r.location) for r in result.requirements] == [
            f"{base}/reqs/main.txt:1",
            f"{base}/reqs/sub/more.txt:1",
        ]
        assert [r.name for r in result.constraints] == ["a"]
        assert result.find_links == (f"{base}/reqs/wheels/",)

    def test_local_file_include_from_remote_file_is_refused(self, tmp_path: Path) -> None:
        write(tmp_path, "srv/main.txt", "-r file:///etc/passwd\n")
        with serve(tmp_path / "srv") as base, pytest.raises(RequirementsError) as info:
            parse_requirements([f"{base}/main.txt"], fetch=urllib_fetch, cwd=tmp_path)
        assert info.value.message == (
            f"Refusing to read local file `file:///etc/passwd` named by remote requirements "
            f"file `{base}/main.txt`"
        )

    def test_error_remote_without_fetch(self, tmp_path: Path) -> None:
        write(tmp_path, "r.txt", "-r https://u:secret@h.example/more.txt\n")
        with pytest.raises(RequirementsError) as info:
            parse_requirements(["r.txt"], cwd=tmp_path)
        assert str(info.value) == (
            "Cannot read remote requirements file `https://***:***@h.example/more.txt`: "
            "no network access here\n"
            "  --> r.txt:1\n"
            "   | -r https://***:***@h.example/more.txt\n"
            "   |    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^"
        )
        assert info.value.hint == "Download the file and pass its local path"

    def test_fetch_failure_is_wrapped(self, tmp_path: Path) -> None:
        with serve(tmp_path) as base, pytest.raises(RequirementsError) as info:
            parse_requirements([f"{base}/missing.txt"], fetch=urllib_fetch, cwd=tmp_path)
        assert info.value.message.startswith(f"Could not fetch requirements file `{base}/missing")

    def test_file_url_needs_no_fetch(self, tmp_path: Path) -> None:
        write(tmp_path, "d/r.txt", "a==1\n-r other.txt\n")
        write(tmp_path, "d/other.txt", "b==1\n")
        result = parse_requirements([(tmp_path / "d/r.txt").as_uri()], cwd=tmp_path)
        assert [r.name for r in result.requirements] == ["a", "b"]


# --- properties -----------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,5}([._-][A-Za-z0-9]{1,4})?", fullmatch=True)
versions = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,2}", fullmatch=True)
digests = st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)
markers = st.sampled_from(
    ["", ' ; python_version >= "3"', " ; sys_platform != 'win32' and os_name == \"posix\""]
)


@st.composite
def requirement_lines(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(names)
    version = draw(versions)
    marker = draw(markers)
    hashes = draw(st.lists(digests, max_size=3))
    use_env = draw(st.booleans())
    version_text = "${VER}" if use_env else version
    parts = [f"{name}=={version_text}{marker}"]
    parts += [f"--hash=sha256:{h}" if draw(st.booleans()) else f"--hash sha256:{h}" for h in hashes]
    text = ""
    for i, part in enumerate(parts):
        sep = " \\\n    " if i and draw(st.booleans()) else " " if i else ""
        text += sep + part
    if draw(st.booleans()):
        text += "  # trailing comment"
    expected = {
        "name": name,
        "version": version,
        "marker": marker,
        "hashes": {f"sha256:{h.lower()}" for h in hashes},
        "env": {"VER": version} if use_env else {},
    }
    return text, expected


@given(st.lists(requirement_lines(), min_size=1, max_size=6), st.booleans())
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_requirement_lines_roundtrip(
    tmp_path: Path, lines: list[tuple[str, dict[str, Any]]], crlf: bool
) -> None:
    body = "\n".join(
        f"# comment {i}\n{text}" if i % 2 else text for i, (text, _) in enumerate(lines)
    )
    if crlf:
        body = body.replace("\n", "\r\n")
    environ: dict[str, str] = {}
    for _, expected in lines:
        environ.update(expected["env"])
    # All lines share VER, so give every env-using line the same version.
    env_version = environ.get("VER")
    result = parse_text(tmp_path, body + "\n", environ=environ)
    assert len(result.requirements) == len(lines)
    for req, (_, expected) in zip(result.requirements, lines, strict=True):
        version = env_version if expected["env"] else expected["version"]
        assert req.requirement is not None
        assert req.name == req.requirement.name.lower().replace("_", "-").replace(".", "-")
        assert str(req.requirement.specifier) == f"=={version}"
        assert req.hashes == expected["hashes"]
        assert (req.marker is None) == (expected["marker"] == "")
        assert req.is_pinned
    assert result.hash_mode == any(e["hashes"] for _, e in lines)


@given(st.text(max_size=200))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example("-r\n")
@example("\\")
@example("-e")
@example("a @ ")
@example("--hash=sha256: -C")
@example("-c /nonexistent\x00")
def test_property_arbitrary_text_only_raises_requirements_error(tmp_path: Path, text: str) -> None:
    with contextlib.suppress(RequirementsError):
        parse_text(tmp_path, text)


FRAGMENTS = [
    "a",
    "A_b.c",
    "==1.0",
    ">=2",
    ",",
    ";",
    "; ",
    " ",
    "  ",
    "\t",
    "\\\n",
    "\n",
    "\r\n",
    "#",
    " # c",
    "[",
    "]",
    "[x]",
    "@",
    " @ ",
    "'",
    '"',
    "\\",
    "${A}",
    "${B}",
    "$A",
    "-",
    "--",
    "-e ",
    "-r ",
    "-c ",
    "-i ",
    "-f ",
    "-C ",
    "--hash=",
    "--hash ",
    "sha256:",
    "a" * 64,
    "--no-binary ",
    ":all:",
    ":none:",
    "--pre",
    "--index-url=",
    "--extra-index-url ",
    "https://",
    "http://[::1",
    "file:",
    "file:///",
    "git+https://h/r.git",
    "#egg=",
    "#sha256=",
    "h.example/",
    "x-1.0-py3-none-any.whl",
    "x-1.0.tar.gz",
    "./",
    "../",
    "/",
    ".",
    "python_version",
    " < ",
    " and ",
    " or ",
    "3.8",
    "\x00",
    "é",
    "\ufeff",
    "requirements.txt",
    "dir/",
]


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join))
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example("a @ http://[::1/x")
@example("-e http://[::1")
@example("-f http://[::1")
@example("https://h/-1.0.tar.gz")
@example("file:[x-1.0.tar.gz")
def test_property_requirement_like_text_only_raises_requirements_error(
    tmp_path: Path, text: str
) -> None:
    write(tmp_path, "dir/requirements.txt", "a==1\n")
    with contextlib.suppress(RequirementsError):
        parse_text(tmp_path, text, environ={"A": "x==1", "B": "-r requirements.txt"})


@given(st.binary(max_size=200))
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_arbitrary_bytes_only_raise_requirements_error(
    tmp_path: Path, data: bytes
) -> None:
    with contextlib.suppress(RequirementsError):
        parse_text(tmp_path, data)


class TestFileGivenAsRequirement:
    """`safepip install requirements.txt` (the `-r` forgotten) names the mistake."""

    @pytest.mark.parametrize("given", ["requirements.txt", "./requirements.txt", "reqs/dev.in"])
    def test_error_existing_file_argument(self, tmp_path: Path, given: str) -> None:
        path = tmp_path / given
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("attrs\n")
        with pytest.raises(RequirementsError) as info:
            parse_requirements(lines=[given], cwd=tmp_path)
        assert info.value.exit_code == ExitCode.USAGE
        assert str(info.value) == (
            f"`{given}` is a file, not a requirement\n"
            "  --> <command line>:1\n"
            f"   | {given}\n"
            f"   | {'^' * len(given)}"
        )
        assert info.value.hint == (
            f"did you mean `-r {given}`? (`-r FILE` reads the requirements a file lists)"
        )

    def test_bare_names_wheels_and_missing_files_stay_requirements(self, tmp_path: Path) -> None:
        (tmp_path / "six").write_text("")
        wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
        wheel.write_bytes(b"")
        parsed = parse_requirements(
            lines=["six", "./pkg-1.0-py3-none-any.whl", "missing.txt"], cwd=tmp_path
        )
        assert [r.name for r in parsed.requirements] == ["six", "pkg", "missing-txt"]
        assert parsed.requirements[1].url is not None

    def test_files_in_requirements_files_are_not_affected(self, tmp_path: Path) -> None:
        (tmp_path / "requirements.txt").write_text("attrs\n")
        parsed = parse_requirements(files=[str(tmp_path / "requirements.txt")], cwd=tmp_path)
        assert [r.name for r in parsed.requirements] == ["attrs"]


# --- the `name==version` fast path against packaging's parser (issue 11) ----------------------


def _outcome_of(text: str, *, constraint: bool, fast: bool, cwd: Path) -> object:
    """What parsing `text` as a requirements-file line gives: the requirement's every field
    that the rest of safepip reads, or the error as shown."""
    from unittest import mock

    from safepip import requirements

    location = SourceLocation(path="r.txt", line=1, text=text.strip())
    patch = (
        contextlib.nullcontext()
        if fast
        else mock.patch.object(requirements, "_pinned_requirement", return_value=None)
    )
    with patch:
        try:
            parsed = parse_requirement_line(
                text, location, cwd=cwd, constraint=constraint, hashes=frozenset({SHA_A})
            )
        except RequirementsError as exc:
            return ("error", str(exc), exc.hint, exc.column, exc.width)
    req = parsed.requirement
    assert req is not None
    return (
        parsed.name,
        parsed.url,
        parsed.extras,
        parsed.marker,
        parsed.hashes,
        parsed.constraint,
        parsed.editable,
        parsed.is_pinned,
        str(parsed),
        req.name,
        req.url,
        req.extras,
        req.marker,
        req.specifier,
        str(req.specifier),
        [(s.operator, s.version) for s in req.specifier],
        req,
        hash(req),
    )


_NAME_CHARS = "aZ09._-"
_VERSION_CHARS = "0123456789.!+_*-abcrpostdevlZ"


@given(
    name=st.text(_NAME_CHARS, min_size=1, max_size=8),
    operator=st.sampled_from(["==", "==", "===", "= =", "=="]),
    version=st.one_of(
        st.text(_VERSION_CHARS, min_size=0, max_size=12),
        st.from_regex(
            r"(1!)?[0-9]{1,3}(\.[0-9]{1,3}){0,3}((a|b|rc)[0-9])?(\.post[0-9])?"
            r"(\.dev[0-9])?(\+[a-z0-9]+(\.[a-z0-9]+)?)?(\.\*)?",
            fullmatch=True,
        ),
    ),
    suffix=st.sampled_from(["", ".zip", ".tar.bz2", ".whl", " ", "  ", "\t", ",<2", "[x]"]),
    prefix=st.sampled_from(["", " ", "\t"]),
    constraint=st.booleans(),
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@example(name="a", operator="==", version="1.0", suffix="", prefix="", constraint=False)
@example(
    name="A_b.C-d",
    operator="==",
    version="1!2.0rc1.post3.dev4+l.1",
    suffix="",
    prefix=" ",
    constraint=True,
)
@example(name="a", operator="==", version="1.*", suffix="", prefix="", constraint=False)
@example(name="a", operator="==", version="1.0", suffix=".zip", prefix="", constraint=False)
@example(name="a-", operator="==", version="1.0", suffix="", prefix="", constraint=False)
@example(name="a", operator="==", version="1..0", suffix="", prefix="", constraint=False)
@example(name="a", operator="==", version="1.0+", suffix="", prefix="", constraint=False)
def test_pinned_fast_path_gives_what_packaging_gives(
    name: str, operator: str, version: str, suffix: str, prefix: str, constraint: bool
) -> None:
    text = f"{prefix}{name}{operator}{version}{suffix}"
    cwd = Path.cwd()
    assert _outcome_of(text, constraint=constraint, fast=True, cwd=cwd) == _outcome_of(
        text, constraint=constraint, fast=False, cwd=cwd
    )


def test_pinned_fast_path_takes_the_lines_of_a_lock(tmp_path: Path) -> None:
    """A lock's lines (`--hash` options, continuations, comments) go through the fast path
    and give what the full parser gives; an existing archive named like a pin stays a file."""
    from unittest import mock

    from safepip import requirements

    (tmp_path / "a==1.0.zip").write_bytes(b"")
    text = (
        "# a lock\n"
        f"Foo_Bar==1.0 \\\n    --hash={SHA_A} \\\n    --hash={SHA_B}  # trailing\n"
        "baz==2.0rc1 ; python_version >= '3'\n"
        "a==1.0.zip\n"
        "qux===1.0.local\n"
        "zap==3!1.2.3.post4+abc.5\n"
    )
    seen: list[str] = []
    real = requirements._pinned_requirement

    def spy(line: str) -> Requirement | None:
        found = real(line)
        if found is not None:
            seen.append(line.strip())
        return found

    with mock.patch.object(requirements, "_pinned_requirement", spy):
        fast = parse_text(tmp_path, text)
    with mock.patch.object(requirements, "_pinned_requirement", return_value=None):
        full = parse_text(tmp_path, text)
    assert seen == ["Foo_Bar==1.0", "zap==3!1.2.3.post4+abc.5"]
    assert fast == full
    assert fast.requirements[0].hashes == {SHA_A, SHA_B}
    assert fast.requirements[2].url is not None  # the archive, not a pin
    assert [str(r) for r in fast.requirements] == [str(r) for r in full.requirements]


def _specifier(parsed: ParsedRequirement) -> str:
    assert parsed.requirement is not None
    return str(parsed.requirement.specifier)


class TestRemembered:
    """A parse is remembered with every file it read and those files' bytes: the same
    arguments give the same result only while every file reads the same again (the check after
    an install parses the files the install just parsed)."""

    def _write(self, tmp_path: Path, nested: str) -> None:
        (tmp_path / "requirements.txt").write_text("-r nested.txt\nalpha==1.0\n")
        (tmp_path / "nested.txt").write_text(nested)

    def test_same_bytes_same_result(self, tmp_path: Path) -> None:
        self._write(tmp_path, "beta==2.0\n")
        first = parse_requirements(["requirements.txt"], cwd=tmp_path, environ={})
        assert parse_requirements(["requirements.txt"], cwd=tmp_path, environ={}) is first

    def test_a_nested_file_changed_in_place_is_parsed_again(self, tmp_path: Path) -> None:
        self._write(tmp_path, "beta==2.0\n")
        parse_requirements(["requirements.txt"], cwd=tmp_path, environ={})
        (tmp_path / "nested.txt").write_text("beta==3.0\n")  # same size
        again = parse_requirements(["requirements.txt"], cwd=tmp_path, environ={})
        assert [_specifier(r) for r in again.requirements] == ["==3.0", "==1.0"]

    def test_other_environment_or_folder_is_parsed_again(self, tmp_path: Path) -> None:
        (tmp_path / "requirements.txt").write_text("beta==${V}\n")
        one = parse_requirements(["requirements.txt"], cwd=tmp_path, environ={"V": "1.0"})
        two = parse_requirements(["requirements.txt"], cwd=tmp_path, environ={"V": "2.0"})
        assert _specifier(one.requirements[0]) == "==1.0"
        assert _specifier(two.requirements[0]) == "==2.0"
        other = tmp_path / "other"
        other.mkdir()
        (other / "requirements.txt").write_text("beta==4.0\n")
        three = parse_requirements(["requirements.txt"], cwd=other, environ={"V": "2.0"})
        assert _specifier(three.requirements[0]) == "==4.0"

    def test_a_parse_that_looked_at_a_path_is_not_remembered(self, tmp_path: Path) -> None:
        """`./pkg` is a project folder or an error depending on what is on disk: such a parse
        depends on more than the bytes it read."""
        (tmp_path / "requirements.txt").write_text("./pkg\n")
        with pytest.raises(RequirementsError):
            parse_requirements(["requirements.txt"], cwd=tmp_path, environ={})
        (tmp_path / "pkg").mkdir()
        (tmp_path / "pkg" / "pyproject.toml").write_text("")
        parsed = parse_requirements(["requirements.txt"], cwd=tmp_path, environ={})
        assert parsed.requirements[0].url is not None
        (tmp_path / "pkg" / "pyproject.toml").unlink()
        with pytest.raises(RequirementsError):
            parse_requirements(["requirements.txt"], cwd=tmp_path, environ={})
