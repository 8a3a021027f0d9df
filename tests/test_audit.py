"""The audit stage API (safepip.audit): audit_packages, gate, ignores, staleness, fix targets."""

from __future__ import annotations

import datetime as dt
import json
import re
import zipfile
from pathlib import Path

import pytest
from packaging.utils import NormalizedName, canonicalize_name

from safepip.audit import (
    AuditError,
    AuditOptions,
    AuditReport,
    PackageResult,
    VulnerabilitiesFound,
    Vulnerability,
    audit_packages,
    audit_with,
    gate,
    plural,
    render_findings_text,
)
from safepip.audit import database as db
from safepip.audit.osv import Advisory, parse_version
from safepip.settings import AuditSettings, IgnoreRule, Settings

DATA = Path(__file__).parent / "data" / "advisories"
TODAY = dt.date(2026, 11, 22)


def make_osv_zip(snapshot: str, dest: Path) -> Path:
    """An OSV-style `all.zip` of the test records, with their original member timestamps."""
    stamps = json.loads((DATA / "member-timestamps.json").read_text("utf-8"))[snapshot]
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted((DATA / snapshot).glob("*.json")):
            info = zipfile.ZipInfo(file.name, date_time=tuple(stamps[file.stem]))
            zf.writestr(info, file.read_bytes().strip())
    return dest


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def options(tmp_path: Path, data_dir: Path) -> AuditOptions:
    zip_path = make_osv_zip("pypa-2026-07-23", tmp_path / "all.zip")
    db.import_database(zip_path, data_dir=data_dir, date=dt.date(2026, 7, 23), today=TODAY)
    return AuditOptions(data_dir=data_dir, today=TODAY)


def undated_folder(tmp_path: Path) -> Path:
    """A folder of OSV data whose one record (jw.util < 2.3) has no `modified` date."""
    folder = tmp_path / "undated"
    folder.mkdir()
    record = json.loads((DATA / "pypa-2026-07-23" / "PYSEC-2020-341.json").read_text("utf-8"))
    del record["modified"]
    (folder / "PYSEC-2020-341.json").write_text(json.dumps(record))
    return folder


def pkgs(*specs: str) -> list[tuple[NormalizedName, str]]:
    out = []
    for spec in specs:
        name, version = spec.split("==")
        out.append((canonicalize_name(name), version))
    return out


