"""Report formats (safepip.audit.report)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re

from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import canonicalize_name
from rich.console import Console

from safepip.audit import AuditReport, PackageResult, SkippedPackage, Vulnerability
from safepip.audit.report import (
    plan_fixes,
    print_table,
    render_cyclonedx,
    render_json,
    render_markdown,
    render_sarif,
    summary_line,
)

REPORT = AuditReport(
    packages=(
        PackageResult(
            name=canonicalize_name("demo"),
            version="1.0+local",
            vulns=(
                Vulnerability(
                    id="PYSEC-1",
                    aliases=("CVE-1",),
                    fix_versions=("1.1", "2.0"),
                    smallest_fix="1.1",
                    summary="a | pipe",
                    description="details",
                ),
                Vulnerability(id="PYSEC-2", ignored_reason="accepted"),
            ),
            fix_target="1.1",
        ),
        PackageResult(name=canonicalize_name("clean"), version="3"),
    ),
    skipped=(SkippedPackage(name=canonicalize_name("vcs"), version=None, reason="no version"),),
    source="test data",
    data_date=dt.date(2026, 7, 23),
    warnings=("stale",),
)


def test_summary_line() -> None:
    assert (
        summary_line(REPORT)
        == "Found 1 vulnerability in 1 package (1 ignored, 1 package not audited)"
    )
    clean = AuditReport(packages=(REPORT.packages[1],), source="s", data_date=None)
    assert summary_line(clean) == "No known vulnerabilities found in 1 package"


def test_json_keeps_pip_audit_shape() -> None:
    doc = json.loads(render_json(REPORT, fixes=plan_fixes(REPORT)))
    assert doc["version"] == 1
    assert doc["data"] == {"source": "test data", "date": "2026-07-23"}
    demo, clean, vcs = doc["dependencies"]
    assert demo["vulns"] == [
        {
            "id": "PYSEC-1",
            "fix_versions": ["1.1", "2.0"],
            "aliases": ["CVE-1"],
            "description": "details",
            "summary": "a | pipe",
            "smallest_fix": "1.1",
        }
    ]
    assert demo["ignored_vulns"] == [{"id": "PYSEC-2", "aliases": [], "reason": "accepted"}]
    assert clean == {"name": "clean", "version": "3", "vulns": []}
    assert vcs == {"name": "vcs", "version": None, "skip_reason": "no version"}
    assert doc["fixes"] == [{"name": "demo", "old_version": "1.0+local", "new_version": "1.1"}]


def test_markdown_escapes_cells() -> None:
    text = render_markdown(REPORT)
    assert "a \\| pipe" in text
    assert "as of 2026-07-23" in text


def test_cyclonedx_purl_encodes_version() -> None:
    bom = json.loads(render_cyclonedx(REPORT))
    assert bom["components"][0]["purl"] == "pkg:pypi/demo@1.0%2Blocal"
    assert [v["id"] for v in bom["vulnerabilities"]] == ["PYSEC-1"]
    assert bom["vulnerabilities"][0]["recommendation"] == "Upgrade demo to 1.1 or later"


def test_sarif_rules_and_locations() -> None:
    log = json.loads(render_sarif(REPORT, locations={"demo": ("req.txt", 4)}))
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["PYSEC-1"]
    assert run["results"][0]["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "req.txt"},
        "region": {"startLine": 4},
    }
    assert run["properties"]["advisoryDataDate"] == "2026-07-23"


def test_table_without_colour() -> None:
    buffer = io.StringIO()
    print_table(REPORT, Console(file=buffer, no_color=True, width=200))
    text = buffer.getvalue()
    assert "\x1b[" not in text
    assert "PYSEC-1 (CVE-1)" in text
    assert "ignored: accepted" in text
    assert "warning: not audited: `vcs`: no version" in text
    assert text.rstrip().endswith(
        "Found 1 vulnerability in 1 package (1 ignored, 1 package not audited)"
    )


def _many(count: int, summary: str) -> AuditReport:
    vulns = tuple(
        Vulnerability(
            id=f"PYSEC-2026-{i}",
            aliases=(f"CVE-2026-{i}", f"GHSA-aaaa-bbbb-{i:04d}"),
            smallest_fix="2.0",
            summary=summary,
        )
        for i in range(count)
    )
    package = PackageResult(name=canonicalize_name("big"), version="1.0", vulns=vulns)
    return AuditReport(packages=(package,), source="test data", data_date=dt.date(2026, 7, 23))


class TestTable:
    def test_narrow_terminal_wraps_cells_within_the_width(self) -> None:
        buffer = io.StringIO()
        summary = "a long summary " * 8 + "with-a-word-longer-than-any-column-" * 3
        print_table(_many(3, summary), Console(file=buffer, no_color=True, width=72))
        lines = buffer.getvalue().splitlines()
        assert lines[0].split() == ["Package", "Version", "ID", "Fix", "Summary"]
        assert all(len(line) <= 72 for line in lines), lines
        # Every cell's words are all there, in order, once the wrapped lines are read back.
        assert lines[1].startswith("big")
        assert "GHSA-aaaa-bbbb-0000)" in buffer.getvalue()
        text = buffer.getvalue()
        assert text.count("PYSEC-2026-") == 3
        assert all(line == line.rstrip() for line in lines)

    def test_control_characters_never_reach_the_terminal(self) -> None:
        buffer = io.StringIO()
        print_table(_many(1, "evil\x1b[2Jsummary\nsecond line"), Console(file=buffer, width=120))
        text = buffer.getvalue()
        assert "\x1b" not in text
        assert "evil [2Jsummary second line" in text

    def test_colour_decorates_only(self) -> None:
        plain, coloured = io.StringIO(), io.StringIO()
        report = _many(2, "summary")
        print_table(report, Console(file=plain, no_color=True, width=120))
        print_table(report, Console(file=coloured, force_terminal=True, width=120))
        assert "\x1b[" in coloured.getvalue()
        assert re.sub(r"\x1b\[[0-9;]*m", "", coloured.getvalue()) == plain.getvalue()

    def test_wide_characters_keep_columns_aligned(self) -> None:
        buffer = io.StringIO()
        print_table(_many(1, "漢字の説明"), Console(file=buffer, no_color=True, width=120))
        header, row = buffer.getvalue().splitlines()[:2]
        assert header.index("Summary") == row.index("漢")

    def test_shared_findings_give_the_table_of_unshared_ones(self) -> None:
        """The pins of one package share their findings (one tuple), and the table lays out
        a shared list once (issue 11): the lines are those of findings that share nothing,
        names that wrap, wide characters, ignored findings and colour included."""
        vulns = (
            *_many(2, "shared summary " * 6).packages[0].vulns,
            Vulnerability(id="PYSEC-2026-9", summary="漢字の説明", ignored_reason="accepted"),
        )

        def copied() -> tuple[Vulnerability, ...]:
            return tuple(dataclasses.replace(v) for v in vulns)

        names = ["a", "b" * 40, "c"]
        shared = AuditReport(
            packages=tuple(
                PackageResult(name=canonicalize_name(n), version=f"1.{i}", vulns=vulns)
                for i, n in enumerate(names * 3)
            ),
            source="test data",
            data_date=dt.date(2026, 7, 23),
        )
        unshared = dataclasses.replace(
            shared,
            packages=tuple(dataclasses.replace(p, vulns=copied()) for p in shared.packages),
        )
        for width in (200, 90, 40):
            for colour in (False, True):
                outputs = []
                for report in (shared, unshared):
                    buffer = io.StringIO()
                    console = Console(
                        file=buffer, width=width, force_terminal=colour, no_color=not colour
                    )
                    print_table(report, console)
                    outputs.append(buffer.getvalue())
                assert outputs[0] == outputs[1], (width, colour)
                plain = re.sub(r"\x1b\[[0-9;]*m", "", outputs[0])
                assert plain.count("PYSEC-2026-9") == 9
                if width >= 72:  # narrower, the columns keep their minimum widths
                    assert all(len(line) <= width for line in plain.splitlines())


_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)


@given(
    ident=_TEXT,
    aliases=st.lists(_TEXT, max_size=3),
    fixes=st.lists(_TEXT, max_size=3),
    smallest=st.none() | _TEXT,
    summary=_TEXT,
    description=_TEXT,
)
def test_json_finding_is_what_the_encoder_writes(
    ident: str,
    aliases: list[str],
    fixes: list[str],
    smallest: str | None,
    summary: str,
    description: str,
) -> None:
    """The JSON of a finding is made from its strings' encodings (issue 11): it is the text
    `json` writes for the finding's object, quotes, control characters and non-ASCII text
    included, and the description falls back to the summary."""
    from safepip.audit.report import _vuln_parts

    vuln = Vulnerability(
        id=ident,
        aliases=tuple(aliases),
        fix_versions=tuple(fixes),
        smallest_fix=smallest,
        summary=summary,
        description=description,
    )
    expected = json.JSONEncoder(ensure_ascii=False).encode(
        {
            "id": ident,
            "fix_versions": fixes,
            "aliases": aliases,
            "description": description or summary,
            "summary": summary,
            "smallest_fix": smallest,
        }
    )
    assert "".join(_vuln_parts(vuln, {})) == expected
