"""Tests for what users see: the summary line, the JSON installation report, console output."""

from __future__ import annotations

import importlib.metadata
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.tags import Tag
from packaging.utils import canonicalize_name

from safepip import __version__
from safepip.fetch import FetchedArtifact, NoProgress
from safepip.install import ChangePlan, InstallResult
from safepip.pipeline import InstallOutcome, Plan
from safepip.plan import Artifact, Pin
from safepip.report import (
    REPORT_VERSION,
    ConsoleReporter,
    LineProgress,
    RichProgress,
    installation_report,
    plural,
    summary,
    use_color,
    write_json,
)
from safepip.target import InstalledDistribution, SchemePaths, Target

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from conftest import Cli

SHA_A = "a" * 64
SHA_G = "c" * 64


def make_pin(
    name: str,
    version: str,
    *,
    url: str | None = None,
    requested: bool = True,
    extras: frozenset[str] = frozenset(),
    direct_url: bool = False,
    yanked: str | None = None,
) -> Pin:
    filename = f"{name}-{version}-py3-none-any.whl"
    art = Artifact(
        name=canonicalize_name(name),
        version=version,
        filename=filename,
        url=url or f"https://files.example/{filename}",
        origin="https://user:pw@idx.example/simple/",
        expected_hashes=frozenset({f"sha256:{'0' * 64}"}),
        hash_source="pinned",
        direct_url=direct_url,
        yanked=yanked,
    )
    return Pin(
        name=canonicalize_name(name),
        display_name=name,
        version=version,
        artifact=art,
        requested=requested,
        extras=extras,
    )


TARGET = Target(
    python=Path("/venv/bin/python"),
    version=(3, 11, 4),
    markers={"python_version": "3.11", "sys_platform": "linux"},
    tags=(Tag("py3", "none", "any"),),
    paths=SchemePaths(
        purelib=Path("/venv/lib/python3.11/site-packages"),
        platlib=Path("/venv/lib/python3.11/site-packages"),
        scripts=Path("/venv/bin"),
        data=Path("/venv"),
        headers=Path("/venv/include"),
    ),
    prefix=Path("/venv"),
    is_virtualenv=True,
    externally_managed=None,
)

ALPHA = make_pin(
    "Alpha",
    "1.0",
    url="https://alice:hunter2@files.example/Alpha-1.0-py3-none-any.whl?token=t0k",
    extras=frozenset({"socks", "http2"}),
    direct_url=True,
)
BETA = make_pin("beta", "2.0", requested=False, yanked="broken")
GAMMA = make_pin("gamma", "3.0")
OLD_GAMMA = InstalledDistribution(
    name=canonicalize_name("gamma"),
    display_name="gamma",
    version="2.9",
    dist_info=Path("/venv/lib/python3.11/site-packages/gamma-2.9.dist-info"),
    installer="pip",
)


def make_outcome(
    *,
    install: Sequence[Pin] = (ALPHA, GAMMA),
    keep: Sequence[Pin] = (BETA,),
    remove: Sequence[InstalledDistribution] = (OLD_GAMMA,),
    dry_run: bool = False,
) -> InstallOutcome:
    pins = (*install, *keep)
    changes = ChangePlan(install=tuple(install), remove=tuple(remove), keep=tuple(keep))
    fetched = tuple(
        FetchedArtifact(
            artifact=pin.artifact,
            path=Path("/cache") / pin.artifact.filename,
            sha256=SHA_A if pin is ALPHA else SHA_G,
            cached=False,
        )
        for pin in install
    )
    result = (
        None
        if dry_run
        else InstallResult(
            installed=tuple(install), removed=tuple(remove), kept=tuple(keep), linked=True
        )
    )
    plan = Plan(target=TARGET, pins=pins, hash_mode=True, index_urls=(), find_links=())
    return InstallOutcome(plan=plan, changes=changes, result=result, fetched=fetched)


