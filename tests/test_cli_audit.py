"""`safepip audit` and `safepip db` through their argparse parsers: exit codes, stdout, stderr."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from typing import TYPE_CHECKING

import pytest

from safepip import cli_audit
from safepip.audit import database as db
from safepip.errors import SafepipError
from test_audit import make_osv_zip

if TYPE_CHECKING:
    from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="safepip")
    cli_audit.add_parsers(root.add_subparsers(dest="command", required=True))
    return root


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = parser().parse_args(argv)
    try:
        code = int(args.handler(args))
    except SafepipError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        code = int(exc.exit_code)
    out, err = capsys.readouterr()
    return code, out, " ".join(ANSI.sub("", err).split())


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and user data folder for every test."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "userdata"))
    monkeypatch.setenv("NO_COLOR", "1")
    return work


@pytest.fixture
def osv_zip(tmp_path: Path) -> Path:
    return make_osv_zip("pypa-2026-07-23", tmp_path / "all.zip")


def test_clean_pins_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["audit", "requests==2.34.2", "idna==3.20"], capsys)
    assert code == 0
    assert out == ""
    assert "No known vulnerabilities found in 2 packages" in err
    assert "as of 2026-07-23" in err


def test_findings_exit_5_with_table_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["audit", "jinja2==2.10"], capsys)
    assert code == 5
    assert out == ""
    assert "PYSEC-2019-217" in err
    assert "Found 6 vulnerabilities in 1 package" in err


def test_json_report_shape(capsys: pytest.CaptureFixture[str], osv_zip: Path) -> None:
    code, out, err = run(["audit", "--db", str(osv_zip), "-f", "json", "jw.util==2.0"], capsys)
    assert code == 5
    doc = json.loads(out)
    assert doc["version"] == 1
    assert doc["data"] == {"source": f"OSV data `{osv_zip}`", "date": "2026-07-10"}
    dep = doc["dependencies"][0]
    assert dep["name"] == "jw-util"
    assert dep["version"] == "2.0"
    vuln = dep["vulns"][0]
    assert vuln["id"] == "PYSEC-2020-341"
    assert vuln["fix_versions"] == ["2.3"]
    assert vuln["aliases"] == ["CVE-2020-13388", "GHSA-h72c-w3q3-55qq"]
    assert vuln["description"].startswith("An exploitable vulnerability exists")
    assert doc["fixes"] == []
    assert "Found 1 vulnerability in 1 package" in err


def test_ignore_vuln_by_alias(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["audit", "jw.util==2.0", "--ignore-vuln", "GHSA-h72c-w3q3-55qq"], capsys)
    assert code == 0
    assert "(1 ignored)" in err


def test_settings_ignore_with_reason(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    (isolated / "pyproject.toml").write_text(
        '[[tool.safepip.audit.ignore]]\nid = "CVE-2020-13388"\nreason = "not used"\n'
        "until = 2099-01-01\n"
    )
    code, _, err = run(["audit", "jw.util==2.0"], capsys)
    assert code == 0
    assert "ignored: not used" in err


def test_requirements_file_pinned(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    (isolated / "requirements.txt").write_text("jinja2==3.1.4\nrequests==2.34.2\n")
    code, out, _ = run(["audit", "-r", "requirements.txt", "-f", "sarif"], capsys)
    assert code == 5
    sarif = json.loads(out)
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"PYSEC-2026-1471"}
    location = results[0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"].endswith("requirements.txt")
    assert location["region"] == {"startLine": 1}


def test_error_unpinned_requirement(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    (isolated / "requirements.txt").write_text("requests>=2\n")
    code, out, err = run(["audit", "-r", "requirements.txt"], capsys)
    assert code == 1
    assert out == ""
    assert (
        "error: Cannot audit unpinned requirement `requests>=2` (requirements.txt:1); "
        "pin it or lock first" in err
    )


def test_pylock_positional(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    (isolated / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "test"\n\n'
        '[[packages]]\nname = "jw-util"\nversion = "2.0"\n'
        '[packages.archive]\nurl = "https://example.org/jw.util-2.0.tar.gz"\n'
        'hashes = {sha256 = "' + "0" * 64 + '"}\n\n'
        '[[packages]]\nname = "local-thing"\n'
        '[packages.directory]\npath = "./local"\n'
    )
    code, out, err = run(["audit", "pylock.toml", "-f", "json"], capsys)
    assert code == 5
    deps = json.loads(out)["dependencies"]
    assert deps[0]["vulns"][0]["id"] == "PYSEC-2020-341"
    assert deps[1]["name"] == "local-thing"
    assert "skip_reason" in deps[1]
    assert "not audited: `local-thing`" in err


def test_skipped_only_exits_1(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    (isolated / "requirements.txt").write_text("demo @ git+https://example.org/demo.git\n")
    code, _, err = run(["audit", "-r", "requirements.txt"], capsys)
    assert code == 1
    assert "1 package not audited" in err


def test_python_environment(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    code, out, _ = run(["audit", "--python", sys.executable, "-f", "json"], capsys)
    assert code in (0, 5)
    names = {d["name"] for d in json.loads(out)["dependencies"]}
    assert {"packaging", "pytest", "hypothesis"} <= names


def test_error_nothing_to_audit(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["audit"], capsys)
    assert code == 2
    assert "error: Nothing to audit" in err


def test_fix_plans_then_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["audit", "jinja2==2.10", "--fix"], capsys)
    assert code == 1
    assert "jinja2: 2.10 -> 3.1.6" in err
    assert "error: `--fix` needs `safepip lock`" in err


def test_markdown_and_cyclonedx(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["audit", "jw.util==2.0", "-f", "markdown"], capsys)
    assert code == 5
    assert "| jw-util | 2.0 | [PYSEC-2020-341]" in out
    assert "**Found 1 vulnerability in 1 package**" in out
    code, out, _ = run(["audit", "jw.util==2.0", "-f", "cyclonedx"], capsys)
    bom = json.loads(out)
    assert bom["specVersion"] == "1.5"
    assert bom["vulnerabilities"][0]["affects"] == [{"ref": "pkg:pypi/jw-util@2.0"}]


class TestDb:
    def test_status_bundled(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(["db", "status", "-f", "json"], capsys)
        assert code == 0
        doc = json.loads(out)
        assert doc["origin"] == "bundled"
        assert doc["date"] == "2026-07-23"
        assert doc["records"] == 6811
        assert doc["sha256"] == db.file_sha256(db.SHIPPED)

    def test_import_then_status_then_audit_uses_it(
        self, capsys: pytest.CaptureFixture[str], osv_zip: Path
    ) -> None:
        code, _, err = run(["db", "import", str(osv_zip), "--date", "2026-07-20"], capsys)
        assert code == 0
        assert "Imported the advisory database" in err
        code, out, _ = run(["db", "status"], capsys)
        assert "Data date: 2026-07-20" in out
        assert "(user)" in out
        code, _, err = run(["audit", "jw.util==2.0"], capsys)
        assert code == 5
        assert "as of 2026-07-20" in err

    def test_update_from_path(self, capsys: pytest.CaptureFixture[str], osv_zip: Path) -> None:
        code, _, err = run(["db", "update", "--from", str(osv_zip)], capsys)
        assert code == 0
        assert "Updated the advisory database" in err

    def test_error_refresh_failure(
        self, capsys: pytest.CaptureFixture[str], isolated: Path
    ) -> None:
        (isolated / "safepip.toml").write_text(
            '[audit]\nupdate-url = "http://127.0.0.1:9/all.zip"\n'
        )
        code, _, err = run(["audit", "--refresh", "requests==2.34.2"], capsys)
        assert code == 1
        assert "error: Could not update the advisory database" in err

    def test_error_date_argument(self, capsys: pytest.CaptureFixture[str], osv_zip: Path) -> None:
        with pytest.raises(SystemExit):
            parser().parse_args(["db", "import", str(osv_zip), "--date", "yesterday"])
        assert dt.date.fromisoformat("2026-07-20")
