"""Requirements files: pip's syntax and semantics, nested files, options and `--hash` pins."""

from __future__ import annotations

import codecs
import enum
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from safepip.errors import ExitCode, SafepipError
from safepip.hashes import HEX_LENGTHS
from safepip.urls import file_url_to_path, redact_text, redact_url, strip_fragment

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

__all__ = [
    "COMMAND_LINE",
    "IndexDirective",
    "IndexOption",
    "ParsedRequirement",
    "ParsedRequirements",
    "RequirementsError",
    "SourceLocation",
    "parse_requirement_line",
    "parse_requirements",
    "update_format_control",
]

COMMAND_LINE = "<command line>"
"""The `path` of a `SourceLocation` for requirements given as arguments."""

MAX_INCLUDE_DEPTH = 64
"""Nesting limit for `-r`/`-c`; a server could otherwise generate an endless chain of files."""

_NO_HASHES: frozenset[str] = frozenset()

# Decoding order follows pip: a byte order mark wins, then a PEP 263 comment, then UTF-8.
# UTF-32 marks come before UTF-16 ones because BOM_UTF16_LE is a prefix of BOM_UTF32_LE.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
_PEP263_RE = re.compile(rb"coding[:=]\s*([-\w.]+)")
_ENV_VAR_RE = re.compile(r"\$\{([A-Z0-9_]+)\}")
_SCHEME_RE = re.compile(r"^(http|https|file):", re.IGNORECASE)
_EGG_RE = re.compile(r"[#&]egg=([^&]*)")
_PROJECT_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
_VCS = ("git", "hg", "svn", "bzr")
_URL_SCHEMES = frozenset({"http", "https", "file", "ftp"})
_ARCHIVE_EXTENSIONS = (
    ".whl",
    ".zip",
    ".tar.gz",
    ".tgz",
    ".tar",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tlz",
    ".tar.lz",
    ".tar.lzma",
)
_SHELL_SPACE = " \t\r\n"


class RequirementsError(SafepipError):
    """A requirements file (or a requirement argument) cannot be read or does not parse.

    `path`, `line` (1-based) and `text` point at the logical line; `column` (0-based) and `width`
    say which part of `text` is wrong, when that is known.
    """

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        *,
        path: str,
        line: int | None = None,
        text: str | None = None,
        column: int | None = None,
        width: int = 1,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.line = line
        self.text = text
        self.column = column
        self.width = max(1, width)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        parts = [_shorten_quoted(self.message), f"  --> {where}"]
        if self.text is not None:
            text, column, width = _window(self.text, self.column, self.width)
            parts.append(f"   | {text}")
            if column is not None:
                parts.append(f"   | {' ' * column}{'^' * width}")
        return "\n".join(parts)


SHOWN_LINE = 100
"""How much of a long line an error shows, around the caret."""

_QUOTED = re.compile(r"`([^`]*)`")


def _shorten_quoted(message: str) -> str:
    """`message` with each long quoted value cut to its start (a 1 MB word stays one line)."""

    def cut(match: re.Match[str]) -> str:
        value = match.group(1)
        return match.group(0) if len(value) <= SHOWN_LINE // 2 else f"`{value[:60]}…`"

    return _QUOTED.sub(cut, message)