class TestAuditPackages:
    def test_findings_with_fix_versions_and_smallest_fix(self, options: AuditOptions) -> None:
        report = audit_packages(pkgs("jinja2==2.10", "jw.util==2.0", "requests==2.32.3"), options)
        by_name: dict[str, PackageResult] = {p.name: p for p in report.packages}
        assert [v.id for v in by_name["jinja2"].vulns] == [
            "PYSEC-2019-217",
            "PYSEC-2021-66",
            "PYSEC-2026-1471",
            "PYSEC-2026-1473",
            "PYSEC-2026-1474",
            "PYSEC-2026-1475",
        ]
        first = by_name["jinja2"].vulns[0]
        assert first.fix_versions == ("2.10.1",)
        assert first.smallest_fix == "2.10.1"
        assert first.aliases == ("CVE-2019-10906", "GHSA-462w-v97r-4m45")
        # 2.10.1 and 3.1.5 are still inside other advisories' ranges; 3.1.6 clears them all.
        assert by_name["jinja2"].fix_target == "3.1.6"
        assert [v.id for v in by_name["jw-util"].vulns] == ["PYSEC-2020-341"]
        assert by_name["requests"].vulns == ()
        assert report.vulnerability_count == 7
        assert report.data_date == dt.date(2026, 7, 23)
        assert "advisory database" in report.source

    def test_withdrawn_records_are_left_out(self, options: AuditOptions) -> None:
        report = audit_packages(pkgs("distributed==2021.9.1", "plone==2.5"), options)
        ids = {v.id for p in report.packages for v in p.vulns}
        assert "PYSEC-2021-872" not in ids
        assert "PYSEC-2021-871" in ids

    def test_gate_raises_with_package_version_ids_and_fix(self, options: AuditOptions) -> None:
        report = audit_packages(pkgs("jw.util==2.0"), options)
        with pytest.raises(VulnerabilitiesFound) as info:
            gate(report)
        assert info.value.exit_code == 5
        assert info.value.report is report
        assert str(info.value) == (
            "Refusing `jw-util==2.0`: 1 known vulnerability (PYSEC-2020-341); fixed in 2.3"
        )

    def test_gate_passes_clean_and_ignored(self, options: AuditOptions) -> None:
        gate(audit_packages(pkgs("requests==2.32.3"), options))
        ignored = AuditOptions(
            data_dir=options.data_dir, today=TODAY, ignore_vulns=("CVE-2020-13388",)
        )
        report = audit_packages(pkgs("jw.util==2.0"), ignored)
        gate(report)
        assert report.ignored_count == 1
        assert report.packages[0].vulns[0].ignored_reason == "ignored with `--ignore-vuln`"

    def test_ignore_until_expires(self, options: AuditOptions) -> None:
        rules = (
            IgnoreRule(id="PYSEC-2020-341", reason="not reachable", until=dt.date(2026, 11, 21)),
        )
        settings = Settings(audit=AuditSettings(ignore=rules))
        opts = AuditOptions(data_dir=options.data_dir, today=TODAY, settings=settings)
        report = audit_packages(pkgs("jw.util==2.0"), opts)
        assert report.vulnerability_count == 1
        assert any("expired on 2026-11-21" in w for w in report.warnings)
        later = Settings(
            audit=AuditSettings(ignore=(IgnoreRule(id="pysec-2020-341", reason="r", until=TODAY),))
        )
        report = audit_packages(
            pkgs("jw.util==2.0"),
            AuditOptions(data_dir=options.data_dir, today=TODAY, settings=later),
        )
        assert report.vulnerability_count == 0

    def test_stale_data_is_a_notice_with_date_age_and_command(self, options: AuditOptions) -> None:
        report = audit_packages(pkgs("requests==2.32.3"), options)
        assert report.stale == (
            "The advisory data is from 2026-07-23, 122 days old (the limit is 90 days); "
            "update it with `safepip db update`"
        )
        assert report.warnings == ()

    def test_stale_data_given_with_db_names_it(self, tmp_path: Path) -> None:
        data = make_osv_zip("pypa-2026-07-23", tmp_path / "osv.zip")
        fresh = AuditOptions(db_path=data, today=TODAY, max_age_days=100_000)
        assert audit_packages(pkgs("jw.util==2.0"), fresh).stale is None
        report = audit_packages(pkgs("jw.util==2.0"), AuditOptions(db_path=data, today=TODAY))
        assert report.stale is not None
        assert report.stale.endswith(f"`{data}` is the data in use: give `--db` newer OSV data")

    def test_fresh_data_has_no_notice(self, options: AuditOptions) -> None:
        opts = AuditOptions(data_dir=options.data_dir, today=dt.date(2026, 8, 1))
        assert audit_packages(pkgs("requests==2.32.3"), opts).stale is None

    def test_error_stale_data_refused_when_configured(self, options: AuditOptions) -> None:
        settings = Settings(audit=AuditSettings(refuse_stale=True, max_age_days=30))
        opts = AuditOptions(data_dir=options.data_dir, today=TODAY, settings=settings)
        with pytest.raises(AuditError) as info:
            audit_packages(pkgs("requests==2.32.3"), opts)
        assert info.value.exit_code == 1
        assert str(info.value) == (
            "Refusing to audit with stale data: the advisory data is from 2026-07-23 "
            "(122 days old, more than the 30 days allowed)"
        )

    def test_error_undated_data_refused_when_stale_is_refused(self, tmp_path: Path) -> None:
        folder = undated_folder(tmp_path)
        settings = Settings(audit=AuditSettings(refuse_stale=True))
        opts = AuditOptions(db_path=folder, today=TODAY, settings=settings)
        with pytest.raises(AuditError) as info:
            audit_packages(pkgs("jw.util==2.0"), opts)
        assert info.value.exit_code == 1
        assert str(info.value) == (
            f"Refusing to audit with data of unknown date: `{folder}` has no snapshot date and "
            "no record with a `modified` date"
        )
        # Imported, the same data stays undated and is refused the same way.
        db.import_database(folder, data_dir=tmp_path / "data", today=TODAY)
        imported = AuditOptions(data_dir=tmp_path / "data", today=TODAY, settings=settings)
        with pytest.raises(AuditError, match=r"^Refusing to audit with data of unknown date"):
            audit_packages(pkgs("jw.util==2.0"), imported)

    def test_undated_data_warns(self, tmp_path: Path) -> None:
        folder = undated_folder(tmp_path)
        report = audit_packages(pkgs("jw.util==2.0"), AuditOptions(db_path=folder, today=TODAY))
        assert report.data_date is None
        assert report.vulnerability_count == 1
        assert report.warnings == (
            f"The advisory data `{folder}` has no date, so its age cannot be checked",
        )

    def test_bundled_database_used_without_user_database(self, tmp_path: Path) -> None:
        opts = AuditOptions(data_dir=tmp_path / "empty", today=TODAY)
        report = audit_packages(pkgs("jinja2==2.10", "django==1.8.1"), opts)
        assert report.source == "safepip's bundled PyPA advisory database"
        assert report.data_date == dt.date(2026, 7, 23)
        assert report.vulnerability_count > 5

    def test_error_corrupt_user_database_refuses(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True)
        (data_dir / db.DB_FILENAME).write_bytes(b"not a zip")
        with pytest.raises(AuditError) as info:
            audit_packages(pkgs("requests==2.32.3"), AuditOptions(data_dir=data_dir, today=TODAY))
        assert str(info.value).startswith(
            f"The advisory database `{data_dir / db.DB_FILENAME}` is corrupt"
        )

    def test_error_missing_db_path(self, tmp_path: Path) -> None:
        opts = AuditOptions(db_path=tmp_path / "nope.zip", today=TODAY)
        with pytest.raises(AuditError, match=r"`.*nope\.zip` does not exist"):
            audit_packages(pkgs("requests==2.32.3"), opts)

    def test_non_pep440_installed_version_is_skipped_when_ranges_exist(
        self, options: AuditOptions
    ) -> None:
        report = audit_packages(pkgs("jinja2==2.10-custom"), options)
        assert report.packages == ()
        assert report.skipped[0].name == "jinja2"
        assert "not a PEP 440 version" in report.skipped[0].reason


