"""`plan.invalid_requirements` skips packaging's parser for plain `Requires-Dist` lines: every
line its pattern accepts must be one packaging accepts, so the check refuses exactly what it
refused before."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from packaging.requirements import InvalidRequirement, Requirement

from safepip.metadata import parse_metadata
from safepip.plan import invalid_requirements, plain_requirement

CORPUS = Path(__file__).parent / "data" / "metadata-corpus.zip"


def packaging_accepts(line: str) -> bool:
    try:
        Requirement(line)
    except InvalidRequirement:
        return False
    return True


def corpus_lines() -> list[str]:
    lines: list[str] = []
    with zipfile.ZipFile(CORPUS) as zf:
        for member in zf.namelist():
            try:
                lines.extend(parse_metadata(zf.read(member)).requires_dist)
            except ValueError:
                continue
    return lines


def test_corpus_plain_lines_are_valid_and_most_lines_are_plain() -> None:
    lines = corpus_lines()
    assert len(lines) > 5000
    plain = [line for line in lines if plain_requirement().fullmatch(line)]
    assert [line for line in plain if not packaging_accepts(line)] == []
    assert len(plain) >= 0.97 * len(lines)  # the point: most lines skip the parser
    assert invalid_requirements(lines) == [line for line in lines if not packaging_accepts(line)]


@pytest.mark.parametrize(
    "line",
    [
        "foo>=1.*",
        "foo~=1",
        "foo~=1.*",
        "foo==1.0.*a1",
        "foo<1.0.*",
        "foo>=1.0 bar",
        "foo; extra ==",
        "foo;; nonsense",
        "beta >= 1 ;; nonsense",
        "foo; python_version < 3",
        "foo; python_version < '3' and",
        "foo; (extra == 'a'",
        "foo; extra == 'a')",
        "foo; bogus == 'a'",
        "foo[bar",
        "foo[bar,]",
        "-foo",
        "foo-",
        "foo>=",
        "foo (>=1.0",
        "foo; extra == 'a' or or extra == 'b'",
        "",
        # packaging reads a value with a backslash or a character that is not printable as a
        # Python string literal: these are not valid ones (review of issue 14)
        'foo; os_name == "\\x"',
        "foo; os_name == 'a\\'",
        'foo; os_name == "\\N"',
        'foo; os_name == "\x00"',
        "foo; (os_name == 'a\rb' or extra == 'x')",
    ],
)
def test_invalid_lines_are_refused(line: str) -> None:
    assert not packaging_accepts(line)
    assert invalid_requirements([line]) == [line]


_value_chars = st.text(
    st.one_of(st.characters(max_codepoint=0x7F), st.sampled_from("\\\x00\r\x85é\u2028")),
    max_size=6,
)


@given(_value_chars, st.sampled_from(["'", '"']))
def test_marker_values_the_pattern_passes_are_values_packaging_accepts(
    value: str, quote: str
) -> None:
    """A line the pattern passes is not parsed before `dependencies_for` uses it, and that
    skips a line packaging refuses: one passed wrongly would be a dependency dropped without
    a word (review of issue 14)."""
    line = f"dep; os_name == {quote}{value}{quote}"
    if plain_requirement().fullmatch(line):
        assert packaging_accepts(line), line
    assert invalid_requirements([line]) == ([] if packaging_accepts(line) else [line])


_pieces = st.sampled_from(
    [
        "foo", "Foo.Bar_baz-2", "a", "[x]", "[x, y-z]", "[", "]", " ", "  ", ">=", "<=", "<",
        ">", "==", "!=", "~=", "===", "1", "1.0", "2.0.1", ".*", "a1", "b2", "rc3", ".post1",
        ".dev0", "dev", "v1", "1!", "+local", ",", "(", ")", ";", "extra", "python_version",
        "sys_platform", "platform_system", "bogus", "'x'", '"3.8"', "'", '"', "and", "or",
        "in", "not in", "not", "@", "https://e.org/a.whl", "\n", "\t", "é",
    ]
)  # fmt: skip


@given(st.lists(_pieces, max_size=14).map("".join))
@example("foo>=1.0,<2; extra == 'a' and python_version < \"3.12\"")
@example("foo (>=1.0a1.post2.dev3, !=1.5.*) ; (sys_platform != 'win32' or os_name == 'posix')")
@example("foo; python_version not in '3.8 3.9' and extra=='x'")
@example("foo ~= 1.4rc1")
def test_plain_lines_are_lines_packaging_accepts(line: str) -> None:
    if plain_requirement().fullmatch(line):
        assert packaging_accepts(line), line
    assert invalid_requirements([line]) == ([] if packaging_accepts(line) else [line])


_ws = st.sampled_from(["", " ", "  ", "\t"])
_name = st.sampled_from(["foo", "Foo.Bar_baz-2", "a", "x1", "-x", "x-", "1.0"])
_version = st.sampled_from(
    ["1", "1.0", "2.0.1", "1.0a1", "1.0rc2.post3.dev4", "1.0.dev0", "1.*", "1.0.*", "1.0a", "v1"]
)
_op = st.sampled_from(["==", "!=", "<=", ">=", "<", ">", "~=", "===", "=", "=>"])
_var = st.sampled_from(["extra", "python_version", "sys_platform", "os_name", "bogus", "'x'"])
_value = st.sampled_from(["'a'", '"3.8"', "'it''s'", "3", "'x", "extra"])
_spec = st.tuples(_op, _ws, _version).map("".join)
_atom = st.tuples(_var, _ws, st.sampled_from([*"<=>", "==", "!=", " in ", " not in "]), _ws, _value)


@given(
    name=_name,
    extras=st.lists(_name, max_size=2),
    specs=st.lists(_spec, max_size=3),
    paren=st.booleans(),
    atoms=st.lists(
        st.tuples(_atom.map("".join), st.sampled_from([" and ", " or ", "and", " ) and ("])),
        max_size=3,
    ),
    ws=_ws,
)
def test_structured_lines(
    name: str,
    extras: list[str],
    specs: list[str],
    paren: bool,
    atoms: list[tuple[str, str]],
    ws: str,
) -> None:
    line = name + ws + (f"[{', '.join(extras)}]" if extras else "")
    spec = ",".join(specs)
    line += ws + (f"({spec})" if paren and spec else spec)
    if atoms:
        marker = "".join(a + j for a, j in atoms[:-1]) + atoms[-1][0]
        line += f"{ws};{ws}" + (f"({marker})" if paren else marker)
    if plain_requirement().fullmatch(line):
        assert packaging_accepts(line), line
    assert invalid_requirements([line]) == ([] if packaging_accepts(line) else [line])


def test_threads_asking_at_once_compile_the_pattern_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver's download threads read metadata side by side: the first one compiles the
    pattern, the others wait for it instead of compiling it again (issue 14)."""
    import re
    import threading
    import time

    from safepip import plan

    monkeypatch.setattr(plan, "_PLAIN_COMPILED", [])
    compiled: list[str] = []
    real_compile = re.compile

    def slow_compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
        compiled.append(pattern)
        time.sleep(0.05)  # long enough for every thread to ask meanwhile
        return real_compile(pattern, flags)

    monkeypatch.setattr(re, "compile", slow_compile)
    start = threading.Barrier(8)
    got: list[re.Pattern[str]] = []

    def ask() -> None:
        start.wait()
        got.append(plain_requirement())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert compiled == [plan._PLAIN_REQUIREMENT]
    assert len(got) == 8
    assert all(pattern is got[0] for pattern in got)
    assert got[0].fullmatch("requests[socks] >=2.31 ; python_version < '3.13'")


