"""Audit report formats: the table and summary for people, JSON, Markdown, CycloneDX and SARIF.

The JSON report keeps pip-audit's shape (`dependencies[].vulns[].id/fix_versions/aliases/
description`, `fixes`) so tools that read pip-audit's output can read safepip's, and adds a
`version` for its own shape and the data source and date. Bump `JSON_VERSION` when the shape
changes.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from safepip import __version__
from safepip.audit import AuditReport, PackageResult, Vulnerability, plural

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from packaging.utils import NormalizedName
    from rich.console import Console

JSON_VERSION = 1
# What `JSONEncoder(ensure_ascii=False).encode` does with a string, without its type checks.
_string: Callable[[str], str] = json.encoder.encode_basestring
OSV_VULN_URL = "https://osv.dev/vulnerability/"


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedFix:
    """A pin that `--fix` would move: `name` from `old_version` to `new_version`."""

    name: NormalizedName
    old_version: str
    new_version: str | None
    """None when no released version fixes every finding."""


def plan_fixes(report: AuditReport) -> tuple[PlannedFix, ...]:
    """The pin moves that would clear the report's active findings."""
    return tuple(
        PlannedFix(name=p.name, old_version=p.version, new_version=p.fix_target)
        for p in report.active_findings
    )


def summary_line(report: AuditReport) -> str:
    """One line, correct plurals: `Found 2 vulnerabilities in 1 package`."""
    count = report.vulnerability_count
    audited = len(report.packages)
    if count:
        packages = plural(len(report.active_findings), "package")
        text = f"Found {plural(count, 'vulnerability')} in {packages}"
    else:
        text = f"No known vulnerabilities found in {plural(audited, 'package')}"
    extras = []
    if report.ignored_count:
        extras.append(f"{report.ignored_count} ignored")
    if report.skipped:
        extras.append(f"{plural(len(report.skipped), 'package')} not audited")
    if extras:
        text += f" ({', '.join(extras)})"
    return text


def data_line(report: AuditReport) -> str:
    date = report.data_date.isoformat() if report.data_date else "unknown date"
    return f"Advisory data: {report.source}, as of {date}"


class _Fragments(dict["Vulnerability", tuple[str, str, str]]):
    """Each distinct finding's JSON in three parts, the middle one its description, encoded once
    per advisory text (`texts`) and shared: what this holds grows with the distinct findings
    by their short fields only, and with the advisories by their text."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}
        self.lists: dict[int, tuple[tuple[Vulnerability, ...], list[str], str]] = {}
        """A package's findings (`vulns`, shared by the pins of one package whose versions
        fall alike among the fixes) by `id`, with the pieces of their JSON (the shared parts
        of each finding, never joined here: a list's text repeats its advisories' text) and
        the JSON of the ignored ones; the tuple is kept, so the `id` stays its own."""


def _vuln_parts(vuln: Vulnerability, texts: dict[str, str]) -> tuple[str, str, str]:
    """A finding's JSON object (`id`, `fix_versions`, `aliases`, `description`, `summary`,
    `smallest_fix`, as the C encoder writes it) in three parts, the middle one the description,
    encoded once per text. Made from the strings' own encodings: the encoder's type dispatch
    per value was most of the report's cost (a test holds the two to the same text)."""
    description = vuln.description or vuln.summary
    encoded = texts.get(description)
    if encoded is None:
        encoded = texts[description] = _string(description)
    smallest = "null" if vuln.smallest_fix is None else _string(vuln.smallest_fix)
    return (
        f'{{"id": {_string(vuln.id)}, "fix_versions": {_strings(vuln.fix_versions)}, '
        f'"aliases": {_strings(vuln.aliases)}, "description": ',
        encoded,
        f', "summary": {_string(vuln.summary)}, "smallest_fix": {smallest}}}',
    )


def _strings(values: Sequence[str]) -> str:
    return f"[{', '.join(map(_string, values))}]"


def _dependency_text(
    pkg: PackageResult, encode: Callable[[object], str], fragments: _Fragments
) -> str:
    """One entry of `dependencies` as JSON text. Each finding is encoded once per run, and
    each list of findings: the pins of a package mostly share their findings, text and fixes
    included."""
    found = pkg.vulns
    known = fragments.lists.get(id(found))
    if known is None or known[0] is not found:
        pieces: list[str] = []
        for vuln in pkg.active:
            parts = fragments.get(vuln)
            if parts is None:
                parts = fragments[vuln] = _vuln_parts(vuln, fragments.texts)
            if pieces:
                pieces.append(", ")
            pieces += parts
        ignored = [
            {"id": v.id, "aliases": list(v.aliases), "reason": v.ignored_reason}
            for v in found
            if v.ignored_reason is not None
        ]
        known = fragments.lists[id(found)] = (
            found,
            pieces,
            f', "ignored_vulns": {encode(ignored)}' if ignored else "",
        )
    _, pieces, ignored_text = known
    target = f', "fix_target": {encode(pkg.fix_target)}' if pieces else ""
    return (
        f'{{"name": {_string(pkg.name)}, "version": {_string(pkg.version)}, '
        f'"vulns": [{"".join(pieces)}]{ignored_text}{target}}}'
    )


