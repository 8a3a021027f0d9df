"""Tests for the simple repository client: PEP 503/691 pages, PEP 658 metadata, find-links."""

from __future__ import annotations

import contextlib
import hashlib
import html
import http.server
import json
import threading
import zipfile
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from safepip.errors import ExitCode
from safepip.index import (
    ACCEPT,
    IndexClient,
    IndexFile,
    IndexPageError,
    LocalLinkError,
    MetadataHashError,
    _split_fragment,
    parse_html_files,
    parse_json_files,
    parse_project_page,
    project_url,
    resolve_link,
)
from safepip.net import NetConfig, NetworkError, Response, Session
from safepip.policy import HostPolicy, PolicyViolation
from wheelbuild import build_sdist, build_wheel

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from pathlib import Path

    from conftest import Cli, Environment
    from servers import PypiServer, StaticIndex
    from wheelbuild import WheelFactory

INDEX = "https://idx.example/simple"
MIRROR = "https://mirror.example/simple"
FILES = "https://files.example"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"


# -- helpers


@dataclass
class MockIndex:
    """An httpx handler serving fixed responses by URL and recording every request."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    hook: Callable[[httpx.Request], object] | None = None

    def add(
        self,
        url: str,
        body: bytes | str,
        *,
        status: int = 200,
        content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.routes[url] = (status, {"content-type": content_type, **(headers or {})}, data)

    def json_page(self, index: str, name: str, files: list[dict[str, object]]) -> None:
        page = {"meta": {"api-version": "1.1"}, "name": name, "files": files, "versions": []}
        self.add(project_url(index, name), json.dumps(page), content_type=JSON_TYPE)

    def html_page(
        self, index: str, name: str, anchors: str, *, content_type: str = HTML_TYPE
    ) -> None:
        body = f"<!DOCTYPE html><html><body>{anchors}</body></html>"
        self.add(project_url(index, name), body, content_type=content_type)

    def redirect(self, url: str, location: str) -> None:
        self.routes[url] = (302, {"location": location}, b"")

    def requested(self) -> list[str]:
        return [str(r.url) for r in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.hook is not None:
            self.hook(request)
        status, headers, body = self.routes.get(str(request.url), (404, {}, b"not found"))
        # A stream, not `content=`: the session reads raw chunks, which a pre-read body refuses.
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def mock_session(
    mock: MockIndex,
    hosts: frozenset[str] = frozenset({"idx.example", "mirror.example", "files.example"}),
    *,
    retries: int = 0,
) -> Session:
    session = Session(NetConfig(policy=HostPolicy(allowed_hosts=hosts), retries=retries))
    # The private client is the agreed seam for tests: no test hooks in net.py.
    session._client = httpx.Client(transport=httpx.MockTransport(mock), follow_redirects=False)
    return session


def wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def html_response(
    body: str, url: str = f"{INDEX}/demo/", content_type: str = "text/html"
) -> Response:
    return Response(
        url=url, status=200, headers={"content-type": content_type}, content=body.encode()
    )


@pytest.fixture
def mock() -> MockIndex:
    return MockIndex()


@pytest.fixture
def demo_wheel(tmp_path: Path) -> Path:
    return build_wheel(tmp_path / "dists", "demo", "1.0", requires=["dep>=1"])


# -- names and files


class TestNames:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [("Demo", "demo"), ("zope.interface", "zope-interface"), ("A_-_B..c", "a-b-c")],
    )
    def test_project_url_normalises_the_name(self, name: str, expected: str) -> None:
        assert project_url(INDEX, name) == f"{INDEX}/{expected}/"

    @pytest.mark.parametrize("index", [INDEX, f"{INDEX}/", f"{INDEX}//"])
    def test_project_url_has_one_slash(self, index: str) -> None:
        assert project_url(index, "Zope.Interface") == f"{INDEX}/zope-interface/"


WHEEL_NAME_PIECES = [
    "demo", "Demo_Pkg", "a__b", "-", "-", "-", "1.0", "2!1.0rc1.post2.dev3+local.7", "1.0-1",
    "12abc", "abc", "py3", "py2.py3", "cp311", "none", "abi3", "any", "manylinux_2_17_x86_64",
    "linux_x86_64.manylinux1_x86_64", ".", "..", "_", "3x", "", ".whl", "é",
]  # fmt: skip


class TestIndexFile:
    def make(self, filename: str) -> IndexFile:
        return IndexFile(filename=filename, url=f"{FILES}/{filename}", hashes={}, origin=INDEX)

    def test_hashable_despite_mappings(self) -> None:
        first, again = self.make("demo-1.0.tar.gz"), self.make("demo-1.0.tar.gz")
        assert {first, again, self.make("demo-1.1.tar.gz")} == {first, self.make("demo-1.1.tar.gz")}

    def test_wheel(self) -> None:
        file = self.make("Demo_Pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
        assert (file.kind, file.project, file.version) == ("wheel", "demo-pkg", Version("1.0"))
        assert file.tags == frozenset({Tag("cp311", "cp311", "manylinux_2_17_x86_64")})
        assert file.metadata_url == f"{FILES}/{file.filename}.metadata"

    @pytest.mark.parametrize(
        "filename", ["python-dateutil-2.8.2.tar.gz", "python_dateutil-2.8.2.zip"]
    )
    def test_sdist(self, filename: str) -> None:
        file = self.make(filename)
        assert (file.kind, file.project, file.version) == (
            "sdist",
            "python-dateutil",
            Version("2.8.2"),
        )
        assert file.tags == frozenset()

    @pytest.mark.parametrize(
        ("filename", "kind"),
        [
            ("demo-bad-version-py3-none-any.whl", "wheel"),
            ("demo.tar.gz", "sdist"),
            ("demo-1.0.egg", "other"),
        ],
    )
    def test_unparseable_names_never_raise(self, filename: str, kind: str) -> None:
        file = self.make(filename)
        assert (file.kind, file.project, file.version, file.tags) == (kind, None, None, frozenset())

    @given(
        st.lists(
            st.one_of(
                st.sampled_from(WHEEL_NAME_PIECES),
                st.text(st.characters(codec="ascii"), max_size=3),
            ),
            max_size=12,
        ).map("".join)
    )
    def test_wheel_names_read_as_packaging_reads_them(self, stem: str) -> None:
        """The filename is parsed in two memoised halves (version part, tag part); the result
        is packaging's for the whole name, whatever the name."""
        for filename in (stem + ".whl", stem):
            file = self.make(filename)
            expected: tuple[object, object, frozenset[Tag]]
            try:
                name, version, _build, tags = parse_wheel_filename(filename)
            except ValueError:
                expected = (None, None, frozenset())
            else:
                expected = (name, version, tags)
            assert (file.project, file.version, file.tags) == expected
            if filename.endswith(".whl"):
                assert file.kind == "wheel"


# -- HTML pages

