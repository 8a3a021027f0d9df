"""OSV records for the PyPI ecosystem: parsing, range evaluation and merging of matches.

Implements the OSV schema's rules (https://ossf.github.io/osv-schema/): a version is affected when
it is in an entry's `versions` list or inside one of its `ECOSYSTEM` ranges; range events are
sorted by PEP 440 version before the walk; withdrawn records never match.
"""

from __future__ import annotations

import functools
import operator
import re
from bisect import bisect_left
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
        self.range_fixes = tuple(sorted_fixes(frozenset(_fixes((rng,)))) for rng in entry.ranges)
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


# The records of one package name it alike: canonicalised once (a database read is ~7,000).
_canonical_name = functools.lru_cache(maxsize=4096)(canonicalize_name)


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
                for kind, value in _object(event, "affected[].ranges[].events[]").items():
                    if kind in _KIND_ORDER:
                        events.append((kind, str(value)))
            ranges.append(tuple(events))
        affected.append(
            Affected(
                name=_canonical_name(str(package["name"])),
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
    fix_versions = sorted_fixes(frozenset(f for fixes in found for f in fixes))
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


class PackageIndex:
    """One package's advisories, prepared to match many versions of it (issue 11).

    The PEP 440 versions that the package's range events name, sorted, cut every version into
    a *cell*: below the first, equal to one of them, or strictly between two of them (cells
    `0, 1, 2, ...`: `2i + 1` is the `i`-th version itself, `2i` what lies just below it). A
    range walk gives the same answer for every version of a cell, so each range becomes a bit
    mask over the cells, computed once; matching a version is finding its cell (a dict lookup
    for a spelling the data uses, else one bisection) and testing bits. An advisory whose
    entries keep a `versions` list, and a version that is not PEP 440, are matched the
    straightforward way (`match_advisory`); a differential test holds the two to the same
    results over the bundled database.
    """

    __slots__ = ("_bounds", "_by_advisory", "_cells", "_slots", "advisories", "name")

    def __init__(self, name: NormalizedName, advisories: Sequence[Advisory]) -> None:
        self.name = name
        self.advisories = advisories
        values: dict[str, Version] = {}
        entries = [
            (advisory, [e for e in advisory.affected if e.name == name])
            for advisory in advisories
            if not advisory.withdrawn
        ]
        for _, own in entries:
            for entry in own:
                for rng in entry.ranges:
                    for _, value in rng:
                        if value not in values and (version := parse_version(value)) is not None:
                            values[value] = version
        bounds = sorted(set(values.values()))
        place = {version: 2 * i + 1 for i, version in enumerate(bounds)}
        self._bounds = bounds
        self._cells = {value: place[version] for value, version in values.items()}
        size = 2 * len(bounds) + 1
        self._slots: list[_Slot] = []
        self._by_advisory: dict[int, _Slot] = {}
        for advisory, own in entries:
            if not own:
                continue
            slot = _Slot(advisory, own, place, size)
            self._slots.append(slot)
            self._by_advisory[id(advisory)] = slot

    def _cell(self, raw: str) -> int | None:
        cell = self._cells.get(raw)
        if cell is not None:
            return cell
        version = parse_version(raw)
        if version is None:
            return None
        bounds = self._bounds
        i = bisect_left(bounds, version)
        return 2 * i + 1 if i < len(bounds) and bounds[i] == version else 2 * i

    def match(self, raw_version: str) -> list[Match]:
        """`match_advisory` of every advisory against this package at `raw_version`, in the
        advisories' order, without the ones that do not apply."""
        cell = self._cell(raw_version)
        found = []
        for slot in self._slots:
            if slot.listing or cell is None:
                match = match_advisory(slot.advisory, self.name, raw_version)
                if match is not None:
                    found.append(match)
            elif slot.mask >> cell & 1:
                found.append(slot.match(cell))
        return found

    def affects(self, advisory: Advisory, raw_version: str) -> bool:
        """`affects(advisory, name, raw_version)` for one of this package's advisories."""
        slot = self._by_advisory.get(id(advisory))
        if slot is None or slot.listing or slot.advisory is not advisory:
            return affects(advisory, self.name, raw_version)
        cell = self._cell(raw_version)
        if cell is None:
            return affects(advisory, self.name, raw_version)
        return bool(slot.mask >> cell & 1)


class _Slot:
    """One advisory of a `PackageIndex`: each range of its entries for the package as a mask
    over the cells, with the range's sorted fixes, and the matches made so far by their fixes
    (the pins of a package that one advisory affects mostly share them)."""

    __slots__ = ("advisory", "listing", "mask", "matches", "ranges")

    def __init__(
        self, advisory: Advisory, entries: list[Affected], place: dict[Version, int], size: int
    ) -> None:
        self.advisory = advisory
        self.listing = any(entry.versions for entry in entries)
        """An entry keeps a `versions` list: matched by `match_advisory`."""
        self.ranges = [
            (_range_mask(ready, place, size), fixes)
            for entry in entries
            for ready, fixes in zip(entry.prepared.ranges, entry.prepared.range_fixes, strict=True)
        ]
        self.mask = functools.reduce(operator.or_, (m for m, _ in self.ranges), 0)
        self.matches: dict[tuple[str, ...], Match] = {}

    def match(self, cell: int) -> Match:
        found = [fixes for mask, fixes in self.ranges if mask >> cell & 1]
        fix_versions = (
            found[0] if len(found) == 1 else sorted_fixes(frozenset(f for x in found for f in x))
        )
        match = self.matches.get(fix_versions)
        if match is None:
            match = self.matches[fix_versions] = Match(
                advisory=self.advisory, fix_versions=fix_versions
            )
        return match


def _range_mask(ready: _Range, place: dict[Version, int], size: int) -> int:
    """The cells inside a prepared range, as bits of an `int` (`_in_range` for every cell)."""
    parsed, limits = ready
    top = size
    if limits:
        # Only versions below one of the limits can be affected: the cells below the highest.
        tops = [place[limit] for limit in limits if limit is not None]
        if not tops:
            return 0
        top = max(tops)
    # Each event decides for the cells from its threshold up, unless a later event (in the
    # walk's order) also does: `introduced` and `fixed` at a version from its own cell,
    # `last_affected` from the cell above it, `introduced: 0` from the first cell.
    starts: list[tuple[int, int, bool]] = []
    for order, (kind, value) in enumerate(parsed):
        if kind == "introduced":
            starts.append((0 if value is None else place[value], order, True))
        elif value is None:
            continue
        elif kind == "fixed":
            starts.append((place[value], order, False))
        elif kind == "last_affected":
            starts.append((place[value] + 1, order, False))
    starts.sort()
    mask = 0
    latest, affected = -1, False
    i, count = 0, len(starts)
    while i < count:
        start = starts[i][0]
        while i < count and starts[i][0] == start:
            if starts[i][1] > latest:
                latest, affected = starts[i][1], starts[i][2]
            i += 1
        end = starts[i][0] if i < count else size
        if affected and end > start:
            mask |= (1 << end) - (1 << start)
    return mask & ((1 << top) - 1)


@functools.lru_cache(maxsize=4096)
def sorted_fixes(fixes: frozenset[str]) -> tuple[str, ...]:
    """`sort_versions(fixes)`, remembered: one advisory gives the same fixes to most of the
    pins it matches, and the findings of one package's pins share theirs."""
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