class TestSummary:
    @pytest.mark.parametrize(
        ("count", "word", "many", "text"),
        [
            (0, "package", None, "0 packages"),
            (1, "package", None, "1 package"),
            (2, "package", None, "2 packages"),
            (1, "vulnerability", "vulnerabilities", "1 vulnerability"),
            (3, "vulnerability", "vulnerabilities", "3 vulnerabilities"),
        ],
    )
    def test_plural(self, count: int, word: str, many: str | None, text: str) -> None:
        assert plural(count, word, many) == text

    def test_install(self) -> None:
        assert summary(make_outcome(), 1.234) == (
            "Installed 2 packages, replaced 1, kept 1 already installed in 1.23s"
        )

    def test_one_package(self) -> None:
        outcome = make_outcome(install=(GAMMA,), keep=(), remove=())
        assert summary(outcome, 0.5) == "Installed 1 package in 0.50s"

    def test_nothing_to_do(self) -> None:
        outcome = make_outcome(install=(), keep=(ALPHA, BETA), remove=())
        assert summary(outcome, 0.01) == "Installed 0 packages, kept 2 already installed in 0.01s"

    def test_dry_run(self) -> None:
        outcome = make_outcome(install=(GAMMA,), dry_run=True)
        assert summary(outcome, 2) == (
            "Would install 1 package, replaced 1, kept 1 already installed in 2.00s"
        )


