"""The simple repository client: PEP 503 HTML and PEP 691 JSON pages, PEP 658 metadata, find-links.

Indexes are consulted in order and the first one that has a project claims it: later indexes
are never asked about that name. pip merges every index and takes the highest version, which is
how dependency-confusion attacks work; this follows uv's "first index wins" instead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import posixpath
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit, urlunsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from safepip.errors import ExitCode, SafepipError
from safepip.net import NetworkError, Response
from safepip.policy import PolicyViolation
from safepip.urls import file_url_to_path, redact_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Protocol

    from packaging.tags import Tag
    from packaging.version import Version

    from safepip.net import Session

    class _AnchorParser(Protocol):
        """What `parse_html_files` reads from the parser (`_anchor_parser`)."""

        base: str | None
        api_version: str | None
        anchors: list[tuple[dict[str, str | None], str]]

        def feed(self, data: str) -> None: ...

        def close(self) -> None: ...


ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
JSON_CONTENT_TYPE = "application/vnd.pypi.simple.v1+json"
SUPPORTED_API_MAJOR = 1
"""PEP 629: a page whose major API version is higher than this cannot be read safely."""
DISTRIBUTION_SUFFIXES = (".whl", ".tar.gz", ".zip")

_PAGE_PURPOSE = "the index page"
_METADATA_PURPOSE = "package metadata"
_HEX = re.compile(r"[0-9a-fA-F]+")
_NOT_HASHES = frozenset({"egg", "subdirectory"})
_HTML_CONTENT_TYPES = frozenset({"application/vnd.pypi.simple.v1+html", "text/html"})
# SHAKE digests need a length, so they cannot be compared by name alone.
_VERIFIABLE = frozenset(hashlib.algorithms_guaranteed) - {"shake_128", "shake_256"}


class IndexPageError(SafepipError):
    """An index or find-links page that cannot be read as a simple repository page."""

    def __init__(self, url: str, problem: str) -> None:
        shown = redact_url(url)
        super().__init__(
            f"Could not read the index page `{shown}`: {problem}",
            hint=(
                "check that the index URL points at a simple repository API "
                "(PEP 503 HTML or PEP 691 JSON), such as `https://pypi.org/simple`"
            ),
        )
        self.url = shown
        self.problem = problem


class LocalLinkError(PolicyViolation):
    """A page served over HTTP(S) that links a local `file:` URL (issue 8, item 4).

    `file:` URLs are honoured only where the user named a local path (a requirements file,
    `-f DIR`, the configuration, the command line). An index that could point at one could make
    safepip read any file of the machine (`/dev/zero`, a private key) into its cache, or probe
    which files exist.
    """

    def __init__(self, *, page: str, link: str) -> None:
        shown_page, shown_link = redact_url(page), redact_url(link)
        rule = "a page served over HTTP(S) may not link local `file:` URLs"
        super().__init__(
            f"Refusing the link `{shown_link}` on the page `{shown_page}`: {rule}",
            url=shown_link,
            host=urlsplit(page).hostname,
            reason=rule,
            hint=(
                "`file:` URLs are used only where you name a local path (a requirements file, "
                "`-f DIR`, the configuration or the command line); this index is misconfigured "
                "or hostile"
            ),
        )
        self.page = shown_page
        self.link = shown_link


def _check_link(page: str, link: str) -> None:
    """Raise `LocalLinkError` when a page fetched over HTTP(S) links a `file:` URL."""
    if link.startswith(("https://", "http://")):
        return  # the common case, without parsing the URL
    if urlsplit(link).scheme.lower() == "file" and _is_http(page):
        raise LocalLinkError(page=page, link=link)


class MetadataHashError(SafepipError):
    """A PEP 658 `.metadata` file whose digest differs from the one its index published."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, *, filename: str, url: str, algorithm: str, expected: str, got: str) -> None:
        shown = redact_url(url)
        super().__init__(
            f"Refusing the metadata of `{filename}` from `{shown}`: the index published "
            f"{algorithm}:{expected} but the file has {algorithm}:{got}",
            hint=(
                "the index serves metadata that does not match its own hash; retry, and if it "
                "persists report it to the index operator (a proxy may be altering files)"
            ),
        )
        self.filename = filename
        self.url = shown
        self.algorithm = algorithm
        self.expected = expected
        self.got = got


_ParsedName = tuple[
    Literal["wheel", "sdist", "other"], "NormalizedName | None", "Version | None", "frozenset[Tag]"
]


def _parse_filename(filename: str) -> _ParsedName:
    if filename.endswith(".whl"):
        try:
            name, version, tags = _parse_wheel_filename(filename)
        except ValueError:
            return "wheel", None, None, frozenset()
        return "wheel", name, version, tags
    if filename.endswith((".tar.gz", ".zip")):
        try:
            name, version = parse_sdist_filename(filename)
        except ValueError:
            return "sdist", None, None, frozenset()
        return "sdist", name, version, frozenset()
    return "other", None, None, frozenset()


_VALID_TAG = "py3-none-any"
_VALID_PREFIX = "a-1"


@functools.lru_cache(maxsize=4096)
def _wheel_prefix(prefix: str) -> tuple[NormalizedName, Version] | None:
    """Name and version of the wheel filenames `<prefix>-<tag>.whl`; None when invalid."""
    try:
        name, version, _build, _tags = parse_wheel_filename(f"{prefix}-{_VALID_TAG}.whl")
    except ValueError:
        return None
    return name, version


@functools.lru_cache(maxsize=4096)
def _wheel_tag(tag: str) -> frozenset[Tag] | None:
    """The tags of the wheel filenames `<prefix>-<tag>.whl`; None when invalid."""
    try:
        return parse_wheel_filename(f"{_VALID_PREFIX}-{tag}.whl")[3]
    except ValueError:
        return None


