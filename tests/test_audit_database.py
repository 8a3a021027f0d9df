"""The offline database (safepip.audit.database): build, open, import, update over loopback."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.utils import canonicalize_name

from safepip.audit import database as db
from test_audit import DATA, TODAY, make_osv_zip

if TYPE_CHECKING:
    from collections.abc import Iterator


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
        records = list(db.read_osv_records(DATA / "pypa-2026-07-23"))
        a, b = tmp_path / "a.zip", tmp_path / "b.zip"
        info = db.build_database(records, a, date=dt.date(2026, 7, 23), source="test")
        db.build_database(records, b, date=dt.date(2026, 7, 23), source="test")
        assert a.read_bytes() == b.read_bytes()
        withdrawn = sum(1 for r in records if r.get("withdrawn"))
        assert info.withdrawn == withdrawn > 0
        assert info.records == len(records) - withdrawn
        with zipfile.ZipFile(a) as zf:
            names = zf.namelist()
        assert "packages/jw-util.json" in names
        assert names[0] == db.META_MEMBER

    def test_error_build_without_records(self, tmp_path: Path) -> None:
        with pytest.raises(db.DatabaseError) as info:
            db.build_database([], tmp_path / "x.zip", date=TODAY, source="empty")
        assert str(info.value) == "No OSV records found in `empty`"

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
        # A folder has no member timestamps: its date is the day it was read.
        assert folder.data_date == TODAY

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
            f"Member `PYSEC-1.json` of `{bad}` is not an OSV JSON record"
        )

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
