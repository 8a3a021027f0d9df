"""OSV records for the PyPI ecosystem: parsing, range evaluation and merging of matches.

Implements the OSV schema's rules (https://ossf.github.io/osv-schema/): a version is affected when
it is in an entry's `versions` list or inside one of its `ECOSYSTEM` ranges; range events are
sorted by PEP 440 version before the walk; withdrawn records never match.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from packaging.utils import NormalizedName, canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

ECOSYSTEM = "PyPI"
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")

# Ties between events at the same version: `introduced` first, so that `introduced: X` followed
# by `fixed: X` describes an empty range whatever order the record lists them in.
_KIND_ORDER = {"introduced": 0, "last_affected": 1, "fixed": 1, "limit": 2}


@functools.lru_cache(maxsize=8192)
def parse_version(text: str) -> Version | None:
    """`text` as a PEP 440 version, or None when it is not one (the data has `2.9.0-NA`)."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


class _Prepared:
    """An `Affected` entry's ranges and versions in the form matching needs, built on first use.

    Parsing and sorting range events, and comparing a version with every listed version, was
    most of an audit's time (issues 11 and 14); an entry is prepared once per run, however many
    pins it is matched against, and remembers its verdict for each version it was asked about
    (the fix candidates of one package's pins are mostly the same versions). What the `versions`
    list needs is built only when a version is not inside a range (an entry often lists every
    version its ranges cover).
    """

    __slots__ = ("_listed", "range_fixes", "ranges", "verdicts", "versions")

    def __init__(self, entry: Affected) -> None:
        self.ranges = tuple(_prepare_range(rng) for rng in entry.ranges)
        self.range_fixes = tuple(_sorted_fixes(frozenset(_fixes((rng,)))) for rng in entry.ranges)
        """Each range's `fixed` versions, sorted (`Match.fix_versions` when it alone matches)."""
        self.versions = entry.versions
        self.verdicts: dict[str, bool] = {}
        self._listed: tuple[frozenset[str], frozenset[Version], int] | None = None

    def _listed_forms(self) -> tuple[frozenset[str], frozenset[Version], int]:
        # A listed version equals a pin when they compare equal as PEP 440 versions (`1.0` is
        # `1.0.0`). Most listed strings are plain normalised versions: those are found by
        # spelling the pin's key with trailing `.0`s (`lists`). Only the others are parsed,
        # found by one regular-expression pass over all of them.
        versions = self.versions
        joined = "\n".join(versions)
        if joined.count("\n") != len(versions) - 1:
            odd = list(versions)
        elif _NUMBERS_ONLY.fullmatch(joined):
            odd = []  # `1.2.0`-style releases only (a cheap test that saves the pass below)
        else:
            odd = _NOT_PLAIN.findall(joined)
        other = frozenset(p for v in odd if (p := parse_version(v)) is not None)
        self._listed = (frozenset(versions), other, max(map(len, versions), default=0))
        return self._listed

    def lists(self, raw: str, version: Version | None) -> bool:
        """True if the entry's `versions` name `raw` (as a string, or as a PEP 440 version)."""
        if not self.versions:
            return False
        raw_set, other, longest = self._listed or self._listed_forms()
        if raw in raw_set:
            return True
        if version is None:
            return False
        if version in other:  # `Version` hashes by its normalised key
            return True
        if version.epoch or version.local is not None:
            return False  # never equal to a plain version
        plain = _PLAIN_VERSION.fullmatch(version_key(version))
        if plain is None:  # pragma: no cover - a key without epoch or local is plain
            return False
        release, rest = plain.group(1), plain.group(2)
        spelling = release + rest
        while len(spelling) <= longest:
            if spelling in raw_set:
                return True
            release += ".0"
            spelling = release + rest
        return False


def prepare_listed(entries: Iterable[Affected]) -> None:
    """Prepare the `versions` lists of one package's entries together.

    The entries of one package list mostly the same versions (each advisory of a project
    lists its releases again): the strings that are not plain normalised versions are found
    in one pass over the distinct strings rather than one pass per entry, which was a fifth
    of a 10,000-pin audit (issue 11). Entries already prepared are left as they are.
    """
    pending = [p for e in entries if e.versions and (p := e.prepared)._listed is None]
    if not pending:
        return
    distinct: set[str] = set().union(*(p.versions for p in pending))
    joined = "\n".join(distinct)
    odd: set[str]
    if joined.count("\n") != len(distinct) - 1:
        odd = distinct
    elif _NUMBERS_ONLY.fullmatch(joined):
        odd = set()
    else:
        odd = set(_NOT_PLAIN.findall(joined))
    # The longest string of the package bounds the spellings `lists` tries for every entry:
    # a bound above an entry's own longest string only costs a spelling more.
    longest = max(map(len, distinct), default=0)
    for prepared in pending:
        raw = frozenset(prepared.versions)
        other = frozenset(v for s in raw & odd if (v := parse_version(s)) is not None)
        prepared._listed = (raw, other, longest)