HTML_PIECES = [
    "<a",
    " href=",
    '"',
    "'",
    "<base",
    ">",
    "</a>",
    "<!",
    "<![",
    "[",
    "]",
    "&#",
    "&#x",
    "&gt;",
    "x:",
    "//",
    "http://[",
    "%",
    "#sha256=",
    " data-yanked",
    " data-core-metadata=",
    "=",
    '<meta name="pypi:repository-version" content=',
    "<?",
    "-->",
    "<!--",
    "demo-1.0.tar.gz",
]


LINK_BASES = [f"{INDEX}/demo/", "http://127.0.0.1:8080/simple/demo/", "https://h.example"]
LINK_PIECES = [
    "https://", "http://", "HTTPS://", "file:", "files.example", "127.0.0.1", ":443", ":",
    "/", "//", "./", "../", "demo-1.0.tar.gz", "pkg_1.whl", "#", "#sha256=", "ABCdef09",
    "&md5=00", "egg=demo", "?", "q=1", ";", "p", "@", "user:pw", "%20", " ", "\t", "\n",
    "[::1]", "[", "é", "=", "&", ".", "-", "~", "_", "+",
]  # fmt: skip


def parse_html(body: str, url: str = f"{INDEX}/demo/") -> tuple[list[IndexFile], list[str]]:
    return parse_html_files(body, url=url, origin=INDEX)


class TestParseHtml:
    def test_relative_urls_resolve_against_the_page(self) -> None:
        files, _ = parse_html(
            '<a href="../../files/demo-1.0.tar.gz#sha256=ABCD">demo-1.0.tar.gz</a>'
            '<a href="/abs/demo-1.1.tar.gz">demo-1.1.tar.gz</a>'
        )
        assert [f.url for f in files] == [
            "https://idx.example/files/demo-1.0.tar.gz",
            "https://idx.example/abs/demo-1.1.tar.gz",
        ]
        assert files[0].hashes == {"sha256": "abcd"}
        assert files[1].hashes == {}

    def test_base_href_is_honoured_first_one_only(self) -> None:
        files, _ = parse_html(
            '<html><head><base href="https://files.example/pkgs/"><base href="https://other/">'
            '</head><a href="demo-1.0.tar.gz">x</a></html>'
        )
        assert files[0].url == "https://files.example/pkgs/demo-1.0.tar.gz"

    def test_relative_base_href(self) -> None:
        files, _ = parse_html('<base href="../store/"><a href="demo-1.0.tar.gz">x</a>')
        assert files[0].url == "https://idx.example/simple/store/demo-1.0.tar.gz"

    def test_filename_is_unquoted_from_url(self) -> None:
        files, _ = parse_html('<a href="demo-1.0%2Blocal-py3-none-any.whl">whatever</a>')
        assert files[0].filename == "demo-1.0+local-py3-none-any.whl"
        assert files[0].version == Version("1.0+local")

    def test_yanked_with_and_without_reason(self) -> None:
        files, _ = parse_html(
            '<a href="demo-1.0.tar.gz" data-yanked>a</a>'
            '<a href="demo-1.1.tar.gz" data-yanked="">b</a>'
            '<a href="demo-1.2.tar.gz" data-yanked="broken &amp; bad">c</a>'
            '<a href="demo-1.3.tar.gz">d</a>'
        )
        assert [f.yanked for f in files] == ["", "", "broken & bad", None]

    def test_requires_python_is_unescaped_once(self) -> None:
        files, warnings = parse_html(
            '<a href="demo-1.0.tar.gz" data-requires-python="&gt;=3.8,&lt;4">a</a>'
            '<a href="demo-1.1.tar.gz" data-requires-python="&amp;gt;=3.8">b</a>'
            '<a href="demo-1.2.tar.gz" data-requires-python="">c</a>'
        )
        assert files[0].requires_python == SpecifierSet(">=3.8,<4")
        assert files[1].requires_python is None  # `&gt;=3.8` literally: not a specifier
        assert files[2].requires_python is None
        assert warnings == [
            "ignoring the invalid `Requires-Python` '&gt;=3.8' of `demo-1.1.tar.gz`"
        ]

    def test_core_metadata_attributes(self) -> None:
        files, _ = parse_html(
            '<a href="a-1.0-py3-none-any.whl" data-core-metadata="sha256=AA11">1</a>'
            '<a href="a-1.1-py3-none-any.whl" data-core-metadata="true">2</a>'
            '<a href="a-1.2-py3-none-any.whl" data-dist-info-metadata="sha256=bb22">3</a>'
            '<a href="a-1.3-py3-none-any.whl" data-core-metadata="sha256=cc"'
            ' data-dist-info-metadata="sha256=dd">4</a>'
            '<a href="a-1.4-py3-none-any.whl">5</a>'
        )
        assert [f.core_metadata for f in files] == [
            {"sha256": "aa11"},
            True,
            {"sha256": "bb22"},
            {"sha256": "cc"},
            False,
        ]

    def test_fragments(self) -> None:
        files, _ = parse_html(
            '<a href="demo-1.0.tar.gz#egg=demo">1</a>'
            '<a href="demo-1.1.tar.gz#SHA512=FF00">2</a>'
            '<a href="demo-1.2.tar.gz#md5=abc">3</a>'
        )
        assert [f.hashes for f in files] == [{}, {"sha512": "ff00"}, {"md5": "abc"}]
        assert all("#" not in f.url for f in files)

    def test_invalid_urls_are_skipped_with_a_warning(self) -> None:
        files, warnings = parse_html(
            '<base href="http://[bad/"><a href="http://[::1/demo-1.0.zip">x</a>'
            '<a href="demo-1.1.zip">y</a>'
        )
        assert [f.url for f in files] == [f"{INDEX}/demo/demo-1.1.zip"]
        assert warnings == [
            "ignoring the invalid `<base href>` of `https://idx.example/simple/demo/`",
            "ignoring the invalid link 'http://[::1/demo-1.0.zip' on "
            "`https://idx.example/simple/demo/`",
        ]
        _, files, warnings = parse_json(
            {"files": [{"filename": "demo-1.0.zip", "url": "http://[x/demo-1.0.zip"}]}
        )
        assert (files, warnings) == (
            [],
            ["ignoring `demo-1.0.zip`: its URL 'http://[x/demo-1.0.zip' is not valid"],
        )

    @pytest.mark.parametrize(
        "href",
        ["file:///dev/zero", "FILE:///etc/passwd#sha256=00", "file://localhost/tmp/demo-1.0.zip"],
    )
    def test_file_link_on_a_remote_page_is_refused(self, href: str) -> None:
        with pytest.raises(LocalLinkError) as info:
            parse_html(f'<a href="demo-1.1.zip">ok</a><a href="{href}">demo-1.0.zip</a>')
        assert info.value.exit_code == ExitCode.POLICY
        assert info.value.page == f"{INDEX}/demo/"
        assert info.value.link == href.split("#", maxsplit=1)[0].replace("FILE:", "file:")

    def test_base_href_cannot_turn_links_local(self) -> None:
        with pytest.raises(LocalLinkError):
            parse_html('<base href="file:///dev/"><a href="zero">demo-1.0.zip</a>')

    def test_file_links_on_a_local_page_are_kept(self) -> None:
        files, _ = parse_html('<a href="demo-1.0.zip">x</a>', url="file:///srv/simple/demo/")
        assert [f.url for f in files] == ["file:///srv/simple/demo/demo-1.0.zip"]

    def test_anchors_without_href_are_skipped(self) -> None:
        files, _ = parse_html('<a name="top">top</a><a href="">empty</a>')
        assert files == []

    def test_unsupported_api_version(self) -> None:
        with pytest.raises(IndexPageError, match=r"API version '2\.0' is not supported"):
            parse_html('<meta name="pypi:repository-version" content="2.0"><a href="x">x</a>')
        files, _ = parse_html(
            '<meta name="pypi:repository-version" content="1.3"><a href="demo-1.0.zip">x</a>'
        )
        assert len(files) == 1

    def test_undecodable_page(self) -> None:
        with pytest.raises(IndexPageError, match="not valid utf-8 text"):
            parse_html_files(b"<a href='x'>\xff\xfe</a>", url=INDEX, origin=INDEX)

    @given(st.one_of(st.text(), st.lists(st.sampled_from(HTML_PIECES)).map("".join)))
    def test_arbitrary_text_only_raises_index_page_error(self, text: str) -> None:
        try:
            files, warnings = parse_html_files(text, url=f"{INDEX}/demo/", origin=INDEX)
        except IndexPageError:
            return
        assert all(isinstance(w, str) for w in warnings)
        for file in files:
            assert "#" not in file.url
            _ = (file.kind, file.project, file.version, file.tags)

    @given(
        st.sampled_from(LINK_BASES),
        st.lists(st.sampled_from(LINK_PIECES), max_size=10).map("".join),
    )
    @example(INDEX, "https://files.example/p/demo-1.0.tar.gz#sha256=ABCdef09&md5=00")
    @example(INDEX, "http://127.0.0.1:/demo-1.0.tar.gz#egg=demo&sha256=00")
    @example(INDEX, "https://files.example/a//b/../demo-1.0.tar.gz#")
    @example(INDEX, "HTTPS://files.example/demo-1.0.tar.gz")
    @example(INDEX, "https://files.example/demo-1.0.tar.gz?q=1#sha256=00")
    def test_links_resolve_as_urljoin_resolves_them(self, base: str, href: str) -> None:
        """Plain absolute links skip `urljoin` and `urlsplit`; every link still resolves to what
        they make of it, fragment hashes included."""
        try:
            expected = _split_fragment(urljoin(base, href))
        except ValueError:
            with pytest.raises(ValueError, match=r"."):
                resolve_link(base, href)
            return
        assert resolve_link(base, href) == expected

    @given(st.binary())
    def test_arbitrary_bytes_only_raise_index_page_error(self, data: bytes) -> None:
        with contextlib.suppress(IndexPageError):
            parse_html_files(data, url=f"{INDEX}/demo/", origin=INDEX)

    @given(
        st.lists(
            st.tuples(
                st.integers(0, 10_000),
                st.binary(min_size=32, max_size=32).map(bytes.hex),
                st.sampled_from([None, ">=3.8", ">=3.7,<4", "!=3.0.*", "~=3.9"]),
                st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs", "Cc")))),
                st.booleans(),
            ),
            max_size=8,
        )
    )
    def test_round_trip_anchor_lists(
        self, entries: list[tuple[int, str, str | None, str | None, bool]]
    ) -> None:
        anchors = []
        for number, digest, requires_python, yanked, metadata in entries:
            filename = f"demo-{number}.0-py3-none-any.whl"
            attrs = f' href="../../files/{quote(filename)}#sha256={digest}"'
            if requires_python is not None:
                attrs += f' data-requires-python="{html.escape(requires_python)}"'
            if yanked is not None:
                attrs += f' data-yanked="{html.escape(yanked)}"'
            if metadata:
                attrs += f' data-core-metadata="sha256={digest}"'
            anchors.append(f"<a{attrs}>{html.escape(filename)}</a><br/>\n")
        files, warnings = parse_html(f"<html><body>{''.join(anchors)}</body></html>")
        assert warnings == []
        assert [
            (
                f.filename,
                f.hashes["sha256"],
                str(f.requires_python) if f.requires_python is not None else None,
                f.yanked,
                f.core_metadata is not False,
            )
            for f in files
        ] == [
            (
                f"demo-{n}.0-py3-none-any.whl",
                d,
                str(SpecifierSet(rp)) if rp is not None else None,
                y,
                m,
            )
            for n, d, rp, y, m in entries
        ]
        assert all(f.url.startswith("https://idx.example/files/demo-") for f in files)