def _parse_wheel_filename(filename: str) -> tuple[NormalizedName, Version, frozenset[Tag]]:
    """`packaging.utils.parse_wheel_filename` without the build tag, in two memoised halves.

    A wheel filename is `<name>-<version>[-<build>]-<python>-<abi>-<platform>.whl`: the part
    before the last three dashes and the tag after them are valid or not independently, and
    one page lists the same version (and the same tag) in dozens of files. Each half is parsed
    by packaging itself, next to a half that is always valid.
    """
    if not filename.endswith(".whl"):
        raise ValueError(filename)
    prefix, _, tag = filename[:-4].rpartition("-")
    prefix, _, abi = prefix.rpartition("-")
    prefix, _, python = prefix.rpartition("-")
    parsed = _wheel_prefix(prefix) if prefix.count("-") in (1, 2) else None
    tags = _wheel_tag(f"{python}-{abi}-{tag}")
    if parsed is None or tags is None:
        raise ValueError(filename)
    return parsed[0], parsed[1], tags


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexFile:
    """One file listed by an index page or a find-links location.

    The hashes are what the source published: they catch corruption but never satisfy
    hash-checking mode, since whoever controls the index controls them too.
    """

    filename: str
    url: str
    """Absolute, resolved against the page (or its `<base href>`), without a fragment."""
    hashes: Mapping[str, str]
    """Algorithm -> lowercase hex digest, from JSON `hashes` or the HTML `#alg=hex` fragment."""
    requires_python: SpecifierSet | None = None
    """None when absent or unparseable (the page's warnings say which)."""
    yanked: str | None = None
    """PEP 592: None when not yanked, `""` when yanked without a reason, else the reason."""
    core_metadata: Mapping[str, str] | bool = False
    """PEP 658/714: False if not advertised, True if advertised without hashes, else its hashes."""
    size: int | None = None
    upload_time: str | None = None
    origin: str
    """The index base URL or find-links location that listed the file."""

    _parsed: _ParsedName | None = field(default=None, init=False, repr=False, compare=False)
    """The filename parsed, on first use (a page of thousands of files is read several times)."""

    def __hash__(self) -> int:
        # The mappings are not hashable; equal files always share these three fields.
        return hash((self.filename, self.url, self.origin))

    def _name_parts(self) -> _ParsedName:
        parsed = self._parsed
        if parsed is None:
            parsed = _parse_filename(self.filename)
            object.__setattr__(self, "_parsed", parsed)
        return parsed

    @property
    def kind(self) -> Literal["wheel", "sdist", "other"]:
        return self._name_parts()[0]

    @property
    def project(self) -> NormalizedName | None:
        """The project named by the filename; None when the filename does not parse."""
        return self._name_parts()[1]

    @property
    def version(self) -> Version | None:
        return self._name_parts()[2]

    @property
    def tags(self) -> frozenset[Tag]:
        """A wheel's compatibility tags; empty for sdists and unparseable names."""
        return self._name_parts()[3]

    @property
    def metadata_url(self) -> str:
        """PEP 658: the core metadata file sits next to the distribution."""
        return f"{self.url}.metadata"


class _Entry:
    """One file of a listing: its `IndexFile`, or what it is made from until first asked for."""

    __slots__ = ("item", "position", "version", "warnings")

    def __init__(self, version: Version, position: int, item: object) -> None:
        self.version = version
        self.position = position
        """Where the page lists it: late warnings are reported in page order."""
        self.item = item
        """The `IndexFile`, or the page's raw entry until it is made."""
        self.warnings: tuple[str, ...] = ()
        """The problems met when it was made (bad optional fields)."""