class TestText:
    def test_plural(self) -> None:
        assert plural(1, "vulnerability") == "1 vulnerability"
        assert plural(2, "vulnerability") == "2 vulnerabilities"
        assert plural(0, "package") == "0 packages"

    def test_render_findings_text(self) -> None:
        report = AuditReport(
            packages=(
                PackageResult(
                    name=canonicalize_name("demo"),
                    version="1.0",
                    vulns=(
                        Vulnerability(
                            id="PYSEC-1", aliases=("CVE-1",), smallest_fix="1.1", summary="bad"
                        ),
                        Vulnerability(id="PYSEC-2", ignored_reason="accepted"),
                    ),
                ),
            ),
            source="test data",
            data_date=dt.date(2026, 1, 2),
        )
        assert render_findings_text(report) == (
            "demo==1.0:\n  PYSEC-1 (CVE-1), fixed in 1.1: bad\n"
            "Advisory data: test data, data as of 2026-01-02"
        )

    def test_error_vulnerabilities_found_several_packages(self) -> None:
        report = AuditReport(
            packages=tuple(
                PackageResult(
                    name=canonicalize_name(n),
                    version="1.0",
                    vulns=(Vulnerability(id=f"ID-{n}"),),
                )
                for n in ("a", "b")
            ),
            source="s",
            data_date=None,
        )
        error = VulnerabilitiesFound(report)
        assert str(error) == (
            "Refusing 2 packages with 2 known vulnerabilities: "
            "`a==1.0` (ID-a; no fix released), `b==1.0` (ID-b; no fix released)"
        )
        assert error.hint is not None
        assert re.search(r"--ignore-vuln", error.hint)


