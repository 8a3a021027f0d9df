"""Write ZIP archives byte by byte, so tests can craft exactly the ambiguity they attack."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wheelbuild import record_digest

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass
class RawEntry:
    """One member; the `local_*`/`central_*` overrides make the two headers disagree."""

    name: str
    data: bytes
    method: int = 8
    descriptor: bool = False
    """Bit 3: sizes and CRC-32 in a data descriptor after the data (zeros in the local header)."""
    descriptor_values: tuple[int, int, int] | None = None
    local: dict[str, int] = field(default_factory=dict)
    central: dict[str, int] = field(default_factory=dict)
    payload: bytes | None = None
    """The stored bytes, when they must not be the honest compression of `data`."""
    mode: int = 0o644


def wheel_files(
    name: str = "demo", version: str = "1.0", extra: Mapping[str, bytes] | None = None
) -> dict[str, bytes]:
    """The members of a small wheel with a correct RECORD (listing every given file)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 1\n",
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
        ),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        **(extra or {}),
    }
    record = "".join(f"{path},{record_digest(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    return files


def build(
    entries: list[RawEntry],
    *,
    hidden: Sequence[RawEntry] = (),
    after_eocd: bytes = b"",
    cd_offset_delta: int = 0,
    zip64: bool = False,
    zip64_locator_delta: int = 0,
) -> bytes:
    """The archive bytes. `hidden` entries get a local header and data but no central entry
    (written after the listed ones)."""
    out = bytearray()
    central = bytearray()
    for entry in [*entries, *hidden]:
        payload = entry.payload
        if payload is None:
            if entry.method == 8:
                compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
                payload = compressor.compress(entry.data) + compressor.flush()
            else:
                payload = entry.data
        crc = zlib.crc32(entry.data)
        flags = 0x0800 | (0x0008 if entry.descriptor else 0)
        values = {"crc": crc, "csize": len(payload), "usize": len(entry.data)}
        local = {k: 0 for k in values} if entry.descriptor else dict(values)
        local.update(entry.local)
        raw_name = entry.name.encode()
        offset = len(out)
        out += struct.pack(
            "<4s5H3L2H",
            b"PK\x03\x04",
            20,
            flags,
            entry.method,
            0,
            0x5021,
            local["crc"],
            local["csize"],
            local["usize"],
            len(raw_name),
            0,
        )
        out += raw_name + payload
        if entry.descriptor:
            d_crc, d_csize, d_usize = entry.descriptor_values or (
                values["crc"],
                values["csize"],
                values["usize"],
            )
            out += struct.pack("<4s3L", b"PK\x07\x08", d_crc, d_csize, d_usize)
        if entry in hidden:
            continue
        cvalues = {**values, "offset": offset, **entry.central}
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            0x0314,
            20,
            flags,
            entry.method,
            0,
            0x5021,
            cvalues["crc"],
            cvalues["csize"],
            cvalues["usize"],
            len(raw_name),
            0,
            0,
            0,
            0,
            (0o100000 | entry.mode) << 16,
            cvalues["offset"],
        )
        central += raw_name
    cd_offset = len(out)
    out += central
    count = len(entries)
    if zip64:
        z64_at = len(out)
        out += struct.pack(
            "<4sQ2H2L4Q",
            b"PK\x06\x06",
            44,
            45,
            45,
            0,
            0,
            count,
            count,
            len(central),
            cd_offset + cd_offset_delta,
        )
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64_at + zip64_locator_delta, 1)
        out += struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
        )
    else:
        out += struct.pack(
            "<4s4H2LH",
            b"PK\x05\x06",
            0,
            0,
            count,
            count,
            len(central),
            cd_offset + cd_offset_delta,
            0,
        )
    return bytes(out + after_eocd)


def entries_of(files: dict[str, bytes], **options: Any) -> list[RawEntry]:
    return [RawEntry(name, data, **options) for name, data in files.items()]
