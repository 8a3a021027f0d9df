"""Core metadata parsing: the same fields as `email.parser`, `packaging.metadata` and pip see."""

from __future__ import annotations

import email.parser
import email.policy
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.metadata import InvalidMetadata, Metadata
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from safepip.metadata import parse_metadata
from wheelbuild import build_wheel, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import Cli
    from servers import StaticIndex

CORPUS = Path(__file__).parent / "data" / "metadata-corpus.zip"


def corpus() -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(CORPUS) as archive:
        for member in archive.namelist():
            yield member, archive.read(member)


def email_fields(data: bytes | str) -> tuple[list[tuple[str, str]], str]:
    """What `email.parser` (compat32, as pip and packaging use it) reads: fields and body."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    message = email.parser.Parser(policy=email.policy.compat32).parsestr(text)
    payload = message.get_payload()
    assert isinstance(payload, str)
    return [(name, str(value)) for name, value in message.items()], payload


def packaging_view(data: bytes) -> dict[str, object]:
    """Name, Version, Requires-Dist, Requires-Python and Provides-Extra as `packaging` reads them
    (a field packaging finds invalid is recorded as `invalid`)."""
    meta = Metadata.from_email(data, validate=False)
    view: dict[str, object] = {}
    for field in ("name", "version", "requires_dist", "requires_python", "provides_extra"):
        try:
            value = getattr(meta, field)
        except InvalidMetadata:
            view[field] = "invalid"
            continue
        if field == "requires_dist":
            value = [str(r) for r in value or []]
        elif field == "provides_extra":
            value = [canonicalize_name(e) for e in value or []]
        view[field] = value
    return view


def safepip_view(data: bytes) -> dict[str, object]:
    core = parse_metadata(data)
    view: dict[str, object] = {"name": core.name}
    try:
        view["version"] = Version(core.version)
    except ValueError:
        view["version"] = "invalid"
    try:
        view["requires_dist"] = [str(Requirement(line)) for line in core.requires_dist]
    except ValueError:
        view["requires_dist"] = "invalid"
    try:
        view["requires_python"] = (
            SpecifierSet(core.requires_python) if core.requires_python is not None else None
        )
    except ValueError:
        view["requires_python"] = "invalid"
    view["provides_extra"] = [canonicalize_name(e) for e in core.provides_extra]
    return view


class TestCorpus:
    """Hundreds of real METADATA files (`scripts/fetch_metadata_corpus.py`)."""

    def test_corpus_is_large(self) -> None:
        assert len(list(corpus())) >= 300

    def test_same_fields_and_body_as_email_parser(self) -> None:
        for member, data in corpus():
            core = parse_metadata(data)
            fields, body = email_fields(data)
            assert list(core.fields) == fields, member
            assert core.description == body, member

    def test_same_dependency_fields_as_packaging(self) -> None:
        for member, data in corpus():
            assert safepip_view(data) == packaging_view(data), member

    def test_report_json_same_as_pip(self) -> None:
        """pip's report form: its `msg_to_json` over the message `importlib.metadata` gives."""
        from importlib.metadata._adapters import Message  # type: ignore[import-not-found]

        from pip._internal.metadata._json import msg_to_json

        for member, data in corpus():
            message = email.parser.Parser(policy=email.policy.compat32).parsestr(data.decode())
            expected = msg_to_json(Message(message))
            assert parse_metadata(data).to_json() == expected, member

    def test_matplotlib_3_11_2_keeps_its_dependencies(self) -> None:
        """Regression: its `License` has whitespace-only continuation lines before every
        `Requires-Dist`; a parser that stops at them pins matplotlib alone."""
        with zipfile.ZipFile(CORPUS) as archive:
            data = archive.read("matplotlib-3.11.2.metadata")
        assert re.search(rb"\nLicense: [^\n]*\n(?:[ \t][^\n]*\n)*?[ \t]+\n", data)
        names = [Requirement(r).name for r in parse_metadata(data).requires_dist]
        assert {"numpy", "pillow", "pyparsing", "python-dateutil", "kiwisolver"} <= set(names)
        oracle = Metadata.from_email(data, validate=False).requires_dist or []
        assert names == [r.name for r in oracle]


LICENSE_WITH_BLANK_LINE = "BSD\n        \n        Copyright (c) the authors\n\t\n        end"