class TestScale:
    """Issue 11: memory grows with the distinct advisories, not with the findings."""

    @pytest.fixture
    def big_advisory(self, tmp_path: Path) -> tuple[AuditOptions, list[tuple[NormalizedName, str]]]:
        """One advisory with 200 KB of text that affects 300 pinned versions of `heavy`."""
        versions = [f"1.{i}" for i in range(300)]
        record = {
            "id": "PYSEC-9999-1",
            "modified": "2026-07-01T00:00:00Z",
            "summary": "heavy is heavy",
            "details": "x" * 200_000,
            "affected": [
                {
                    "package": {"name": "heavy", "ecosystem": "PyPI"},
                    "ranges": [
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}
                    ],
                    "versions": versions,
                }
            ],
        }
        folder = tmp_path / "osv"
        folder.mkdir()
        (folder / "PYSEC-9999-1.json").write_text(json.dumps(record))
        options = AuditOptions(db_path=folder, today=dt.date(2026, 7, 2))
        return options, [(canonicalize_name("heavy"), v) for v in versions]

    def test_findings_reference_the_advisory_text(
        self, big_advisory: tuple[AuditOptions, list[tuple[NormalizedName, str]]]
    ) -> None:
        options, packages = big_advisory
        report = audit_packages(packages, options)
        assert report.vulnerability_count == 300
        first = report.packages[0].vulns[0]
        for pkg in report.packages:
            (vuln,) = pkg.vulns
            assert vuln.description is first.description
            assert vuln.summary is first.summary
            assert vuln.aliases is first.aliases
        assert {p.fix_target for p in report.packages} == {"2.0"}

    def test_memory_does_not_grow_with_findings(
        self,
        big_advisory: tuple[AuditOptions, list[tuple[NormalizedName, str]]],
        tmp_path: Path,
    ) -> None:
        """300 findings of one 200 KB advisory: auditing and writing the 60 MB JSON report
        holds the text about once, not 300 times."""
        options, packages = big_advisory
        _, peak = _audit_and_write_json(packages, options)
        assert peak < 8_000_000, peak

    def test_memory_does_not_grow_with_distinct_lists_of_findings(self, tmp_path: Path) -> None:
        """300 pins, each inside its own range of one 200 KB advisory: each pin has its own
        fixes, so its own list of findings, and the JSON report still holds the text about
        once (a list's JSON is kept as pieces, never joined: issue 11)."""
        record = {
            "id": "PYSEC-9999-2",
            "modified": "2026-07-01T00:00:00Z",
            "details": "y" * 200_000,
            "affected": [
                {
                    "package": {"name": "heavy", "ecosystem": "PyPI"},
                    "ranges": [
                        {
                            "type": "ECOSYSTEM",
                            "events": [{"introduced": f"1.{i}"}, {"fixed": f"1.{i}.1"}],
                        }
                        for i in range(300)
                    ],
                }
            ],
        }
        folder = tmp_path / "osv"
        folder.mkdir()
        (folder / "PYSEC-9999-2.json").write_text(json.dumps(record))
        options = AuditOptions(db_path=folder, today=dt.date(2026, 7, 2))
        packages = [(canonicalize_name("heavy"), f"1.{i}") for i in range(300)]
        report, peak = _audit_and_write_json(packages, options)
        assert {p.vulns[0].smallest_fix for p in report.packages} == {
            f"1.{i}.1" for i in range(300)
        }
        assert peak < 8_000_000, peak