def _window(text: str, column: int | None, width: int) -> tuple[str, int | None, int]:
    """The part of a long `text` around `column`, with `…` where it was cut."""
    if len(text) <= SHOWN_LINE:
        return text, column, width
    start = 0 if column is None else max(0, min(column - SHOWN_LINE // 4, len(text) - SHOWN_LINE))
    end = start + SHOWN_LINE
    prefix = "…" if start > 0 else ""
    shown = f"{prefix}{text[start:end]}{'…' if end < len(text) else ''}"
    if column is None:
        return shown, None, width
    column = column - start + len(prefix)
    return shown, column, max(1, min(width, end - start + len(prefix) - column))


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceLocation:
    """Where a requirement or option came from."""

    path: str
    """The file as given (nested files joined to their parent's folder), a URL with credentials
    redacted, or `<command line>`."""
    line: int
    """1-based number of the first physical line of the logical line."""
    text: str
    """The logical line after joining continuations, stripping comments and expanding
    `${VAR}`s, with credentials redacted."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


class IndexDirective(enum.Enum):
    INDEX_URL = "--index-url"
    EXTRA_INDEX_URL = "--extra-index-url"
    NO_INDEX = "--no-index"


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexOption:
    """One `--index-url`, `--extra-index-url` or `--no-index` seen in a file."""

    kind: IndexDirective
    url: str | None
    """The URL as written (credentials included: it is needed to log in); None for NO_INDEX."""
    location: SourceLocation


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedRequirement:
    """One requirement line (or argument), parsed the way pip reads it.

    Checks syntax, hash format and that local archive paths exist; it does not check that
    names exist, that pins are satisfiable or that hashes match anything.
    """

    name: NormalizedName
    """Canonical name; from the wheel or sdist filename for a bare URL or path, from `#egg=` for
    VCS URLs. Empty for an unnamed requirement (a local directory, a VCS URL without a name)."""
    requirement: Requirement | None
    """The PEP 508 requirement; a direct URL appears as `name @ url`. None when unnamed."""
    url: str | None
    """Direct URL including its fragment; local paths become absolute `file:` URLs."""
    editable: bool
    hashes: frozenset[str]
    """`<algorithm>:<lowercase hex>` from `--hash` options."""
    location: SourceLocation
    constraint: bool
    """Came from a `-c` file."""
    extras: frozenset[str] = frozenset()
    """Canonicalised extras (kept here too because unnamed requirements have no `requirement`)."""
    marker: Marker | None = None
    config_settings: tuple[tuple[str, str], ...] = ()
    """`--config-settings KEY=VALUE` pairs in the order given."""

    @property
    def is_vcs(self) -> bool:
        return self.url is not None and _is_vcs_url(self.url)

    @property
    def is_archive(self) -> bool:
        """A direct URL to a wheel or sdist (not a VCS URL, not a directory)."""
        return self.url is not None and not self.is_vcs and _is_archive(_url_filename(self.url))

    @property
    def is_pinned(self) -> bool:
        """Exactly one `==`/`===` specifier without a wildcard, or a (non-editable) URL to a file.

        This is the shape hash-checking mode demands of every requirement.
        """
        if self.url is not None:
            return not self.editable and self.is_archive
        if self.requirement is None:
            return False
        specs = list(self.requirement.specifier)
        return (
            len(specs) == 1
            and specs[0].operator in ("==", "===")
            and not specs[0].version.endswith(".*")
        )

    @property
    def local_path(self) -> Path | None:
        """The local file or directory of a `file:` URL, else None."""
        if self.url is None or not self.url.lower().startswith("file:"):
            return None
        return file_url_to_path(strip_fragment(self.url))

    @property
    def url_hashes(self) -> frozenset[str]:
        """`<alg>:<hex>` from a `#sha256=…` style URL fragment; these satisfy hash-checking mode
        for this requirement but do not turn it on."""
        if self.url is None:
            return frozenset()
        fragment = _split(self.url).fragment
        found = set()
        for key, value in urllib.parse.parse_qsl(fragment):
            if key.lower() in HEX_LENGTHS and _HEX_RE.fullmatch(value):
                found.add(f"{key.lower()}:{value.lower()}")
        return frozenset(found)

    def __str__(self) -> str:
        if self.requirement is not None:
            return str(self.requirement)
        return redact_url(self.url or "")


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedRequirements:
    """The merged result of requirements files, constraints files and requirement arguments."""

    requirements: tuple[ParsedRequirement, ...] = ()
    constraints: tuple[ParsedRequirement, ...] = ()
    index_options: tuple[IndexOption, ...] = ()
    """In the order pip applies them (see `apply_index_options`)."""
    find_links: tuple[str, ...] = ()
    """Absolute paths (relative ones are taken from the file's folder) or URLs."""
    require_hashes: bool = False
    """`--require-hashes` was seen in a file."""
    no_require_hashes: bool = False
    """`--no-require-hashes` was seen: hashes on some lines do not imply hash-checking mode."""
    pre: bool = False
    prefer_binary: bool = False
    only_binary: frozenset[str] = frozenset()
    """Canonical names, or `:all:`."""
    no_binary: frozenset[str] = frozenset()
    all_releases: frozenset[str] = frozenset()
    only_final: frozenset[str] = frozenset()
    trusted_hosts: tuple[str, ...] = ()
    use_features: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    """Things pip would silently ignore, e.g. "`path:3`: `--hash` on a line without a
    requirement is ignored"."""

    def apply_index_options(self, index_urls: Sequence[str]) -> tuple[list[str], bool]:
        """The index URLs and the `--no-index` flag after the files' index options.

        Like pip: `--index-url` replaces the whole list (including URLs given before it),
        `--extra-index-url` appends, and `--no-index` empties the list and ignores any later
        index option.
        """
        urls = list(index_urls)
        no_index = False
        for option in self.index_options:
            match option.kind:
                case IndexDirective.NO_INDEX:
                    no_index = True
                    urls = []
                case IndexDirective.INDEX_URL:
                    if not no_index and option.url is not None:
                        urls = [option.url]
                case IndexDirective.EXTRA_INDEX_URL:
                    if not no_index and option.url is not None:
                        urls.append(option.url)
                case _:
                    _assert_never(option.kind)
        return urls, no_index

    @property
    def hash_mode(self) -> bool:
        """pip's hash-checking mode: `--require-hashes`, or any requirement or constraint with a
        `--hash` option (unless `--no-require-hashes`). URL `#sha256=` fragments do not count."""
        if self.require_hashes:
            return True
        if self.no_require_hashes:
            return False
        return any(r.hashes for r in (*self.requirements, *self.constraints))


def _assert_never(value: NoReturn) -> NoReturn:
    # typing.assert_never is 3.11+; this keeps mypy's exhaustiveness check on 3.10.
    raise AssertionError(f"unhandled value: {value!r}")


def update_format_control(value: str, target: set[str], other: set[str]) -> None:
    """Apply one `--only-binary`/`--no-binary` value (or `--all-releases`/`--only-final`).

    `target` is the set of the option given, `other` its opposite. Follows pip: `:all:` clears
    both sets, `:none:` clears `target`, a name moves from `other` to `target`. Raises
    ValueError for a value that looks like an option (the argument is missing).
    """
    if value.startswith("-"):
        raise ValueError("expects `:all:`, `:none:` or comma-separated names")
    new = value.split(",")
    if ":all:" in new:
        # pip loops over each `:all:`; only the last one, and whether a `:none:` follows it,
        # decide the outcome, and finding them directly keeps a long value linear.
        other.clear()
        target.clear()
        target.add(":all:")
        del new[: len(new) - new[::-1].index(":all:")]
        if ":none:" not in new:
            return
    for name in new:
        if name == ":none:":
            target.clear()
        elif name.strip():
            canonical = canonicalize_name(name.strip())
            other.discard(canonical)
            target.add(canonical)


# --- reading and preprocessing -------------------------------------------------------------


def _decode(data: bytes, path: str) -> str:
    """Text of a requirements file: BOM, then a PEP 263 comment in the first two lines, then
    UTF-8 (pip falls back to the locale's encoding; we refuse to guess)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode_as(data[len(bom) :], encoding, path, offset=len(bom))
    for raw_line in data.split(b"\n")[:2]:
        if raw_line[:1] == b"#":
            match = _PEP263_RE.search(raw_line)
            if match is not None:
                encoding = match.group(1).decode("ascii")
                try:
                    codecs.lookup(encoding)
                except LookupError:
                    raise RequirementsError(
                        f"Unknown encoding `{encoding}` declared in requirements file",
                        path=path,
                        line=data[: match.start()].count(b"\n") + 1,
                        hint="Use a PEP 263 comment such as `# -*- coding: latin-1 -*-`",
                    ) from None
                return _decode_as(data, encoding, path)
    return _decode_as(data, "utf-8", path)


def _decode_as(data: bytes, encoding: str, path: str, *, offset: int = 0) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RequirementsError(
            f"Requirements file is not valid {encoding} (byte {exc.start + offset})",
            path=path,
            line=line,
            hint="Save the file as UTF-8, or declare its encoding on the first line "
            "with `# -*- coding: <encoding> -*-`",
        ) from None


def _logical_lines(content: str, environ: Mapping[str, str]) -> Iterator[tuple[int, str]]:
    """Numbered logical lines, in pip's order: join `\\` continuations (the joined line keeps
    the first line's number; a comment line never continues), strip comments, expand `${VAR}`."""
    for number, line in _join_lines(content.splitlines()):
        line = _strip_comment(line).strip()
        if not line:
            continue
        # Only `${NAME}` is expanded, never `$NAME`: a `$` in a URL or a password must survive.
        # An unset or empty variable leaves the literal text, like pip.
        line = _ENV_VAR_RE.sub(lambda m: environ.get(m.group(1)) or m.group(0), line)
        yield number, line


def _strip_comment(line: str) -> str:
    """`line` without its comment: pip's `(^|\\s+)#.*$` (a `#` at the start or after
    whitespace), found in linear time: that regular expression backtracks quadratically over a
    long run of spaces (issue 8)."""
    position = line.find("#")
    while position > 0 and not line[position - 1].isspace():
        position = line.find("#", position + 1)
    return line if position < 0 else line[:position]


def _join_lines(lines: Sequence[str]) -> Iterator[tuple[int, str]]:
    first = 0
    pending: list[str] = []
    for number, line in enumerate(lines, start=1):
        is_comment = line.lstrip().startswith("#")
        if is_comment or not line.endswith("\\"):
            if is_comment:
                # A leading space makes sure the comment is still stripped once joined.
                line = " " + line
            if pending:
                pending.append(line)
                yield first, "".join(pending)
                pending = []
            else:
                yield number, line
        else:
            if not pending:
                first = number
            # pip strips backslashes from both ends of a continued line.
            pending.append(line.strip("\\"))
    if pending:
        yield first, "".join(pending)


def _break_args_options(line: str) -> tuple[str, int]:
    """The requirement part of `line` (everything before the first space-separated token that
    starts with `-`) and the offset where the options part starts. Markers are not shell-split,
    so their quotes and spaces survive."""
    position = 0
    for token in line.split(" "):
        if token.startswith("-"):
            return line[: max(0, position - 1)], position
        position += len(token) + 1
    return line, len(line)


class _SplitError(Exception):
    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class _Token(NamedTuple):
    # A tuple, not a frozen dataclass: a long line makes hundreds of thousands of them.
    value: str
    start: int
    end: int


_SHELL_SPECIAL = re.compile(r"[\\'\"]")
_SHELL_WORD = re.compile(r"[^ \t\r\n]+")


def _shell_split(text: str, offset: int) -> list[_Token]:
    """`shlex.split(text)` (POSIX rules), keeping where each word starts and ends."""
    tokens: list[_Token] = []
    if not _SHELL_SPECIAL.search(text):
        # The common case (hash options): no quotes or escapes, so words are plain runs.
        return [
            _Token(m.group(0), offset + m.start(), offset + m.end())
            for m in _SHELL_WORD.finditer(text)
        ]
    i, n = 0, len(text)
    while i < n:
        if text[i] in _SHELL_SPACE:
            i += 1
            continue
        start = i
        chars: list[str] = []
        while i < n and text[i] not in _SHELL_SPACE:
            char = text[i]
            if char == "\\":
                if i + 1 >= n:
                    raise _SplitError("No escaped character", offset + i)
                chars.append(text[i + 1])
                i += 2
            elif char == "'":
                close = text.find("'", i + 1)
                if close < 0:
                    raise _SplitError("No closing quotation", offset + i)
                chars.append(text[i + 1 : close])
                i = close + 1
            elif char == '"':
                quote = i
                i += 1
                while True:
                    if i >= n:
                        raise _SplitError("No closing quotation", offset + quote)
                    char = text[i]
                    if char == '"':
                        i += 1
                        break
                    if char == "\\":
                        if i + 1 >= n:
                            raise _SplitError("No escaped character", offset + i)
                        if text[i + 1] not in '"\\':
                            chars.append("\\")
                        chars.append(text[i + 1])
                        i += 2
                    else:
                        chars.append(char)
                        i += 1
            else:
                chars.append(char)
                i += 1
        tokens.append(_Token("".join(chars), offset + start, offset + i))
    return tokens


# --- options -------------------------------------------------------------------------------


class _Dest(enum.Enum):
    INDEX_URL = enum.auto()
    EXTRA_INDEX_URL = enum.auto()
    NO_INDEX = enum.auto()
    CONSTRAINT = enum.auto()
    REQUIREMENT = enum.auto()
    EDITABLE = enum.auto()
    FIND_LINKS = enum.auto()
    NO_BINARY = enum.auto()
    ONLY_BINARY = enum.auto()
    PREFER_BINARY = enum.auto()
    REQUIRE_HASHES = enum.auto()
    NO_REQUIRE_HASHES = enum.auto()
    PRE = enum.auto()
    ALL_RELEASES = enum.auto()
    ONLY_FINAL = enum.auto()
    TRUSTED_HOST = enum.auto()
    USE_FEATURE = enum.auto()
    HASH = enum.auto()
    CONFIG_SETTINGS = enum.auto()


@dataclass(frozen=True, slots=True)
class _Spec:
    dest: _Dest
    flags: tuple[str, ...]
    takes_value: bool = True

    @property
    def name(self) -> str:
        return self.flags[-1] if self.flags[-1] != "--pypi-url" else "--index-url"


# The options pip 26 accepts in requirements files (pip/_internal/req/req_file.py).
_SPECS = (
    _Spec(_Dest.INDEX_URL, ("-i", "--index-url", "--pypi-url")),
    _Spec(_Dest.EXTRA_INDEX_URL, ("--extra-index-url",)),
    _Spec(_Dest.NO_INDEX, ("--no-index",), takes_value=False),
    _Spec(_Dest.CONSTRAINT, ("-c", "--constraint")),
    _Spec(_Dest.REQUIREMENT, ("-r", "--requirement")),
    _Spec(_Dest.EDITABLE, ("-e", "--editable")),
    _Spec(_Dest.FIND_LINKS, ("-f", "--find-links")),
    _Spec(_Dest.NO_BINARY, ("--no-binary",)),
    _Spec(_Dest.ONLY_BINARY, ("--only-binary",)),
    _Spec(_Dest.PREFER_BINARY, ("--prefer-binary",), takes_value=False),
    _Spec(_Dest.REQUIRE_HASHES, ("--require-hashes",), takes_value=False),
    _Spec(_Dest.NO_REQUIRE_HASHES, ("--no-require-hashes",), takes_value=False),
    _Spec(_Dest.PRE, ("--pre",), takes_value=False),
    _Spec(_Dest.ALL_RELEASES, ("--all-releases",)),
    _Spec(_Dest.ONLY_FINAL, ("--only-final",)),
    _Spec(_Dest.TRUSTED_HOST, ("--trusted-host",)),
    _Spec(_Dest.USE_FEATURE, ("--use-feature",)),
    _Spec(_Dest.HASH, ("--hash",)),
    _Spec(_Dest.CONFIG_SETTINGS, ("-C", "--config-settings")),
)
_LONG = {flag: spec for spec in _SPECS for flag in spec.flags if flag.startswith("--")}
_SHORT = {flag[1]: spec for spec in _SPECS for flag in spec.flags if not flag.startswith("--")}
_PER_REQUIREMENT = frozenset({_Dest.HASH, _Dest.CONFIG_SETTINGS})
_OPTIONS_HINT = (
    "Requirements files accept `-r`, `-c`, `-e`, `-i`/`--index-url`, `--extra-index-url`, "
    "`--no-index`, `-f`/`--find-links`, `--no-binary`, `--only-binary`, `--prefer-binary`, "
    "`--require-hashes`, `--pre`, `--trusted-host`, `--use-feature`, and per requirement "
    "`--hash` and `--config-settings`"
)


class _OptionValue(NamedTuple):
    spec: _Spec
    value: str
    start: int
    """Where the option starts in the logical line."""
    end: int
    """Where its value ends."""
    value_start: int


def _match_long(name: str) -> _Spec | None:
    """optparse's rule: an exact name, or an unambiguous prefix of one."""
    if name in _LONG:
        return _LONG[name]
    matches = {_LONG[flag] for flag in _LONG if flag.startswith(name)}
    if len(matches) == 1:
        return matches.pop()
    return None


# --- one requirement -----------------------------------------------------------------------


def _split(url: str) -> urllib.parse.SplitResult:
    """`urlsplit` that never raises; URLs are validated where they enter (`_check_url`)."""
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:
        return urllib.parse.SplitResult("", "", url, "", "")


_URL_LIKE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _check_url(url: str, ctx: _Context, column: int) -> None:
    try:
        urllib.parse.urlsplit(url)
    except ValueError as exc:
        ctx.error(f"Invalid URL `{url}`: {exc}", column=column, width=len(url))


def _is_vcs_url(url: str) -> bool:
    scheme = _split(url).scheme.lower()
    return any(scheme == vcs or scheme.startswith(vcs + "+") for vcs in _VCS)


def _is_url(text: str) -> bool:
    """pip's test: a scheme it can fetch, or a VCS scheme (a Windows drive letter is not)."""
    scheme = _split(text).scheme.lower()
    return scheme in _URL_SCHEMES or (bool(scheme) and _is_vcs_url(text))


def _is_archive(filename: str) -> bool:
    return filename.lower().endswith(_ARCHIVE_EXTENSIONS)


def _url_filename(url: str) -> str:
    path = _split(url).path
    return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])


def _path_to_url(path: str) -> str:
    absolute = os.path.normpath(os.path.abspath(path))
    return Path(absolute).as_uri()


def _looks_like_path(text: str) -> bool:
    return os.sep in text or (os.altsep is not None and os.altsep in text) or text.startswith(".")


def _egg_name(url: str) -> str | None:
    match = _EGG_RE.search(url)
    if match is None:
        return None
    return match.group(1)


@dataclass(slots=True)
class _Context:
    """What a requirement string is checked against and where errors point."""

    location: SourceLocation
    raw: str
    """The logical line before redaction (carets are placed in it)."""
    offset: int
    """Where the requirement text starts in `raw`."""
    cwd: Path

    def error(
        self,
        message: str,
        *,
        column: int | None = None,
        width: int = 1,
        hint: str | None = None,
    ) -> NoReturn:
        raise _located_error(
            message, self.location, self.raw, column=column, width=width, hint=hint
        )


def _located_error(
    message: str,
    location: SourceLocation,
    raw: str,
    *,
    column: int | None,
    width: int = 1,
    hint: str | None = None,
) -> RequirementsError:
    if column is not None and location.text != raw:
        # Redaction changed the text: move the caret with it, or drop it if we cannot.
        before = redact_text(raw[:column])
        part = redact_text(raw[column : column + width])
        if before + part + redact_text(raw[column + width :]) == location.text:
            column, width = len(before), len(part)
        else:
            column = None
    return RequirementsError(
        redact_text(message),
        path=location.path,
        line=location.line,
        text=location.text,
        column=column,
        width=width,
        hint=hint,
    )


def _parse_pep508(text: str, ctx: _Context, start: int) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        cause = exc.__cause__
        span = getattr(cause, "span", None)
        message = getattr(cause, "message", None) or str(exc).split("\n", 1)[0]
        hint = None
        if os.sep in text:
            hint = "It looks like a path: a local file must exist and be a wheel or an sdist"
        elif "=" in text and not any(op in text for op in ("==", ">=", "<=", "!=", "~=")):
            hint = "`=` is not a valid operator; did you mean `==`?"
        if isinstance(span, tuple) and len(span) == 2:
            # packaging's span runs from the last good token to the offending one; point at
            # the offending word.
            column = ctx.offset + start + int(span[1])
            width = len((text[int(span[1]) :].split() or [""])[0])
        else:
            column, width = ctx.offset + start, max(1, len(text))
        ctx.error(f"Invalid requirement: {message}", column=column, width=width, hint=hint)


def _parse_marker(text: str, ctx: _Context, start: int) -> Marker | None:
    if not text.strip():
        return None
    leading = len(text) - len(text.lstrip())
    try:
        return Marker(text.strip())
    except InvalidMarker as exc:
        cause = exc.__cause__
        span = getattr(cause, "span", None)
        message = getattr(cause, "message", None) or str(exc).split("\n", 1)[0]
        column = ctx.offset + start + leading
        width = len(text.strip())
        if isinstance(span, tuple) and len(span) == 2:
            column += int(span[1])
            width = len((text.strip()[int(span[1]) :].split() or [""])[0])
        ctx.error(f"Invalid environment marker: {message}", column=column, width=width)


def _split_extras(text: str) -> tuple[str, str] | None:
    """pip's `^(.+)(\\[[^\\]]+\\])$` on a path (`./pkg[extra]` -> `./pkg`, `[extra]`) in linear
    time: the regular expression backtracks quadratically over many `[` (issue 8). Lines never
    hold a newline, the one character where `.` and this differ."""
    if len(text) < 4 or not text.endswith("]"):
        return None
    last = len(text) - 1
    closing = text.rfind("]", 0, last)
    opening = text.rfind("[", max(closing + 1, 1), last - 1)
    if opening < 0:
        return None
    return text[:opening], text[opening:]


def _canonical_extras(extras: set[str] | frozenset[str]) -> frozenset[str]:
    return frozenset(canonicalize_name(e) for e in extras)


def _extras_of(text: str, ctx: _Context) -> frozenset[str]:
    return _canonical_extras(_parse_pep508("placeholder" + text, ctx, 0).extras)


def _direct_requirement(
    name: str, url: str | None, extras: frozenset[str], marker: Marker | None
) -> Requirement:
    requirement = Requirement(name)
    requirement.url = url
    requirement.extras = set(extras)
    requirement.marker = marker
    return requirement


def _name_from_url(url: str, ctx: _Context) -> str | None:
    """A name for a URL or path without `name @`: the wheel filename, `#egg=`, or the sdist
    filename (pip leaves sdists unnamed until it builds them; safepip never builds to learn a
    name)."""
    filename = _url_filename(url)
    if filename.lower().endswith(".whl") and not _is_vcs_url(url):
        try:
            return parse_wheel_filename(filename)[0]
        except InvalidWheelFilename as exc:
            ctx.error(
                f"Invalid wheel filename `{filename}`: {exc}",
                column=ctx.offset,
                width=len(url),
            )
    egg = _egg_name(url)
    if egg is not None:
        if not _PROJECT_NAME_RE.fullmatch(egg):
            ctx.error(
                f"Invalid `#egg=` fragment `{egg}`: it must be a project name",
                column=ctx.offset,
                width=len(url),
                hint="Write the requirement as `name @ url` instead",
            )
        return egg
    if _is_archive(filename) and not _is_vcs_url(url):
        try:
            name = parse_sdist_filename(filename)[0]
        except InvalidSdistFilename:
            return None
        return name if _PROJECT_NAME_RE.fullmatch(name) else None
    return None


MAX_REQUIREMENT = 65_536
"""The longest requirement (name, extras, versions, markers or URL; options not counted)
accepted. packaging's parser costs about 5 µs per token, so a megabyte of extras would take
seconds; no real requirement comes near this (issue 8)."""


def _check_length(text: str, ctx: _Context, start: int) -> None:
    if len(text) > MAX_REQUIREMENT:
        ctx.error(
            f"The requirement is {len(text):,} characters long; safepip accepts at most "
            f"{MAX_REQUIREMENT:,}",
            column=ctx.offset + start,
            width=len(text),
        )


# `name==version`, the line a lock is made of: a PEP 508 name (ending in a letter or digit, so
# the `==` is not part of it) and a version of the characters a specifier can hold. Nothing
# here can be a URL (no `:`), a path (no `/`, no leading `.`) or carry extras or markers.
_PINNED_RE = re.compile(
    r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9][A-Za-z0-9.!+_*-]*)\s*"
)


