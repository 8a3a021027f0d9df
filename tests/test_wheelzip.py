"""Strict ZIP reading: every ambiguity is refused by name, and inflating stays bounded."""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

import pytest

from rawzip import RawEntry, build, entries_of, wheel_files
from safepip.errors import ExitCode
from safepip.fetch import Cache, WheelIntegrityError, unpack_wheel
from safepip.wheelzip import ZipStructureError, is_small, iter_member, read_directory, read_small
from wheelbuild import record_digest

if TYPE_CHECKING:
    from pathlib import Path


def directory(data: bytes) -> list[str]:
    return [m.name for m in read_directory(io.BytesIO(data), len(data))]


def rule_of(data: bytes) -> tuple[str, str | None]:
    with pytest.raises(ZipStructureError) as info:
        read_directory(io.BytesIO(data), len(data))
    return info.value.rule, info.value.member


FILES = wheel_files()
INIT = "demo/__init__.py"


def with_entry(name: str, **options: Any) -> list[RawEntry]:
    entries = entries_of(FILES)
    for i, entry in enumerate(entries):
        if entry.name == name:
            entries[i] = RawEntry(name, entry.data, **options)
    return entries


class TestHonestArchives:
    def test_raw_builder_reads_like_zipfile(self) -> None:
        data = build(entries_of(FILES))
        assert directory(data) == zipfile.ZipFile(io.BytesIO(data)).namelist()

    @pytest.mark.parametrize("descriptor", [False, True])
    @pytest.mark.parametrize("method", [0, 8])
    def test_members_read_back(self, method: int, descriptor: bool) -> None:
        data = build(entries_of(FILES, method=method, descriptor=descriptor))
        fh = io.BytesIO(data)
        members = read_directory(fh, len(data))
        assert {m.name: b"".join(iter_member(fh, m)) for m in members} == FILES

    @pytest.mark.parametrize("descriptor", [False, True])
    @pytest.mark.parametrize("method", [0, 8])
    def test_small_members_read_back_in_one_pread(
        self, method: int, descriptor: bool, tmp_path: Path
    ) -> None:
        path = tmp_path / "demo.whl"
        path.write_bytes(build(entries_of(FILES, method=method, descriptor=descriptor)))
        with path.open("rb") as fh:
            members = read_directory(fh, path.stat().st_size)
            assert all(is_small(m) for m in members)
            assert {m.name: read_small(fh.fileno(), m) for m in members} == FILES

    def test_zip64_end_records(self) -> None:
        assert directory(build(entries_of(FILES), zip64=True)) == list(FILES)

    def test_zipfile_written_wheels_pass(self, tmp_path: Path) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in FILES.items():
                zf.writestr(name, data)
            zf.comment = b"a comment with PK\x05\x06 inside"
        assert directory(buffer.getvalue()) == list(FILES)