def _audit_and_write_json(
    packages: list[tuple[NormalizedName, str]], options: AuditOptions
) -> tuple[AuditReport, int]:
    """Audit `packages` and write the JSON report to nowhere: the report and the peak of
    memory traced meanwhile."""
    import os
    import tracemalloc

    from safepip.audit.report import write_json

    tracemalloc.start()
    try:
        report = audit_packages(packages, options)
        with open(os.devnull, "w", encoding="utf-8") as sink:
            write_json(report, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report, peak


def _straight_result(
    name: NormalizedName,
    version: str,
    advisories: list[Advisory],
    rules: tuple[IgnoreRule, ...],
) -> PackageResult:
    """A package's result as first written: every advisory matched and every finding judged
    on its own, the fix target searched from the smallest fix with nothing remembered."""
    from safepip.audit.osv import Match, merge_by_union, smallest_fix_above, sort_versions
    from test_audit_osv import _straight_match

    matches = []
    for advisory in advisories:
        fixes = _straight_match(advisory, name, version)
        if fixes is not None:
            matches.append(Match(advisory=advisory, fix_versions=fixes))
    vulns = []
    active: list[Advisory] = []
    candidates: set[str] = set()
    for merged in merge_by_union(matches):
        ids = (merged.id, *merged.aliases)
        reason = next((r.reason for r in rules if r.matches(ids) and not r.expired(TODAY)), None)
        if reason is None:
            active += merged.advisories
            candidates.update(merged.fix_versions)
        vulns.append(
            Vulnerability(
                id=merged.id,
                aliases=merged.aliases,
                fix_versions=merged.fix_versions,
                smallest_fix=smallest_fix_above(merged.fix_versions, version),
                summary=merged.summary,
                description=merged.details,
                ignored_reason=reason,
            )
        )
    target = None
    current = parse_version(version)
    if active and current is not None:
        for candidate in sort_versions(candidates):
            parsed = parse_version(candidate)
            if parsed is None:
                break
            if parsed > current and not any(
                _straight_match(a, name, candidate) is not None for a in active
            ):
                target = candidate
                break
    return PackageResult(name=name, version=version, vulns=tuple(vulns), fix_target=target)


def test_audit_equals_the_straightforward_judging_over_the_bundled_database() -> None:
    """What the pins of one package share (merged findings, fix versions, fix targets) is
    worked out once per set of matches and per place among the fixes (issue 11): the result
    of every pin is what judging it on its own gives, ignore rules (expired ones too) and
    versions that are not PEP 440 included."""
    import random

    bundled = db.CompactDatabase(db.SHIPPED, origin="bundled")
    rng = random.Random(11)
    names = sorted(bundled._names)
    packages: list[tuple[NormalizedName, str]] = []
    every: dict[NormalizedName, list[Advisory]] = {}
    for name in names[::9]:
        canonical = canonicalize_name(name)
        advisories = every[canonical] = list(bundled.advisories_for(canonical))
        values = sorted(
            {
                v
                for a in advisories
                for e in a.affected
                for v in (*e.versions, *(value for r in e.ranges for _, value in r))
            }
        )
        chosen = rng.sample(values, min(5, len(values)))
        # `V.1` is inside a range that starts at `V`: the data lists few versions of its own.
        inside = [f"{v}.1" for v in chosen if parse_version(v) is not None]
        packages += [(canonical, v) for v in (*chosen, *inside, "0.0.1", "99.0", "1.0-odd")]
    ids = sorted({a.id for advisories in every.values() for a in advisories})
    rules = tuple(
        IgnoreRule(id=i, reason=f"accepted {i}", until=dt.date(2026, 1, 1) if n % 2 else None)
        for n, i in enumerate(rng.sample(ids, 40))
    )
    options = AuditOptions(
        ignore_vulns=(), settings=Settings(audit=AuditSettings(ignore=rules)), today=TODAY
    )
    report = audit_with(bundled, packages, options)
    results = {(p.name, p.version): p for p in report.packages}
    skipped = {(s.name, s.version) for s in report.skipped}
    compared = 0
    for name, version in packages:
        if (name, version) in skipped:
            assert parse_version(version) is None
            continue
        expected = _straight_result(name, version, every[name], rules)
        assert results[(name, version)] == expected, (name, version)
        compared += 1
    assert compared > 1000
    assert sum(len(p.vulns) for p in report.packages) > 3000
    assert any(v.ignored_reason for p in report.packages for v in p.vulns)
    assert any("expired" in w for w in report.warnings)


def test_fixes_spelled_alike_and_strings_judge_as_each_pin_alone(tmp_path: Path) -> None:
    """Fix versions equal as PEP 440 but spelled differently (`2.0`, `2.0.0`) share a place
    among the fixes, a fix that is not PEP 440 ends the search, and a fix inside another
    advisory's range is no fix target: every pin gets what judging it on its own gives."""

    def record(rid: str, events: list[dict[str, str]]) -> dict[str, object]:
        return {
            "id": rid,
            "modified": "2026-07-01T00:00:00Z",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "p"},
                    "ranges": [{"type": "ECOSYSTEM", "events": events}],
                }
            ],
        }

    folder = tmp_path / "osv"
    folder.mkdir()
    records = [
        record("T-1", [{"introduced": "0"}, {"fixed": "2.0"}]),
        record("T-2", [{"introduced": "0"}, {"fixed": "2.0.0"}, {"fixed": "9-odd"}]),
        record("T-3", [{"introduced": "2.0"}, {"fixed": "2.1"}]),
        record("T-4", [{"introduced": "1.0"}, {"last_affected": "2.0.0"}]),
    ]
    for rec in records:
        (folder / f"{rec['id']}.json").write_text(json.dumps(rec))
    options = AuditOptions(db_path=folder, today=dt.date(2026, 7, 2))
    name = canonicalize_name("p")
    versions = ["0.5", "1.0", "1.5", "2.0", "2.0.0", "2.0.5", "2.1", "3.0", "x-1"]
    report = audit_packages([(name, v) for v in versions], options)
    advisories = db.OsvDataDatabase(folder).advisories_for(name)
    judged = {p.version: p for p in report.packages}
    for version in versions[:-1]:
        assert judged[version] == _straight_result(name, version, advisories, ()), version
    # 2.0 and 2.0.0 are inside T-3 and T-4: 1.5 has no fix target, 2.0 moves to 2.1.
    assert judged["1.5"].fix_target is None
    assert [v.smallest_fix for v in judged["1.5"].vulns] == ["2.0", "2.0.0", None]
    assert judged["2.0"].fix_target == "2.1"
    assert [s.version for s in report.skipped] == ["x-1"]