def _pinned_requirement(text: str) -> Requirement | None:
    """`text` as the `Requirement` packaging's parser would make of it, when it is a plain
    `name==version`; None for anything else (and for what packaging would refuse), which
    then takes the full parser. The full parser costs ~20 µs a line, most of a large lock's
    audit; this ~3 µs (issue 11). A differential test holds the two to the same results."""
    match = _PINNED_RE.fullmatch(text)
    if match is None or _is_archive(text.rstrip()):
        return None
    try:
        specifier = SpecifierSet(f"=={match.group(2)}")
    except InvalidSpecifier:
        return None
    # packaging's own way to make a `Requirement` from parts (`Requirement.__replace__`).
    requirement = Requirement.__new__(Requirement)
    requirement.name = match.group(1)
    requirement.url = None
    requirement.extras = set()
    requirement.specifier = specifier
    requirement.marker = None
    return requirement


def _requirement_from_line(
    text: str,
    ctx: _Context,
    *,
    constraint: bool,
    hashes: frozenset[str],
    config_settings: tuple[tuple[str, str], ...],
) -> ParsedRequirement:
    """pip's `parse_req_from_line`: a URL, a local path or a PEP 508 requirement."""
    _check_length(text.strip(), ctx, len(text) - len(text.lstrip()))
    pinned = _pinned_requirement(text)
    if pinned is not None:
        return _checked(
            ParsedRequirement(
                name=canonicalize_name(pinned.name),
                requirement=pinned,
                url=None,
                editable=False,
                hashes=hashes,
                location=ctx.location,
                constraint=constraint,
                config_settings=config_settings,
            ),
            ctx,
            len(text.rstrip()),
        )
    is_url = _is_url(text)
    # A `;` can be part of a URL, so after a URL only `; ` starts the markers.
    separator = "; " if is_url else ";"
    marker: Marker | None = None
    head = text
    if separator in text:
        head, _, marker_text = text.partition(separator)
        marker = _parse_marker(marker_text, ctx, len(head) + len(separator))
    stripped = head.strip()
    start = len(head) - len(head.lstrip())
    if _URL_LIKE_RE.match(stripped):
        _check_url(stripped, ctx, ctx.offset + start)
    url: str | None = None
    extras: frozenset[str] = frozenset()
    name: str | None = None

    if is_url:
        url = stripped
        if url.lower().startswith("file:") and "../" in url:
            url = _path_to_url(str(file_url_to_path(strip_fragment(url))))
            fragment = _split(stripped).fragment
            url = f"{url}#{fragment}" if fragment else url
        name = _name_from_url(url, ctx)
    else:
        path = os.path.normpath(os.path.join(ctx.cwd, stripped))
        path_extras = ""
        if (split := _split_extras(path)) is not None:
            path, path_extras = split[0].rstrip(), split[1]
        if _looks_like_path(stripped) and _isdir(path):
            if not (
                _isfile(os.path.join(path, "pyproject.toml"))
                or _isfile(os.path.join(path, "setup.py"))
            ):
                ctx.error(
                    f"Directory `{stripped}` is not installable: it has neither "
                    "`pyproject.toml` nor `setup.py`",
                    column=ctx.offset + start,
                    width=len(stripped),
                )
            url = _path_to_url(path)
        elif _is_archive(path):
            before_at, at, _ = stripped.partition("@")
            if _isfile(path):
                url = _path_to_url(path)
            elif not (at and not _looks_like_path(before_at)):
                ctx.error(
                    f"Requirement `{stripped}` looks like a file name, but the file does not exist",
                    column=ctx.offset + start,
                    width=len(stripped),
                    hint=f"Paths are relative to the current directory (`{ctx.cwd}`), not to "
                    "the requirements file",
                )
        if url is not None:
            extras = _extras_of(path_extras, ctx) if path_extras else frozenset()
            name = _name_from_url(url, ctx)

    requirement: Requirement | None
    if url is None:
        requirement = _parse_pep508(head, ctx, 0)
        if marker is not None:
            requirement.marker = marker
        url = requirement.url
        if url is not None:
            _check_url(url, ctx, ctx.offset + max(0, head.find(url)))
        extras = _canonical_extras(requirement.extras)
        marker = requirement.marker
    elif name is not None:
        requirement = _direct_requirement(name, url, extras, marker)
    else:
        requirement = None

    parsed = ParsedRequirement(
        name=canonicalize_name(requirement.name) if requirement else NormalizedName(""),
        requirement=requirement,
        url=url,
        editable=False,
        hashes=hashes,
        location=ctx.location,
        constraint=constraint,
        extras=extras,
        marker=marker,
        config_settings=config_settings,
    )
    return _checked(parsed, ctx, len(text.rstrip()))