class TestAmbiguities:
    """Each archive here has two readings; the rule named is the one it breaks."""

    def test_error_multiple_local_headers_for_one_name(self) -> None:
        evil = RawEntry(INIT, b"import os; os.system('evil')\n")
        assert rule_of(build(entries_of(FILES), hidden=[evil])) == (
            "multiple local headers for one name",
            INIT,
        )

    def test_error_local_header_without_central_entry(self) -> None:
        hidden = RawEntry("demo/hidden.py", b"evil = True\n")
        assert rule_of(build(entries_of(FILES), hidden=[hidden])) == (
            "local header without a central directory entry",
            "demo/hidden.py",
        )

    def test_error_central_entry_without_local_header(self) -> None:
        entries = with_entry(INIT, central={"offset": 3})
        assert rule_of(build(entries)) == (
            "no local header where the central directory points",
            INIT,
        )

    def test_error_two_central_entries_for_one_name(self) -> None:
        entries = [*entries_of(FILES), RawEntry(INIT, b"evil = True\n")]
        assert rule_of(build(entries)) == ("two central directory entries for one name", INIT)

    def test_error_data_after_end_record(self) -> None:
        assert rule_of(build(entries_of(FILES), after_eocd=b"PK\x03\x04trailing")) == (
            "data after the end-of-central-directory record",
            None,
        )

    @pytest.mark.parametrize(
        ("field", "label"),
        [("crc", "CRC-32"), ("csize", "compressed size"), ("usize", "uncompressed size")],
    )
    def test_error_local_and_central_disagree(self, field: str, label: str) -> None:
        entries = with_entry(INIT, local={field: 7})
        assert rule_of(build(entries)) == (
            f"{label} differs between local header and central directory",
            INIT,
        )

    @pytest.mark.parametrize(
        ("index", "label"),
        [(0, "CRC-32"), (1, "compressed size"), (2, "uncompressed size")],
    )
    def test_error_data_descriptor_disagrees(self, index: int, label: str) -> None:
        data = FILES[INIT]
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = compressor.compress(data) + compressor.flush()
        values = [zlib.crc32(data), len(payload), len(data)]
        values[index] += 1
        entries = with_entry(INIT, descriptor=True, descriptor_values=tuple(values))
        assert rule_of(build(entries)) == (
            f"{label} differs between data descriptor and central directory",
            INIT,
        )

    def test_error_wrong_central_directory_offset(self) -> None:
        assert rule_of(build(entries_of(FILES), cd_offset_delta=-4)) == (
            "the central directory is not at the offset the end record gives",
            None,
        )

    def test_error_zip64_locator_mismatch(self) -> None:
        rule, _ = rule_of(build(entries_of(FILES), zip64=True, zip64_locator_delta=-1))
        assert "ZIP64" in rule

    def test_error_overlapping_entries(self) -> None:
        # Two names pointing at the same local header and bytes.
        entries = entries_of(FILES)
        data = build(entries)
        first = read_directory(io.BytesIO(data), len(data))[0]
        twin = RawEntry("demo/twin.py", FILES[first.name], central={"offset": first.header_offset})
        rule, _ = rule_of(build([*entries, twin]))
        assert rule in ("entries overlap", "local header name differs from the central directory")

    def test_error_stored_sizes_differ(self) -> None:
        entries = with_entry(INIT, method=0, central={"usize": 3}, local={"usize": 3})
        assert rule_of(build(entries)) == ("stored member whose two sizes differ", INIT)

    def test_error_not_a_zip(self) -> None:
        assert rule_of(b"plain text")[0].startswith("no end-of-central-directory record")


