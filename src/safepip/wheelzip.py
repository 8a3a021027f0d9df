"""Strict ZIP reading for wheels: one unambiguous reading of the archive, inflated in bounded steps.

Two ZIP readers can see different files in one archive when its structure is ambiguous (two
local headers for one name, a local header the central directory does not list, sizes that
disagree between the local header and the central directory, bytes hidden between entries or
after the end record). An attacker can then show one content to a reviewer's tool and install
another. `read_directory` accepts only archives with exactly one reading: the central directory
and the local headers agree on every field, the entries and their data descriptors tile the file
from offset 0 to the central directory with nothing between them, and the end records sit
exactly where their offsets say (the checks of uv's hardening, astral-sh/uv#15136, designed
independently here). `iter_member` inflates one member in bounded chunks and stops as soon as it
produces more than its declared size, so a zip bomb costs neither memory nor disk.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Iterator

STORED = 0
DEFLATED = 8

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s5H3L2H")
_LOCAL_SIG = b"PK\x03\x04"
_DESCRIPTOR_SIG = b"PK\x07\x08"
_ZIP64_EXTRA = 0x0001
_MAX16 = 0xFFFF
_MAX32 = 0xFFFFFFFF
_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800

SMALL_MEMBER = 1 << 22
"""Members up to this size (compressed and declared) are inflated in one call, bounded by their
declared size; larger ones in chunks, so peak memory does not grow with a member's size."""
CHUNK = 1 << 20


class ZipStructureError(Exception):
    """The archive breaks one of the rules; `rule` says which, `member` names the entry."""

    def __init__(self, rule: str, member: str | None = None) -> None:
        super().__init__(rule if member is None else f"{rule} (member `{member}`)")
        self.rule = rule
        self.member = member


@dataclass(frozen=True, kw_only=True, slots=True)
class ZipMember:
    """One entry, as the central directory and its local header agree on it."""

    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    """The declared (uncompressed) size: inflating never produces more."""
    header_offset: int
    data_offset: int
    end_offset: int
    """Where the entry ends: after its data and its data descriptor, if any."""
    external_attr: int

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True, kw_only=True, slots=True)
class _Central:
    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    external_attr: int