def _checked(parsed: ParsedRequirement, ctx: _Context, width: int) -> ParsedRequirement:
    if parsed.constraint:
        _check_constraint(parsed, ctx, width)
    return parsed


def _requirement_from_editable(
    text: str, ctx: _Context, *, config_settings: tuple[tuple[str, str], ...], start: int
) -> ParsedRequirement:
    """pip's `parse_editable`: `name @ url`, a local project directory, or a VCS URL."""
    _check_length(text, ctx, start)
    name: str | None = None
    marker: Marker | None = None
    extras: frozenset[str] = frozenset()
    url: str | None = None
    try:
        direct = Requirement(text)
    except InvalidRequirement:
        direct = None
    if _URL_LIKE_RE.match(text):
        _check_url(text, ctx, start)
    if direct is not None and direct.url:
        _check_url(direct.url, ctx, start)
        name, url, marker = direct.name, direct.url, direct.marker
        extras = _canonical_extras(direct.extras)
    else:
        split = _split_extras(text)
        bare, path_extras = (split[0].rstrip(), split[1]) if split else (text, "")
        local = os.path.join(ctx.cwd, bare)
        if _isdir(local):
            bare = _path_to_url(local)
        if bare.lower().startswith("file:"):
            url = bare
            extras = _extras_of(path_extras, ctx) if path_extras else frozenset()
        else:
            url = text
            for vcs in _VCS:
                if text.lower().startswith(f"{vcs}:"):
                    url = f"{vcs}+{text}"
                    break
            if not _is_vcs_url(url):
                ctx.error(
                    f"`{text}` is not a valid editable requirement",
                    column=start,
                    width=len(text),
                    hint="Use a path to a local project or a VCS URL (`git+https://...`)",
                )
        egg = _egg_name(url)
        if egg is not None and not _PROJECT_NAME_RE.fullmatch(egg):
            ctx.error(
                f"Invalid `#egg=` fragment `{egg}`: it must be a project name",
                column=start,
                width=len(text),
            )
        name = egg
        if name is None and not url.lower().startswith("file:"):
            ctx.error(
                f"Cannot tell the project name of editable `{text}`",
                column=start,
                width=len(text),
                hint="Write it as `name @ url`",
            )
    requirement = _direct_requirement(name, url, extras, marker) if name else None
    return ParsedRequirement(
        name=canonicalize_name(name) if name else NormalizedName(""),
        requirement=requirement,
        url=url,
        editable=True,
        hashes=frozenset(),
        location=ctx.location,
        constraint=False,
        extras=extras,
        marker=marker,
        config_settings=config_settings,
    )