class TestBoundedInflate:
    def test_error_member_inflating_past_its_declared_size_stops_at_once(self) -> None:
        big = b"\0" * (64 << 20)
        entry = RawEntry(INIT, big, central={"usize": 1000}, local={"usize": 1000})
        data = build([entry])
        fh = io.BytesIO(data)
        (member,) = read_directory(fh, len(data))
        seen: list[int] = []

        def drain() -> None:
            seen.extend(len(chunk) for chunk in iter_member(fh, member))

        with pytest.raises(ZipStructureError) as info:
            drain()
        assert info.value.rule == "member inflates to more than its declared size"
        assert sum(seen) <= 1000

    def test_error_member_smaller_than_declared(self) -> None:
        entry = RawEntry(INIT, b"abc", central={"usize": 10}, local={"usize": 10})
        data = build([entry])
        fh = io.BytesIO(data)
        (member,) = read_directory(fh, len(data))
        with pytest.raises(ZipStructureError, match="smaller than its declared size"):
            b"".join(iter_member(fh, member))

    def test_error_crc_of_the_data_differs(self) -> None:
        entry = RawEntry(INIT, b"abc", central={"crc": 1}, local={"crc": 1})
        data = build([entry])
        fh = io.BytesIO(data)
        (member,) = read_directory(fh, len(data))
        with pytest.raises(ZipStructureError, match="CRC-32 of the member's data differs"):
            b"".join(iter_member(fh, member))

    @pytest.mark.parametrize(
        ("entry", "rule"),
        [
            (
                RawEntry(INIT, b"\0" * (1 << 20), central={"usize": 1000}, local={"usize": 1000}),
                "member inflates to more than its declared size",
            ),
            (
                RawEntry(INIT, b"abc", central={"usize": 10}, local={"usize": 10}),
                "member is smaller than its declared size",
            ),
            (
                RawEntry(INIT, b"abc", central={"crc": 1}, local={"crc": 1}),
                "CRC-32 of the member's data differs",
            ),
            (
                RawEntry(INIT, b"abc", method=0, central={"crc": 1}, local={"crc": 1}),
                "CRC-32 of the member's data differs",
            ),
        ],
    )
    def test_error_small_member_read_in_one_pread(
        self, entry: RawEntry, rule: str, tmp_path: Path
    ) -> None:
        path = tmp_path / "demo.whl"
        path.write_bytes(build([entry]))
        with path.open("rb") as fh:
            (member,) = read_directory(fh, path.stat().st_size)
            with pytest.raises(ZipStructureError) as info:
                read_small(fh.fileno(), member)
        assert (info.value.rule, info.value.member) == (rule, INIT)

    def test_large_member_is_read_in_bounded_chunks(self) -> None:
        big = bytes(range(256)) * (40 << 12)  # 40 MB
        data = build([RawEntry(INIT, big)])
        fh = io.BytesIO(data)
        (member,) = read_directory(fh, len(data))
        sizes = [len(c) for c in iter_member(fh, member)]
        assert sum(sizes) == len(big)
        assert max(sizes) <= 1 << 20


class TestUnpackRefusals:
    """Through `unpack_wheel`: the error names the wheel, the member and the rule (exit 3)."""

    def test_error_hidden_local_header(self, tmp_path: Path) -> None:
        wheel = tmp_path / "demo-1.0-py3-none-any.whl"
        wheel.write_bytes(build(entries_of(FILES), hidden=[RawEntry(INIT, b"evil = True\n")]))
        with pytest.raises(WheelIntegrityError) as info:
            unpack_wheel(wheel, "0" * 64, str(tmp_path / "cache"))
        assert info.value.exit_code == ExitCode.INTEGRITY
        assert str(info.value) == (
            "Refusing wheel `demo-1.0-py3-none-any.whl`: ambiguous or malformed zip archive: "
            "multiple local headers for one name (member `demo/__init__.py`)"
        )
        assert not any((tmp_path / "cache").rglob("*.py"))

    def test_error_member_larger_than_record_is_refused_before_inflating(
        self, tmp_path: Path
    ) -> None:
        files = dict(FILES)
        record_name = "demo-1.0.dist-info/RECORD"
        files[record_name] = files[record_name].replace(
            f"{INIT},{record_digest(FILES[INIT])},{len(FILES[INIT])}".encode(),
            f"{INIT},{record_digest(FILES[INIT])},1".encode(),
        )
        wheel = tmp_path / "demo-1.0-py3-none-any.whl"
        wheel.write_bytes(build(entries_of(files)))
        with pytest.raises(WheelIntegrityError) as info:
            unpack_wheel(wheel, "0" * 64, str(tmp_path / "cache"))
        assert (info.value.problem, info.value.member) == ("size does not match RECORD", INIT)

    def test_unpacks_an_honest_raw_wheel(self, tmp_path: Path) -> None:
        wheel = tmp_path / "demo-1.0-py3-none-any.whl"
        wheel.write_bytes(build(entries_of(FILES, descriptor=True)))
        unpacked = unpack_wheel(wheel, "0" * 64, str(tmp_path / "cache"))
        assert (unpacked.root / INIT).read_bytes() == FILES[INIT]
        assert Cache(tmp_path / "cache").unpacked_path("0" * 64) == unpacked.root