# -- JSON pages


def parse_json(
    page: object, url: str = f"{INDEX}/demo/"
) -> tuple[str | None, list[IndexFile], list[str]]:
    return parse_json_files(json.dumps(page).encode(), url=url, origin=INDEX)


class TestParseJson:
    @pytest.mark.parametrize("page", [f"{INDEX}/demo/", "http://127.0.0.1:8000/simple/demo/"])
    def test_file_link_on_a_remote_page_is_refused(self, page: str) -> None:
        entry = {"filename": "demo-1.0-py3-none-any.whl", "url": "file:///dev/zero"}
        with pytest.raises(LocalLinkError) as info:
            parse_json({"files": [entry]}, url=page)
        assert info.value.link == "file:///dev/zero"
        assert info.value.page == page

    def test_file_link_on_a_local_page_is_kept(self) -> None:
        entry = {"filename": "demo-1.0-py3-none-any.whl", "url": "file:///w/demo-1.0.whl"}
        _, files, _ = parse_json({"files": [entry]}, url="file:///w/simple/demo/")
        assert [f.url for f in files] == ["file:///w/demo-1.0.whl"]

    def test_fields(self) -> None:
        name, files, warnings = parse_json(
            {
                "meta": {"api-version": "1.1"},
                "name": "demo",
                "files": [
                    {
                        "filename": "demo-1.0-py3-none-any.whl",
                        "url": "../../files/demo-1.0-py3-none-any.whl",
                        "hashes": {"SHA256": "ABCDEF"},
                        "requires-python": ">=3.8",
                        "yanked": "security hole",
                        "core-metadata": {"sha256": "1234"},
                        "size": 123,
                        "upload-time": "2024-01-01T00:00:00.000000Z",
                    },
                    {
                        "filename": "demo-1.0.tar.gz",
                        "url": "https://files.example/demo-1.0.tar.gz#sha256=ffee",
                        "hashes": {},
                        "yanked": True,
                        "dist-info-metadata": True,
                    },
                    {
                        "filename": "demo-0.9.tar.gz",
                        "url": "/x/demo-0.9.tar.gz",
                        "hashes": {},
                        "yanked": False,
                    },
                ],
            }
        )
        assert (name, warnings) == ("demo", [])
        wheel, sdist, old = files
        assert wheel == IndexFile(
            filename="demo-1.0-py3-none-any.whl",
            url="https://idx.example/files/demo-1.0-py3-none-any.whl",
            hashes={"sha256": "abcdef"},
            requires_python=SpecifierSet(">=3.8"),
            yanked="security hole",
            core_metadata={"sha256": "1234"},
            size=123,
            upload_time="2024-01-01T00:00:00.000000Z",
            origin=INDEX,
        )
        assert (sdist.url, sdist.hashes, sdist.yanked, sdist.core_metadata) == (
            "https://files.example/demo-1.0.tar.gz",
            {"sha256": "ffee"},
            "",
            True,
        )
        assert (old.url, old.yanked, old.core_metadata, old.size) == (
            "https://idx.example/x/demo-0.9.tar.gz",
            None,
            False,
            None,
        )

    def test_bad_optional_fields_are_warnings(self) -> None:
        _, files, warnings = parse_json(
            {
                "meta": {"api-version": "1.0"},
                "files": [
                    {
                        "filename": "demo-1.0.tar.gz",
                        "url": "demo-1.0.tar.gz",
                        "hashes": {"sha256": "not hex"},
                        "requires-python": "python3",
                        "size": "12",
                    }
                ],
            }
        )
        assert (files[0].hashes, files[0].requires_python, files[0].size) == ({}, None, None)
        assert warnings == [
            "ignoring the malformed sha256 hash of `demo-1.0.tar.gz`",
            "ignoring the invalid `Requires-Python` 'python3' of `demo-1.0.tar.gz`",
        ]

    @pytest.mark.parametrize(
        ("page", "problem"),
        [
            ("[1, 2]", "the JSON page is not an object"),
            ("{", "the JSON page is not valid JSON"),
            ('{"meta": {"api-version": "1.0"}}', "the JSON page has no `files` list"),
            (
                '{"meta": {"api-version": "2.0"}, "files": []}',
                "the API version '2.0' is not supported",
            ),
            ('{"meta": {"api-version": 1}, "files": []}', "`meta.api-version` is not a string"),
            (
                '{"files": [{"filename": "a-1.0.tar.gz"}]}',
                "entry 0 of `files` lacks `filename` or `url`",
            ),
            ('{"files": ["a"]}', "entry 0 of `files` is not an object"),
        ],
    )
    def test_malformed_pages(self, page: str, problem: str) -> None:
        with pytest.raises(IndexPageError) as info:
            parse_json_files(page.encode(), url=f"{INDEX}/demo/", origin=INDEX)
        assert problem in info.value.problem