def _check_constraint(parsed: ParsedRequirement, ctx: _Context, width: int) -> None:
    # pip's resolver refuses these forms as constraints (pip issue 8210).
    if not parsed.name:
        ctx.error(
            "Unnamed requirements are not allowed as constraints",
            column=ctx.offset,
            width=width,
            hint="Name the project: `name @ url`",
        )
    if parsed.extras:
        ctx.error(
            "Constraints cannot have extras",
            column=ctx.offset,
            width=width,
            hint="Constrain the project without `[extras]`",
        )


def parse_requirement_line(
    text: str,
    location: SourceLocation,
    *,
    cwd: Path | None = None,
    editable: bool = False,
    constraint: bool = False,
    hashes: frozenset[str] = frozenset(),
    config_settings: tuple[tuple[str, str], ...] = (),
) -> ParsedRequirement:
    """Parse one requirement string: PEP 508 (`name[extras]==1.0; marker`, `name @ url`), a URL
    or local path to a wheel or sdist, a local project directory, or (with `editable`) what `-e`
    accepts.

    Relative paths are taken from `cwd` (default: the current directory), as pip does.
    Raises RequirementsError pointing at `location`.
    """
    text = text.strip()
    column = max(0, location.text.find(text)) if text else 0
    ctx = _Context(location=location, raw=location.text, offset=column, cwd=cwd or Path.cwd())
    if not text:
        ctx.error("Empty requirement", column=None)
    if editable:
        if constraint:
            ctx.error("Editable requirements are not allowed as constraints", column=column)
        return _requirement_from_editable(text, ctx, config_settings=config_settings, start=column)
    return _requirement_from_line(
        text, ctx, constraint=constraint, hashes=hashes, config_settings=config_settings
    )


