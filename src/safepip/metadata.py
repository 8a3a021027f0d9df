"""Core metadata (`METADATA`, PEP 658 `.metadata`) read exactly as pip reads it.

pip reads core metadata with `email.parser` (RFC 822 rules, `compat32` policy), and so does
`packaging.metadata`. Those rules decide which lines belong to the header block, and getting them
wrong drops dependencies silently: the header block ends at the first *empty* line or at a line
that is neither a field nor a continuation; a line of only spaces or tabs is a continuation of
the previous field, not the end (matplotlib 3.11.2's `License` field has such lines, and every
`Requires-Dist` after it would be lost). This module reproduces those rules without building an
`email.message.Message`, which costs several times more on large files; a differential test
compares it with `packaging.metadata` on a corpus of real files.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any

from safepip.errors import SafepipError

# A header-block line as `email.feedparser` recognises one: a field (printable ASCII up to the
# first colon, no spaces), a continuation (leading space or tab), or a `From ` envelope line.
# The block is the longest run of such lines; the line after it is either empty (the separator,
# dropped) or the first line of the body.
_HEADER_BLOCK = re.compile(r"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\r\n]*(?:\r\n|\r|\n|\Z))*")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_SEPARATOR = re.compile(r"\r\n|\r|\n")

# pip's installation report writes these fields, in this order (pip `_internal/metadata/_json.py`,
# itself the JSON form of PEP 566): (field, may repeat).
_JSON_FIELDS: tuple[tuple[str, bool], ...] = (
    ("Metadata-Version", False),
    ("Name", False),
    ("Version", False),
    ("Dynamic", True),
    ("Platform", True),
    ("Supported-Platform", True),
    ("Summary", False),
    ("Description", False),
    ("Description-Content-Type", False),
    ("Keywords", False),
    ("Home-page", False),
    ("Download-URL", False),
    ("Author", False),
    ("Author-email", False),
    ("Maintainer", False),
    ("Maintainer-email", False),
    ("License", False),
    ("License-Expression", False),
    ("License-File", True),
    ("Classifier", True),
    ("Requires-Dist", True),
    ("Requires-Python", False),
    ("Requires-External", True),
    ("Project-URL", True),
    ("Provides-Extra", True),
    ("Provides-Dist", True),
    ("Obsoletes-Dist", True),
)


class MetadataError(SafepipError):
    """A distribution's core metadata cannot be used."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CoreMetadata:
    """The fields of one METADATA file, in file order, with values as `email.parser` gives them.

    A value keeps its continuation lines (newline and indentation included), as pip sees it;
    the accessors for the fields safepip acts on strip surrounding whitespace, as pip does.
    Nothing here validates the values: `Requires-Dist` lines are parsed where they are used.
    """

    fields: tuple[tuple[str, str], ...]
    """(field name as written, value) pairs."""
    description: str
    """The body after the header block (the long description), `""` when there is none."""

    def get_all(self, field: str) -> list[str]:
        """Every value of a field (names compare case-insensitively), in file order."""
        key = field.lower()
        return [value for name, value in self.fields if name.lower() == key]

    def get(self, field: str) -> str | None:
        """The first value of a field, as `email.message.Message.get` returns it."""
        key = field.lower()
        for name, value in self.fields:
            if name.lower() == key:
                return value
        return None

    @property
    def name(self) -> str:
        return (self.get("Name") or "").strip()

    @property
    def version(self) -> str:
        return (self.get("Version") or "").strip()

    @property
    def requires_dist(self) -> list[str]:
        return [value.strip() for value in self.get_all("Requires-Dist")]

    @property
    def requires_python(self) -> str | None:
        value = self.get("Requires-Python")
        return value.strip() if value is not None and value.strip() else None

    @property
    def provides_extra(self) -> list[str]:
        return [value.strip() for value in self.get_all("Provides-Extra")]

    def to_json(self) -> dict[str, Any]:
        """The metadata as pip's installation report writes it (PEP 566 JSON form).

        pip reads metadata through `importlib.metadata`, which re-indents multi-line values
        (continuation lines lose their common indentation; whitespace-only lines become empty),
        so the values here are re-indented the same way.
        """
        result: dict[str, Any] = {}
        for field, multiple in _JSON_FIELDS:
            values = [_redent(value) for value in self.get_all(field)]
            if not values:
                continue
            key = field.lower().replace("-", "_")
            if multiple:
                result[key] = values
            elif key == "keywords":
                # pip accepts both separators, for old data
                keywords = values[0]
                if "," in keywords:
                    result[key] = [word.strip() for word in keywords.split(",")]
                else:
                    result[key] = keywords.split()
            else:
                result[key] = values[0]
        if self.description:
            result["description"] = self.description
        return result


def parse_metadata(data: bytes | str) -> CoreMetadata:
    """Parse a METADATA / PKG-INFO / `.metadata` file with `email.parser`'s header rules.

    Bytes are decoded as UTF-8 (the core metadata specification's encoding); bytes that are not
    UTF-8 are kept as U+FFFD rather than refused, since pip reads such files too.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    block = _HEADER_BLOCK.match(text)
    end = block.end() if block is not None else 0
    fields: list[tuple[str, str]] = []
    lines = _LINE.findall(text, 0, end)
    name: str | None = None
    value: list[str] = []
    pushed_back = ""
    for number, line in enumerate(lines):
        if line[0] in " \t":
            # A continuation; one before any field, or after a line that was dropped, is
            # dropped too (email's FirstHeaderLineIsContinuationDefect).
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            fields.append((name, _joined(value)))
            name, value = None, []
        if line.startswith("From "):
            if number == len(lines) - 1 and number > 0:
                # email treats a trailing envelope-like line as the first line of the body
                pushed_back = line
            continue
        colon = line.find(":")
        if colon <= 0:  # a line starting with `:` names no field: dropped
            continue
        name, value = line[:colon], [line[colon + 1 :]]
    if name is not None:
        fields.append((name, _joined(value)))
    separator = _SEPARATOR.match(text, end)
    body = pushed_back + text[separator.end() if separator is not None else end :]
    return CoreMetadata(fields=tuple(fields), description=body)


def _redent(value: str) -> str:
    """`importlib.metadata`'s correction for RFC 822 indentation of a multi-line value."""
    if "\n" not in value:
        return value
    return textwrap.dedent(" " * 8 + value)


def _joined(lines: list[str]) -> str:
    """A field's value as `email.policy.compat32` builds it: the first line without its leading
    blanks, the continuation lines as written, and no final line break."""
    return (lines[0].lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")