class TestParseProjectPage:
    def test_other_projects_files_are_ignored(self) -> None:
        page = parse_project_page(
            html_response(
                '<a href="demo-1.0.tar.gz">1</a><a href="evil-9.9-py3-none-any.whl">2</a>'
                '<a href="demo-1.0.egg">3</a><a href="Demo-1.1-py3-none-any.whl">4</a>'
            ),
            name="Demo",
            origin=INDEX,
        )
        assert page.name == "demo"
        assert [f.filename for f in page.files] == ["demo-1.0.tar.gz", "Demo-1.1-py3-none-any.whl"]
        assert page.warnings == (
            "ignoring `evil-9.9-py3-none-any.whl` on the page for `demo`: it belongs to `evil`",
            "ignoring 1 file for `demo` that are not wheels or sdists of it: `demo-1.0.egg`",
        )

    def test_unknown_content_type_is_read_as_html(self) -> None:
        page = parse_project_page(
            html_response('<a href="demo-1.0.tar.gz">1</a>', content_type="text/plain"),
            name="demo",
            origin=INDEX,
        )
        assert [f.filename for f in page.files] == ["demo-1.0.tar.gz"]
        assert page.warnings[0] == (
            "the page `https://idx.example/simple/demo/` has the Content-Type `text/plain`; "
            "reading it as HTML"
        )

    def test_json_page_naming_another_project_warns(self) -> None:
        body = json.dumps({"meta": {"api-version": "1.0"}, "name": "other", "files": []})
        page = parse_project_page(
            html_response(body, content_type=JSON_TYPE), name="demo", origin=INDEX
        )
        assert page.warnings == (
            "the page `https://idx.example/simple/demo/` names the project `other` "
            "instead of `demo`",
        )