# --- files ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FileRef:
    target: str
    """An absolute path or a URL: what is read, and the key for cycle detection."""
    display: str
    """The path as the user wrote it (joined to the parent's folder), or the redacted URL."""

    @property
    def is_url(self) -> bool:
        return _SCHEME_RE.match(self.target) is not None

    @property
    def is_remote(self) -> bool:
        return self.is_url and not self.target.lower().startswith("file:")


@dataclass(slots=True)
class _Include:
    """The `-r`/`-c` option that named a file, for errors."""

    location: SourceLocation
    raw: str
    start: int
    end: int


class _Queries:
    """How many times parsing asked the file system whether a path is a file or a folder (a
    parse that did gives no result `parse_requirements` may remember)."""

    count = 0


def _isdir(path: str) -> bool:
    _Queries.count += 1
    return os.path.isdir(path)


def _isfile(path: str) -> bool:
    _Queries.count += 1
    return os.path.isfile(path)


@dataclass(slots=True)
class _Collector:
    fetch: Callable[[str], bytes] | None
    environ: Mapping[str, str]
    cwd: Path
    requirements: list[ParsedRequirement] = field(default_factory=list)
    constraints: list[ParsedRequirement] = field(default_factory=list)
    index_options: list[IndexOption] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    require_hashes: SourceLocation | None = None
    no_require_hashes: SourceLocation | None = None
    pre: bool = False
    prefer_binary: bool = False
    only_binary: set[str] = field(default_factory=set)
    no_binary: set[str] = field(default_factory=set)
    all_releases: set[str] = field(default_factory=set)
    only_final: set[str] = field(default_factory=set)
    # Ordered sets (dicts): a membership test in a list made a long line quadratic.
    trusted_hosts: dict[str, None] = field(default_factory=dict)
    use_features: dict[str, None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    reads: list[tuple[str, bytes]] | None = field(default_factory=list)
    """Every local file read and its bytes; None once a remote file was read."""

    def top_level(self, given: str) -> _FileRef:
        if _SCHEME_RE.match(given):
            return _FileRef(given, redact_url(given))
        return _FileRef(os.path.normpath(os.path.join(self.cwd, given)), given)

    def read(self, ref: _FileRef, include: _Include | None) -> str:
        kind = "requirements"
        if ref.is_remote:
            if self.fetch is None:
                raise self._include_error(
                    f"Cannot read remote {kind} file `{ref.display}`: no network access here",
                    ref,
                    include,
                    hint="Download the file and pass its local path",
                )
            self.reads = None
            try:
                data = self.fetch(ref.target)
            except SafepipError:
                raise
            except OSError as exc:
                raise self._include_error(
                    f"Could not fetch {kind} file `{ref.display}`: {exc}", ref, include
                ) from exc
        else:
            try:
                path = file_url_to_path(ref.target) if ref.is_url else Path(ref.target)
                data = path.read_bytes()
                if self.reads is not None:
                    self.reads.append((str(path), data))
            except (OSError, ValueError) as exc:
                reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
                raise self._include_error(
                    f"Could not open {kind} file `{ref.display}`: {reason}", ref, include
                ) from exc
        return _decode(data, ref.display)

    def _include_error(
        self, message: str, ref: _FileRef, include: _Include | None, *, hint: str | None = None
    ) -> RequirementsError:
        if include is None:
            return RequirementsError(redact_text(message), path=ref.display, hint=hint)
        return _located_error(
            message,
            include.location,
            include.raw,
            column=include.start,
            width=include.end - include.start,
            hint=hint,
        )

    def resolve(self, parent: _FileRef, value: str, include: _Include) -> _FileRef:
        """Where a nested `-r`/`-c` points: URL-joined for URL parents, else relative to the
        parent's folder."""
        if parent.is_url:
            try:
                url = urllib.parse.urljoin(parent.target, value)
            except ValueError as exc:
                raise _located_error(
                    f"Invalid URL `{value}`: {exc}",
                    include.location,
                    include.raw,
                    column=include.start,
                    width=include.end - include.start,
                ) from None
            child = _FileRef(url, redact_url(url))
            if parent.is_remote and not child.is_remote:
                # A downloaded file must not make us read (and send to an index) local files.
                raise _located_error(
                    f"Refusing to read local file `{value}` named by remote requirements file "
                    f"`{parent.display}`",
                    include.location,
                    include.raw,
                    column=include.start,
                    width=include.end - include.start,
                )
            return child
        if _SCHEME_RE.match(value):
            return _FileRef(value, redact_url(value))
        target = os.path.normpath(os.path.join(os.path.dirname(parent.target), value))
        display = os.path.normpath(os.path.join(os.path.dirname(parent.display), value))
        return _FileRef(target, display)

    def parse_file(
        self,
        ref: _FileRef,
        *,
        constraint: bool,
        chain: tuple[_FileRef, ...],
        include: _Include | None,
    ) -> None:
        content = self.read(ref, include)
        chain = (*chain, ref)
        for number, raw in _logical_lines(content, self.environ):
            location = SourceLocation(path=ref.display, line=number, text=redact_text(raw))
            self.parse_line(ref, raw, location, constraint=constraint, chain=chain)

    def parse_line(
        self,
        ref: _FileRef,
        raw: str,
        location: SourceLocation,
        *,
        constraint: bool,
        chain: tuple[_FileRef, ...],
    ) -> None:
        args, options_start = _break_args_options(raw)
        options = self._parse_options(raw, options_start, location)
        has_requirement = bool(args.strip())
        hashes: set[str] = set()
        config_settings: list[tuple[str, str]] = []
        editables: list[_OptionValue] = []
        deferred: list[_OptionValue] = []

        def fail(message: str, option: _OptionValue, hint: str | None = None) -> NoReturn:
            raise _located_error(
                message,
                location,
                raw,
                column=option.start,
                width=option.end - option.start,
                hint=hint,
            )

        for option in options:
            match option.spec.dest:
                case _Dest.HASH:
                    hashes.add(_parse_hash(option, fail))
                case _Dest.CONFIG_SETTINGS:
                    key, sep, value = option.value.partition("=")
                    if not sep:
                        fail(
                            f"`{option.spec.name}` expects `KEY=VALUE`, got `{option.value}`",
                            option,
                        )
                    config_settings.append((key, value))
                case _Dest.EDITABLE:
                    if has_requirement:
                        fail(f"`{option.spec.name}` cannot follow a requirement", option)
                    editables.append(option)
                case _:
                    deferred.append(option)

        if has_requirement:
            ctx = _Context(location=location, raw=raw, offset=0, cwd=self.cwd)
            parsed = _requirement_from_line(
                args,
                ctx,
                constraint=constraint,
                # One empty set for the lines without hashes (216 bytes each otherwise).
                hashes=frozenset(hashes) if hashes else _NO_HASHES,
                config_settings=tuple(config_settings),
            )
            (self.constraints if constraint else self.requirements).append(parsed)
            for option in deferred:
                self.warnings.append(
                    f"`{location}`: `{option.spec.name}` on a line with a requirement is ignored"
                )
            return

        for option in editables:
            ctx = _Context(location=location, raw=raw, offset=0, cwd=self.cwd)
            if constraint:
                fail("Editable requirements are not allowed as constraints", option)
            if hashes:
                self.warnings.append(
                    f"`{location}`: `--hash` on an editable requirement is ignored"
                )
            self.requirements.append(
                _requirement_from_editable(
                    option.value,
                    ctx,
                    config_settings=tuple(config_settings),
                    start=option.value_start,
                )
            )
        if not editables:
            if hashes:
                self.warnings.append(
                    f"`{location}`: `--hash` on a line without a requirement is ignored"
                )
            if config_settings:
                self.warnings.append(
                    f"`{location}`: `--config-settings` on a line without a requirement is ignored"
                )
        self._apply_options(ref, deferred, location, raw, constraint=constraint, chain=chain)

    def _parse_options(self, raw: str, start: int, location: SourceLocation) -> list[_OptionValue]:
        try:
            tokens = _shell_split(raw[start:], start)
        except _SplitError as exc:
            raise _located_error(
                f"Could not split options: {exc.message}", location, raw, column=exc.column
            ) from None
        found: list[_OptionValue] = []
        i = 0
        positional: list[_Token] = []
        while i < len(tokens):
            token = tokens[i]
            i += 1
            word = token.value
            if word == "--":
                positional.extend(tokens[i:])
                break
            if word.startswith("--"):
                name, eq, value = word.partition("=")
                spec = _match_long(name)
                if spec is None:
                    raise self._unknown(name, location, raw, token)
                if not spec.takes_value:
                    if eq:
                        raise _located_error(
                            f"Option `{spec.name}` does not take a value",
                            location,
                            raw,
                            column=token.start,
                            width=token.end - token.start,
                        )
                    found.append(_OptionValue(spec, "", token.start, token.end, token.start))
                elif eq:
                    found.append(
                        _OptionValue(spec, value, token.start, token.end, token.end - len(value))
                    )
                else:
                    if i >= len(tokens):
                        raise self._missing(spec, location, raw, token)
                    found.append(
                        _OptionValue(
                            spec, tokens[i].value, token.start, tokens[i].end, tokens[i].start
                        )
                    )
                    i += 1
            elif word.startswith("-") and word != "-":
                # optparse: `-rfile` and `-r file`; every short option here takes a value.
                spec = _SHORT.get(word[1])
                if spec is None:
                    raise self._unknown(word[:2], location, raw, token)
                if len(word) > 2:
                    found.append(
                        _OptionValue(spec, word[2:], token.start, token.end, token.start + 2)
                    )
                elif i < len(tokens):
                    found.append(
                        _OptionValue(
                            spec, tokens[i].value, token.start, tokens[i].end, tokens[i].start
                        )
                    )
                    i += 1
                else:
                    raise self._missing(spec, location, raw, token)
            else:
                positional.append(token)
        if positional:
            # pip drops such words silently; a requirement lost that way is worse than an error.
            first = positional[0]
            raise _located_error(
                f"Unexpected argument `{first.value}` after an option",
                location,
                raw,
                column=first.start,
                width=first.end - first.start,
                hint="Put a requirement first on its line (options after it), one option value "
                "per option, and quote values that contain spaces",
            )
        return found

    @staticmethod
    def _unknown(name: str, location: SourceLocation, raw: str, token: _Token) -> RequirementsError:
        ambiguous = sorted({_LONG[f].name for f in _LONG if f.startswith(name)})
        message = (
            f"Ambiguous option `{name}` (could be {', '.join(f'`{a}`' for a in ambiguous)})"
            if len(ambiguous) > 1
            else f"Unknown option `{name}`"
        )
        return _located_error(
            message,
            location,
            raw,
            column=token.start,
            width=min(len(name), token.end - token.start),
            hint=_OPTIONS_HINT,
        )

    @staticmethod
    def _missing(
        spec: _Spec, location: SourceLocation, raw: str, token: _Token
    ) -> RequirementsError:
        return _located_error(
            f"Option `{spec.name}` requires a value",
            location,
            raw,
            column=token.start,
            width=token.end - token.start,
        )

    def _apply_options(
        self,
        ref: _FileRef,
        options: list[_OptionValue],
        location: SourceLocation,
        raw: str,
        *,
        constraint: bool,
        chain: tuple[_FileRef, ...],
    ) -> None:
        # pip applies a line's index options in this order whatever order they were written in:
        # --no-index, then --index-url (the last one wins), then each --extra-index-url.
        index_url: str | None = None
        extra: list[str] = []
        for option in options:
            value = option.value
            match option.spec.dest:
                case _Dest.INDEX_URL:
                    index_url = value
                case _Dest.EXTRA_INDEX_URL:
                    extra.append(value)
                case _Dest.NO_INDEX:
                    self.index_options.append(
                        IndexOption(kind=IndexDirective.NO_INDEX, url=None, location=location)
                    )
                case _Dest.REQUIREMENT | _Dest.CONSTRAINT:
                    include = _Include(location, raw, option.value_start, option.end)
                    child = self.resolve(ref, value, include)
                    self._recurse(
                        child,
                        # A `-r` inside a `-c` file is read as requirements, like pip.
                        constraint=option.spec.dest is _Dest.CONSTRAINT,
                        chain=chain,
                        include=include,
                    )
                case _Dest.FIND_LINKS:
                    try:
                        self.find_links.append(_find_links_entry(ref, value))
                    except ValueError as exc:
                        raise _located_error(
                            f"Invalid URL `{value}`: {exc}",
                            location,
                            raw,
                            column=option.value_start,
                            width=option.end - option.value_start,
                        ) from None
                case _Dest.NO_BINARY | _Dest.ONLY_BINARY:
                    target, other = (
                        (self.no_binary, self.only_binary)
                        if option.spec.dest is _Dest.NO_BINARY
                        else (self.only_binary, self.no_binary)
                    )
                    self._format_control(
                        option=option,
                        value=value,
                        target=target,
                        other=other,
                        location=location,
                        raw=raw,
                    )
                case _Dest.ALL_RELEASES | _Dest.ONLY_FINAL:
                    target, other = (
                        (self.all_releases, self.only_final)
                        if option.spec.dest is _Dest.ALL_RELEASES
                        else (self.only_final, self.all_releases)
                    )
                    self._format_control(
                        option=option,
                        value=value,
                        target=target,
                        other=other,
                        location=location,
                        raw=raw,
                    )
                case _Dest.PREFER_BINARY:
                    self.prefer_binary = True
                case _Dest.REQUIRE_HASHES:
                    self.require_hashes = self.require_hashes or location
                case _Dest.NO_REQUIRE_HASHES:
                    self.no_require_hashes = self.no_require_hashes or location
                case _Dest.PRE:
                    self.pre = True
                case _Dest.TRUSTED_HOST:
                    self.trusted_hosts.setdefault(value)
                case _Dest.USE_FEATURE:
                    self.use_features.setdefault(value)
                case _Dest.HASH | _Dest.CONFIG_SETTINGS | _Dest.EDITABLE:
                    pass  # handled with the requirement
                case _:
                    _assert_never(option.spec.dest)
        if index_url is not None:
            self.index_options.append(
                IndexOption(kind=IndexDirective.INDEX_URL, url=index_url, location=location)
            )
        for url in extra:
            self.index_options.append(
                IndexOption(kind=IndexDirective.EXTRA_INDEX_URL, url=url, location=location)
            )

    @staticmethod
    def _format_control(
        *,
        option: _OptionValue,
        value: str,
        target: set[str],
        other: set[str],
        location: SourceLocation,
        raw: str,
    ) -> None:
        try:
            update_format_control(value, target, other)
        except ValueError as exc:
            raise _located_error(
                f"Option `{option.spec.name}` {exc}",
                location,
                raw,
                column=option.start,
                width=option.end - option.start,
            ) from None

    def _recurse(
        self,
        child: _FileRef,
        *,
        constraint: bool,
        chain: tuple[_FileRef, ...],
        include: _Include,
    ) -> None:
        if any(seen.target == child.target for seen in chain):
            names = " -> ".join(f"`{seen.display}`" for seen in (*chain, child))
            raise _located_error(
                f"Requirements file `{child.display}` includes itself: {names}",
                include.location,
                include.raw,
                column=include.start,
                width=include.end - include.start,
                hint="Remove the `-r`/`-c` line that closes the cycle",
            )
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise _located_error(
                f"Requirements files are nested more than {MAX_INCLUDE_DEPTH} levels deep",
                include.location,
                include.raw,
                column=include.start,
                width=include.end - include.start,
            )
        self.parse_file(child, constraint=constraint, chain=chain, include=include)

    def result(self) -> ParsedRequirements:
        if self.require_hashes is not None and self.no_require_hashes is not None:
            location = self.no_require_hashes
            raise RequirementsError(
                "`--require-hashes` and `--no-require-hashes` cannot be used together",
                path=location.path,
                line=location.line,
                text=location.text,
                hint=f"`--require-hashes` is set at `{self.require_hashes}`",
            )
        return ParsedRequirements(
            requirements=tuple(self.requirements),
            constraints=tuple(self.constraints),
            index_options=tuple(self.index_options),
            find_links=tuple(self.find_links),
            require_hashes=self.require_hashes is not None,
            no_require_hashes=self.no_require_hashes is not None,
            pre=self.pre,
            prefer_binary=self.prefer_binary,
            only_binary=frozenset(self.only_binary),
            no_binary=frozenset(self.no_binary),
            all_releases=frozenset(self.all_releases),
            only_final=frozenset(self.only_final),
            trusted_hosts=tuple(self.trusted_hosts),
            use_features=tuple(self.use_features),
            warnings=tuple(self.warnings),
        )


def _parse_hash(
    option: _OptionValue, fail: Callable[[str, _OptionValue, str | None], NoReturn]
) -> str:
    algorithm, sep, digest = option.value.partition(":")
    algorithm = algorithm.lower()
    if not sep:
        fail(
            f"`--hash` expects `<algorithm>:<hex digest>`, got `{option.value}`",
            option,
            "Write it like `--hash=sha256:<64 hex digits>`",
        )
    if algorithm not in HEX_LENGTHS:
        fail(
            f"Unsupported hash algorithm `{algorithm}` in `--hash`",
            option,
            "pip accepts `sha256`, `sha384` and `sha512`",
        )
    expected = HEX_LENGTHS[algorithm]
    if not _HEX_RE.fullmatch(digest) or len(digest) != expected:
        fail(
            f"Invalid {algorithm} digest `{digest}` in `--hash`: expected {expected} hex digits",
            option,
            None,
        )
    return f"{algorithm}:{digest.lower()}"


def _find_links_entry(ref: _FileRef, value: str) -> str:
    """`--find-links` values: URLs as they are, paths relative to the file's folder (joined to
    the file's URL for a remote file)."""
    if "://" in value or value.lower().startswith("file:"):
        return value
    if ref.is_url:
        return urllib.parse.urljoin(ref.target, value)
    return os.path.normpath(os.path.join(os.path.dirname(ref.target), value))


_COMMAND_LINE_OPTIONS = re.compile(r"\s--(hash|config-settings)[=\s]")


def _refuse_file_argument(text: str, location: SourceLocation, cwd: Path) -> None:
    """`safepip install requirements.txt`, the `-r` forgotten: pip would look for a project
    named `requirements-txt` on the index; say what was meant instead. Only for an existing
    file whose name has a dot or a slash (a bare `six` is the project, file or not) and that
    is not a distribution file (`./pkg-1.0-py3-none-any.whl` installs that wheel)."""
    given = text.strip()
    if not ("." in given or "/" in given) or _is_archive(given) or _is_url(given):
        return
    path = Path(given) if os.path.isabs(given) else cwd / given
    if not _isfile(str(path)):
        return
    raise RequirementsError(
        f"`{given}` is a file, not a requirement",
        path=location.path,
        line=location.line,
        text=location.text,
        column=0,
        width=len(given),
        hint=f"did you mean `-r {given}`? (`-r FILE` reads the requirements a file lists)",
    )


def parse_requirements(
    files: Sequence[str] = (),
    constraints: Sequence[str] = (),
    lines: Sequence[str] = (),
    *,
    editables: Sequence[str] = (),
    fetch: Callable[[str], bytes] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ParsedRequirements:
    """Read requirements (`-r`) and constraints (`-c`) files and requirement arguments.

    Follows pip's requirements-file format, in pip's order: constraints files, then arguments
    (`lines`, then `editables`), then requirements files. `files` and `constraints` may be paths
    (relative to `cwd`) or `http(s)://`/`file:` URLs; remote files are read with `fetch(url)`,
    which enforces the host policy (without it a remote file is an error). `${VAR}`s expand
    from `environ` (default: `os.environ`).

    Syntax errors, unknown options, include cycles and undecodable files raise
    RequirementsError pointing at the file, line and the part that is wrong. Nothing is
    resolved, downloaded (other than requirements files) or hash-checked here.
    """
    environ = os.environ if environ is None else environ
    base = (cwd or Path.cwd()).absolute()
    key: tuple[object, ...] | None = None
    if not lines and not editables:
        key = (tuple(files), tuple(constraints), str(base), tuple(sorted(environ.items())))
        known = _remembered.get(key)
        if known is not None and all(_reads_the_same(path, data) for path, data in known[0]):
            return known[1]
    queries = _Queries.count
    collector = _Collector(fetch=fetch, environ=environ, cwd=base)
    for given in constraints:
        ref = collector.top_level(given)
        collector.parse_file(ref, constraint=True, chain=(), include=None)
    for number, text in enumerate(lines, start=1):
        location = SourceLocation(path=COMMAND_LINE, line=number, text=redact_text(text.strip()))
        if _COMMAND_LINE_OPTIONS.search(text):
            # safepip (unlike pip) accepts per-requirement options in an argument, so that
            # `safepip install "name==1.0 --hash=sha256:…"` works like a requirements-file line.
            ref = _FileRef(str(collector.cwd / COMMAND_LINE), COMMAND_LINE)
            collector.parse_line(ref, text.strip(), location, constraint=False, chain=())
            continue
        _refuse_file_argument(text, location, collector.cwd)
        collector.requirements.append(parse_requirement_line(text, location, cwd=collector.cwd))
    for number, text in enumerate(editables, start=len(lines) + 1):
        location = SourceLocation(path=COMMAND_LINE, line=number, text=redact_text(text.strip()))
        collector.requirements.append(
            parse_requirement_line(text, location, cwd=collector.cwd, editable=True)
        )
    for given in files:
        ref = collector.top_level(given)
        collector.parse_file(ref, constraint=False, chain=(), include=None)
    result = collector.result()
    if key is not None and collector.reads is not None and _Queries.count == queries:
        if len(_remembered) >= 8:
            _remembered.clear()
        _remembered[key] = (tuple(collector.reads), result)
    return result


_remembered: dict[tuple[object, ...], tuple[tuple[tuple[str, bytes], ...], ParsedRequirements]] = {}
"""Results of this process by their arguments, with every file each read and its bytes. The
result is a function of those alone when no remote file was read and no path was looked at,
so when every file reads the same again, parsing again would give it: the check after an
install (`safepip.fastpath`) reads the requirements files afresh but does not parse them again."""


def _reads_the_same(path: str, data: bytes) -> bool:
    try:
        return Path(path).read_bytes() == data
    except OSError:
        return False