class FileListing:
    """One project's files from its sources, in order, grouped by version.

    Pages of the public index list thousands of files (grpcio: 11,000 in 4.9 MB of JSON) where
    a resolver looks at a handful of versions. A JSON page is therefore checked in two steps:
    when it is read, everything that decides whether it can be used at all or which files it
    offers (decoding, structure, API version, each entry's `filename` and `url`, the `file:`
    link rule, whether a filename is a wheel or sdist of the project); each file's other
    fields (hashes, `requires-python`, `yanked`, `core-metadata`, size, upload time) when the
    files of its version are first asked for. Those fields can only ever be ignored with a
    warning, so a version's files are the same whenever they are made; the warnings are those
    of the files made so far. Thread-safe: the resolver's threads share listings.
    """

    __slots__ = ("_by_version", "_entries", "_lock", "_made", "_make", "_order")

    def __init__(
        self,
        entries: Iterable[_Entry],
        make: Callable[[object], tuple[IndexFile, list[str]]] | None = None,
    ) -> None:
        self._entries = tuple(entries)
        by_version: dict[Version, list[_Entry]] = {}
        for entry in self._entries:
            group = by_version.get(entry.version)
            if group is None:
                by_version[entry.version] = [entry]
            else:
                group.append(entry)
        self._by_version = by_version
        self._make = make
        self._lock = threading.Lock()
        self._made: dict[Version, tuple[IndexFile, ...]] = {}
        self._order: tuple[Version, ...] | None = None

    @classmethod
    def of(cls, files: Iterable[IndexFile]) -> FileListing:
        """A listing of files already made (those whose name gives no version are left out)."""
        return cls(
            _Entry(f.version, position, f)
            for position, f in enumerate(files)
            if f.version is not None
        )

    def joined(self, files: Sequence[IndexFile]) -> FileListing:
        """This listing followed by `files` (find-links files after an index's)."""
        if not files:
            return self
        extra = FileListing.of(files)._entries
        return FileListing((*self._entries, *extra), self._make)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def versions(self) -> Mapping[Version, tuple[IndexFile, ...]]:
        """Every version listed, in the order first listed; its files made on first use."""
        return _VersionView(self)

    def newest_first(self) -> tuple[Version, ...]:
        """Every version listed, newest first (sorted once: the resolver asks again and again)."""
        order = self._order
        if order is None:
            order = tuple(sorted(self._by_version, reverse=True))
            self._order = order
        return order

    def files_of(self, version: Version) -> tuple[IndexFile, ...]:
        """The files of `version` in listing order (KeyError when none is listed)."""
        made = self._made.get(version)
        if made is not None:
            return made
        entries = self._by_version[version]
        with self._lock:
            made = self._made.get(version)
            if made is None:
                made = tuple(self._file(entry) for entry in entries)
                self._made[version] = made
        return made

    def _file(self, entry: _Entry) -> IndexFile:
        item = entry.item
        if isinstance(item, IndexFile):
            return item
        assert self._make is not None
        file, warnings = self._make(item)
        entry.item = file
        entry.warnings = tuple(warnings)
        return file

    @property
    def files(self) -> tuple[IndexFile, ...]:
        """Every file, in listing order (all made)."""
        for version in self._by_version:
            self.files_of(version)
        return tuple(cast("IndexFile", entry.item) for entry in self._entries)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The warnings of the files made so far, in page order."""
        with self._lock:
            made = [e for e in self._entries if e.warnings]
        made.sort(key=lambda e: e.position)
        return tuple(w for e in made for w in e.warnings)


class _VersionView(Mapping["Version", "tuple[IndexFile, ...]"]):
    __slots__ = ("_listing",)

    def __init__(self, listing: FileListing) -> None:
        self._listing = listing

    def __getitem__(self, version: Version) -> tuple[IndexFile, ...]:
        return self._listing.files_of(version)

    def __contains__(self, version: object) -> bool:
        return version in self._listing._by_version

    def __iter__(self) -> Iterator[Version]:
        return iter(self._listing._by_version)

    def __len__(self) -> int:
        return len(self._listing._by_version)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProjectPage:
    """One index's page for one project, limited to the files of that project."""

    name: NormalizedName
    origin: str
    url: str
    """The page URL after redirects."""
    listing: FileListing
    page_warnings: tuple[str, ...] = ()
    """Problems of the page as a whole and of files left out, found when it was read."""

    @property
    def files(self) -> tuple[IndexFile, ...]:
        return self.listing.files

    @property
    def warnings(self) -> tuple[str, ...]:
        """The page's warnings, then those of its files made so far (see `FileListing`)."""
        return (*self.page_warnings, *self.listing.warnings)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProjectFiles:
    """Every file for one project: from the index that claimed it, plus all find-links locations."""

    name: NormalizedName
    listing: FileListing
    claimed_by: str | None
    """The first index, in order, that has a page for the project; None if no index has one."""
    skipped_indexes: tuple[str, ...] = ()
    """Later indexes that were not asked because an earlier one claimed the name."""
    page_warnings: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[IndexFile, ...]:
        """Every file, all made (the resolver asks `listing.versions` for what it looks at)."""
        return self.listing.files

    @property
    def warnings(self) -> tuple[str, ...]:
        return (*self.page_warnings, *self.listing.warnings)


def project_url(index_url: str, name: str) -> str:
    """`<index>/<normalised name>/`, with exactly one slash between the two."""
    return f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"


def _split_fragment(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its fragment, and the hashes named in the fragment (`#sha256=…`)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, "")), _fragment_hashes(
        parts.fragment
    )