class TestLazyListing:
    """A JSON page's files are made when their version is first asked for; what decides
    whether the page can be used, or which files it offers, is checked when it is read."""

    def page(self, files: Sequence[object], name: str = "demo") -> Response:
        body = json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": files})
        return html_response(body, content_type=JSON_TYPE)

    def entry(self, filename: str, **fields: object) -> dict[str, object]:
        return {"filename": filename, "url": f"{FILES}/{filename}", **fields}

    def test_only_the_versions_asked_for_are_made(self) -> None:
        files = [
            self.entry("demo-1.0.tar.gz", hashes={"sha256": "not hex"}),
            self.entry("demo-1.0-py3-none-any.whl", **{"requires-python": "python3"}),
            self.entry("demo-2.0-py3-none-any.whl", hashes={"sha256": "AB"}, yanked="bad"),
            self.entry("other-2.0-py3-none-any.whl"),
        ]
        page = parse_project_page(self.page(files), name="demo", origin=INDEX)
        other = (
            "ignoring `other-2.0-py3-none-any.whl` on the page for `demo`: it belongs to `other`"
        )
        # Which files are offered is known at once; the files of 1.0 are not made yet.
        assert list(page.listing.versions) == [Version("1.0"), Version("2.0")]
        assert page.warnings == (other,)
        (newest,) = page.listing.versions[Version("2.0")]
        assert (newest.hashes, newest.yanked, newest.version) == (
            {"sha256": "ab"},
            "bad",
            Version("2.0"),
        )
        assert page.warnings == (other,)
        _, eager, eager_warnings = parse_json_files(
            self.page(files).content, url=f"{INDEX}/demo/", origin=INDEX
        )
        assert page.files == tuple(eager[:3])
        assert page.warnings == (other, *eager_warnings)
        assert eager_warnings == [
            "ignoring the malformed sha256 hash of `demo-1.0.tar.gz`",
            "ignoring the invalid `Requires-Python` 'python3' of `demo-1.0-py3-none-any.whl`",
        ]

    @pytest.mark.parametrize(
        ("bad", "error", "problem"),
        [
            ({"filename": "demo-0.1.tar.gz"}, IndexPageError, "entry 0 of `files` lacks"),
            ("demo-0.1.tar.gz", IndexPageError, "entry 0 of `files` is not an object"),
            ({"url": f"{FILES}/demo-0.1.tar.gz"}, IndexPageError, "entry 0 of `files` lacks"),
            ({"filename": "demo-0.1.tar.gz", "url": 7}, IndexPageError, "entry 0 of `files`"),
            (
                {"filename": "demo-0.1.tar.gz", "url": "file:///dev/zero"},
                LocalLinkError,
                "a page served over HTTP(S) may not link local `file:` URLs",
            ),
            (
                {"filename": "demo-0.1.tar.gz", "url": "FILE:///etc/passwd"},
                LocalLinkError,
                "a page served over HTTP(S) may not link local `file:` URLs",
            ),
        ],
    )
    def test_a_bad_entry_of_a_version_never_asked_for_fails_the_page(
        self, bad: object, error: type[Exception], problem: str
    ) -> None:
        files = [bad, *(self.entry(f"demo-{v}-py3-none-any.whl") for v in ("1.0", "2.0"))]
        with pytest.raises(error) as info:
            parse_project_page(self.page(files), name="demo", origin=INDEX)
        assert problem in str(info.value)

    def test_an_invalid_url_leaves_its_file_out_when_read(self) -> None:
        files = [
            self.entry("demo-1.0-py3-none-any.whl", url="https://[::1/demo-1.0-py3-none-any.whl"),
            self.entry("demo-2.0-py3-none-any.whl"),
        ]
        page = parse_project_page(self.page(files), name="demo", origin=INDEX)
        assert list(page.listing.versions) == [Version("2.0")]
        assert page.warnings == (
            "ignoring `demo-1.0-py3-none-any.whl`: its URL "
            "'https://[::1/demo-1.0-py3-none-any.whl' is not valid",
        )

    def test_threads_asking_at_once_share_one_making(self) -> None:
        files = [self.entry(f"demo-1.0-cp3{i}-none-any.whl", hashes=[]) for i in range(200)]
        page = parse_project_page(self.page(files), name="demo", origin=INDEX)
        results: list[tuple[IndexFile, ...]] = []
        start = threading.Barrier(8)

        def ask() -> None:
            start.wait()
            results.append(page.listing.versions[Version("1.0")])

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 8
        assert all(r is results[0] for r in results)
        assert len(page.warnings) == 200  # one per file, none twice

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "demo-1.0-py3-none-any.whl",
                        "demo-1.0.tar.gz",
                        "Demo-1.0.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                        "demo-2.0b1-py3-none-any.whl",
                        "demo-2.0.zip",
                        "demo-3-1-py3-none-any.whl",
                        "demo-bad-py3-none-any.whl",
                        "demo-1.0-py3-none-any.egg",
                        "other-1.0.tar.gz",
                        "demo-1.0-py3-none-.whl",
                    ]
                ),
                st.sampled_from(
                    [
                        "https://files.example/f",
                        "../../files/f#sha256=ab",
                        "/f#md5=00&egg=x",
                        "https://[::1/f",
                        "http://h:8/p/f#sha256=CD",
                    ]
                ),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "hashes": st.one_of(
                            st.just({"sha256": "ab"}), st.just({"md5": "zz"}), st.just([])
                        ),
                        "requires-python": st.sampled_from([">=3.8", "python3", None, 3, ""]),
                        "yanked": st.sampled_from([True, False, "", "why", 1]),
                        "core-metadata": st.sampled_from([True, {"sha256": "ab"}, {"x": 1}]),
                        "size": st.sampled_from([1, "2", True]),
                    },
                ),
            ),
            max_size=12,
        )
    )
    def test_every_version_is_what_the_whole_page_read_at_once_gives(
        self, entries: list[tuple[str, str, dict[str, object]]]
    ) -> None:
        files = [{"filename": name, "url": url, **fields} for name, url, fields in entries]
        response = self.page(files)
        _, eager, eager_warnings = parse_json_files(
            response.content, url=response.url, origin=INDEX
        )
        page = parse_project_page(response, name="demo", origin=INDEX)
        ours = [f for f in eager if f.project == "demo"]
        by_version: dict[Version, list[IndexFile]] = {}
        for file in ours:
            assert file.version is not None
            by_version.setdefault(file.version, []).append(file)
        # Asked for in a different order than listed, one at a time.
        for version in sorted(page.listing.versions, reverse=True):
            assert list(page.listing.versions[version]) == by_version[version]
        assert list(page.listing.versions) == list(by_version)
        assert page.files == tuple(ours)
        # The field warnings of the files it keeps (not of those it leaves out), after the
        # page's own.
        kept = {f"`{f.filename}`" for f in ours}
        fields = [
            w for w in eager_warnings if "is not valid" not in w and any(k in w for k in kept)
        ]
        assert page.warnings[len(page.page_warnings) :] == tuple(fields)


# -- the client against a mock transport


class TestProjectPage:
    def test_asks_for_json_and_reads_it(self, mock: MockIndex) -> None:
        mock.json_page(
            INDEX, "demo", [{"filename": "demo-1.0.tar.gz", "url": "demo-1.0.tar.gz", "hashes": {}}]
        )
        page = IndexClient(mock_session(mock), index_urls=[INDEX]).project_page(INDEX, "Demo")
        assert page is not None
        assert [f.url for f in page.files] == [f"{INDEX}/demo/demo-1.0.tar.gz"]
        assert mock.requests[0].headers["accept"] == ACCEPT
        assert ACCEPT == (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
            "text/html;q=0.01"
        )

    @pytest.mark.parametrize("content_type", [HTML_TYPE, "text/html; charset=utf-8", "text/html"])
    def test_html_content_types(self, mock: MockIndex, content_type: str) -> None:
        mock.html_page(
            INDEX, "demo", '<a href="demo-1.0.tar.gz#sha256=aa">x</a>', content_type=content_type
        )
        page = IndexClient(mock_session(mock), index_urls=[INDEX]).project_page(INDEX, "demo")
        assert page is not None
        assert [(f.filename, dict(f.hashes)) for f in page.files] == [
            ("demo-1.0.tar.gz", {"sha256": "aa"})
        ]
        assert page.warnings == ()

    def test_latin1_charset_is_honoured(self, mock: MockIndex) -> None:
        body = '<a href="demo-1.0.tar.gz" data-yanked="caf\xe9">x</a>'.encode("latin-1")
        mock.add(project_url(INDEX, "demo"), body, content_type="text/html; charset=ISO-8859-1")
        page = IndexClient(mock_session(mock), index_urls=[INDEX]).project_page(INDEX, "demo")
        assert page is not None
        assert page.files[0].yanked == "caf\xe9"

    def test_missing_project_is_none(self, mock: MockIndex) -> None:
        assert (
            IndexClient(mock_session(mock), index_urls=[INDEX]).project_page(INDEX, "nope") is None
        )

    def test_server_error_is_network_error(self, mock: MockIndex) -> None:
        mock.add(project_url(INDEX, "demo"), "boom", status=500)
        with pytest.raises(NetworkError) as info:
            IndexClient(mock_session(mock), index_urls=[INDEX]).project_page(INDEX, "demo")
        assert info.value.status == 500

    def test_redirect_to_unlisted_host_is_refused(self, mock: MockIndex) -> None:
        mock.redirect(project_url(INDEX, "demo"), "https://evil.example/simple/demo/")
        with pytest.raises(PolicyViolation) as info:
            IndexClient(mock_session(mock), index_urls=[INDEX]).project_page(INDEX, "demo")
        assert info.value.host == "evil.example"
        assert mock.requested() == [project_url(INDEX, "demo")]

    def test_relative_links_follow_the_final_url(self, mock: MockIndex) -> None:
        mock.redirect(project_url(INDEX, "demo"), "https://mirror.example/other/place/")
        mock.add(
            "https://mirror.example/other/place/",
            '<a href="demo-1.0.zip">x</a>',
            content_type="text/html",
        )
        page = IndexClient(mock_session(mock), index_urls=[INDEX]).project_page(INDEX, "demo")
        assert page is not None
        assert page.url == "https://mirror.example/other/place/"
        assert page.files[0].url == "https://mirror.example/other/place/demo-1.0.zip"
        assert page.origin == INDEX