def render_json(report: AuditReport, *, fixes: Sequence[PlannedFix] = ()) -> str:
    """The JSON report (pip-audit's shape plus safepip's fields), as one string."""
    buffer = io.StringIO()
    write_json(report, buffer, fixes=fixes)
    return buffer.getvalue()


def write_json(report: AuditReport, out: TextIO, *, fixes: Sequence[PlannedFix] = ()) -> None:
    """Write the JSON report to `out`, one dependency per line.

    Each dependency is encoded and written on its own (with the C encoder, which `indent`
    would rule out), so memory stays bounded by the largest dependency rather than growing
    with the findings: the text of an advisory is repeated in the output for every package it
    affects (pip-audit's shape), but never held in memory more than once (issue 11).
    """
    encode = json.JSONEncoder(ensure_ascii=False).encode
    head = {
        "version": JSON_VERSION,
        "tool": {"name": "safepip", "version": __version__},
        "data": {
            "source": report.source,
            "date": report.data_date.isoformat() if report.data_date else None,
        },
    }
    out.write("{\n")
    for key, value in head.items():
        out.write(f"  {encode(key)}: {encode(value)},\n")
    out.write('  "dependencies": [')
    separator = "\n    "
    fragments = _Fragments()
    for pkg in report.packages:
        out.write(separator + _dependency_text(pkg, encode, fragments))
        separator = ",\n    "
    for skip in report.skipped:
        entry = {"name": skip.name, "version": skip.version, "skip_reason": skip.reason}
        out.write(separator + encode(entry))
        separator = ",\n    "
    tail = {
        "fixes": [
            {"name": f.name, "old_version": f.old_version, "new_version": f.new_version}
            if f.new_version
            else {"name": f.name, "version": f.old_version, "skip_reason": "no fixed version"}
            for f in fixes
        ],
        "summary": summary_line(report),
        "warnings": [*([report.stale] if report.stale else []), *report.warnings],
    }
    out.write("\n  ]" if report.packages or report.skipped else "]")
    for key, value in tail.items():
        out.write(f",\n  {encode(key)}: {encode(value)}")
    out.write("\n}\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def render_markdown(report: AuditReport) -> str:
    """A Markdown table of active findings with the summary and the data date."""
    lines = ["# safepip audit", ""]
    if report.active_findings:
        lines += [
            "| Package | Version | ID | Aliases | Fix versions | Summary |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for pkg in report.active_findings:
            for vuln in pkg.active:
                lines.append(
                    f"| {pkg.name} | {pkg.version} | [{vuln.id}]({OSV_VULN_URL}{vuln.id}) "
                    f"| {_md_cell(', '.join(vuln.aliases))} "
                    f"| {_md_cell(', '.join(vuln.fix_versions))} | {_md_cell(vuln.summary)} |"
                )
        lines.append("")
    if report.skipped:
        lines += ["| Not audited | Version | Reason |", "| --- | --- | --- |"]
        lines += [
            f"| {s.name} | {s.version or ''} | {_md_cell(s.reason)} |" for s in report.skipped
        ]
        lines.append("")
    lines += [f"**{summary_line(report)}**", "", data_line(report), ""]
    return "\n".join(lines)


def _purl(name: str, version: str) -> str:
    return f"pkg:pypi/{name}@{quote(version, safe='.!~*()-_')}"


def render_cyclonedx(report: AuditReport, *, now: dt.datetime | None = None) -> str:
    """A CycloneDX 1.5 JSON SBOM of the audited packages with their active vulnerabilities."""
    import uuid

    now = now or dt.datetime.now(dt.timezone.utc)
    components = [
        {
            "type": "library",
            "bom-ref": _purl(p.name, p.version),
            "name": p.name,
            "version": p.version,
            "purl": _purl(p.name, p.version),
        }
        for p in report.packages
    ]
    vulnerabilities = []
    for pkg in report.active_findings:
        for vuln in pkg.active:
            entry: dict[str, Any] = {
                "id": vuln.id,
                "source": {"name": "OSV", "url": f"{OSV_VULN_URL}{vuln.id}"},
                "references": [
                    {"id": alias, "source": {"name": "OSV", "url": f"{OSV_VULN_URL}{alias}"}}
                    for alias in vuln.aliases
                ],
                "description": vuln.summary or vuln.description,
                "detail": vuln.description,
                "affects": [{"ref": _purl(pkg.name, pkg.version)}],
            }
            if vuln.smallest_fix:
                entry["recommendation"] = f"Upgrade {pkg.name} to {vuln.smallest_fix} or later"
            vulnerabilities.append(entry)
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {
                "components": [{"type": "application", "name": "safepip", "version": __version__}]
            },
            "properties": [
                {"name": "safepip:advisory-source", "value": report.source},
                {
                    "name": "safepip:advisory-data-date",
                    "value": report.data_date.isoformat() if report.data_date else "unknown",
                },
            ],
        },
        "components": components,
        "vulnerabilities": vulnerabilities,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_sarif(
    report: AuditReport, *, locations: Mapping[str, tuple[str, int | None]] | None = None
) -> str:
    """A SARIF 2.1.0 log: one rule per advisory, one result per affected package.

    `locations` maps a package name to the input file (and line) that pinned it.
    """
    locations = locations or {}
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for pkg in report.active_findings:
        for vuln in pkg.active:
            rules.setdefault(
                vuln.id,
                {
                    "id": vuln.id,
                    "shortDescription": {"text": vuln.summary or vuln.id},
                    "fullDescription": {"text": vuln.description or vuln.summary or vuln.id},
                    "helpUri": f"{OSV_VULN_URL}{vuln.id}",
                    "properties": {"tags": ["security", "vulnerability", *vuln.aliases]},
                },
            )
            fix = f"; fixed in {vuln.smallest_fix}" if vuln.smallest_fix else "; no fix above it"
            aliases = f" ({', '.join(vuln.aliases)})" if vuln.aliases else ""
            result: dict[str, Any] = {
                "ruleId": vuln.id,
                "level": "error",
                "message": {
                    "text": f"{pkg.name}=={pkg.version} is affected by {vuln.id}{aliases}{fix}"
                },
            }
            where = locations.get(pkg.name)
            if where is not None:
                physical: dict[str, Any] = {"artifactLocation": {"uri": where[0]}}
                if where[1]:
                    physical["region"] = {"startLine": where[1]}
                result["locations"] = [{"physicalLocation": physical}]
            results.append(result)
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "safepip",
                        "version": __version__,
                        "informationUri": "https://pypi.org/project/safepip/",
                        "rules": list(rules.values()),
                    }
                },
                "results": results,
                "properties": {
                    "advisorySource": report.source,
                    "advisoryDataDate": report.data_date.isoformat() if report.data_date else None,
                },
            }
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