def _fragment_hashes(fragment: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for item in fragment.split("&"):
        alg, sep, value = item.partition("=")
        alg = alg.strip().lower()
        if sep and alg and alg not in _NOT_HASHES and _HEX.fullmatch(value.strip()):
            hashes[alg] = value.strip().lower()
    return hashes


# An absolute http(s) URL that `urljoin` and `urlsplit` hand back unchanged: a lower-case
# scheme, a plain host and port, a path, and at most a fragment of `name=value` pairs; no query,
# no `;` parameters, no user info, no white space, control or non-ASCII character. Index pages
# list tens of thousands of such links (PyPI's point at its file host).
_PLAIN_LINK = re.compile(
    r"(https?)://[A-Za-z0-9.\-]+(?::[0-9]*)?/[A-Za-z0-9._~%!$&'()*+,=:@/\-]*(?:#([A-Za-z0-9_=&.\-]*))?"
)


def resolve_link(page: str, href: str) -> tuple[str, dict[str, str]]:
    """`href` resolved against `page`, without its fragment, and the hashes the fragment names.

    Raises `ValueError` for a link that is not a valid URL.
    """
    if _PLAIN_LINK.fullmatch(href) is not None:
        url, _, fragment = href.partition("#")
        return url, _fragment_hashes(fragment) if fragment else {}
    return _split_fragment(urljoin(page, href))


def _filename_of(url: str) -> str:
    return unquote(posixpath.basename(urlsplit(url).path))


def _requires_python(value: object, filename: str, warnings: list[str]) -> SpecifierSet | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        warnings.append(f"ignoring a `Requires-Python` that is not a string for `{filename}`")
        return None
    spec = _specifier(value)
    if spec is None:
        warnings.append(f"ignoring the invalid `Requires-Python` {value!r} of `{filename}`")
    return spec


@functools.lru_cache(maxsize=1024)
def _specifier(value: str) -> SpecifierSet | None:
    """A page repeats a handful of `Requires-Python` values over thousands of files: each is
    parsed once (the sets are never changed after parsing, so files share them)."""
    try:
        return SpecifierSet(value)
    except InvalidSpecifier:
        return None


def _html_core_metadata(value: str | None) -> Mapping[str, str] | bool:
    """PEP 658/714 attribute value: `true` or `<alg>=<hex>`; present but empty means advertised."""
    if value is None or value.strip().lower() in ("", "true"):
        return True
    alg, sep, digest = value.strip().partition("=")
    if sep and alg and _HEX.fullmatch(digest):
        return {alg.lower(): digest.lower()}
    return True


@functools.cache
def _anchor_parser() -> Callable[[], _AnchorParser]:
    """The HTML parser of PEP 503 pages, made when the first HTML page is read: html.parser
    with its entities costs about 3 ms of start-up, and indexes that serve the JSON API (PEP
    691) never need it."""
    from html.parser import HTMLParser

    class AnchorParser(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.base: str | None = None
            self.api_version: str | None = None
            self.anchors: list[tuple[dict[str, str | None], str]] = []
            self._open: dict[str, str | None] | None = None
            self._text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "a":
                self._finish()
                # The first occurrence of a repeated attribute wins, as in browsers.
                found: dict[str, str | None] = {}
                for key, value in attrs:
                    found.setdefault(key, value)
                self._open = found
            elif tag == "base" and self.base is None:
                href = dict(attrs).get("href")
                if href:
                    self.base = href
            elif tag == "meta":
                found_meta = dict(attrs)
                if found_meta.get("name") == "pypi:repository-version":
                    self.api_version = found_meta.get("content") or ""

        def handle_endtag(self, tag: str) -> None:
            if tag == "a":
                self._finish()

        def handle_data(self, data: str) -> None:
            if self._open is not None:
                self._text.append(data)

        def close(self) -> None:
            super().close()
            self._finish()

        def _finish(self) -> None:
            if self._open is not None:
                self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None
            self._text = []

    return AnchorParser


def _check_api_version(version: str, url: str) -> None:
    major = version.strip().split(".", 1)[0]
    if not major.isdigit():
        raise IndexPageError(url, f"the API version {version!r} is not a version number")
    if int(major) > SUPPORTED_API_MAJOR:
        raise IndexPageError(
            url, f"the API version {version!r} is not supported (only 1.x is understood)"
        )


def _decode_html(content: bytes | str, url: str, charset: str | None) -> str:
    if isinstance(content, str):
        return content
    try:
        return content.decode(charset or "utf-8")
    except (UnicodeDecodeError, LookupError) as exc:
        raise IndexPageError(url, f"the page is not valid {charset or 'utf-8'} text") from exc


def parse_html_files(
    content: bytes | str, *, url: str, origin: str, charset: str | None = None
) -> tuple[list[IndexFile], list[str]]:
    """Every anchor of a PEP 503 page (or a find-links page) as an `IndexFile`, and warnings.

    Links resolve against the first `<base href>`, else `url`. Attribute values are
    HTML-unescaped once by the parser (`&gt;=3.8` becomes `>=3.8`). Anchors whose href is not a
    valid URL are skipped with a warning. Raises `IndexPageError` for a page that does not
    decode, that the parser rejects, or that declares an unsupported PEP 629 API version, and
    `LocalLinkError` when a page fetched over HTTP(S) links a `file:` URL.
    """
    text = _decode_html(content, url, charset)
    parser = _anchor_parser()()
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError, RecursionError) as exc:
        # Old html.parser versions assert on some malformed declarations.
        raise IndexPageError(url, f"the HTML could not be parsed ({exc})") from exc
    if parser.api_version is not None:
        _check_api_version(parser.api_version, url)
    warnings: list[str] = []
    base = url
    if parser.base is not None:
        try:
            base = urljoin(url, parser.base.strip())
        except ValueError:
            warnings.append(f"ignoring the invalid `<base href>` of `{redact_url(url)}`")
    files: list[IndexFile] = []
    for attrs, anchor_text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        try:
            file_url, hashes = resolve_link(base, href.strip())
        except ValueError:
            warnings.append(f"ignoring the invalid link {href!r} on `{redact_url(url)}`")
            continue
        _check_link(url, file_url)
        filename = _filename_of(file_url) or anchor_text
        if not filename:
            continue
        if "data-core-metadata" in attrs:
            metadata = _html_core_metadata(attrs["data-core-metadata"])
        elif "data-dist-info-metadata" in attrs:
            metadata = _html_core_metadata(attrs["data-dist-info-metadata"])
        else:
            metadata = False
        # A bare `data-yanked` attribute (or an empty one) means yanked without a reason.
        yanked = (attrs["data-yanked"] or "") if "data-yanked" in attrs else None
        files.append(
            IndexFile(
                filename=filename,
                url=file_url,
                hashes=hashes,
                requires_python=_requires_python(
                    attrs.get("data-requires-python"), filename, warnings
                ),
                yanked=yanked,
                core_metadata=metadata,
                origin=origin,
            )
        )
    return files, warnings


def _json_core_metadata(value: object) -> Mapping[str, str] | bool:
    if isinstance(value, dict):
        hashes = {
            str(k).lower(): v.lower()
            for k, v in value.items()
            if isinstance(v, str) and _HEX.fullmatch(v)
        }
        return hashes or True
    return bool(value)


_RawJsonFile = tuple[int, str, "dict[str, object]", "tuple[str, dict[str, str]] | None"]
"""A JSON page's file before it is made: position, filename, the entry, and its URL and fragment
hashes when the link is not a plain absolute one (None: the `url` is used as it stands)."""


def _scan_json(
    content: bytes | str, *, url: str
) -> tuple[str | None, list[_RawJsonFile], list[tuple[int, str]]]:
    """What a PEP 691 page offers, with the checks that decide whether it can be used: the
    project name, each file not yet made, and warnings with the position of their file.

    Structural problems raise `IndexPageError`, a `file:` link on a page fetched over HTTP(S)
    raises `LocalLinkError`, and a file whose URL is not valid is left out with a warning.
    """
    try:
        data = json.loads(content)
    except (ValueError, RecursionError) as exc:
        raise IndexPageError(url, "the JSON page is not valid JSON") from exc
    if not isinstance(data, dict):
        raise IndexPageError(url, "the JSON page is not an object")
    meta = data.get("meta")
    if isinstance(meta, dict) and "api-version" in meta:
        version = meta["api-version"]
        if not isinstance(version, str):
            raise IndexPageError(url, "`meta.api-version` is not a string")
        _check_api_version(version, url)
    raw_files = data.get("files")
    if not isinstance(raw_files, list):
        raise IndexPageError(url, "the JSON page has no `files` list")
    name = data.get("name")
    warnings: list[tuple[int, str]] = []
    pending: list[_RawJsonFile] = []
    plain = _PLAIN_LINK.fullmatch
    for position, entry in enumerate(raw_files):
        if not isinstance(entry, dict):
            raise IndexPageError(url, f"entry {position} of `files` is not an object")
        filename, href = entry.get("filename"), entry.get("url")
        if not isinstance(filename, str) or not filename or not isinstance(href, str):
            raise IndexPageError(url, f"entry {position} of `files` lacks `filename` or `url`")
        if plain(href) is not None:
            # An absolute http(s) URL: valid, and never a local link.
            pending.append((position, filename, entry, None))
            continue
        try:
            resolved = resolve_link(url, href)
        except ValueError:
            warnings.append((position, f"ignoring `{filename}`: its URL {href!r} is not valid"))
            continue
        _check_link(url, resolved[0])
        pending.append((position, filename, entry, resolved))
    return (name if isinstance(name, str) else None), pending, warnings


def _json_file(raw: _RawJsonFile, origin: str) -> tuple[IndexFile, list[str]]:
    """The `IndexFile` of a scanned JSON entry; a bad optional field is ignored with a warning."""
    _position, filename, entry, resolved = raw
    if resolved is None:
        href = cast("str", entry["url"])
        file_url, _, fragment = href.partition("#")
        fragment_hashes = _fragment_hashes(fragment) if fragment else {}
    else:
        file_url, fragment_hashes = resolved
    warnings: list[str] = []
    raw_hashes = entry.get("hashes", {})
    hashes: dict[str, str] = {}
    if isinstance(raw_hashes, dict):
        for alg, digest in raw_hashes.items():
            if isinstance(digest, str) and _HEX.fullmatch(digest):
                hashes[str(alg).lower()] = digest.lower()
            else:
                warnings.append(f"ignoring the malformed {alg} hash of `{filename}`")
    else:
        warnings.append(f"ignoring the malformed `hashes` of `{filename}`")
    for alg, digest in fragment_hashes.items():
        hashes.setdefault(alg, digest)
    # PEP 691 wants a non-empty reason string; an empty one still reads as yanked.
    yanked_value = entry.get("yanked", False)
    if isinstance(yanked_value, str):
        yanked: str | None = yanked_value
    else:
        yanked = "" if yanked_value else None
    # PEP 714: `core-metadata` replaces `dist-info-metadata`; read the old key only alone.
    metadata_value = entry.get("core-metadata", entry.get("dist-info-metadata", False))
    size = entry.get("size")
    upload_time = entry.get("upload-time")
    file = IndexFile(
        filename=filename,
        url=file_url,
        hashes=hashes,
        requires_python=_requires_python(entry.get("requires-python"), filename, warnings),
        yanked=yanked,
        core_metadata=_json_core_metadata(metadata_value),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        upload_time=upload_time if isinstance(upload_time, str) else None,
        origin=origin,
    )
    return file, warnings


def parse_json_files(
    content: bytes | str, *, url: str, origin: str
) -> tuple[str | None, list[IndexFile], list[str]]:
    """The project name and files of a PEP 691 JSON page, and warnings, every file made.

    Structural problems (not JSON, no `files` list, a file without `filename` or `url`, an
    unsupported major `meta.api-version`) raise `IndexPageError`; a bad optional field of one
    file is ignored with a warning. A page fetched over HTTP(S) that links a `file:` URL raises
    `LocalLinkError`.
    """
    name, pending, early = _scan_json(content, url=url)
    positioned = list(early)
    files: list[IndexFile] = []
    for raw in pending:
        file, warnings = _json_file(raw, origin)
        files.append(file)
        positioned.extend((raw[0], w) for w in warnings)
    positioned.sort(key=lambda item: item[0])
    return name, files, [w for _, w in positioned]


def _charset(response: Response) -> str | None:
    for param in response.headers.get("content-type", "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def parse_project_page(response: Response, *, name: str, origin: str) -> ProjectPage:
    """A project page from a response, read by its Content-Type (JSON, else HTML).

    Files whose names do not parse as a wheel or sdist of `name` are dropped with a warning: a
    page must not smuggle in another project's files. The files of a JSON page are made when
    their version is first asked for (see `FileListing` for what is checked when).
    """
    project = canonicalize_name(name)
    warnings: list[str]
    entries: list[_Entry] = []
    unrecognised: list[str] = []
    others: list[str] = []
    make: Callable[[object], tuple[IndexFile, list[str]]] | None = None
    if response.content_type == JSON_CONTENT_TYPE:
        listed_name, pending, early = _scan_json(response.content, url=response.url)
        warnings = [w for _, w in early]
        if listed_name is not None and canonicalize_name(listed_name) != project:
            warnings.append(
                f"the page `{redact_url(response.url)}` names the project `{listed_name}` "
                f"instead of `{project}`"
            )
        for raw in pending:
            filename = raw[1]
            _kind, found, version, _tags = _parse_filename(filename)
            if found == project and version is not None:
                entries.append(_Entry(version, raw[0], raw))
            elif found is None:
                unrecognised.append(filename)
            else:
                others.append(
                    f"ignoring `{filename}` on the page for `{project}`: it belongs to `{found}`"
                )
        make = functools.partial(_make_json_file, origin=origin)
    else:
        files, warnings = parse_html_files(
            response.content, url=response.url, origin=origin, charset=_charset(response)
        )
        if response.content_type not in _HTML_CONTENT_TYPES:
            warnings.insert(
                0,
                f"the page `{redact_url(response.url)}` has the Content-Type "
                f"`{response.content_type or 'none'}`; reading it as HTML",
            )
        for position, file in enumerate(files):
            if file.project == project and file.version is not None:
                entries.append(_Entry(file.version, position, file))
            elif file.project is None:
                unrecognised.append(file.filename)
            else:
                others.append(
                    f"ignoring `{file.filename}` on the page for `{project}`: "
                    f"it belongs to `{file.project}`"
                )
    warnings.extend(others)
    if unrecognised:
        shown = ", ".join(f"`{f}`" for f in unrecognised[:3])
        more = f" and {len(unrecognised) - 3} more" if len(unrecognised) > 3 else ""
        count = "1 file" if len(unrecognised) == 1 else f"{len(unrecognised)} files"
        warnings.append(
            f"ignoring {count} for `{project}` that are not wheels or sdists of it: {shown}{more}"
        )
    return ProjectPage(
        name=project,
        origin=origin,
        url=response.url,
        listing=FileListing(entries, make),
        page_warnings=tuple(warnings),
    )


def _make_json_file(raw: object, *, origin: str) -> tuple[IndexFile, list[str]]:
    scanned = cast("_RawJsonFile", raw)
    file, warnings = _json_file(scanned, origin)
    # The name was parsed when the page was read: keep it.
    object.__setattr__(file, "_parsed", _parse_filename(scanned[1]))
    return file, warnings


def _is_url(location: str) -> bool:
    scheme = urlsplit(location).scheme.lower()
    # A one-letter scheme is a Windows drive (`C:\wheels`), not a URL.
    return len(scheme) > 1


def _is_distribution(filename: str) -> bool:
    return filename.endswith(DISTRIBUTION_SUFFIXES)


# -- the HTTP validator cache

_CACHE_FORMAT = 1
_PAGES_DIR = "index-pages"
_METADATA_DIR = "metadata"
_REVALIDATED_METADATA_DIR = "metadata-revalidated"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True, slots=True)
class _CachedResponse:
    """A stored 200 response and the validators that let the server confirm it is current."""

    content_type: str
    etag: str | None
    last_modified: str | None
    body: bytes

    def conditional_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        if self.last_modified is not None:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def _url_secrets(url: str) -> list[bytes]:
    """The parts of `url` that `redact_url` hides: the password (or lone token) and secret
    query values, so a response that echoes one of them is never written to disk."""
    secrets: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            secrets.append(unquote(parts.password))
        elif parts.username:
            secrets.append(unquote(parts.username))
        redacted = parse_qsl(urlsplit(redact_url(url)).query, keep_blank_values=True)
        original = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return []
    if len(original) != len(redacted):
        secrets.extend(value for _, value in original)
    else:
        pairs = zip(original, redacted, strict=True)
        secrets.extend(value for (_, value), (_, shown) in pairs if shown == "***")
    return [s.encode() for s in secrets if s]


def _read_cached_response(path: Path) -> _CachedResponse | None:
    """The entry at `path`; None when it is missing or damaged in any way (never raises)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head, newline, body = data.partition(b"\n")
    try:
        meta = json.loads(head)
    except (ValueError, RecursionError):
        return None
    if not newline or not isinstance(meta, dict) or meta.get("format") != _CACHE_FORMAT:
        return None
    content_type, etag, modified = (
        meta.get("content_type"),
        meta.get("etag"),
        meta.get("last_modified"),
    )
    if (
        not isinstance(content_type, str)
        or not isinstance(etag, (str, type(None)))
        or not isinstance(modified, (str, type(None)))
        or (etag is None and modified is None)
        or meta.get("size") != len(body)
        or meta.get("sha256") != hashlib.sha256(body).hexdigest()
    ):
        return None
    return _CachedResponse(content_type=content_type, etag=etag, last_modified=modified, body=body)


_WRITES = itertools.count()
_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place.

    Readers (other threads or processes) see the old file or the new one, never a mix; when two
    writers race, the last rename wins with a whole file. Failures are ignored: the cache only
    saves requests, it never decides anything.
    """
    # A name no other writer picks (this process's id and its own count of writes), created
    # exclusively; the folder is made only when it is missing. `tempfile.mkstemp` cost twice
    # as much (a random name, and a `mkdir` before every write): a lock writes a page and a
    # metadata file per project.
    tmp = path.parent / f".tmp-{os.getpid()}-{next(_WRITES)}.part"
    try:
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o600)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, _CREATE_FLAGS, 0o600)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class _ValidatorCache:
    """Index pages and PEP 658 metadata on disk, keyed so credentials never appear in names.

    A page is never served without asking the server first (`If-None-Match`,
    `If-Modified-Since`): an index can yank or replace files at any time, so only a 304 makes a
    stored page current. Metadata whose sha256 the index published is content-addressed instead:
    the hash pins the bytes, so a stored copy that still matches it needs no request at all.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_path(self, folder: str, url: str, accept: str) -> Path:
        # The full URL (credentials included) goes into the hash only: different credentials
        # may see different pages, and the name on disk reveals nothing.
        key = hashlib.sha256(f"{url}\n{accept}".encode()).hexdigest()
        return self.root / folder / key

    def load(self, path: Path) -> _CachedResponse | None:
        return _read_cached_response(path)

    def store(
        self,
        path: Path,
        *,
        request_url: str,
        response: Response,
        secrets: Sequence[str] = (),
    ) -> None:
        """Keep a 200 response that carries a validator; drop what cannot be revalidated, and
        a page that echoes a credential (one in the URL, or `secrets`: netrc's, a keyring's)."""
        etag = response.headers.get("etag")
        modified = response.headers.get("last-modified")
        no_store = "no-store" in response.headers.get("cache-control", "").lower()
        secrets_in_use = [
            *_url_secrets(request_url),
            *_url_secrets(response.url),
            *(s.encode() for s in secrets),
        ]
        if (etag is None and modified is None) or no_store:
            self.forget(path)
            return
        if any(secret in response.content for secret in secrets_in_use):
            # The page echoes a credential (some servers put it in every link): keep it off disk.
            self.forget(path)
            return
        meta = {
            "format": _CACHE_FORMAT,
            "url": redact_url(request_url),
            "final_url": redact_url(response.url),
            "content_type": response.headers.get("content-type", ""),
            "etag": etag,
            "last_modified": modified,
            "size": len(response.content),
            "sha256": hashlib.sha256(response.content).hexdigest(),
        }
        header = json.dumps(meta, separators=(",", ":"), ensure_ascii=True).encode()
        _write_atomically(path, header + b"\n" + response.content)

    def forget(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()

    def metadata_path(self, sha256: str) -> Path:
        return self.root / _METADATA_DIR / sha256

    def load_metadata(self, sha256: str) -> bytes | None:
        """The stored metadata whose sha256 is `sha256`; a damaged copy is removed."""
        path = self.metadata_path(sha256)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            self.forget(path)
            return None
        return data

    def store_metadata(self, sha256: str, data: bytes) -> None:
        path = self.metadata_path(sha256)
        if not path.exists():
            _write_atomically(path, data)


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


class IndexClient:
    """Reads project pages from the configured indexes and files from find-links locations.

    Does not check hashes of the files themselves (that is `fetch`'s job), does not choose
    versions, and does not filter yanked files: it reports what the sources list.

    With `cache_dir`, http(s) pages and metadata are kept on disk with their `ETag` and
    `Last-Modified` and revalidated on every use (a 304 costs no body); metadata whose sha256
    the index published is served from disk without a request. Only redacted URLs are written.
    """

    def __init__(
        self,
        session: Session,
        *,
        index_urls: Sequence[str],
        find_links: Sequence[str] = (),
        max_workers: int = 16,
        cache_dir: Path | None = None,
    ) -> None:
        self.session = session
        self.index_urls = tuple(index_urls)
        self.find_links = tuple(find_links)
        self.max_workers = max(1, max_workers)
        self._cache = _ValidatorCache(cache_dir) if cache_dir is not None else None
        self._lock = threading.Lock()
        self._find_links_files: tuple[IndexFile, ...] | None = None
        self._find_links_warnings: tuple[str, ...] = ()
        self._claimed: set[str] = set()
        """Indexes that served at least one project page in this run."""
        self._no_metadata: set[str] = set()
        """Indexes that answered 404 for a `.metadata` file they did not advertise: they are
        not asked for the unadvertised ones again in this run (the wheel is read instead)."""
        self._root_missing: dict[str, bool] = {}

    # -- indexes

    def project_page(self, origin: str, name: str) -> ProjectPage | None:
        """The page of `name` on the index `origin`; None when the index answers 404.

        Any other failure raises (`NetworkError`, `PolicyViolation`, `IndexPageError`): an
        index that cannot be read must not silently hand the name to the next index.
        """
        response = self._get_revalidated(
            project_url(origin, name),
            folder=_PAGES_DIR,
            accept=ACCEPT,
            purpose=_PAGE_PURPOSE,
            package=canonicalize_name(name),
        )
        if response.status == 404:
            return None
        return parse_project_page(response, name=name, origin=origin)

    def _get_revalidated(
        self, url: str, *, folder: str, accept: str | None, purpose: str, package: str | None
    ) -> Response:
        """GET `url` (200 or 404), answering from the cache when the server says 304."""
        headers = {"Accept": accept} if accept is not None else {}
        cache = self._cache if _is_http(url) else None
        path = cache.entry_path(folder, url, accept or "") if cache is not None else None
        cached = cache.load(path) if cache is not None and path is not None else None
        response = self.session.get(
            url,
            headers={**headers, **(cached.conditional_headers() if cached else {})},
            purpose=purpose,
            package=package,
            # A 304 is only acceptable when this request asked for one.
            ok_statuses=frozenset({200, 304, 404} if cached else {200, 404}),
        )
        if response.status == 304 and cached is not None:
            return Response(
                url=response.url,
                status=200,
                headers={"content-type": cached.content_type},
                content=cached.body,
            )
        if cache is not None and path is not None:
            if response.status == 200:
                cache.store(
                    path,
                    request_url=url,
                    response=response,
                    secrets=self.session.credentials.secrets(),
                )
            else:
                cache.forget(path)
        return response

    def project_files(self, name: str) -> ProjectFiles:
        """The files for `name`: the first index (in order) with a page claims it, plus find-links.

        Later indexes are not consulted once one has claimed the name, so a public index cannot
        shadow a private one with a higher version (dependency confusion).
        """
        project = canonicalize_name(name)
        listing = FileListing(())
        warnings: tuple[str, ...] = ()
        claimed_by: str | None = None
        skipped: tuple[str, ...] = ()
        for position, origin in enumerate(self.index_urls):
            page = self.project_page(origin, project)
            if page is not None:
                with self._lock:
                    self._claimed.add(origin)
                claimed_by = origin
                skipped = self.index_urls[position + 1 :]
                listing = page.listing
                warnings = page.page_warnings
                break
        listing = listing.joined([f for f in self.find_links_files() if f.project == project])
        if claimed_by is None and not listing:
            self._check_indexes_exist(project)
        return ProjectFiles(
            name=project,
            listing=listing,
            claimed_by=claimed_by,
            skipped_indexes=skipped,
            page_warnings=warnings,
        )

    def _check_indexes_exist(self, project: str) -> None:
        """Raise when an index that has served nothing answers 404 for its own address too: a
        typo in the index URL's path (`/simpel/`) makes every project "not found", and the
        package is not what the user should go and check."""
        for origin in self.index_urls:
            with self._lock:
                if origin in self._claimed:
                    continue
            if self._index_missing(origin):
                shown = redact_url(origin)
                raise NetworkError(
                    f"`{project}` was not found, and the index `{shown}` answers 404 for its own "
                    "address too: the index URL looks wrong",
                    url=shown,
                    status=404,
                    hint="check the path in the index URL (`-i`, `PIP_INDEX_URL`, pip.conf or "
                    "the requirements file); simple indexes usually end in `/simple/`",
                )

    def _index_missing(self, origin: str) -> bool:
        with self._lock:
            known = self._root_missing.get(origin)
        if known is not None:
            return known
        if urlsplit(origin).scheme.lower() == "file":
            missing = not file_url_to_path(origin).is_dir()
        else:
            try:
                # Only the status matters: the body (all of PyPI's names) is never read.
                with self.session.stream(
                    origin.rstrip("/") + "/", headers={"Accept": ACCEPT}, purpose=_PAGE_PURPOSE
                ) as response:
                    missing = response.status in (404, 410)
            except NetworkError:
                missing = False  # cannot tell; the usual "not found" stands
        with self._lock:
            self._root_missing[origin] = missing
        return missing

    def project_files_many(self, names: Iterable[str]) -> dict[NormalizedName, ProjectFiles]:
        """`project_files` for several names at once, fetched concurrently.

        If lookups fail, the error of the first failing name (in the order given) propagates
        once every lookup has finished.
        """
        wanted = list(dict.fromkeys(canonicalize_name(n) for n in names))
        if not wanted:
            return {}
        self.find_links_files()
        workers = min(self.max_workers, len(wanted))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safepip-index") as pool:
            results = list(pool.map(self.project_files, wanted))
        return {result.name: result for result in results}

    # -- find-links

    @property
    def find_links_warnings(self) -> tuple[str, ...]:
        """Problems met while reading the find-links locations (missing folder, 404 page)."""
        self.find_links_files()
        return self._find_links_warnings

    def find_links_files(self) -> tuple[IndexFile, ...]:
        """Every distribution listed by every find-links location; read once, thread-safe.

        A local folder contributes its `.whl`, `.tar.gz` and `.zip` files (no hashes known); an
        HTML page (http(s) or `file:`) contributes the distributions its anchors link to. A
        location that does not exist is skipped with a warning, as pip does.
        """
        with self._lock:
            if self._find_links_files is None:
                files: list[IndexFile] = []
                warnings: list[str] = []
                for location in self.find_links:
                    files.extend(self._read_find_links(location, warnings))
                self._find_links_files = tuple(files)
                self._find_links_warnings = tuple(warnings)
            return self._find_links_files

    def _read_find_links(self, location: str, warnings: list[str]) -> list[IndexFile]:
        is_url = _is_url(location)
        scheme = urlsplit(location).scheme.lower() if is_url else "file"
        if scheme == "file":
            path = file_url_to_path(location) if is_url else Path(location).absolute()
            if path.is_dir():
                return _list_folder(path, origin=location)
            if path.is_file() and _is_distribution(path.name):
                return [_local_file(path, origin=location)]
            if not path.exists():
                warnings.append(f"ignoring the find-links location `{location}`: it does not exist")
                return []
            url = path.as_uri()
        else:
            url = location
        response = self._get_revalidated(
            url, folder=_PAGES_DIR, accept="text/html", purpose="the find-links page", package=None
        )
        if response.status == 404:
            warnings.append(
                f"ignoring the find-links location `{redact_url(location)}`: it answered 404"
            )
            return []
        files, page_warnings = parse_html_files(
            response.content, url=response.url, origin=location, charset=_charset(response)
        )
        warnings.extend(page_warnings)
        return [f for f in files if f.kind != "other"]

    # -- metadata

    def fetch_metadata(self, file: IndexFile) -> bytes | None:
        """The PEP 658 core metadata of `file` (`<url>.metadata`), or None if not served.

        It is tried even when not advertised, since the public index serves it anyway, until the
        index refuses one it did not advertise (404, or another 4xx): then no longer for those.
        When the index published hashes for it, the body must match every one safepip can
        compute, else `MetadataHashError`. Without published hashes (or with only algorithms
        hashlib lacks) the body is unverified: callers must check it against the distribution
        once that is downloaded and hash-checked.

        With a cache, metadata pinned by a published sha256 is read from disk when a copy with
        that digest is there (no request); other metadata is revalidated like index pages.
        """
        published = file.core_metadata if isinstance(file.core_metadata, dict) else {}
        pinned = published.get("sha256")
        if pinned is not None and not _SHA256.fullmatch(pinned):
            pinned = None
        content = None
        if self._cache is not None and pinned is not None:
            content = self._cache.load_metadata(pinned)
        if content is None:
            content = self._download_metadata(file, revalidate=pinned is None)
            if content is None:
                return None
        for algorithm, expected in sorted(published.items()):
            if algorithm not in _VERIFIABLE:
                continue
            got = hashlib.new(algorithm, content).hexdigest()
            if got != expected:
                raise MetadataHashError(
                    filename=file.filename,
                    url=file.metadata_url,
                    algorithm=algorithm,
                    expected=expected,
                    got=got,
                )
        if self._cache is not None and pinned is not None and _is_http(file.metadata_url):
            self._cache.store_metadata(pinned, content)
        return content

    def _download_metadata(self, file: IndexFile, *, revalidate: bool) -> bytes | None:
        advertised = file.core_metadata is not False
        # Only a request is worth saving: a local folder is looked at every time.
        remember = not advertised and _is_http(file.metadata_url)
        if remember:
            with self._lock:
                if file.origin in self._no_metadata:
                    return None
        try:
            if not revalidate:
                # Pinned by its published sha256: cached by content, no validators needed.
                response = self.session.get(
                    file.metadata_url,
                    purpose=_METADATA_PURPOSE,
                    package=str(file.project or file.filename),
                    ok_statuses=frozenset({200, 404}),
                )
            else:
                response = self._get_revalidated(
                    file.metadata_url,
                    folder=_REVALIDATED_METADATA_DIR,
                    accept=None,
                    purpose=_METADATA_PURPOSE,
                    package=str(file.project or file.filename),
                )
        except NetworkError as exc:
            # Some indexes answer 403 or 400 for a file they never offered.
            if not advertised and exc.status is not None and 400 <= exc.status < 500:
                if remember:
                    with self._lock:
                        self._no_metadata.add(file.origin)
                return None
            raise
        if response.status == 404:
            if remember:
                with self._lock:
                    self._no_metadata.add(file.origin)
            return None
        return response.content


def _local_file(path: Path, *, origin: str) -> IndexFile:
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None
    return IndexFile(filename=path.name, url=path.as_uri(), hashes={}, size=size, origin=origin)


def _list_folder(folder: Path, *, origin: str) -> list[IndexFile]:
    return [
        _local_file(entry, origin=origin)
        for entry in sorted(folder.iterdir(), key=lambda p: p.name)
        if entry.is_file() and _is_distribution(entry.name)
    ]