class TestHeaderRules:
    """Each rule of `email.feedparser` that decides what is a field, compared with it."""

    @pytest.mark.parametrize(
        "text",
        [
            f"Name: a\nLicense: {LICENSE_WITH_BLANK_LINE}\nRequires-Dist: b\n\nbody\n",
            "Name: a\r\nRequires-Dist: b\r\n\r\nbody\r\n",
            "Name: a\rRequires-Dist: b\r\rbody",
            "Name: a\nSummary: x\x0cy\nRequires-Dist: b\n",  # a form feed is not a line break
            "Name: a\nnot a field\nRequires-Dist: b\n",  # ends the block; the rest is body
            "Name: a\nBad Name: x\nRequires-Dist: b\n",  # a space before the colon: body
            "Name: a\n: no name\n  continued\nRequires-Dist: b\n",
            "  leading continuation\nName: a\n",
            "From someone\nName: a\nFrom elsewhere\nVersion: 1\nFrom last\n\nbody",
            "Name: a\nVersion: 1\nFrom last\n\nbody",
            "Name:a\nVersion:\t 1  \nRequires-Dist: b ;\n python_version > '3'\n",
            "Name: a\nRequires-Dist: b\n",  # no body
            "Name: a\nRequires-Dist: b",  # no final line break
            "",
            "\n\nName: a\n",  # an empty first line: no fields at all
        ],
    )
    def test_same_as_email_parser(self, text: str) -> None:
        core = parse_metadata(text)
        fields, body = email_fields(text)
        assert list(core.fields) == fields
        assert core.description == body
        assert parse_metadata(text.encode()) == core

    def test_whitespace_only_continuation_keeps_later_fields(self) -> None:
        text = f"Name: a\nVersion: 1\nLicense: {LICENSE_WITH_BLANK_LINE}\nRequires-Dist: b>=1\n\n"
        core = parse_metadata(text)
        assert core.requires_dist == ["b>=1"]
        assert core.get("License") == LICENSE_WITH_BLANK_LINE
        oracle = Metadata.from_email(text, validate=False).requires_dist or []
        assert [str(r) for r in oracle] == ["b>=1"]

    def test_invalid_utf8_does_not_fail(self) -> None:
        core = parse_metadata(b"Name: a\nVersion: 1\nAuthor: \xff\nRequires-Dist: b\n")
        assert core.requires_dist == ["b"]


class TestDependencyAfterBlankContinuation:
    """End to end: a dependency declared after a whitespace-only continuation line is seen."""

    @pytest.fixture
    def index(self, static_index: Callable[..., StaticIndex], tmp_path: Path) -> StaticIndex:
        index = static_index()
        alpha = build_wheel(
            tmp_path / "a", "alpha", "1.0", requires=["beta>=1"], license=LICENSE_WITH_BLANK_LINE
        )
        index.add(alpha)
        index.add(build_wheel(tmp_path / "b", "beta", "1.2"))
        self.alpha = alpha
        return index

    def test_closure_check_names_the_dependency(
        self,
        index: StaticIndex,
        cli: Cli,
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        tmp_path: Path,
    ) -> None:
        venv = venv_factory()
        before = tree_snapshot(venv)
        line = f"alpha==1.0 --hash=sha256:{sha256_file(self.alpha)}"
        code, _, err = cli(
            "install", line, "--python", str(venv), "-i", index.url,
            "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert code == 3
        assert "beta==1.2 --hash=sha256:" in err
        assert "# required by alpha -> beta>=1" in err
        assert tree_snapshot(venv) == before

    def test_lock_pins_the_dependency(
        self,
        index: StaticIndex,
        cli: Cli,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        venv = venv_factory()
        code, out, err = cli(
            "lock", "alpha", "--python", str(venv), "-i", index.url, "-o", "-",
            "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert code == 0, err
        assert "alpha==1.0" in out
        assert "beta==1.2" in out

    def test_error_invalid_requires_dist(
        self,
        static_index: Callable[..., StaticIndex],
        cli: Cli,
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        tmp_path: Path,
    ) -> None:
        """pip refuses metadata with an invalid `Requires-Dist`; skipping it would drop a
        dependency silently."""
        index = static_index()
        bad = build_wheel(tmp_path / "w", "gamma", "1.0", requires=["beta >= 1 ;; nonsense"])
        index.add(bad)
        venv = venv_factory()
        before = tree_snapshot(venv)
        line = f"gamma==1.0 --hash=sha256:{sha256_file(bad)}"
        code, _, err = cli(
            "install", line, "--python", str(venv), "-i", index.url,
            "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert code == 1
        assert (
            "error: `gamma-1.0-py3-none-any.whl` has an invalid `Requires-Dist` entry "
            "`beta >= 1 ;; nonsense`\n"
        ) in err
        assert tree_snapshot(venv) == before
        code, _, err = cli(
            "lock", "gamma", "--python", str(venv), "-i", index.url, "-o", "-",
            "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert code == 1
        assert "Refusing `gamma-1.0-py3-none-any.whl`: its metadata has an invalid" in err

    def test_error_marker_that_cannot_be_evaluated(
        self,
        static_index: Callable[..., StaticIndex],
        cli: Cli,
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        tmp_path: Path,
    ) -> None:
        """A marker packaging parses but cannot evaluate (`~=` on a name that is no version)
        is refused naming the package and the entry, by install and by lock, where it ended
        both with a traceback."""
        index = static_index()
        entry = 'beta >= 1 ; os_name ~= "a"'
        bad = build_wheel(tmp_path / "w", "gamma", "1.0", requires=[entry])
        index.add(bad)
        venv = venv_factory()
        before = tree_snapshot(venv)
        line = f"gamma==1.0 --hash=sha256:{sha256_file(bad)}"
        for args in (
            ("install", line),
            ("lock", "gamma", "-o", "-"),
        ):
            code, _, err = cli(
                *args, "--python", str(venv), "-i", index.url,
                "--cache-dir", str(tmp_path / "cache"),
            )  # fmt: skip
            assert code == 1, err
            assert "Traceback" not in err
            assert f"{entry}` that cannot be used: its marker cannot be evaluated" in err, err
            assert "gamma" in err
            assert tree_snapshot(venv) == before
