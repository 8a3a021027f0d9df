"""OSV matching rules (safepip.audit.osv), on real records and against a brute-force reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from safepip.audit.osv import (
    Advisory,
    Match,
    PackageIndex,
    affects,
    match_advisory,
    merge_by_union,
    merge_matches,
    parse_record,
    parse_version,
    prepare_listed,
    range_contains,
    smallest_fix_above,
    sort_versions,
)

DATA = Path(__file__).parent / "data" / "advisories"


def record(rid: str, snapshot: str = "pypa-2026-07-23") -> dict[str, object]:
    data: dict[str, object] = json.loads((DATA / snapshot / f"{rid}.json").read_text("utf-8"))
    return data


def matches(rid: str, name: str, version: str, snapshot: str = "pypa-2026-07-23") -> Match | None:
    return match_advisory(parse_record(record(rid, snapshot)), canonicalize_name(name), version)


class TestRealRecords:
    def test_unsorted_events_are_sorted_before_the_walk(self) -> None:
        # PYSEC-2015-22 lists 1.8/1.8.4, then 1.7/1.7.10, then 1.4/1.4.22.
        assert matches("PYSEC-2015-22", "Django", "1.7.5") is not None
        assert matches("PYSEC-2015-22", "django", "1.4.21") is not None
        assert matches("PYSEC-2015-22", "django", "1.7.10") is None
        assert matches("PYSEC-2015-22", "django", "1.5") is None
        # An unsorted walk would end on `fixed: 1.4.22` and miss 1.8.1.
        found = matches("PYSEC-2015-22", "django", "1.8.1")
        assert found is not None
        assert found.fix_versions == ("1.4.22", "1.7.10", "1.8.4")

    def test_smallest_fix_may_be_on_another_branch(self) -> None:
        found = matches("PYSEC-2017-10", "django", "1.9.2")
        assert found is not None
        assert smallest_fix_above(found.fix_versions, "1.9.2") == "1.9.13"
        assert smallest_fix_above(found.fix_versions, "1.10.6") == "1.10.7"

    def test_withdrawn_record_never_matches(self) -> None:
        assert record("PYSEC-2021-872").get("withdrawn")
        assert matches("PYSEC-2021-872", "distributed", "2021.9.0") is None
        assert matches("PYSEC-2021-871", "distributed", "2021.9.0") is not None

    def test_non_normalized_package_name(self) -> None:
        assert matches("PYSEC-2020-341", "jw-util", "2.2") is not None
        assert matches("PYSEC-2020-341", "JW_Util", "2.2") is not None
        assert matches("PYSEC-2020-341", "jw.util", "2.3") is None

    def test_versions_only_record(self) -> None:
        assert matches("PYSEC-2006-4", "extractor", "0.5") is not None
        assert matches("PYSEC-2006-4", "extractor", "0.5.0") is not None  # PEP 440 equality
        assert matches("PYSEC-2006-4", "extractor", "0.6") is None

    def test_non_pep440_strings_are_tolerated(self) -> None:
        # PYSEC-2024-264: `last_affected` 2.9.0-NA (not PEP 440) and 2.9.0-beta1 (it is).
        assert matches("PYSEC-2024-264", "apache-airflow", "2.8.4") is not None
        assert matches("PYSEC-2024-264", "apache-airflow", "2.9.0") is None
        # PYSEC-2008-8 lists versions such as `0.9-doduo`: string equality still matches.
        assert matches("PYSEC-2008-8", "paramiko", "0.9-doduo") is not None

    def test_last_affected_is_inclusive(self) -> None:
        assert matches("PYSEC-2009-14", "gstreamer-plugins", "0.10.9") is not None
        assert matches("PYSEC-2009-14", "gstreamer-plugins", "0.10.9.post1") is None

    def test_several_ranges_in_one_entry(self) -> None:
        rec = record("PYSEC-2011-29")
        rec.pop("withdrawn")
        adv = parse_record(rec)
        assert len(adv.affected[0].ranges) == 2
        found = match_advisory(adv, canonicalize_name("django"), "1.2.3")
        assert found is not None
        assert found.fix_versions == ("1.2.4",)  # the fixes of the range that matched
        assert match_advisory(adv, canonicalize_name("django"), "1.1.5") is None

    def test_record_without_fix_affects_every_version(self) -> None:
        adv = parse_record(record("PYSEC-2009-11"))
        name = adv.affected[0].name
        found = match_advisory(adv, name, "99.0")
        assert found is not None
        assert found.fix_versions == ()

    def test_alias_duplicates_merge_into_one_finding(self) -> None:
        old = "pypa-2024-10-10"
        found = [
            matches(r, "distributed", "2021.9.1", old) for r in ("PYSEC-2021-871", "PYSEC-2021-872")
        ]
        merged = merge_matches([m for m in found if m])
        assert len(merged) == 1
        assert merged[0].id == "PYSEC-2021-871"
        assert "PYSEC-2021-872" in merged[0].aliases
        assert "CVE-2021-42343" in merged[0].aliases
        assert merged[0].fix_versions == ("2021.10.0",)

    def test_records_without_shared_aliases_stay_apart(self) -> None:
        found = [matches(r, "jinja2", "2.10") for r in ("PYSEC-2019-217", "PYSEC-2021-66")]
        assert len(merge_matches([m for m in found if m])) == 2

    def test_other_ecosystems_and_git_ranges_are_ignored(self) -> None:
        adv = parse_record(
            {
                "id": "X-1",
                "affected": [
                    {"package": {"name": "foo", "ecosystem": "npm"}, "versions": ["1.0"]},
                    {
                        "package": {"name": "foo", "ecosystem": "PyPI"},
                        "ranges": [{"type": "GIT", "events": [{"introduced": "0"}]}],
                    },
                ],
            }
        )
        assert match_advisory(adv, canonicalize_name("foo"), "1.0") is None


class TestRanges:
    def test_introduced_zero_precedes_prereleases(self) -> None:
        events = (("introduced", "0"), ("fixed", "0.0.0.dev2"))
        assert range_contains(events, Version("0.0.0.dev1"))
        assert not range_contains(events, Version("0.0.0.dev2"))

    def test_limit_bounds_the_range(self) -> None:
        events = (("introduced", "1.0"), ("limit", "2.0"))
        assert range_contains(events, Version("1.5"))
        assert not range_contains(events, Version("2.0"))
        assert range_contains((("introduced", "1.0"), ("limit", "*")), Version("9"))

    def test_sort_versions_puts_invalid_last(self) -> None:
        assert sort_versions({"1.10", "1.9", "x-1", "1.9.1"}) == ("1.9", "1.9.1", "1.10", "x-1")


# --- property test: the walk against an independent formulation ---------------------------------

UNIVERSE = [f"1.{i}" for i in range(12)]
KINDS = ("introduced", "fixed", "last_affected")


def reference(events: list[tuple[str, int]], v: int) -> bool:
    """Affected iff some `introduced` at or below `v` is not closed before `v`.

    Closing: a `fixed` F with I < F <= v, or a `last_affected` L with I <= L < v. Evaluated on
    event indexes into UNIVERSE with distinct values, in any order (no sorting needed).
    """
    for kind, i in events:
        if kind != "introduced" or i > v:
            continue
        closed = any(
            (k == "fixed" and i < j <= v) or (k == "last_affected" and i <= j < v)
            for k, j in events
        )
        if not closed:
            return True
    return False


@st.composite
def event_lists(draw: st.DrawFn) -> list[tuple[str, int]]:
    positions = draw(st.lists(st.integers(0, len(UNIVERSE) - 1), unique=True, max_size=8))
    return [(draw(st.sampled_from(KINDS)), p) for p in positions]


@given(events=event_lists(), v=st.integers(0, len(UNIVERSE) - 1), junk=st.booleans())
def test_range_walk_matches_reference(events: list[tuple[str, int]], v: int, junk: bool) -> None:
    as_strings = [(k, UNIVERSE[i]) for k, i in events]
    if junk:  # strings that are not PEP 440 must be skipped, wherever they sit
        as_strings.insert(len(as_strings) // 2, ("fixed", "2.9.0-NA"))
    assert range_contains(as_strings, Version(UNIVERSE[v])) == reference(events, v)


@given(events=event_lists(), v=st.integers(0, len(UNIVERSE) - 1))
def test_introduced_zero_acts_below_every_version(events: list[tuple[str, int]], v: int) -> None:
    with_zero = [("introduced", "0"), *((k, UNIVERSE[i]) for k, i in events)]
    # "0" behaves like an `introduced` at the lowest version of the universe (1.0 or below).
    as_lowest = [*events, ("introduced", -1)]
    assert range_contains(with_zero, Version(UNIVERSE[v])) == reference(as_lowest, v)


@given(
    versions=st.lists(st.sampled_from([*UNIVERSE, "1.1.0", "1-odd"]), max_size=5),
    v=st.sampled_from([*UNIVERSE, "1-odd"]),
)
def test_versions_list_matches_by_pep440_or_string(versions: list[str], v: str) -> None:
    adv = parse_record(
        {"id": "T-1", "affected": [{"package": {"name": "p"}, "versions": versions}]}
    )
    expected = v in versions or (v == "1.1" and "1.1.0" in versions)
    assert (match_advisory(adv, canonicalize_name("p"), v) is not None) == expected


@given(
    events=event_lists(),
    listed=st.lists(st.sampled_from([*UNIVERSE, "1.1.0", "1-odd", "1.10.0"]), max_size=6),
)
def test_a_versions_list_left_out_by_a_build_changes_no_match(
    events: list[tuple[str, int]], listed: list[str]
) -> None:
    """`safepip db import` leaves out a `versions` list when `versions_add_to_ranges` says it
    adds nothing: every version (and string) then matches the entry with the same fixes."""
    from safepip.audit.database import _compact_record

    record = {
        "id": "T-1",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "p"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{kind: UNIVERSE[i]} for kind, i in events],
                    }
                ],
                "versions": listed,
            }
        ],
    }
    name = canonicalize_name("p")
    full = parse_record(record)
    compacted = parse_record(_compact_record(record, name))
    if compacted.affected[0].versions != full.affected[0].versions:
        assert not compacted.affected[0].versions
        assert events  # a list is never dropped for an entry whose ranges are empty
    for probe in [*UNIVERSE, "1.1.0", "1-odd", "0.9", "1.10.0", "1.0+local"]:
        expected = match_advisory(full, name, probe)
        got = match_advisory(compacted, name, probe)
        assert (got.fix_versions if got else None) == (
            expected.fix_versions if expected else None
        ), probe


@st.composite
def advisories_of_p(draw: st.DrawFn) -> list[Advisory]:
    """A few advisories of `p`: ranges of any events (limits, `introduced: 0`, repeats at one
    version, strings that are not PEP 440), sometimes a `versions` list, another package."""
    values = st.sampled_from([*UNIVERSE, "1.1.0", "2.9.0-NA", "*"])
    event = st.tuples(st.sampled_from([*KINDS, "limit", "introduced"]), values)
    records = []
    for n in range(draw(st.integers(1, 4))):
        entries = []
        for _ in range(draw(st.integers(1, 2))):
            ranges = [
                {
                    "type": "ECOSYSTEM",
                    "events": [
                        {kind: "0" if kind == "introduced" and zero else value}
                        for (kind, value), zero in draw(
                            st.lists(st.tuples(event, st.booleans()), max_size=6)
                        )
                    ],
                }
                for _ in range(draw(st.integers(0, 3)))
            ]
            entry: dict[str, object] = {
                "package": {"ecosystem": "PyPI", "name": draw(st.sampled_from(["p", "P", "q"]))},
                "ranges": ranges,
            }
            if draw(st.booleans()) and draw(st.booleans()):
                entry["versions"] = draw(st.lists(values, max_size=3))
            entries.append(entry)
        records.append(
            {"id": f"T-{n}", "affected": entries, "withdrawn": "x" if draw(st.booleans()) else ""}
        )
    return [parse_record(r) for r in records]


PROBES = [*UNIVERSE, "0.9", "1.0.0", "1.1.0", "1.1.5", "1.0+local", "1.2rc1", "1.2.post1", "9.0"]


@given(advisories=advisories_of_p(), probes=st.lists(st.sampled_from([*PROBES, "2.9.0-NA"])))
def test_package_index_matches_what_each_advisory_gives(
    advisories: list[Advisory], probes: list[str]
) -> None:
    """`PackageIndex` (a package's range events as cells, each range a bit mask) matches what
    `match_advisory` and `affects` give advisory by advisory, fixes included."""
    name = canonicalize_name("p")
    index = PackageIndex(name, advisories)
    for probe in [*probes, *PROBES]:
        expected = [m for a in advisories if (m := match_advisory(a, name, probe))]
        got = index.match(probe)
        assert [(m.advisory.id, m.fix_versions) for m in got] == [
            (m.advisory.id, m.fix_versions) for m in expected
        ], probe
        for advisory in advisories:
            assert index.affects(advisory, probe) is affects(advisory, name, probe)


@pytest.mark.parametrize("bad", [{"affected": []}, {"id": ""}])
def test_error_record_without_id(bad: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError)):
        parse_record(bad)


# --- the prepared fast path against the straightforward evaluation (issue 14) -----------------


def _straight_range(events: tuple[tuple[str, str], ...], version: Version) -> bool:
    """The range walk as first written: parse, sort and walk the events on every call."""

    def parse(text: str) -> Version | None:
        try:
            return Version(text)
        except InvalidVersion:
            return None

    limits = [parse(v) for k, v in events if k == "limit" and v != "*"]
    if limits and not any(limit is not None and version < limit for limit in limits):
        return False
    parsed: list[tuple[str, Version | None]] = []
    for kind, value in events:
        if kind == "limit":
            continue
        if kind == "introduced" and value == "0":
            parsed.append((kind, None))
        elif (p := parse(value)) is not None:
            parsed.append((kind, p))
    order = {"introduced": 0, "last_affected": 1, "fixed": 1}
    parsed.sort(key=lambda e: (0, Version("0"), 0) if e[1] is None else (1, e[1], order[e[0]]))
    affected = False
    for kind, bound in parsed:
        if kind == "introduced":
            affected = affected or bound is None or version >= bound
        elif (bound is not None and kind == "fixed" and version >= bound) or (
            bound is not None and kind == "last_affected" and version > bound
        ):
            affected = False
    return affected


def _straight_match(advisory: Advisory, name: NormalizedName, raw: str) -> tuple[str, ...] | None:
    """`match_advisory` as first written: every listed version compared one by one."""
    if advisory.withdrawn:
        return None
    try:
        version: Version | None = Version(raw)
    except InvalidVersion:
        version = None
    matched = False
    fixes: set[str] = set()
    for entry in advisory.affected:
        if entry.name != name:
            continue
        containing = [
            r for r in entry.ranges if version is not None and _straight_range(r, version)
        ]
        listed = any(
            v == raw or (version is not None and parse_version(v) == version)
            for v in entry.versions
        )
        if containing:
            matched = True
            fixes.update(value for rng in containing for kind, value in rng if kind == "fixed")
        elif listed:
            matched = True
            fixes.update(
                value
                for rng in entry.ranges
                for kind, value in rng
                if kind == "fixed"
                and (version is None or ((p := parse_version(value)) and p > version))
            )
    return sort_versions(fixes) if matched else None


def _spellings(text: str) -> list[str]:
    """`text` and other spellings of (nearly) the same version, to probe equality."""
    out = [text, f"{text}.0", f"{text}.0.0", f"v{text}", f"{text}+local", f"1!{text}", f"0{text}"]
    out += [f"{text}.1", f"{text}rc1", f"{text}.post1"]  # between two versions the data names
    if text.endswith(".0"):
        out.append(text[:-2])
    return out


def test_fast_path_equals_straightforward_evaluation_over_the_bundled_database() -> None:
    import random

    from safepip.audit import database

    bundled = database.CompactDatabase(database.SHIPPED, origin="bundled")
    rng = random.Random(14)
    compared = 0
    for n, name in enumerate(sorted(bundled._names)):
        canonical = canonicalize_name(name)
        advisories = bundled.advisories_for(canonical)
        if n % 2:
            # Half the packages have their versions lists prepared together, as an audit does.
            prepare_listed(e for a in advisories for e in a.affected if e.name == canonical)
        values = {
            v
            for a in advisories
            for e in a.affected
            for v in (*e.versions, *(value for r in e.ranges for _, value in r))
        }
        sample = rng.sample(sorted(values), min(3, len(values)))
        probes = {p for v in sample for p in _spellings(v)} | {"0.0.1", "99.0", "2.9.0-NA"}
        index = PackageIndex(canonical, advisories)
        for raw in sorted(probes):
            indexed = {m.advisory.id: m.fix_versions for m in index.match(raw)}
            for advisory in advisories:
                expected = _straight_match(advisory, canonical, raw)
                got = match_advisory(advisory, canonical, raw)
                assert (got.fix_versions if got else None) == expected, (advisory.id, raw)
                assert affects(advisory, canonical, raw) is (expected is not None)
                assert indexed.get(advisory.id) == expected, (advisory.id, raw)
                assert index.affects(advisory, raw) is (expected is not None)
                compared += 1
    assert compared > 100_000


def test_merge_without_shared_names_equals_the_union_find() -> None:
    """The fast path of `merge_matches` (no two matches share an id or alias) gives what the
    union-find gives, on every package of the bundled database at a listed version."""
    from safepip.audit import database

    bundled = database.CompactDatabase(database.SHIPPED, origin="bundled")
    merged = 0
    for name in sorted(bundled._names)[::7]:
        canonical = canonicalize_name(name)
        advisories = bundled.advisories_for(canonical)
        # Versions the advisories name (the bundled data keeps few `versions` lists: those
        # inside the ranges are left out when it is built), each affected by its range.
        named = [
            v
            for a in advisories
            for e in a.affected
            for r in e.ranges
            for kind, v in r
            if kind == "introduced" and v != "0"
        ]
        for raw in [*named[:3], "0.0.1"]:
            found = [m for a in advisories if (m := match_advisory(a, canonical, raw))]
            assert merge_matches(found) == merge_by_union(found), (name, raw)
            merged += len(found)
    assert merged > 1000


def test_aliases_are_sorted_without_duplicates() -> None:
    adv = parse_record({"id": "X-1", "aliases": ["GHSA-b", "CVE-a", "GHSA-b"], "affected": []})
    assert adv.aliases == ("CVE-a", "GHSA-b")