# A normalised version without epoch or local part (`1.2.0`, `2.0rc1`, `1.0.post2.dev3`).
_NUMBER = r"(?:0|[1-9][0-9]*)"
_PLAIN = (
    rf"({_NUMBER}(?:\.{_NUMBER})*)"
    rf"((?:(?:a|b|rc){_NUMBER})?(?:\.post{_NUMBER})?(?:\.dev{_NUMBER})?)"
)
_PLAIN_VERSION = re.compile(_PLAIN)
# Lines of plain releases (numbers without leading zeros, joined by single dots).
_NUMBERS_ONLY = re.compile(r"(?:(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*(?:\n|\Z))*")
_NOT_PLAIN = re.compile(
    rf"^(?!{_PLAIN.replace('(', '(?:').replace('(?:?:', '(?:')}$).*$", re.MULTILINE
)


@functools.lru_cache(maxsize=8192)
def version_key(version: Version) -> str:
    """A string equal for two versions exactly when they compare equal (PEP 440)."""
    return canonicalize_version(version, strip_trailing_zero=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class Affected:
    """One `affected[]` entry of a record, for one PyPI package."""

    name: NormalizedName
    ranges: tuple[tuple[tuple[str, str], ...], ...]
    """The `ECOSYSTEM` ranges, each a tuple of `(kind, value)` events as listed in the record."""
    versions: tuple[str, ...]
    _prepared: list[_Prepared] = field(
        default_factory=list, init=False, repr=False, compare=False, hash=False
    )

    @property
    def prepared(self) -> _Prepared:
        if not self._prepared:
            self._prepared.append(_Prepared(self))
        return self._prepared[0]


@dataclass(frozen=True, kw_only=True, slots=True)
class Advisory:
    """An OSV record reduced to what matching and reporting need."""

    id: str
    aliases: tuple[str, ...]
    """Sorted, without duplicates."""
    summary: str
    details: str
    affected: tuple[Affected, ...]
    withdrawn: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Match:
    """An advisory that affects a given version, with the fixes its matching ranges name."""

    advisory: Advisory
    fix_versions: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class MergedMatch:
    """Matches of one package that describe one flaw (they share an id or alias)."""

    id: str
    aliases: tuple[str, ...]
    """Every other id and alias of the merged records, sorted."""
    fix_versions: tuple[str, ...]
    """PEP 440 order; strings that are not PEP 440 last."""
    summary: str
    details: str
    advisories: tuple[Advisory, ...]
    """The merged records."""


class InvalidRecord(ValueError):
    """A JSON document that is not an OSV record safepip can use; the message says why."""


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRecord(f"`{what}` is not a list")
    return value


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRecord(f"`{what}` is not an object")
    return value


def parse_record(record: object) -> Advisory:
    """Read an OSV record (or safepip's compact form of one, which is a subset of the schema).

    Only `affected` entries of the PyPI ecosystem (or without an ecosystem, as in the compact form)
    are kept, and only their `ECOSYSTEM` ranges: `GIT` ranges name commits, not releases.
    Raises `InvalidRecord` for a document that is not OSV-shaped (no `id`, `affected` that is
    not a list, ...), so that a reader can name the file and go on.
    """
    if not isinstance(record, dict):
        raise InvalidRecord("the record is not an object")
    rid = record.get("id")
    if not isinstance(rid, str) or not rid:
        raise InvalidRecord("the record has no `id`")
    affected: list[Affected] = []
    for entry in _list(record.get("affected"), "affected"):
        entry = _object(entry, "affected[]")
        package = _object(entry.get("package") or {}, "affected[].package")
        if package.get("ecosystem", ECOSYSTEM) != ECOSYSTEM or not package.get("name"):
            continue
        ranges: list[tuple[tuple[str, str], ...]] = []
        for rng in _list(entry.get("ranges"), "affected[].ranges"):
            rng = _object(rng, "affected[].ranges[]")
            if rng.get("type") != "ECOSYSTEM":
                continue
            events: list[tuple[str, str]] = []
            for event in _list(rng.get("events"), "affected[].ranges[].events"):
                event = _object(event, "affected[].ranges[].events[]")
                events.extend(
                    (kind, str(value)) for kind, value in event.items() if kind in _KIND_ORDER
                )
            ranges.append(tuple(events))
        affected.append(
            Affected(
                name=canonicalize_name(str(package["name"])),
                ranges=tuple(ranges),
                versions=tuple(map(str, _list(entry.get("versions"), "affected[].versions"))),
            )
        )
    return Advisory(
        id=rid,
        aliases=tuple(sorted({str(a) for a in _list(record.get("aliases"), "aliases")})),
        summary=str(record.get("summary") or ""),
        details=str(record.get("details") or ""),
        affected=tuple(affected),
        withdrawn=bool(record.get("withdrawn")),
    )


def _sort_key(event: tuple[str, Version | None]) -> tuple[int, Version | None, int]:
    kind, version = event
    # `introduced: "0"` means "from the first release"; `Version("0")` would sort above
    # pre-releases such as `0.0.0.dev1`, so it gets its own slot before every version.
    if version is None:
        return (0, None, 0)
    return (1, version, _KIND_ORDER[kind])


def _parsed_events(events: Iterable[tuple[str, str]]) -> list[tuple[str, Version | None]]:
    parsed: list[tuple[str, Version | None]] = []
    for kind, value in events:
        if kind == "introduced" and value == "0":
            parsed.append((kind, None))
            continue
        version = parse_version(value)
        if version is not None:  # values that are not PEP 440 cannot be placed: skip them
            parsed.append((kind, version))
    return parsed


_Range = tuple[tuple[tuple[str, "Version | None"], ...], tuple["Version | None", ...]]


def _prepare_range(events: Sequence[tuple[str, str]]) -> _Range:
    parsed = _parsed_events(e for e in events if e[0] != "limit")
    parsed.sort(key=_sort_key)
    limits = tuple(parse_version(v) for k, v in events if k == "limit" and v != "*")
    return tuple(parsed), limits


def range_contains(events: Sequence[tuple[str, str]], version: Version) -> bool:
    """True if `version` lies inside the `ECOSYSTEM` range described by `events`.

    Events are sorted by PEP 440 version, then walked from "not affected": `introduced` at or
    below the version turns it on, `fixed` at or below and `last_affected` strictly below turn it
    off. When the range has `limit` events, only versions below one of them can be affected.
    """
    return _in_range(_prepare_range(events), version)


def _in_range(prepared: _Range, version: Version) -> bool:
    parsed, limits = prepared
    if limits and not any(limit is not None and version < limit for limit in limits):
        return False
    affected = False
    for kind, value in parsed:
        if kind == "introduced":
            if value is None or version >= value:
                affected = True
        elif value is None:
            continue
        elif kind == "fixed":
            if version >= value:
                affected = False
        elif kind == "last_affected" and version > value:
            affected = False
    return affected


def versions_add_to_ranges(entry: Affected) -> bool:
    """True if `entry.versions` can match a version that the entry's ranges do not: it names
    a PEP 440 version outside every range, or a string that is not PEP 440 (matched as a
    string). When False the list changes nothing about matching: a listed version is only
    consulted for a version outside the ranges, and then gives no match."""
    ranges = entry.prepared.ranges
    for value in entry.versions:
        version = parse_version(value)
        if version is None or not any(_in_range(ready, version) for ready in ranges):
            return True
    return False


def _fixes(ranges: Iterable[Sequence[tuple[str, str]]]) -> list[str]:
    return [value for rng in ranges for kind, value in rng if kind == "fixed"]


def match_advisory(advisory: Advisory, name: NormalizedName, raw_version: str) -> Match | None:
    """The match of `advisory` against `name==raw_version`, or None if it does not apply.

    `raw_version` need not be PEP 440: such a version is compared with the `versions` lists as a
    string, and cannot be inside any range.
    """
    if advisory.withdrawn:
        return None
    version = parse_version(raw_version)
    matched = False
    # The sorted fixes of each range or list that matched: one of them is the common case,
    # and then it is the answer as it is.
    found: list[tuple[str, ...]] = []
    unsorted = False
    for entry in advisory.affected:
        if entry.name != name:
            continue
        prepared = entry.prepared
        hit = False
        if version is not None:
            for ready, fixes in zip(prepared.ranges, prepared.range_fixes, strict=True):
                if _in_range(ready, version):
                    found.append(fixes)
                    hit = True
        if not hit and prepared.lists(raw_version, version):
            hit = unsorted = True
            # Listed by version only: the fixes worth naming are those above this version.
            found.append(
                tuple(
                    fix
                    for fix in _fixes(entry.ranges)
                    if version is None or ((parsed := parse_version(fix)) and parsed > version)
                )
            )
        prepared.verdicts[raw_version] = hit
        matched = matched or hit
    if not matched:
        return None
    if len(found) == 1 and not unsorted:
        return Match(advisory=advisory, fix_versions=found[0])
    fix_versions = _sorted_fixes(frozenset(f for fixes in found for f in fixes))
    return Match(advisory=advisory, fix_versions=fix_versions)


def affects(advisory: Advisory, name: NormalizedName, raw_version: str) -> bool:
    """`match_advisory(...) is not None`, without collecting the fixes (and remembered per
    entry and version: fix targets ask about the same candidate versions again and again)."""
    if advisory.withdrawn:
        return False
    for entry in advisory.affected:
        if entry.name != name:
            continue
        prepared = entry.prepared
        verdict = prepared.verdicts.get(raw_version)
        if verdict is None:
            version = parse_version(raw_version)
            verdict = (
                version is not None and any(_in_range(ready, version) for ready in prepared.ranges)
            ) or prepared.lists(raw_version, version)
            prepared.verdicts[raw_version] = verdict
        if verdict:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _sorted_fixes(fixes: frozenset[str]) -> tuple[str, ...]:
    # One advisory gives the same fixes to most of the pins it matches: sort them once.
    return sort_versions(fixes)


def sort_versions(values: Iterable[str]) -> tuple[str, ...]:
    """PEP 440 order, strings that are not versions last (alphabetically)."""
    parsed = sorted((p, v) for v in values if (p := parse_version(v)) is not None)
    bad = sorted(v for v in values if parse_version(v) is None)
    return (*(v for _, v in parsed), *bad)


def smallest_fix_above(fix_versions: Iterable[str], raw_version: str) -> str | None:
    """The smallest fix version greater than `raw_version` (which may be on another branch)."""
    current = parse_version(raw_version)
    if current is None:
        return None
    above = [(p, f) for f in fix_versions if (p := parse_version(f)) is not None and p > current]
    return min(above)[1] if above else None


def _primary_id(ids: Iterable[str]) -> str:
    # The PyPA database's own ids first, so that a finding is named the same way whichever of
    # its duplicates matched; then a stable order.
    return min(ids, key=lambda i: (not i.startswith("PYSEC-"), i))


def merge_matches(matches: Sequence[Match]) -> list[MergedMatch]:
    """Group matches that share an id or alias into one finding each (union-find on ids)."""
    every = [n for m in matches for n in (m.advisory.id, *m.advisory.aliases)]
    if len(set(every)) == len(every):
        # No two matches share a name (the common case): one finding per match, as the
        # union-find below would make, without it.
        return sorted(
            (
                MergedMatch(
                    id=m.advisory.id,
                    aliases=m.advisory.aliases,
                    fix_versions=m.fix_versions,
                    summary=m.advisory.summary,
                    details=m.advisory.details,
                    advisories=(m.advisory,),
                )
                for m in matches
            ),
            key=lambda m: m.id,
        )
    return merge_by_union(matches)


def merge_by_union(matches: Sequence[Match]) -> list[MergedMatch]:
    """`merge_matches` for any matches: union-find over every id and alias."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for match in matches:
        root = find(match.advisory.id)
        for alias in match.advisory.aliases:
            other = find(alias)
            if other != root:
                parent[other] = root
    groups: dict[str, list[Match]] = {}
    for match in matches:
        groups.setdefault(find(match.advisory.id), []).append(match)
    merged: list[MergedMatch] = []
    for group in groups.values():
        ids = {m.advisory.id for m in group}
        primary_id = _primary_id(ids)
        primary = next(m.advisory for m in group if m.advisory.id == primary_id)
        names = ids | {a for m in group for a in m.advisory.aliases}
        merged.append(
            MergedMatch(
                id=primary_id,
                aliases=tuple(sorted(names - {primary_id})),
                fix_versions=sort_versions({f for m in group for f in m.fix_versions}),
                summary=primary.summary
                or next((m.advisory.summary for m in group if m.advisory.summary), ""),
                details=primary.details,
                advisories=tuple(m.advisory for m in group),
            )
        )
    merged.sort(key=lambda m: m.id)
    return merged