_HEADERS = ("Package", "Version", "ID", "Fix", "Summary")
_GAP = "  "
# Terminal control characters in advisory text (it comes from a database anyone can write to)
# are shown as spaces, never sent to the terminal.
_CONTROL = {c: " " for c in (*range(32), *range(127, 160))}
_BOLD, _CYAN, _DIM, _RESET = "\x1b[1m", "\x1b[36m", "\x1b[2m", "\x1b[0m"


def _cell(text: str) -> str:
    return text if text.isprintable() else text.translate(_CONTROL)


def _width(text: str) -> int:
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` cells, broken at spaces, long words folded."""
    measure = len if text.isascii() else _width
    if measure(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if measure(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while measure(word) > width:
            cut = width
            while cut > 1 and measure(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines or [""]


def _column_widths(natural: list[int], total: int) -> list[int]:
    """Column widths that fit `total` cells: the natural widths when they fit; otherwise
    `Package`, `Version` and `Fix` keep theirs (up to a cap) and `ID` and `Summary` share
    the rest, `Summary` giving way first."""
    gaps = len(_GAP) * (len(natural) - 1)
    if sum(natural) + gaps <= total:
        return natural
    package, version, ident, fix, _ = natural
    package, version, fix = min(package, 24), min(version, 16), min(fix, 16)
    rest = max(total - gaps - package - version - fix, 30)
    ident = min(ident, max(rest - 30, 20))
    return [package, version, ident, fix, max(rest - ident, 10)]


def print_table(report: AuditReport, console: Console) -> None:
    """The findings table, skipped packages, warnings and the closing summary, on `console`.

    The table is laid out here rather than by rich's `Table`, whose measuring of every cell
    took seconds for thousands of findings (issue 11): widths come from one pass over the
    rows, and a cell wraps only when it is wider than its column. Colour only decorates.
    """
    from rich.markup import escape

    if report.findings:
        _write_table(report, console)
    for skip in report.skipped:
        version = f"=={skip.version}" if skip.version else ""
        console.print(
            f"[yellow]warning:[/] not audited: `{escape(skip.name)}{escape(version)}`: "
            f"{escape(skip.reason)}"
        )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(escape(data_line(report)))
    style = "red" if report.vulnerability_count else ("yellow" if report.skipped else "green")
    console.print(f"[{style}]{escape(summary_line(report))}[/]")


def _pad(text: str, width: int) -> str:
    # Padded by cells, not characters: wide characters keep the columns aligned.
    return text.ljust(width) if text.isascii() else f"{text}{' ' * (width - _width(text))}"


def _lines(cells: Sequence[str], widths: Sequence[int]) -> list[str]:
    """`cells` laid out in columns of `widths`, each cell wrapped to its column; every column
    but the last padded."""
    if all(len(c) <= w for c, w in zip(cells, widths, strict=True)) and "".join(cells).isascii():
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        return [_GAP.join([*padded, cells[-1]])]
    wrapped = [
        [cell] if len(cell) <= w and cell.isascii() else _wrap(cell, w)
        for cell, w in zip(cells, widths, strict=True)
    ]
    lines = []
    for n in range(max(map(len, wrapped))):
        line = [column[n] if n < len(column) else "" for column in wrapped]
        padded = [_pad(t, w) for t, w in zip(line[:-1], widths, strict=False)]
        lines.append(_GAP.join([*padded, line[-1]]))
    return lines


def _write_table(report: AuditReport, console: Console) -> None:
    # A package's findings are shared by the pins whose versions fall alike among the fixes
    # (`audit._Shared`): their cells, and their three columns laid out, are made once.
    rows: list[tuple[str, str, tuple[str, str, str], bool]] = []
    known: dict[int, tuple[tuple[Vulnerability, ...], list[tuple[tuple[str, str, str], bool]]]]
    known = {}
    for pkg in report.findings:
        name, version = _cell(pkg.name), _cell(pkg.version)
        found = known.get(id(pkg.vulns))
        if found is None or found[0] is not pkg.vulns:
            cells = []
            for vuln in pkg.vulns:
                ident = vuln.id + (f" ({', '.join(vuln.aliases)})" if vuln.aliases else "")
                ignored = vuln.ignored_reason is not None
                note = f"ignored: {vuln.ignored_reason}" if ignored else vuln.summary
                right = (_cell(ident), _cell(vuln.smallest_fix or "-"), _cell(note))
                cells.append((right, ignored))
            found = known[id(pkg.vulns)] = (pkg.vulns, cells)
        for right, ignored in found[1]:
            rows.append((name, version, right, ignored))
    natural = [_width(h) for h in _HEADERS]
    columns = (
        {r[0] for r in rows},
        {r[1] for r in rows},
        *map(set, zip(*{r[2] for r in rows}, strict=True)),
    )
    for i, column in enumerate(columns):
        measure = len if "".join(column).isascii() else _width
        natural[i] = max(natural[i], *map(measure, column))
    widths = _column_widths(natural, console.width)
    colour = console.color_system is not None and not console.no_color
    w0, w1 = widths[:2]
    right_widths = widths[2:]
    blank_left = f"{'':<{w0}}{_GAP}{'':<{w1}}{_GAP}"
    blank_right = _GAP.join(" " * w for w in right_widths[:-1]) + _GAP
    laid_out: dict[tuple[str, str, str], list[str]] = {}
    out: list[str] = []
    header_style = _BOLD if colour else ""
    a, b, c, d, e = _HEADERS
    # `dim` is None for the header row.
    for name, version, right, dim in [(a, b, (c, d, e), None), *rows]:
        if len(out) >= 1000:
            # Written as it goes: the table of 10,000 pins is 10 MB of text.
            console.file.write("\n".join(out) + "\n")
            out.clear()
        style = header_style if dim is None else (_DIM if colour and dim else "")
        right_lines = laid_out.get(right)
        if right_lines is None:
            right_lines = laid_out[right] = _lines(right, right_widths)
        if (
            len(name) <= w0
            and len(version) <= w1
            and len(right_lines) == 1
            and (name + version).isascii()
        ):
            # One line (the common case): what the general layout below gives, made directly.
            text = f"{name:<{w0}}{_GAP}{version:<{w1}}{_GAP}{right_lines[0]}".rstrip()
            if colour and dim is not None and name:
                text = f"{_CYAN}{name}{_RESET}{style}{text[len(name) :]}"
            out.append(f"{style}{text}{_RESET}" if style else text)
            continue
        firsts = [name] if len(name) <= w0 and name.isascii() else _wrap(name, w0)
        left_lines = _lines((name, version, ""), (w0, w1, 0))
        for n in range(max(len(left_lines), len(right_lines))):
            left = left_lines[n] if n < len(left_lines) else blank_left
            right_line = right_lines[n] if n < len(right_lines) else blank_right
            text = (left + right_line).rstrip()
            first = firsts[n] if n < len(firsts) else ""
            if colour and dim is not None and first:
                text = f"{_CYAN}{first}{_RESET}{style}{text[len(first) :]}"
            out.append(f"{style}{text}{_RESET}" if style else text)
    if out:
        console.file.write("\n".join(out) + "\n")
    console.file.flush()