class TestProjectFiles:
    def test_first_index_wins(self, mock: MockIndex) -> None:
        mock.html_page(INDEX, "demo", '<a href="demo-1.0.tar.gz">x</a>')
        mock.html_page(MIRROR, "demo", '<a href="demo-99.0.tar.gz">x</a>')
        result = IndexClient(mock_session(mock), index_urls=[INDEX, MIRROR]).project_files("Demo")
        assert [f.filename for f in result.files] == ["demo-1.0.tar.gz"]
        assert (result.name, result.claimed_by, result.skipped_indexes) == (
            "demo",
            INDEX,
            (MIRROR,),
        )
        assert mock.requested() == [project_url(INDEX, "demo")]

    def test_project_missing_from_first_index_comes_from_second(self, mock: MockIndex) -> None:
        mock.html_page(MIRROR, "demo", '<a href="demo-2.0.tar.gz">x</a>')
        result = IndexClient(mock_session(mock), index_urls=[INDEX, MIRROR]).project_files("demo")
        assert [(f.filename, f.origin) for f in result.files] == [("demo-2.0.tar.gz", MIRROR)]
        assert (result.claimed_by, result.skipped_indexes) == (MIRROR, ())
        assert mock.requested() == [project_url(INDEX, "demo"), project_url(MIRROR, "demo")]

    def test_an_empty_page_still_claims_the_name(self, mock: MockIndex) -> None:
        mock.html_page(INDEX, "demo", "")
        mock.html_page(MIRROR, "demo", '<a href="demo-2.0.tar.gz">x</a>')
        result = IndexClient(mock_session(mock), index_urls=[INDEX, MIRROR]).project_files("demo")
        assert (result.files, result.claimed_by) == ((), INDEX)

    def test_error_on_first_index_does_not_fall_through(self, mock: MockIndex) -> None:
        mock.add(project_url(INDEX, "demo"), "down", status=503)
        mock.html_page(MIRROR, "demo", '<a href="demo-2.0.tar.gz">x</a>')
        with pytest.raises(NetworkError):
            IndexClient(mock_session(mock), index_urls=[INDEX, MIRROR]).project_files("demo")
        assert project_url(MIRROR, "demo") not in mock.requested()

    def test_no_source_has_the_project(self, mock: MockIndex) -> None:
        mock.routes[INDEX + "/"] = (200, {"content-type": "text/html"}, b"<html></html>")
        result = IndexClient(mock_session(mock), index_urls=[INDEX]).project_files("demo")
        assert (result.files, result.claimed_by, result.skipped_indexes) == ((), None, ())

    def test_error_no_source_has_the_project_and_the_index_is_missing(
        self, mock: MockIndex
    ) -> None:
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        with pytest.raises(NetworkError) as info:
            client.project_files("demo")
        assert str(info.value) == (
            f"`demo` was not found, and the index `{INDEX}` answers 404 for its own address "
            "too: the index URL looks wrong"
        )
        # Once an index has served a page it exists, whatever its root says.
        mock.html_page(INDEX, "other", "")
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        assert client.project_files("other").claimed_by == INDEX
        assert client.project_files("demo").files == ()

    def test_find_links_folder_adds_files(self, mock: MockIndex, tmp_path: Path) -> None:
        folder = tmp_path / "wheels"
        wheel = build_wheel(folder, "demo", "3.0")
        sdist = build_sdist(folder, "demo", "3.1")
        build_wheel(folder, "other", "1.0")
        (folder / "README.txt").write_text("not a distribution")
        (folder / "demo-4.0.tar.gz.metadata").write_text("nope")
        mock.html_page(INDEX, "demo", '<a href="demo-1.0.tar.gz">x</a>')
        client = IndexClient(mock_session(mock), index_urls=[INDEX], find_links=[str(folder)])
        result = client.project_files("demo")
        assert [(f.filename, f.origin) for f in result.files] == [
            ("demo-1.0.tar.gz", INDEX),
            (wheel.name, str(folder)),
            (sdist.name, str(folder)),
        ]
        local = result.files[1]
        assert (local.url, local.hashes, local.size) == (wheel.as_uri(), {}, wheel.stat().st_size)
        assert {f.project for f in client.find_links_files()} == {"demo", "other"}

    def test_find_links_alone_without_indexes(self, mock: MockIndex, tmp_path: Path) -> None:
        wheel = build_wheel(tmp_path, "demo", "3.0")
        client = IndexClient(
            mock_session(mock), index_urls=[], find_links=[tmp_path.as_uri(), str(wheel)]
        )
        result = client.project_files("demo")
        assert [f.url for f in result.files] == [wheel.as_uri(), wheel.as_uri()]
        assert result.claimed_by is None
        assert mock.requests == []

    def test_find_links_html_page(self, mock: MockIndex) -> None:
        mock.add(
            "https://files.example/links.html",
            '<a href="../">up</a><a href="pkgs/demo-1.0-py3-none-any.whl#sha256=AB">w</a>'
            '<a href="https://files.example/other-2.0.tar.gz">o</a>',
            content_type="text/html",
        )
        client = IndexClient(
            mock_session(mock), index_urls=[], find_links=["https://files.example/links.html"]
        )
        files = client.find_links_files()
        assert [(f.url, dict(f.hashes)) for f in files] == [
            ("https://files.example/pkgs/demo-1.0-py3-none-any.whl", {"sha256": "ab"}),
            ("https://files.example/other-2.0.tar.gz", {}),
        ]
        assert client.find_links_files() is files
        assert [f.filename for f in client.project_files("other").files] == ["other-2.0.tar.gz"]
        assert mock.requests[0].headers["accept"] == "text/html"
        assert len(mock.requests) == 1

    def test_find_links_local_html_page(self, mock: MockIndex, tmp_path: Path) -> None:
        wheel = build_wheel(tmp_path / "pkgs", "demo", "1.0")
        page = tmp_path / "links.html"
        page.write_text(f'<a href="pkgs/{wheel.name}">w</a><a href="{FILES}/demo-2.0.zip">z</a>')
        client = IndexClient(mock_session(mock), index_urls=[], find_links=[str(page)])
        assert [(f.url, f.origin) for f in client.find_links_files()] == [
            (wheel.as_uri(), str(page)),
            (f"{FILES}/demo-2.0.zip", str(page)),
        ]

    def test_missing_find_links_locations_warn(self, mock: MockIndex, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere"
        client = IndexClient(
            mock_session(mock),
            index_urls=[],
            find_links=[str(missing), "https://files.example/gone/"],
        )
        assert client.find_links_files() == ()
        assert client.find_links_warnings == (
            f"ignoring the find-links location `{missing}`: it does not exist",
            "ignoring the find-links location `https://files.example/gone/`: it answered 404",
        )

    def test_project_files_many_is_concurrent(self, mock: MockIndex) -> None:
        names = ["alpha", "beta", "gamma", "delta"]
        for name in names:
            mock.html_page(INDEX, name, f'<a href="{name}-1.0.tar.gz">x</a>')
        # Every request waits until all four are in flight: a serial client would time out.
        barrier = threading.Barrier(len(names), timeout=5)
        mock.hook = lambda request: barrier.wait()
        client = IndexClient(mock_session(mock), index_urls=[INDEX], max_workers=8)
        results = client.project_files_many(["Alpha", "beta", "BETA", "gamma", "delta"])
        assert sorted(results) == sorted(names)
        assert all(
            [f.filename for f in r.files] == [f"{r.name}-1.0.tar.gz"] for r in results.values()
        )
        assert sorted(mock.requested()) == sorted(project_url(INDEX, n) for n in names)

    def test_project_files_many_propagates_errors(self, mock: MockIndex) -> None:
        mock.html_page(INDEX, "alpha", "")
        mock.add(project_url(INDEX, "beta"), "boom", status=500)
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        with pytest.raises(NetworkError):
            client.project_files_many(["alpha", "beta"])
        assert client.project_files_many([]) == {}


class TestFetchMetadata:
    def serve(self, mock: MockIndex, wheel: Path, *, metadata: bytes | None) -> str:
        url = f"{FILES}/{wheel.name}"
        mock.add(url, wheel.read_bytes())
        if metadata is not None:
            mock.add(f"{url}.metadata", metadata)
        return url

    def file(self, url: str, core_metadata: Mapping[str, str] | bool) -> IndexFile:
        return IndexFile(
            filename=url.rsplit("/", 1)[1],
            url=url,
            hashes={},
            core_metadata=core_metadata,
            origin=INDEX,
        )

    def test_verified_against_published_hash(self, mock: MockIndex, demo_wheel: Path) -> None:
        metadata = wheel_metadata(demo_wheel)
        url = self.serve(mock, demo_wheel, metadata=metadata)
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        got = client.fetch_metadata(
            self.file(
                url,
                {
                    "sha256": sha256(metadata),
                    "sha1": hashlib.sha1(metadata).hexdigest(),
                    "shake_128": "00",
                },
            )
        )
        assert got == metadata
        assert b"Requires-Dist: dep>=1" in got
        assert mock.requested() == [f"{url}.metadata"]

    def test_mismatch_raises(self, mock: MockIndex, demo_wheel: Path) -> None:
        url = self.serve(mock, demo_wheel, metadata=b"Name: demo\nRequires-Dist: evil\n")
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        with pytest.raises(MetadataHashError) as info:
            client.fetch_metadata(self.file(url, {"sha256": sha256(wheel_metadata(demo_wheel))}))
        assert info.value.exit_code == ExitCode.INTEGRITY
        assert info.value.got == sha256(b"Name: demo\nRequires-Dist: evil\n")

    @pytest.mark.parametrize("advertised", [True, False, {"sha256": "00"}])
    def test_missing_is_none(
        self, mock: MockIndex, demo_wheel: Path, advertised: Mapping[str, str] | bool
    ) -> None:
        url = self.serve(mock, demo_wheel, metadata=None)
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        assert client.fetch_metadata(self.file(url, advertised)) is None

    def test_tried_even_when_not_advertised(self, mock: MockIndex, demo_wheel: Path) -> None:
        url = self.serve(mock, demo_wheel, metadata=wheel_metadata(demo_wheel))
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        assert client.fetch_metadata(self.file(url, False)) == wheel_metadata(demo_wheel)

    def test_forbidden_when_not_advertised_is_none(self, mock: MockIndex, demo_wheel: Path) -> None:
        url = self.serve(mock, demo_wheel, metadata=None)
        mock.add(f"{url}.metadata", "no", status=403)
        client = IndexClient(mock_session(mock), index_urls=[INDEX])
        assert client.fetch_metadata(self.file(url, False)) is None
        with pytest.raises(NetworkError):
            client.fetch_metadata(self.file(url, True))

    def test_local_find_links_file(self, mock: MockIndex, demo_wheel: Path) -> None:
        client = IndexClient(mock_session(mock), index_urls=[], find_links=[str(demo_wheel.parent)])
        (file,) = client.find_links_files()
        assert client.fetch_metadata(file) is None
        (demo_wheel.parent / f"{demo_wheel.name}.metadata").write_bytes(b"Name: demo\n")
        assert client.fetch_metadata(file) == b"Name: demo\n"


# -- exact error text


def test_error_index_page() -> None:
    with pytest.raises(IndexPageError) as info:
        parse_json_files(b"{", url="https://user:secret@idx.example/simple/demo/", origin=INDEX)
    error = info.value
    assert str(error) == (
        "Could not read the index page `https://***:***@idx.example/simple/demo/`: "
        "the JSON page is not valid JSON"
    )
    assert error.hint == (
        "check that the index URL points at a simple repository API (PEP 503 HTML or PEP 691 "
        "JSON), such as `https://pypi.org/simple`"
    )
    assert (error.url, error.exit_code) == (
        "https://***:***@idx.example/simple/demo/",
        ExitCode.FAILURE,
    )


def test_error_metadata_hash(mock: MockIndex) -> None:
    url = f"{FILES}/demo-1.0-py3-none-any.whl"
    mock.add(f"{url}.metadata", b"Name: demo\n")
    client = IndexClient(mock_session(mock), index_urls=[INDEX])
    file = IndexFile(
        filename="demo-1.0-py3-none-any.whl",
        url=url,
        hashes={},
        core_metadata={"sha256": "00"},
        origin=INDEX,
    )
    with pytest.raises(MetadataHashError) as info:
        client.fetch_metadata(file)
    got = sha256(b"Name: demo\n")
    assert str(info.value) == (
        "Refusing the metadata of `demo-1.0-py3-none-any.whl` from "
        f"`{url}.metadata`: the index published sha256:00 but the file has sha256:{got}"
    )
    assert info.value.hint == (
        "the index serves metadata that does not match its own hash; retry, and if it persists "
        "report it to the index operator (a proxy may be altering files)"
    )
    assert info.value.exit_code == ExitCode.INTEGRITY


# -- end to end over real HTTP on loopback


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_end_to_end_static_index_over_http(static_server: tuple[str, Path]) -> None:
    base, root = static_server
    wheel = build_wheel(
        root / "files", "Demo.Pkg", "1.0", requires=["dep>=1"], requires_python=">=3.8"
    )
    metadata = wheel_metadata(wheel)
    (root / "files" / f"{wheel.name}.metadata").write_bytes(metadata)
    project_dir = root / "simple" / "demo-pkg"
    project_dir.mkdir(parents=True)
    (project_dir / "index.html").write_text(
        '<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0"></head>'
        f'<body><a href="../../files/{wheel.name}#sha256={sha256(wheel.read_bytes())}" '
        f'data-requires-python="&gt;=3.8" data-core-metadata="sha256={sha256(metadata)}">'
        f"{wheel.name}</a></body></html>"
    )
    links = root / "links"
    other = build_wheel(links, "other", "2.0")
    host = base.removeprefix("http://")
    with Session(
        NetConfig(policy=HostPolicy(allowed_hosts=frozenset({host})), retries=0)
    ) as session:
        client = IndexClient(session, index_urls=[f"{base}/simple/"], find_links=[f"{base}/links/"])
        results = client.project_files_many(["demo_pkg", "other", "missing"])
        demo = results[canonicalize_name("demo-pkg")]
        assert demo.claimed_by == f"{base}/simple/"
        (file,) = demo.files
        assert file.url == f"{base}/files/{wheel.name}"
        assert file.hashes == {"sha256": sha256(wheel.read_bytes())}
        assert file.requires_python == SpecifierSet(">=3.8")
        assert client.fetch_metadata(file) == metadata
        # http.server's folder listing works as a find-links page.
        assert [f.url for f in results[canonicalize_name("other")].files] == [
            f"{base}/links/{other.name}"
        ]
        assert results[canonicalize_name("missing")].files == ()


def test_end_to_end_local_folder_index(tmp_path: Path) -> None:
    project_dir = tmp_path / "simple" / "demo"
    project_dir.mkdir(parents=True)
    wheel = build_wheel(tmp_path / "files", "demo", "1.0")
    (project_dir / "index.html").write_text(f'<a href="../../files/{wheel.name}">{wheel.name}</a>')
    with Session(NetConfig(policy=HostPolicy())) as session:
        client = IndexClient(session, index_urls=[(tmp_path / "simple").as_uri()])
        result = client.project_files("demo")
        assert [f.url for f in result.files] == [wheel.as_uri()]
        assert client.project_files("missing").claimed_by is None


def test_error_local_link() -> None:
    error = LocalLinkError(page="https://u:pw@idx.example/simple/demo/", link="file:///dev/zero")
    assert str(error) == (
        "Refusing the link `file:///dev/zero` on the page "
        "`https://***:***@idx.example/simple/demo/`: a page served over HTTP(S) may not link "
        "local `file:` URLs"
    )
    assert error.hint == (
        "`file:` URLs are used only where you name a local path (a requirements file, `-f DIR`, "
        "the configuration or the command line); this index is misconfigured or hostile"
    )
    assert error.exit_code == ExitCode.POLICY


class TestLocalLinksEndToEnd:
    """Issue 8 item 4: an index page or redirect must never make safepip read a local file."""

    def _install(
        self,
        index_url: str,
        wheel: Path,
        venv: Path,
        cache: Path,
        cli: Cli,
    ) -> tuple[int, str]:
        line = f"{wheel.name.split('-')[0]}==1.0 --hash=sha256:{sha256(wheel.read_bytes())}"
        argv = ["install", line, "--python", str(venv), "-i", index_url, "--cache-dir", str(cache)]
        code, _, err = cli(*argv)
        return code, err

    @pytest.mark.parametrize("mode", ["json-only", "html-only"])
    @pytest.mark.parametrize("target", ["/dev/zero", "the test's wheel"])
    def test_index_page_linking_a_local_file_is_refused(
        self,
        mode: str,
        target: str,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        venv_factory: Callable[[], Path],
        tree_snapshot: Callable[[Path], object],
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        wheel = wheel_factory("zerolink", "1.0")
        index = static_index(mode=mode)
        entry = index.add(wheel)
        # The test's own correctly hashed wheel: even a file that would pass the hash check
        # must not be read, or a page could probe which files exist on the machine.
        entry.link = "file:///dev/zero" if target == "/dev/zero" else wheel.as_uri()
        venv, cache = venv_factory(), tmp_path / "cache"
        before = tree_snapshot(venv)
        code, err = self._install(index.url, wheel, venv, cache, cli)
        assert code == ExitCode.POLICY, err
        assert (
            f"error: Refusing the link `{entry.link}` on the page "
            f"`{index.project_url('zerolink')}`: a page served over HTTP(S) may not link local "
            "`file:` URLs"
        ) in err
        assert tree_snapshot(venv) == before
        # Nothing was copied into the cache: only the target interpreter's probe is kept.
        cached = [p.relative_to(cache) for p in cache.rglob("*") if p.is_file()]
        assert [p for p in cached if p.parts[0] != "targets"] == []

    def test_redirect_to_a_local_file_is_refused(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        venv_factory: Callable[[], Path],
        tree_snapshot: Callable[[Path], object],
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        wheel = wheel_factory("zeroredir", "1.0")
        index = static_index()
        index.add(wheel)
        index.redirect[f"/files/{wheel.name}"] = wheel.as_uri()
        venv, cache = venv_factory(), tmp_path / "cache"
        before = tree_snapshot(venv)
        code, err = self._install(index.url, wheel, venv, cache, cli)
        assert code == ExitCode.POLICY, err
        assert (
            f"error: Refusing redirect from `{index.file_url(wheel.name)}` to `{wheel.as_uri()}`: "
            "unsupported URL scheme `file`"
        ) in err
        assert tree_snapshot(venv) == before
        cached = [p.relative_to(cache) for p in cache.rglob("*") if p.is_file()]
        assert [p for p in cached if p.parts[0] != "targets"] == []


class TestWrongIndexUrl:
    """A typo in the index URL's path makes every project 404: say so instead of blaming the
    package (issue 11)."""

    def test_error_index_that_does_not_exist(
        self,
        pypiserver: PypiServer,
        wheel_factory: WheelFactory,
        environment: Environment,
        cli: Cli,
    ) -> None:
        wheel = pypiserver.add(wheel_factory("typo-demo", "1.0"))
        wrong = pypiserver.url.replace("/simple/", "/simpel/")
        pinned = f"typo-demo==1.0 --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
        for requirement in ("typo-demo", pinned):
            result = environment.install(requirement, "-i", wrong)
            assert result.code == 1, result.err
            assert (
                "error: `typo-demo` was not found, and the index "
                f"`{wrong}` answers 404 for its own address too: the index URL looks wrong"
            ) in result.err
            assert "hint: check the path in the index URL" in result.err
            environment.assert_unchanged()
        assert cli("lock", "typo-demo", "-o", "-", "-i", wrong).code == 1

    def test_a_missing_project_on_a_good_index_is_still_not_found(
        self, pypiserver: PypiServer, environment: Environment
    ) -> None:
        result = environment.install("no-such-project-here", "-i", pypiserver.url)
        assert result.code != 0
        assert "`no-such-project-here` was not found on" in result.err
        assert "looks wrong" not in result.err

    def test_a_missing_local_index_folder(self, tmp_path: Path) -> None:
        session = Session(NetConfig(policy=HostPolicy()))
        index = IndexClient(session, index_urls=[(tmp_path / "nope").as_uri()])
        with pytest.raises(NetworkError, match="the index URL looks wrong"):
            index.project_files("demo")
        (tmp_path / "nope").mkdir()
        index = IndexClient(session, index_urls=[(tmp_path / "nope").as_uri()])
        assert index.project_files("demo").files == ()