class TestInstallationReport:
    def test_shape(self) -> None:
        report = installation_report(make_outcome())
        assert report == {
            "version": REPORT_VERSION,
            "pip_version": importlib.metadata.version("pip"),
            "installer": {"name": "safepip", "version": __version__},
            "dry_run": False,
            "install": [
                {
                    "download_info": {
                        "url": "https://***:***@files.example/Alpha-1.0-py3-none-any.whl?token=***",
                        "archive_info": {"hash": f"sha256={SHA_A}", "hashes": {"sha256": SHA_A}},
                    },
                    "is_direct": True,
                    "is_yanked": False,
                    "requested": True,
                    "requested_extras": ["http2", "socks"],
                    "metadata": {"name": "Alpha", "version": "1.0"},
                    "safepip": {
                        "action": "install",
                        "filename": "Alpha-1.0-py3-none-any.whl",
                        "origin": "https://***:***@idx.example/simple/",
                        "hash_source": "pinned",
                    },
                },
                {
                    "download_info": {
                        "url": "https://files.example/gamma-3.0-py3-none-any.whl",
                        "archive_info": {"hash": f"sha256={SHA_G}", "hashes": {"sha256": SHA_G}},
                    },
                    "is_direct": False,
                    "is_yanked": False,
                    "requested": True,
                    "metadata": {"name": "gamma", "version": "3.0"},
                    "safepip": {
                        "action": "replace",
                        "filename": "gamma-3.0-py3-none-any.whl",
                        "origin": "https://***:***@idx.example/simple/",
                        "hash_source": "pinned",
                    },
                },
                {
                    "download_info": {
                        "url": "https://files.example/beta-2.0-py3-none-any.whl",
                        "archive_info": {},
                    },
                    "is_direct": False,
                    "is_yanked": True,
                    "requested": False,
                    "metadata": {"name": "beta", "version": "2.0"},
                    "safepip": {
                        "action": "keep",
                        "filename": "beta-2.0-py3-none-any.whl",
                        "origin": "https://***:***@idx.example/simple/",
                        "hash_source": "pinned",
                    },
                },
            ],
            "environment": {"python_version": "3.11", "sys_platform": "linux"},
            "target": {
                "python": "/venv/bin/python",
                "purelib": "/venv/lib/python3.11/site-packages",
            },
        }
        assert "hunter2" not in json.dumps(report)
        assert "pw@" not in json.dumps(report)

    def test_dry_run(self) -> None:
        report = installation_report(make_outcome(dry_run=True))
        assert report["dry_run"] is True
        assert report["version"] == "1"

    def test_write_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        report = installation_report(make_outcome())
        write_json(report, str(tmp_path / "report.json"))
        assert json.loads((tmp_path / "report.json").read_text()) == report
        write_json(report, "-")
        out = capsys.readouterr().out
        assert out.endswith("}\n")
        assert json.loads(out) == report


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestConsoleReporter:
    def test_error_layout(self) -> None:
        stream = io.StringIO()
        reporter = ConsoleReporter(stream=stream, color=False)
        reporter.error("Refusing `x`", "do `y`")
        reporter.error("Something else", None)
        assert stream.getvalue() == ("error: Refusing `x`\n\nhint: do `y`\nerror: Something else\n")

    def test_error_layout_in_colour(self) -> None:
        stream = io.StringIO()
        ConsoleReporter(stream=stream, color=True).error("bad", "fix it")
        assert stream.getvalue() == "\x1b[31merror:\x1b[0m bad\n\n\x1b[36mhint:\x1b[0m fix it\n"

    def test_warn_and_success_colours(self) -> None:
        stream = io.StringIO()
        reporter = ConsoleReporter(stream=stream, color=True)
        reporter.warn("careful")
        reporter.success("done")
        assert stream.getvalue() == "\x1b[33mwarning:\x1b[0m careful\n\x1b[32mdone\x1b[0m\n"

    @pytest.mark.parametrize(
        ("verbosity", "expected"),
        [
            (-2, "error: e\n"),
            (-1, "warning: w\nerror: e\n"),
            (0, "info\nwarning: w\nerror: e\nok\n"),
            (1, "info\nwarning: w\ndetail\nerror: e\nok\n"),
        ],
    )
    def test_verbosity(self, verbosity: int, expected: str) -> None:
        stream = io.StringIO()
        reporter = ConsoleReporter(stream=stream, verbosity=verbosity, color=False)
        reporter.info("info")
        reporter.warn("w")
        reporter.detail("detail")
        reporter.error("e", None)
        reporter.success("ok")
        assert stream.getvalue() == expected

    def test_no_color_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("NO_COLOR", "1")
        monkeypatch.setenv("FORCE_COLOR", "1")
        assert not use_color(FakeTTY())
        stream = FakeTTY()
        ConsoleReporter(stream=stream).error("bad", "fix")
        assert "\x1b[" not in stream.getvalue()

    def test_force_color(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("FORCE_COLOR", "1")
        assert use_color(io.StringIO())

    def test_colour_follows_the_terminal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.delenv("FORCE_COLOR", raising=False)
        assert not use_color(io.StringIO())
        assert use_color(FakeTTY())
        monkeypatch.setenv("NO_COLOR", "")  # empty means unset (no-color.org)
        assert use_color(FakeTTY())

    def test_progress_kind(self) -> None:
        assert isinstance(
            ConsoleReporter(stream=io.StringIO(), verbosity=-1).progress(), NoProgress
        )
        assert isinstance(ConsoleReporter(stream=io.StringIO()).progress(), LineProgress)
        assert isinstance(ConsoleReporter(stream=FakeTTY()).progress(), RichProgress)

    def test_line_progress_when_verbose(self) -> None:
        stream = io.StringIO()
        progress = ConsoleReporter(stream=stream, verbosity=1, color=False).progress()
        progress.start(GAMMA.artifact, 10)
        progress.advance(GAMMA.artifact, 10)
        progress.finish(GAMMA.artifact, cached=False)
        progress.finish(BETA.artifact, cached=True)
        assert stream.getvalue() == (
            "Downloaded gamma-3.0-py3-none-any.whl\nUsing cached beta-2.0-py3-none-any.whl\n"
        )

    def test_line_progress_is_quiet_by_default_and_lists_files_when_verbose(self) -> None:
        stream = io.StringIO()
        progress = ConsoleReporter(stream=stream, color=False).progress()
        progress.finish(GAMMA.artifact, cached=False)
        assert stream.getvalue() == ""
        progress = ConsoleReporter(stream=stream, color=False, verbosity=1).progress()
        progress.finish(GAMMA.artifact, cached=False)
        progress.finish(BETA.artifact, cached=True)
        assert stream.getvalue() == (
            "Downloaded gamma-3.0-py3-none-any.whl\nUsing cached beta-2.0-py3-none-any.whl\n"
        )

    def test_rich_progress_lifecycle(self) -> None:
        progress = RichProgress(FakeTTY())
        progress.start(GAMMA.artifact, 100)
        progress.start(BETA.artifact, None)
        progress.advance(GAMMA.artifact, 50)
        progress.advance(ALPHA.artifact, 5)  # unknown artifacts are ignored
        progress.finish(GAMMA.artifact, cached=False)
        assert progress._started
        progress.finish(BETA.artifact, cached=True)
        assert not progress._started


class TestReportLikePip:
    """pip is the oracle: the same keys and values as `pip install --dry-run --report`."""

    def test_same_report_as_pip(
        self,
        static_index: Callable[..., Any],
        venv_factory: Callable[..., Path],
        tmp_path: Path,
        cli: Cli,
    ) -> None:
        import subprocess
        import sys

        from wheelbuild import build_wheel, sha256_file

        wheels = [
            build_wheel(
                tmp_path / "a",
                "rpkg",
                "1.0",
                requires=["dep>=1"],
                requires_python=">=3.8",
                extras={"fast": ["dep2"]},
                license="MIT\n        \n        Copyright the authors",
            ),
            build_wheel(tmp_path / "b", "dep", "1.0"),
            build_wheel(tmp_path / "c", "dep2", "2.0"),
        ]
        index = static_index()
        for wheel in wheels:
            index.add(wheel)
        lock = tmp_path / "requirements.txt"
        lock.write_text(
            f"rpkg[fast]==1.0 --hash=sha256:{sha256_file(wheels[0])}\n"
            f"dep==1.0 --hash=sha256:{sha256_file(wheels[1])}\n"
            f"dep2==2.0 --hash=sha256:{sha256_file(wheels[2])}\n"
        )
        pip_report = tmp_path / "pip.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "-q",
             "--ignore-installed", "--report", str(pip_report), "-r", str(lock),
             "-i", str(index.url)],
            check=True, capture_output=True,
        )  # fmt: skip
        theirs = json.loads(pip_report.read_text())
        if sys.version_info < (3, 11):
            # pip reads metadata through pkg_resources before 3.11, without the re-indenting
            # of multi-line values that importlib.metadata does (and safepip follows)
            import textwrap

            for item in theirs["install"]:
                for key, value in item["metadata"].items():
                    if isinstance(value, str) and "\n" in value:
                        item["metadata"][key] = textwrap.dedent(" " * 8 + value)
        argv = ["install", "-r", str(lock), "-i", str(index.url), "--dry-run", "--report", "-"]
        argv += ["--python", str(venv_factory()), "--cache-dir", str(tmp_path / "cache")]
        code, out, err = cli(*argv)
        assert code == 0, err
        ours = json.loads(out)
        assert set(theirs) <= set(ours)
        assert ours["version"] == theirs["version"] == "1"
        assert ours["environment"] == theirs["environment"]
        assert isinstance(ours["pip_version"], str)
        by_name = {item["metadata"]["name"]: item for item in ours["install"]}
        assert sorted(by_name) == sorted(item["metadata"]["name"] for item in theirs["install"])
        for item in theirs["install"]:
            mine = by_name[item["metadata"]["name"]]
            assert {key: mine[key] for key in item} == item, json.dumps([mine, item])
        assert by_name["rpkg"]["metadata"]["requires_dist"] == [
            "dep>=1",
            'dep2; extra == "fast"',
        ]