def _read_at(fh: BinaryIO, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def _extra_fields(extra: bytes, member: str | None) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(extra):
        if pos + 4 > len(extra):
            raise ZipStructureError("malformed extra field", member)
        key, length = struct.unpack_from("<2H", extra, pos)
        pos += 4
        if pos + length > len(extra):
            raise ZipStructureError("malformed extra field", member)
        if key in fields:
            raise ZipStructureError("extra field repeated", member)
        fields[key] = extra[pos : pos + length]
        pos += length
    return fields


def _zip64_values(extra: dict[int, bytes], wanted: list[str], member: str | None) -> dict[str, int]:
    """The 64-bit values of the ZIP64 extra field, which lists only the fields whose 32-bit
    value is the 0xFFFFFFFF marker, in the fixed order usize, csize, offset."""
    if not wanted:
        return {}
    data = extra.get(_ZIP64_EXTRA)
    if data is None or len(data) < 8 * len(wanted):
        raise ZipStructureError("ZIP64 extra field missing or too short", member)
    return {key: struct.unpack_from("<Q", data, 8 * i)[0] for i, key in enumerate(wanted)}


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & _FLAG_UTF8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ZipStructureError("member name is not valid UTF-8") from exc
    return raw.decode("cp437")


def _end_record(fh: BinaryIO, size: int) -> tuple[int, tuple[Any, ...]]:
    """The end-of-central-directory record, which must end exactly at the end of the file."""
    tail_start = max(0, size - (_EOCD.size + _MAX16))
    tail = _read_at(fh, tail_start, size - tail_start)
    pos = len(tail)
    while True:
        pos = tail.rfind(_EOCD_SIG, 0, pos)
        if pos < 0 or pos + _EOCD.size > len(tail):
            if pos < 0:
                raise ZipStructureError("no end-of-central-directory record (not a zip archive)")
            continue
        fields = _EOCD.unpack_from(tail, pos)
        end = pos + _EOCD.size + fields[-1]
        if end == len(tail):
            return tail_start + pos, fields
        if end < len(tail):
            raise ZipStructureError("data after the end-of-central-directory record")
        # Ends past the file: the signature is inside a comment; look further back.


def read_directory(fh: BinaryIO, size: int) -> list[ZipMember]:
    """Every entry of the archive in `fh` (`size` bytes), after checking that the archive has
    exactly one reading (see the module docstring). Raises `ZipStructureError` naming the rule.
    Does not check the members' data (CRC, inflated size): `iter_member` does, while reading.
    """
    eocd_at, eocd = _end_record(fh, size)
    _, disk, cd_disk, disk_entries, total_entries, cd_size, cd_offset, _ = eocd
    cd_end = eocd_at
    locator = (
        _read_at(fh, eocd_at - _ZIP64_LOCATOR.size, _ZIP64_LOCATOR.size)
        if eocd_at >= _ZIP64_LOCATOR.size
        else b""
    )
    if locator[:4] == _ZIP64_LOCATOR_SIG:
        _, z64_disk, z64_offset, disks = _ZIP64_LOCATOR.unpack(locator)
        locator_at = eocd_at - _ZIP64_LOCATOR.size
        if z64_disk != 0 or disks != 1:
            raise ZipStructureError("multi-disk archives are not supported")
        record = _read_at(fh, z64_offset, _ZIP64_EOCD.size)
        if len(record) != _ZIP64_EOCD.size or record[:4] != _ZIP64_EOCD_SIG:
            raise ZipStructureError("the ZIP64 locator does not point at a ZIP64 end record")
        z64 = _ZIP64_EOCD.unpack(record)
        if z64_offset + 12 + z64[1] != locator_at:
            raise ZipStructureError(
                "the ZIP64 end record is not where the ZIP64 locator says (offset mismatch)"
            )
        z_disk, z_cd_disk, z_disk_entries, z_total, z_cd_size, z_cd_offset = z64[4:]
        for short, long_, marker in (
            (disk, z_disk, _MAX16),
            (cd_disk, z_cd_disk, _MAX16),
            (disk_entries, z_disk_entries, _MAX16),
            (total_entries, z_total, _MAX16),
            (cd_size, z_cd_size, _MAX32),
            (cd_offset, z_cd_offset, _MAX32),
        ):
            if short not in (long_, marker):
                raise ZipStructureError("the end record and the ZIP64 end record disagree")
        disk, cd_disk, disk_entries, total_entries = z_disk, z_cd_disk, z_disk_entries, z_total
        cd_size, cd_offset, cd_end = z_cd_size, z_cd_offset, z64_offset
    elif _MAX32 in (cd_size, cd_offset) or _MAX16 in (total_entries, disk_entries):
        raise ZipStructureError("ZIP64 values without a ZIP64 end record")
    if disk != 0 or cd_disk != 0 or disk_entries != total_entries:
        raise ZipStructureError("multi-disk archives are not supported")
    if cd_end - cd_size != cd_offset or cd_offset < 0:
        raise ZipStructureError("the central directory is not at the offset the end record gives")
    centrals = _central_directory(_read_at(fh, cd_offset, cd_size), total_entries)
    members = [_with_local_header(fh, c, cd_offset) for c in centrals]
    _check_tiling(fh, members, cd_offset, {c.name for c in centrals})
    return members


def _central_directory(data: bytes, count: int) -> list[_Central]:
    entries: list[_Central] = []
    names: set[str] = set()
    pos = 0
    while pos < len(data):
        if len(entries) == count:
            raise ZipStructureError("the central directory has more entries than its end record")
        if pos + _CENTRAL.size > len(data) or data[pos : pos + 4] != _CENTRAL_SIG:
            raise ZipStructureError("malformed central directory")
        fields = _CENTRAL.unpack_from(data, pos)
        flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
        name_len, extra_len, comment_len, disk = fields[10], fields[11], fields[12], fields[13]
        external_attr, offset = fields[15], fields[16]
        start = pos + _CENTRAL.size
        pos = start + name_len + extra_len + comment_len
        if pos > len(data):
            raise ZipStructureError("malformed central directory")
        raw_name = data[start : start + name_len]
        name = _decode_name(raw_name, flags)
        extra = _extra_fields(data[start + name_len : start + name_len + extra_len], name)
        if _MAX32 in (usize, csize, offset):
            wanted = [
                key
                for key, value in (("size", usize), ("csize", csize), ("offset", offset))
                if value == _MAX32
            ]
            big = _zip64_values(extra, wanted, name)
            usize, csize, offset = (
                big.get("size", usize),
                big.get("csize", csize),
                big.get("offset", offset),
            )
        if disk not in (0, _MAX16):
            raise ZipStructureError("multi-disk archives are not supported", name)
        if name in names:
            raise ZipStructureError("two central directory entries for one name", name)
        names.add(name)
        entries.append(
            _Central(
                name=name,
                raw_name=raw_name,
                flags=flags,
                method=method,
                crc=crc,
                compressed_size=csize,
                size=usize,
                header_offset=offset,
                external_attr=external_attr,
            )
        )
    if len(entries) != count:
        raise ZipStructureError("the central directory has fewer entries than its end record")
    return entries


def _with_local_header(fh: BinaryIO, c: _Central, cd_offset: int) -> ZipMember:
    """The member, after checking that its local header (and data descriptor) agree with its
    central directory entry on name, method, flags, CRC-32 and both sizes."""
    name = c.name
    if c.flags & _FLAG_ENCRYPTED:
        raise ZipStructureError("encrypted member", name)
    if c.method not in (STORED, DEFLATED):
        raise ZipStructureError(f"compression method {c.method} is not allowed in a wheel", name)
    if c.method == STORED and c.compressed_size != c.size:
        raise ZipStructureError("stored member whose two sizes differ", name)
    header = _read_at(fh, c.header_offset, _LOCAL.size)
    if len(header) != _LOCAL.size or header[:4] != _LOCAL_SIG:
        raise ZipStructureError("no local header where the central directory points", name)
    _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL.unpack(header)
    rest = fh.read(name_len + extra_len)
    if len(rest) != name_len + extra_len or rest[:name_len] != c.raw_name:
        raise ZipStructureError("local header name differs from the central directory", name)
    if method != c.method:
        raise ZipStructureError(
            "compression method differs between local header and central directory", name
        )
    if (flags ^ c.flags) & (_FLAG_DESCRIPTOR | _FLAG_ENCRYPTED | _FLAG_UTF8):
        raise ZipStructureError("flags differ between local header and central directory", name)
    extra = _extra_fields(rest[name_len:], name)
    if _MAX32 in (usize, csize):
        wanted = [key for key, value in (("size", usize), ("csize", csize)) if value == _MAX32]
        big = _zip64_values(extra, wanted, name)
        usize, csize = big.get("size", usize), big.get("csize", csize)
    data_offset = c.header_offset + _LOCAL.size + name_len + extra_len
    end = data_offset + c.compressed_size
    with_descriptor = bool(flags & _FLAG_DESCRIPTOR)
    if (crc, csize, usize) != (c.crc, c.compressed_size, c.size):
        for label, local, central in (
            ("CRC-32", crc, c.crc),
            ("compressed size", csize, c.compressed_size),
            ("uncompressed size", usize, c.size),
        ):
            # With a data descriptor the local header may leave the values at zero; any value
            # it does give must still agree.
            if local != central and not (with_descriptor and local == 0):
                raise ZipStructureError(
                    f"{label} differs between local header and central directory", name
                )
    if end > cd_offset:
        raise ZipStructureError("member data runs into the central directory", name)
    if with_descriptor:
        wide = _ZIP64_EXTRA in extra
        size_len = 8 if wide else 4
        raw = _read_at(fh, end, 4 + 4 + 2 * size_len)
        if raw[:4] == _DESCRIPTOR_SIG:
            raw = raw[4:] + fh.read(4)
            end += 4
        fmt = "<LQQ" if wide else "<LLL"
        if len(raw) < struct.calcsize(fmt):
            raise ZipStructureError("data descriptor cut short", name)
        d_crc, d_csize, d_usize = struct.unpack_from(fmt, raw)
        for label, value, central in (
            ("CRC-32", d_crc, c.crc),
            ("compressed size", d_csize, c.compressed_size),
            ("uncompressed size", d_usize, c.size),
        ):
            if value != central:
                raise ZipStructureError(
                    f"{label} differs between data descriptor and central directory", name
                )
        end += struct.calcsize(fmt)
    return ZipMember(
        name=name,
        method=c.method,
        flags=c.flags,
        crc=c.crc,
        compressed_size=c.compressed_size,
        size=c.size,
        header_offset=c.header_offset,
        data_offset=data_offset,
        end_offset=end,
        external_attr=c.external_attr,
    )


def _check_tiling(fh: BinaryIO, members: list[ZipMember], cd_offset: int, names: set[str]) -> None:
    """The entries must cover the file from offset 0 to the central directory exactly: a gap
    could hold a local header that a streaming reader would see and the central directory
    hides (or a second copy of a member), and an overlap means two names share bytes."""
    pos = 0
    for member in sorted(members, key=lambda m: m.header_offset):
        if member.header_offset < pos:
            raise ZipStructureError("entries overlap", member.name)
        if member.header_offset > pos:
            _explain_gap(fh, pos, names, member.name)
        pos = member.end_offset
    if pos != cd_offset:
        _explain_gap(fh, pos, names, None)


def _explain_gap(fh: BinaryIO, at: int, names: set[str], before: str | None) -> None:
    header = _read_at(fh, at, _LOCAL.size)
    if len(header) == _LOCAL.size and header[:4] == _LOCAL_SIG:
        fields = _LOCAL.unpack(header)
        name = _decode_name(fh.read(fields[9]), fields[2])
        if name in names:
            raise ZipStructureError("multiple local headers for one name", name)
        raise ZipStructureError("local header without a central directory entry", name)
    where = f"before `{before}`" if before else "before the central directory"
    raise ZipStructureError(f"bytes not covered by any entry at offset {at} ({where})")


@functools.cache
def _inflate_module() -> Any:
    """The fastest raw-deflate decoder available: ISA-L (`isal`, about twice as fast as zlib
    here, where inflating is most of a cold install's CPU time), else the standard zlib."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - platforms without isal wheels
        return zlib
    return isal_zlib


def is_small(member: ZipMember) -> bool:
    """Whether `read_small` takes the member (it is inflated in one call)."""
    return member.compressed_size <= SMALL_MEMBER and member.size <= SMALL_MEMBER


def read_small(fd: int, member: ZipMember) -> bytes:
    """A small member's bytes (`is_small`), read from the file descriptor with one `pread`
    and inflated in one call bounded by the declared size, with every check of `iter_member`.
    """
    return _small(member, os.pread(fd, member.compressed_size, member.data_offset))


def _small(member: ZipMember, payload: bytes) -> bytes:
    if len(payload) != member.compressed_size:
        raise ZipStructureError("member data cut short", member.name)
    module = _inflate_module()
    if member.method == STORED:
        data = payload
    else:
        inflater = module.decompressobj(-15)
        try:
            data = inflater.decompress(payload, member.size + 1)
        except (zlib.error, module.error) as exc:
            raise ZipStructureError("member cannot be decompressed", member.name) from exc
        _check_end(member, inflater, len(data), len(payload))
    _check_crc(member, module.crc32(data))
    return data


def iter_member(fh: BinaryIO, member: ZipMember) -> Iterator[bytes]:
    """The member's bytes in chunks of at most `CHUNK` (or one piece for a small member).

    Inflating is bounded by the declared size: a member that produces one byte more is refused
    at once (a zip bomb costs at most one chunk), as is one that ends early, one whose deflate
    stream ends before its compressed bytes do, and one whose CRC-32 differs.
    """
    module = _inflate_module()
    crc32 = module.crc32
    fh.seek(member.data_offset)
    if is_small(member):
        yield _small(member, fh.read(member.compressed_size))
        return
    declared = member.size
    if member.method == STORED:
        left = declared
        crc = 0
        while left:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise ZipStructureError("member data cut short", member.name)
            left -= len(chunk)
            crc = crc32(chunk, crc)
            yield chunk
        _check_crc(member, crc)
        return
    inflater = module.decompressobj(-15)
    errors = (zlib.error, module.error)
    left = member.compressed_size
    produced = 0
    crc = 0
    pending = b""
    while True:
        if not pending and left:
            pending = fh.read(min(CHUNK, left))
            if not pending:
                raise ZipStructureError("member data cut short", member.name)
            left -= len(pending)
        try:
            # At most one chunk out per call, and never more than one byte past the declared
            # size: memory stays bounded whatever the compression ratio.
            chunk = inflater.decompress(pending, min(CHUNK, declared - produced + 1))
        except errors as exc:
            raise ZipStructureError("member cannot be decompressed", member.name) from exc
        pending = inflater.unconsumed_tail
        produced += len(chunk)
        if produced > declared:
            raise ZipStructureError("member inflates to more than its declared size", member.name)
        if chunk:
            crc = crc32(chunk, crc)
            yield chunk
        if inflater.eof or (not chunk and not pending and not left):
            break
    _check_end(member, inflater, produced, member.compressed_size - left - len(pending))
    if pending or left:
        raise ZipStructureError("data after the end of the member's deflate stream", member.name)
    _check_crc(member, crc)


def _check_end(member: ZipMember, inflater: Any, produced: int, consumed: int) -> None:
    if produced > member.size:
        raise ZipStructureError("member inflates to more than its declared size", member.name)
    if not inflater.eof:
        raise ZipStructureError("member's deflate stream is cut short", member.name)
    if inflater.unused_data or consumed != member.compressed_size:
        raise ZipStructureError("data after the end of the member's deflate stream", member.name)
    if produced != member.size:
        raise ZipStructureError("member is smaller than its declared size", member.name)


def _check_crc(member: ZipMember, crc: int) -> None:
    if crc & _MAX32 != member.crc:
        raise ZipStructureError("CRC-32 of the member's data differs", member.name)
