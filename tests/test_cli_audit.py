"""`safepip audit` and `safepip db` through the command line: exit codes, stdout, stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safepip.audit import database as db
from safepip.lock import via_entries
from test_audit import make_osv_zip

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Cli, Environment
    from servers import StaticIndex
    from wheelbuild import WheelFactory


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


def test_clean_pins_exit_0(cli: Cli) -> None:
    code, out, err = cli("audit", "requests==2.34.2", "idna==3.20").flat()
    assert code == 0
    assert out == ""
    assert "No known vulnerabilities found in 2 packages" in err
    assert "as of 2026-07-23" in err


def test_findings_exit_5_with_table_on_stderr(cli: Cli) -> None:
    code, out, err = cli("audit", "jinja2==2.10").flat()
    assert code == 5
    assert out == ""
    assert "PYSEC-2019-217" in err
    assert "Found 6 vulnerabilities in 1 package" in err


def test_json_report_shape(cli: Cli, osv_zip: Path) -> None:
    code, out, err = cli("audit", "--db", str(osv_zip), "--format", "json", "jw.util==2.0").flat()
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


def test_ignore_vuln_by_alias(cli: Cli) -> None:
    code, _, err = cli("audit", "jw.util==2.0", "--ignore-vuln", "GHSA-h72c-w3q3-55qq").flat()
    assert code == 0
    assert "(1 ignored)" in err


def test_settings_ignore_with_reason(cli: Cli, isolated: Path) -> None:
    (isolated / "pyproject.toml").write_text(
        '[[tool.safepip.audit.ignore]]\nid = "CVE-2020-13388"\nreason = "not used"\n'
        "until = 2099-01-01\n"
    )
    code, _, err = cli("audit", "jw.util==2.0").flat()
    assert code == 0
    assert "ignored: not used" in err


def test_requirements_file_pinned(cli: Cli, isolated: Path) -> None:
    (isolated / "requirements.txt").write_text("jinja2==3.1.4\nrequests==2.34.2\n")
    code, out, _ = cli("audit", "-r", "requirements.txt", "--format", "sarif").flat()
    assert code == 5
    sarif = json.loads(out)
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"PYSEC-2026-1471"}
    location = results[0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"].endswith("requirements.txt")
    assert location["region"] == {"startLine": 1}


def test_error_unpinned_requirement(cli: Cli, isolated: Path) -> None:
    (isolated / "requirements.txt").write_text("requests>=2\n")
    code, out, err = cli("audit", "-r", "requirements.txt").flat()
    assert code == 1
    assert out == ""
    assert (
        "error: Cannot audit unpinned requirement `requests>=2` (requirements.txt:1); "
        "pin it or lock first" in err
    )


def test_pylock_positional(cli: Cli, isolated: Path) -> None:
    (isolated / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "test"\n\n'
        '[[packages]]\nname = "jw-util"\nversion = "2.0"\n'
        '[packages.archive]\nurl = "https://example.org/jw.util-2.0.tar.gz"\n'
        'hashes = {sha256 = "' + "0" * 64 + '"}\n\n'
        '[[packages]]\nname = "local-thing"\n'
        '[packages.directory]\npath = "./local"\n'
    )
    code, out, err = cli("audit", "pylock.toml", "--format", "json").flat()
    assert code == 5
    deps = json.loads(out)["dependencies"]
    assert deps[0]["vulns"][0]["id"] == "PYSEC-2020-341"
    assert deps[1]["name"] == "local-thing"
    assert "skip_reason" in deps[1]
    assert "not audited: `local-thing`" in err


def test_skipped_only_exits_1(cli: Cli, isolated: Path) -> None:
    (isolated / "requirements.txt").write_text("demo @ git+https://example.org/demo.git\n")
    code, _, err = cli("audit", "-r", "requirements.txt").flat()
    assert code == 1
    assert "1 package not audited" in err


def test_python_environment(
    cli: Cli,
    environment: Environment,
    static_index: Callable[..., StaticIndex],
    wheel_factory: WheelFactory,
) -> None:
    """`--python` audits exactly what is installed in that environment."""
    index = static_index()
    index.add(wheel_factory("jw.util", "2.0"))
    index.add(wheel_factory("idna", "3.20"))
    installed = environment.install("jw.util==2.0", "idna==3.20", "-i", index.url, "--no-audit")
    assert installed.code == 0, installed.err
    code, out, err = cli("audit", "--python", environment.python, "--format", "json").flat()
    assert code == 5, err
    deps = {d["name"]: d for d in json.loads(out)["dependencies"]}
    assert sorted(deps) == ["idna", "jw-util"]
    assert (deps["idna"]["version"], deps["idna"]["vulns"]) == ("3.20", [])
    assert deps["jw-util"]["version"] == "2.0"
    assert [v["id"] for v in deps["jw-util"]["vulns"]] == ["PYSEC-2020-341"]
    assert "Found 1 vulnerability in 1 package" in err


def test_error_nothing_to_audit(cli: Cli) -> None:
    code, _, err = cli("audit").flat()
    assert code == 2
    assert "error: Nothing to audit" in err


def test_error_fix_needs_a_lock_file(cli: Cli) -> None:
    code, _, err = cli("audit", "jinja2==2.10", "--fix").flat()
    assert code == 2
    assert "error: `--fix` rewrites lock files; it cannot change `jinja2==2.10`" in err


def test_markdown_and_cyclonedx(cli: Cli) -> None:
    code, out, _ = cli("audit", "jw.util==2.0", "--format", "markdown").flat()
    assert code == 5
    assert "| jw-util | 2.0 | [PYSEC-2020-341]" in out
    assert "**Found 1 vulnerability in 1 package**" in out
    code, out, _ = cli("audit", "jw.util==2.0", "--format", "cyclonedx").flat()
    bom = json.loads(out)
    assert bom["specVersion"] == "1.5"
    assert bom["vulnerabilities"][0]["affects"] == [{"ref": "pkg:pypi/jw-util@2.0"}]


class TestDb:
    def test_status_bundled(self, cli: Cli) -> None:
        code, out, _ = cli("db", "status", "--format", "json").flat()
        assert code == 0
        doc = json.loads(out)
        assert doc["origin"] == "bundled"
        assert doc["date"] == "2026-07-23"
        assert doc["records"] == 6811
        assert doc["sha256"] == db.file_sha256(db.SHIPPED)

    def test_import_then_status_then_audit_uses_it(self, cli: Cli, osv_zip: Path) -> None:
        code, _, err = cli("db", "import", str(osv_zip), "--date", "2026-07-20").flat()
        assert code == 0
        assert "Imported the advisory database" in err
        code, out, _ = cli("db", "status").flat()
        assert "Data date: 2026-07-20" in out
        assert "(user)" in out
        code, _, err = cli("audit", "jw.util==2.0").flat()
        assert code == 5
        assert "as of 2026-07-20" in err

    def test_update_from_path(self, cli: Cli, osv_zip: Path) -> None:
        code, _, err = cli("db", "update", "--from", str(osv_zip)).flat()
        assert code == 0
        assert "Updated the advisory database" in err

    def test_error_refresh_failure(self, cli: Cli, isolated: Path) -> None:
        (isolated / "safepip.toml").write_text(
            '[audit]\nupdate-url = "http://127.0.0.1:9/all.zip"\n'
        )
        code, _, err = cli("audit", "--refresh", "requests==2.34.2").flat()
        assert code == 1
        assert "error: Could not update the advisory database" in err

    def test_error_date_argument(self, cli: Cli, osv_zip: Path) -> None:
        code, _, err = cli("db", "import", str(osv_zip), "--date", "yesterday").flat()
        assert code == 2
        assert "error: argument --date: not a date (YYYY-MM-DD): 'yesterday'" in err


# --- --fix: re-locking on a loopback index ------------------------------------------------------


def write_osv(folder: Path, name: str, events: list[dict[str, str]], osv_id: str) -> None:
    folder.mkdir(exist_ok=True)
    record = {
        "schema_version": "1.6.0",
        "id": osv_id,
        "modified": "2026-07-01T00:00:00Z",
        "summary": f"made-up flaw in {name}",
        "affected": [
            {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }
    (folder / f"{osv_id}.json").write_text(json.dumps(record), "utf-8")


@pytest.fixture
def advisories(tmp_path: Path) -> Path:
    """`vulnpkg` is affected below 1.5; `nofix` has no fixed release."""
    folder = tmp_path / "osv"
    write_osv(folder, "vulnpkg", [{"introduced": "0"}, {"fixed": "1.5"}], "TEST-2026-1")
    write_osv(folder, "nofix", [{"introduced": "0"}], "TEST-2026-2")
    return folder


@pytest.fixture
def fix_index(static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory) -> StaticIndex:
    served = static_index()
    served.add(wheel_factory("app", "1.0", requires=["vulnpkg>=1"]))
    for version in ("1.0", "1.5", "2.0"):
        served.add(wheel_factory("vulnpkg", version))
    served.add(wheel_factory("nofix", "1.0"))
    served.add(wheel_factory("capped", "1.0", requires=["vulnpkg<1.5"]))
    return served


def make_lock(index: StaticIndex, cli: Cli, output: str, *inputs: str) -> Path:
    """`safepip lock` of `inputs` with `vulnpkg` held at the vulnerable 1.0."""
    Path("constraints.txt").write_text("vulnpkg==1.0\n", "utf-8")
    argv = ["lock", *inputs, "-o", output, "-c", "constraints.txt", "-i", index.url]
    code, _, err = cli(*argv, "--python-version", "3.11", "--isolated").flat()
    assert code == 0, err
    return Path(output)


def sha256_of(index: StaticIndex, filename: str) -> str:
    return next(
        f.sha256 for files in index.projects.values() for f in files if f.filename == filename
    )


def pip_accepts(lock: Path, index: StaticIndex, tmp_path: Path) -> None:
    """pip's own hash-checking mode installs the rewritten lock (as a dry run)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "install", "--dry-run", "--require-hashes", "--ignore-installed"),
            *("-r", str(lock), "--index-url", index.url, "--target", str(tmp_path / "t")),
            *("--disable-pip-version-check", "--no-cache-dir"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "vulnpkg-1.5" in done.stdout


class TestFix:
    def test_requirements_lock_moves_to_smallest_fix(
        self,
        fix_index: StaticIndex,
        advisories: Path,
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        Path("requirements.in").write_text("app\n", "utf-8")
        lock = make_lock(fix_index, cli, "requirements.txt", "requirements.in")
        before = lock.read_text("utf-8")
        assert "vulnpkg==1.0 \\" in before
        code, out, err = cli("audit", "--fix", "-r", str(lock), "--db", str(advisories)).flat()
        assert code == 0, err
        assert out == ""
        assert "TEST-2026-1" in err
        assert "Changed `requirements.txt`: vulnpkg 1.0 -> 1.5" in err
        assert "After the fix: No known vulnerabilities found in 2 packages" in err
        text = lock.read_text("utf-8")
        sha = sha256_of(fix_index, "vulnpkg-1.5-py3-none-any.whl")
        assert f"vulnpkg==1.5 \\\n    --hash=sha256:{sha}\n    # via app\n" in text
        # The other pin, the header's command and the `# via` style are kept.
        assert text.replace(f"vulnpkg==1.5 \\\n    --hash=sha256:{sha}", "") == before.replace(
            "vulnpkg==1.0 \\\n    --hash=sha256:"
            + sha256_of(fix_index, "vulnpkg-1.0-py3-none-any.whl"),
            "",
        )
        assert list(Path().glob(".requirements.txt.*")) == []
        pip_accepts(lock, fix_index, tmp_path)

    def test_dry_run_writes_nothing(
        self, fix_index: StaticIndex, advisories: Path, cli: Cli
    ) -> None:
        lock = make_lock(fix_index, cli, "requirements.txt", "app")
        before = lock.read_bytes()
        argv = ["audit", "--fix", "--dry-run", "-r", str(lock), "--db", str(advisories)]
        code, _, err = cli(*argv).flat()
        assert code == 5
        assert "Would change `requirements.txt`: vulnpkg 1.0 -> 1.5" in err
        assert "Dry run: no file was written" in err
        assert lock.read_bytes() == before

    def test_pylock(self, fix_index: StaticIndex, advisories: Path, cli: Cli) -> None:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # Python 3.10
            import tomli as tomllib

        lock = make_lock(fix_index, cli, "pylock.toml", "app")
        code, _, err = cli("audit", "--fix", str(lock), "--db", str(advisories)).flat()
        assert code == 0, err
        assert "vulnpkg 1.0 -> 1.5" in err
        packages = {p["name"]: p for p in tomllib.loads(lock.read_text("utf-8"))["packages"]}
        assert sorted(packages) == ["app", "vulnpkg"]
        assert packages["vulnpkg"]["version"] == "1.5"
        wheel = packages["vulnpkg"]["wheels"][0]
        assert wheel["name"] == "vulnpkg-1.5-py3-none-any.whl"
        assert wheel["hashes"] == {"sha256": sha256_of(fix_index, wheel["name"])}
        assert packages["app"]["version"] == "1.0"

    def test_no_fix_available_leaves_that_pin(
        self, fix_index: StaticIndex, advisories: Path, cli: Cli
    ) -> None:
        lock = make_lock(fix_index, cli, "requirements.txt", "app", "nofix")
        code, _, err = cli("audit", "--fix", "-r", str(lock), "--db", str(advisories)).flat()
        assert code == 5
        assert (
            "warning: `nofix==1.0`: no released version fixes every finding; its pin is left "
            "as it is" in err
        )
        assert "vulnpkg 1.0 -> 1.5" in err
        assert "Still vulnerable: `nofix==1.0` (TEST-2026-2)" in err
        assert "After the fix: Found 1 vulnerability in 1 package" in err
        text = lock.read_text("utf-8")
        assert "nofix==1.0 \\" in text
        assert "vulnpkg==1.5 \\" in text

    def test_nothing_fixable_changes_nothing(
        self, fix_index: StaticIndex, advisories: Path, cli: Cli
    ) -> None:
        lock = make_lock(fix_index, cli, "requirements.txt", "nofix")
        before = lock.read_bytes()
        code, _, err = cli("audit", "--fix", "-r", str(lock), "--db", str(advisories)).flat()
        assert code == 5
        assert "Nothing to fix: no vulnerable pin has a fixed version" in err
        assert lock.read_bytes() == before

    def test_error_relock_failure_leaves_file(
        self, fix_index: StaticIndex, advisories: Path, cli: Cli
    ) -> None:
        lock = make_lock(fix_index, cli, "requirements.txt", "capped")
        before = lock.read_bytes()
        code, _, err = cli("audit", "--fix", "-r", str(lock), "--db", str(advisories)).flat()
        assert code == 1
        assert (
            "error: Cannot fix `requirements.txt`, no file was changed: the re-lock failed: "
            "No version of `vulnpkg` satisfies `vulnpkg<1.5,>=1.5` `capped==1.0` requires "
            "`vulnpkg<1.5`" in err
        )
        assert lock.read_bytes() == before

    def test_error_fix_python_environment(self, cli: Cli) -> None:
        import sys

        code, _, err = cli("audit", "--fix", "--python", sys.executable).flat()
        assert code == 2
        assert (
            "error: `--fix` rewrites lock files; it cannot change the environment of `--python`"
            in err
        )

    def test_error_fix_unhashed_file(self, advisories: Path, cli: Cli) -> None:
        Path("requirements.txt").write_text("vulnpkg==1.0\n", "utf-8")
        argv = ["audit", "--fix", "-r", "requirements.txt", "--db", str(advisories)]
        code, _, err = cli(*argv).flat()
        assert code == 2
        assert (
            "error: `--fix` rewrites hash-pinned locks, and `requirements.txt` has requirements "
            "without `--hash`: `vulnpkg==1.0`" in err
        )

    def test_error_dry_run_without_fix(self, cli: Cli) -> None:
        code, _, err = cli("audit", "--dry-run", "jinja2==2.10").flat()
        assert code == 2
        assert "error: `--dry-run` only applies to `--fix`" in err


class TestViaComments:
    def test_forms(self) -> None:
        lines = [
            "a==1.0 \\",
            "    --hash=sha256:00",
            "    # via",
            "    #   -r requirements.in",
            "    #   b",
            "",
            "# The following packages are considered to be unsafe:",
            "#   pip",
        ]
        assert via_entries(lines, 0, len(lines)) == ["-r requirements.in", "b"]
        assert via_entries(["c==1", "    # via d"], 0, 2) == ["d"]
        assert via_entries(["c==1", "    # viable comment"], 0, 2) == []

    @given(
        st.lists(
            st.from_regex(r"(-r )?[a-z][a-z0-9._-]{0,12}", fullmatch=True),
            min_size=1,
            max_size=5,
        )
    )
    def test_round_trips_the_lock_writers_forms(self, entries: list[str]) -> None:
        if len(entries) == 1:
            comment = [f"    # via {entries[0]}"]
        else:
            comment = ["    # via", *(f"    #   {e}" for e in entries)]
        lines = ["x==1 \\", "    --hash=sha256:00", *comment, "y==2"]
        assert via_entries(lines, 0, len(lines) - 1) == entries


def test_json_written_one_dependency_per_line(cli: Cli) -> None:
    """Each dependency is one line of the JSON report (it is written as it is produced), and
    the garbage collector paused for the audit is on again afterwards."""
    import gc

    code, out, _ = cli("audit", "--format", "json", "jinja2==2.10", "requests==2.34.2")
    assert code == 5
    document = json.loads(out)
    lines = [line.strip().rstrip(",") for line in out.splitlines()]
    for dependency in document["dependencies"]:
        assert json.dumps(dependency, ensure_ascii=False) in lines
    assert gc.isenabled()
