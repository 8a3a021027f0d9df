"""The offline database (safepip.audit.database): build, open, import, update over loopback."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import json
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.utils import canonicalize_name

from safepip.audit import database as db
from test_audit import DATA, TODAY, make_osv_zip, undated_folder

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import Cli, CliResult, Environment
    from servers import StaticIndex
    from wheelbuild import WheelFactory


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on 127.0.0.1 serving a temporary folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


class TestBuild:
    def test_build_is_reproducible_and_drops_withdrawn(self, tmp_path: Path) -> None:
        folder = DATA / "pypa-2026-07-23"
        records = [r for r, _ in db.OsvReader(folder)]
        a, b = tmp_path / "a.zip", tmp_path / "b.zip"
        info = db.build_database(db.OsvReader(folder), a, date=dt.date(2026, 7, 23), source="t")
        db.build_database(db.OsvReader(folder), b, date=dt.date(2026, 7, 23), source="t")
        assert a.read_bytes() == b.read_bytes()
        withdrawn = sum(1 for r in records if r.get("withdrawn"))
        assert info.withdrawn == withdrawn > 0
        assert info.records == len(records) - withdrawn
        with zipfile.ZipFile(a) as zf:
            names = zf.namelist()
        assert "packages/jw-util.json" in names
        assert names[0] == db.META_MEMBER

    def test_error_build_without_records(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        reader = db.OsvReader(tmp_path / "empty")
        with pytest.raises(db.DatabaseError) as info:
            db.build_database(reader, tmp_path / "x.zip", date=TODAY, source="empty")
        assert str(info.value) == "No OSV records found in `empty`"
        assert info.value.hint == (
            "pass an OSV `all.zip` or a folder of OSV JSON files; an empty database would "
            "report every package as clean"
        )
        assert not (tmp_path / "x.zip").exists()

    def test_versions_lists_inside_the_ranges_are_left_out(self, tmp_path: Path) -> None:
        """A `versions` list that names only versions inside its entry's ranges matches nothing
        the ranges do not, so a built database leaves it out (issue 11); a list naming a
        version outside them, or a string that is not PEP 440, or without ranges, is kept,
        and the built database finds what the OSV data read whole finds."""

        def record(rid: str, versions: list[str], ranges: bool = True) -> dict[str, object]:
            entry: dict[str, object] = {
                "package": {"ecosystem": "PyPI", "name": "P_kg"},
                "versions": versions,
            }
            if ranges:
                events = [{"introduced": "1.0"}, {"fixed": "1.2"}, {"introduced": "2.0"}]
                entry["ranges"] = [{"type": "ECOSYSTEM", "events": events}]
            return {"id": rid, "modified": "2026-07-01T00:00:00Z", "affected": [entry]}

        folder = tmp_path / "osv"
        folder.mkdir()
        records = [
            record("T-1", ["1.0", "1.1", "1.1.1", "2.0", "3.0.0"]),
            record("T-2", ["1.1", "1.5"]),
            record("T-3", ["1.1", "1.1-odd"]),
            record("T-4", ["1.5"], ranges=False),
        ]
        for rec in records:
            (folder / f"{rec['id']}.json").write_text(json.dumps(rec))
        info = db.build_database(
            db.OsvReader(folder), tmp_path / "db.zip", date=dt.date(2026, 7, 1), source="t"
        )
        assert info.records == 4
        with zipfile.ZipFile(tmp_path / "db.zip") as zf:
            stored = json.loads(zf.read("packages/p-kg.json"))
        assert {r["id"]: "versions" in r["affected"][0] for r in stored} == {
            "T-1": False,
            "T-2": True,
            "T-3": True,
            "T-4": True,
        }
        built = db.CompactDatabase(tmp_path / "db.zip", origin="path")
        whole = db.OsvDataDatabase(folder)
        name = canonicalize_name("p-kg")
        probes = ["0.9", "1.0", "1.1", "1.1.0", "1.1.1", "1.1-odd", "1.2", "1.5", "2.0", "3.0"]
        packages = [(name, v) for v in probes]

        def found(
            database: db.CompactDatabase | db.OsvDataDatabase,
        ) -> dict[str, object]:
            return {
                version: (
                    [(m.advisory.id, m.fix_versions) for m in matches]
                    if isinstance(matches, list)
                    else matches
                )
                for (_, version), matches in database.find(packages).items()
            }

        assert found(built) == found(whole)
        outside = built.find([(name, "1.5")])[(name, "1.5")]
        assert isinstance(outside, list)
        assert [m.advisory.id for m in outside] == ["T-2", "T-4"]

    def test_bundled_database_is_current(self) -> None:
        bundled = db.CompactDatabase(db.SHIPPED, origin="bundled")
        info = bundled.info()
        assert info.data_date == dt.date(2026, 7, 23)
        assert info.records == 7080 - 269
        assert info.withdrawn == 269
        assert db.SHIPPED.stat().st_size < 5_000_000
        assert (db.SHIPPED.parent / "LICENSE-CC-BY-4.0.txt").is_file()

    def test_bundled_database_finds_nothing_in_the_large_bench_lock(self) -> None:
        text = (Path(__file__).parent / "data" / "bench-large.txt").read_text("utf-8")
        pins = [
            (canonicalize_name(line.split("==")[0]), line.split("==")[1].split()[0])
            for line in text.splitlines()
            if "==" in line and not line.startswith((" ", "#"))
        ]
        assert len(pins) == 107
        bundled = db.CompactDatabase(db.SHIPPED, origin="bundled")
        found = bundled.find(pins)
        assert all(v == [] for v in found.values())


class TestOpen:
    def test_osv_folder_and_zip_open_directly(self, tmp_path: Path) -> None:
        folder = db.open_database(DATA / "pypa-2026-07-23", today=TODAY)
        zipped = db.open_database(
            make_osv_zip("pypa-2026-07-23", tmp_path / "all.zip"), today=TODAY
        )
        for source in (folder, zipped):
            found = source.find([(canonicalize_name("jw.util"), "2.0")])
            matches = found[(canonicalize_name("jw.util"), "2.0")]
            assert not isinstance(matches, str)
            assert [m.advisory.id for m in matches] == ["PYSEC-2020-341"]
        # A folder has no member timestamps: it is dated by its records' newest `modified`
        # date that is not in the future (two records claim 2027-07-09), never by today.
        assert folder.data_date == dt.date(2026, 7, 10)

    def test_snapshot_date_ignores_future_member_timestamps(self, tmp_path: Path) -> None:
        path = make_osv_zip("pypa-2026-07-23", tmp_path / "all.zip")
        with zipfile.ZipFile(path) as zf:
            assert max(i.date_time for i in zf.infolist())[0] == 2027
        assert db.osv_snapshot_date(path, today=TODAY) == dt.date(2026, 7, 10)

    def test_error_not_an_osv_zip(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.zip"
        bad.write_text("nope")
        with pytest.raises(db.DatabaseError, match=r"^`.*bad\.zip` is not an OSV zip or folder"):
            db.open_database(bad)

    def test_error_corrupt_member(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("PYSEC-1.json", "{not json")
        with pytest.raises(db.DatabaseError) as info:
            db.open_database(bad)
        assert str(info.value).startswith(
            f"No OSV records found in `{bad}`: 1 file skipped: `PYSEC-1.json` (not JSON: "
        )

    def test_error_damaged_zip_member_stops(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("PYSEC-1.json", '{"id": "PYSEC-1", "affected": []}' * 10)
        data = bytearray(bad.read_bytes())
        data[50] ^= 0xFF  # inside the stored member: its CRC no longer matches
        bad.write_bytes(bytes(data))
        with pytest.raises(db.DatabaseError) as info:
            db.open_database(bad)
        assert str(info.value).startswith(f"Member `PYSEC-1.json` of `{bad}` cannot be read (")

    def test_user_database_takes_precedence_and_warns_when_older(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        old = make_osv_zip("pypa-2024-10-10", tmp_path / "old.zip")
        db.import_database(old, data_dir=data_dir, today=TODAY)
        opened = db.default_database(data_dir)
        assert opened.origin == "user"
        assert opened.data_date == dt.date(2024, 2, 2)  # newest member of the test subset
        assert opened.warnings
        assert "older than the one bundled" in opened.warnings[0]


class TestImportUpdate:
    def test_import_records_date_digest_and_replaces(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        old = make_osv_zip("pypa-2024-10-10", tmp_path / "old.zip")
        info = db.import_database(old, data_dir=data_dir, date=dt.date(2024, 10, 10))
        assert info.data_date == dt.date(2024, 10, 10)
        assert info.source_sha256 == db.file_sha256(old)
        assert info.source == "old.zip"
        # In 2024 both duplicates of CVE-2021-42343 were live; in 2026 one is withdrawn.
        pkg = (canonicalize_name("distributed"), "2021.9.1")
        assert len(db.default_database(data_dir).find([pkg])[pkg]) == 2
        new = make_osv_zip("pypa-2026-07-23", tmp_path / "new.zip")
        db.import_database(new, data_dir=data_dir, today=TODAY)
        assert len(db.default_database(data_dir).find([pkg])[pkg]) == 1
        assert not list(data_dir.glob(".*tmp"))

    def test_update_downloads_over_loopback(self, tmp_path: Path, served: tuple[str, Path]) -> None:
        base, root = served
        make_osv_zip("pypa-2026-07-23", root / "all.zip")
        data_dir = tmp_path / "data"
        info = db.update_database(f"{base}/all.zip", data_dir=data_dir, today=TODAY)
        assert info.source == f"{base}/all.zip"
        assert info.data_date == dt.date(2026, 7, 10)
        assert info.source_sha256 == db.file_sha256(root / "all.zip")
        assert db.default_database(data_dir).origin == "user"
        assert [p.name for p in data_dir.iterdir()] == [db.DB_FILENAME]

    def test_error_update_failure_keeps_the_old_database(
        self, tmp_path: Path, served: tuple[str, Path]
    ) -> None:
        base, _ = served
        data_dir = tmp_path / "data"
        db.import_database(make_osv_zip("pypa-2024-10-10", tmp_path / "o.zip"), data_dir=data_dir)
        before = (data_dir / db.DB_FILENAME).read_bytes()
        with pytest.raises(db.DatabaseError) as info:
            db.update_database(f"{base}/missing.zip", data_dir=data_dir, today=TODAY)
        assert str(info.value) == (
            f"Could not update the advisory database from `{base}/missing.zip`: "
            f"HTTP 404 from `{base}/missing.zip`"
        )
        assert (data_dir / db.DB_FILENAME).read_bytes() == before

    def test_error_update_refuses_plain_http_to_remote_host(self, tmp_path: Path) -> None:
        with pytest.raises(db.DatabaseError, match="plain HTTP"):
            db.update_database("http://example.invalid/all.zip", data_dir=tmp_path)

    def test_update_from_local_path(self, tmp_path: Path) -> None:
        src = make_osv_zip("pypa-2024-10-10", tmp_path / "all.zip")
        info = db.update_database(str(src), data_dir=tmp_path / "d", date=dt.date(2024, 10, 10))
        assert info.data_date == dt.date(2024, 10, 10)


# --- data that must never read as "clean" (issue 8, item 8) -----------------------------------

GOOD = DATA / "pypa-2026-07-23" / "PYSEC-2020-341.json"
MALFORMED = {
    "empty.json": "{}",
    "no-id.json": '{"affected": []}',
    "affected-object.json": '{"id": "PYSEC-X", "affected": {"package": {"name": "jw.util"}}}',
    "a-list.json": "[1]",
    "not-json.json": "{oops",
}
REASONS = {
    "a-list.json": "the record is not an object",
    "affected-object.json": "`affected` is not a list",
    "empty.json": "the record has no `id`",
    "no-id.json": "the record has no `id`",
}


def empty_sources(root: Path) -> dict[str, Path]:
    """An empty zip, a zip without JSON members, an empty folder, a folder of non-records."""
    root.mkdir(parents=True, exist_ok=True)
    empty_zip = root / "empty.zip"
    zipfile.ZipFile(empty_zip, "w").close()
    no_json = root / "no-json.zip"
    with zipfile.ZipFile(no_json, "w") as zf:
        zf.writestr("README.txt", "no records here")
        zf.writestr("vulns/", "")
    (root / "empty-folder").mkdir()
    junk = root / "junk-folder"
    junk.mkdir()
    for name, text in MALFORMED.items():
        (junk / name).write_text(text)
    return {
        "empty zip": empty_zip,
        "zip without JSON": no_json,
        "empty folder": root / "empty-folder",
        "only malformed": junk,
    }


def folder_with(tmp_path: Path, *bad: str, modified: bool = True) -> Path:
    """A folder with one genuine record (jw.util < 2.3) and the named malformed files."""
    folder = tmp_path / "osv"
    folder.mkdir()
    record = json.loads(GOOD.read_text("utf-8"))
    if not modified:
        del record["modified"]
    (folder / GOOD.name).write_text(json.dumps(record))
    for name in bad:
        (folder / name).write_text(MALFORMED[name])
    return folder


class TestEmptyOrMalformedData:
    @pytest.mark.parametrize("kind", ["empty zip", "zip without JSON", "empty folder"])
    def test_error_no_records_opens_as_an_error(self, tmp_path: Path, kind: str) -> None:
        path = empty_sources(tmp_path)[kind]
        with pytest.raises(db.DatabaseError) as info:
            db.open_database(path, today=TODAY)
        assert str(info.value) == f"No OSV records found in `{path}`"
        assert info.value.exit_code == 1
        with pytest.raises(db.DatabaseError) as info:
            db.import_database(path, data_dir=tmp_path / "data", today=TODAY)
        assert (
            str(info.value) == f"No OSV records found in `{path.name if path.is_file() else path}`"
        )
        assert not (tmp_path / "data" / db.DB_FILENAME).exists()

    def test_error_only_malformed_files_names_them(self, tmp_path: Path) -> None:
        path = empty_sources(tmp_path)["only malformed"]
        with pytest.raises(db.DatabaseError) as info:
            db.open_database(path, today=TODAY)
        assert str(info.value) == (
            f"No OSV records found in `{path}`: 5 files skipped: `a-list.json` (the record is "
            "not an object), `affected-object.json` (`affected` is not a list), `empty.json` "
            "(the record has no `id`) and 2 more"
        )

    def test_error_compact_database_without_records(self, tmp_path: Path) -> None:
        path = tmp_path / "hollow.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(db.META_MEMBER, json.dumps({"format": db.FORMAT, "date": "2026-11-01"}))
        with pytest.raises(db.DatabaseError) as info:
            db.open_database(path)
        assert str(info.value) == f"The advisory database `{path}` has no records"

    def test_error_update_download_without_records_keeps_the_database(
        self, tmp_path: Path, served: tuple[str, Path]
    ) -> None:
        base, root = served
        zipfile.ZipFile(root / "all.zip", "w").close()
        data_dir = tmp_path / "data"
        db.import_database(make_osv_zip("pypa-2024-10-10", tmp_path / "o.zip"), data_dir=data_dir)
        before = (data_dir / db.DB_FILENAME).read_bytes()
        with pytest.raises(db.DatabaseError) as info:
            db.update_database(f"{base}/all.zip", data_dir=data_dir, today=TODAY)
        assert str(info.value) == f"No OSV records found in `{base}/all.zip`"
        assert (data_dir / db.DB_FILENAME).read_bytes() == before
        assert [p.name for p in data_dir.iterdir()] == [db.DB_FILENAME]

    @pytest.mark.parametrize("name", sorted(REASONS))
    def test_malformed_record_is_skipped_by_name(self, tmp_path: Path, name: str) -> None:
        folder = folder_with(tmp_path, name)
        opened = db.open_database(folder, today=TODAY)
        assert opened.warnings == (
            f"Skipped `{name}` in `{folder}`: not an OSV record ({REASONS[name]})",
        )
        jw = (canonicalize_name("jw.util"), "2.0")
        found = opened.find([jw])[jw]
        assert not isinstance(found, str)
        assert [m.advisory.id for m in found] == ["PYSEC-2020-341"]
        info = opened.info()
        assert (info.records, info.skipped) == (1, 1)

    def test_many_malformed_records_are_one_warning_line(self, tmp_path: Path) -> None:
        folder = folder_with(tmp_path, *MALFORMED)
        opened = db.open_database(folder, today=TODAY)
        assert len(opened.warnings) == 1
        assert opened.warnings[0].startswith(
            f"Skipped 5 files in `{folder}` that are not OSV records: `a-list.json` (the record "
            "is not an object); `affected-object.json` (`affected` is not a list); "
        )
        assert opened.warnings[0].endswith("; and 2 more")

    def test_import_counts_skipped_records(self, tmp_path: Path) -> None:
        folder = folder_with(tmp_path, *MALFORMED)
        info = db.import_database(folder, data_dir=tmp_path / "data", today=TODAY)
        assert (info.records, info.skipped) == (1, 5)
        assert info.skipped_examples == (
            "a-list.json (the record is not an object)",
            "affected-object.json (`affected` is not a list)",
            "empty.json (the record has no `id`)",
        )
        again = db.default_database(tmp_path / "data").info()
        assert (again.skipped, again.skipped_examples) == (5, info.skipped_examples)

    def test_folder_is_dated_by_its_records_never_today(self, tmp_path: Path) -> None:
        folder = folder_with(tmp_path)
        assert db.open_database(folder, today=TODAY).data_date == dt.date(2022, 1, 5)
        info = db.import_database(folder, data_dir=tmp_path / "data", today=TODAY)
        assert info.data_date == dt.date(2022, 1, 5)

    def test_undated_folder_has_unknown_date(self, tmp_path: Path) -> None:
        folder = folder_with(tmp_path, modified=False)
        assert db.open_database(folder, today=TODAY).data_date is None
        info = db.import_database(folder, data_dir=tmp_path / "data", today=TODAY)
        assert info.data_date is None
        assert db.default_database(tmp_path / "data").data_date is None


# --- empty and malformed data through the commands and the install gate (issue 8, item 8) ------


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (no settings file but the test's own)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


EMPTY_KINDS = ["empty zip", "zip without JSON", "empty folder", "only malformed"]


@pytest.mark.usefixtures("work")
class TestEmptyDataThroughTheCommands:
    @pytest.mark.parametrize("kind", EMPTY_KINDS)
    def test_error_audit_with_empty_data(self, cli: Cli, tmp_path: Path, kind: str) -> None:
        path = empty_sources(tmp_path / "src")[kind]
        code, out, err = cli("audit", "--db", str(path), "jw.util==2.0").flat()
        assert code == 1
        assert out == ""
        assert err.startswith(f"error: No OSV records found in `{path}`")
        assert "hint: pass an OSV `all.zip` or a folder of OSV JSON files" in err
        assert "No known vulnerabilities" not in err
        assert "Traceback" not in err

    @pytest.mark.parametrize("kind", EMPTY_KINDS)
    def test_error_db_import_of_empty_data(self, cli: Cli, tmp_path: Path, kind: str) -> None:
        path = empty_sources(tmp_path / "src")[kind]
        code, _, err = cli("db", "import", str(path)).flat()
        assert code == 1
        assert err.startswith("error: No OSV records found in `")
        assert not (tmp_path / "userdata" / db.DB_FILENAME).exists()
        # The bundled database is still the one in use.
        code, out, _ = cli("db", "status").flat()
        assert code == 0
        assert "bundled with safepip" in out

    def test_malformed_records_are_named_and_counted_in_status(
        self, cli: Cli, tmp_path: Path
    ) -> None:
        folder = folder_with(tmp_path, *MALFORMED)
        code, _, err = cli("audit", "--db", str(folder), "jw.util==2.0").flat()
        assert code == 5
        assert f"warning: Skipped 5 files in `{folder}` that are not OSV records:" in err
        assert "Traceback" not in err
        code, _, err = cli("db", "import", str(folder)).flat()
        assert code == 0
        assert "warning: skipped 5 files that are not OSV records: a-list.json" in err
        code, out, _ = cli("db", "status").flat()
        assert "Data date: 2022-01-05" in out
        assert (
            "Skipped:   5 files that are not OSV records, e.g. a-list.json (the record is not "
            "an object); affected-object.json (`affected` is not a list); empty.json (the "
            "record has no `id`)"
        ) in out
        code, out, _ = cli("db", "status", "--format", "json").flat()
        assert json.loads(out)["skipped"] == 5

    def test_undated_folder_status_and_refuse_stale(self, cli: Cli, tmp_path: Path) -> None:
        folder = undated_folder(tmp_path)
        code, out, _ = cli("db", "status", "--db", str(folder)).flat()
        assert code == 0
        assert "Data date: unknown" in out
        Path("safepip.toml").write_text("[audit]\nrefuse-stale = true\n")
        code, _, err = cli("audit", "--db", str(folder), "jw.util==2.0").flat()
        assert code == 1
        assert err.startswith("error: Refusing to audit with data of unknown date")


@pytest.mark.usefixtures("work")
class TestInstallGateWithEmptyData:
    """The install gate uses the same loader: no data, or undated data under `refuse-stale`,
    stops the install before anything is downloaded; the environment is unchanged."""

    @pytest.fixture
    def index(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> StaticIndex:
        index = static_index()
        index.add(wheel_factory("jw.util", "2.0"))
        return index

    def install(self, environment: Environment, index: StaticIndex, *extra: str) -> CliResult:
        (wheel,) = index.projects[canonicalize_name("jw.util")]
        line = f"jw.util==2.0 --hash=sha256:{wheel.sha256}"
        return environment.install(line, "-i", index.url, *extra).flat()

    @pytest.mark.parametrize("kind", EMPTY_KINDS)
    def test_error_install_with_empty_data(
        self, environment: Environment, index: StaticIndex, tmp_path: Path, kind: str
    ) -> None:
        path = empty_sources(tmp_path / "src")[kind]
        code, _, err = self.install(environment, index, "--db", str(path))
        assert code == 1
        assert err.startswith(f"error: No OSV records found in `{path}`")
        assert "Traceback" not in err
        environment.assert_unchanged()
        assert not [p for p in index.paths_requested() if p.startswith("/files/")]

    def test_error_install_with_undated_data_and_refuse_stale(
        self, environment: Environment, index: StaticIndex, work: Path, tmp_path: Path
    ) -> None:
        folder = undated_folder(tmp_path)
        (work / "safepip.toml").write_text("[audit]\nrefuse-stale = true\n")
        code, _, err = self.install(environment, index, "--db", str(folder))
        assert code == 1
        assert err.startswith("error: Refusing to audit with data of unknown date")
        environment.assert_unchanged()

    def test_install_with_malformed_records_still_audits(
        self, environment: Environment, index: StaticIndex, tmp_path: Path
    ) -> None:
        folder = folder_with(tmp_path, "empty.json", "affected-object.json")
        code, _, err = self.install(environment, index, "--db", str(folder))
        assert code == 5
        assert "Skipped `empty.json`" in err
        assert "Skipped `affected-object.json`" in err
        assert "error: Refusing `jw-util==2.0`" in err
        environment.assert_unchanged()


def test_the_default_database_is_remembered_by_its_bytes(tmp_path: Path) -> None:
    """An audit in a process that audited before with the same database file reads it again
    and compares it, but does not parse it again; a changed file (same size too) is read anew,
    and closing one result does not break the next."""
    from safepip.audit import database as db_mod

    first = db_mod.default_database(tmp_path)
    first.close()
    second = db_mod.default_database(tmp_path)
    assert second is not first
    assert second._advisories is first._advisories  # the records read are shared
    assert second.meta == first.meta
    assert second.advisories_for(canonicalize_name("django")) is not None  # still readable
    user = db_mod.user_database_path(tmp_path)
    user.write_bytes(db_mod.SHIPPED.read_bytes())
    as_user = db_mod.default_database(tmp_path)
    assert as_user.origin == "user"
    assert as_user._advisories is not first._advisories
    data = bytearray(user.read_bytes())
    data[-30] ^= 1  # the same size, other bytes (in the zip's trailing comment area or CRC)
    user.write_bytes(bytes(data))
    try:
        changed = db_mod.default_database(tmp_path)
    except db_mod.DatabaseError:
        return  # a corrupt database is refused: not served from memory
    assert changed._advisories is not as_user._advisories