def _written_out() -> str:
    """The pattern with every part written out where it is used (`X (and|or X)*` as such,
    specifiers with and without parentheses): the language the compact one must match."""
    from safepip import plan

    specs, atom, sep = plan._SPECS, plan._ATOM, plan._AND_OR
    term = rf"(?:{atom}|\([ \t]*{atom}(?:{sep}{atom})*[ \t]*\))"
    return (
        rf"[ \t]*{plan._NAME}[ \t]*(?:\[[ \t]*{plan._NAME}(?:[ \t]*,[ \t]*{plan._NAME})*[ \t]*\])?"
        rf"[ \t]*(?:{specs}|\([ \t]*{specs}[ \t]*\))?"
        rf"[ \t]*(?:;[ \t]*{term}(?:{sep}{term})*)?[ \t]*"
    )


_written = re.compile(_written_out(), re.ASCII)
_groups = st.sampled_from(
    ["(", ")", " and ", " or ", "and", "extra == 'a'", "os_name=='x'", "python_full_version", ";"]
)


def test_the_compact_pattern_matches_the_written_out_one_on_the_corpus() -> None:
    lines = corpus_lines()
    match = plain_requirement().fullmatch
    assert [line for line in lines if bool(match(line)) != bool(_written.fullmatch(line))] == []


@given(st.lists(st.one_of(_pieces, _groups), max_size=16).map("".join))
@example("foo; (extra == 'a' and )")
@example("foo; extra == 'a' and")
@example("foo; (extra == 'a') or (os_name == 'b' and sys_platform == 'c')")
@example("foo (>=1,<2) ; extra == 'x'")
@example("foo (>=1,<2")
def test_the_compact_pattern_matches_the_written_out_one(line: str) -> None:
    assert bool(plain_requirement().fullmatch(line)) == bool(_written.fullmatch(line))
