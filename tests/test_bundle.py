"""The `.safepip` bundle format: deterministic writing, strict streaming reading."""

from __future__ import annotations

import hashlib
import json
import tarfile
from typing import TYPE_CHECKING

import pytest

from safepip import bundle
from safepip.bundle import (
    ADVISORIES,
    LOCK,
    MANIFEST,
    BundleError,
    BundleIntegrityError,
    BundleTarget,
    open_bundle,
    write_bundle,
)
from safepip.errors import ExitCode

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from wheelbuild import WheelFactory

TARGET = BundleTarget(implementation="cpython", python_version="3.12", platform="linux_x86_64")


def _lock_text(wheels: Mapping[str, Path]) -> str:
    lines = ['lock-version = "1.0"', 'created-by = "test"', ""]
    for filename, path in sorted(wheels.items()):
        name, version = filename.split("-")[:2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [
            "[[packages]]",
            f'name = "{name}"',
            f'version = "{version}"',
            "[[packages.wheels]]",
            f'name = "{filename}"',
            f'path = "wheels/{filename}"',
            f"size = {path.stat().st_size}",
            f'hashes = {{ sha256 = "{digest}" }}',
            "",
        ]
    return "\n".join(lines)


@pytest.fixture
def members(tmp_path: Path, wheel_factory: WheelFactory) -> dict[str, Path]:
    wheels = {
        p.name: p
        for p in (
            wheel_factory("alpha", "1.0"),
            # A long filename needs a pax `path` record (ustar names hold 100 bytes).
            wheel_factory("b" * 60, "2.0", tag="py3-none-manylinux_2_17_x86_64"),
        )
    }
    lock = tmp_path / "in" / LOCK
    lock.parent.mkdir()
    lock.write_text(_lock_text(wheels))
    advisories = tmp_path / "in" / "db.zip"
    advisories.write_bytes(b"PK\x05\x06" + bytes(18))
    return {
        LOCK: lock,
        ADVISORIES: advisories,
        **{f"wheels/{n}": p for n, p in wheels.items()},
    }


def _write(out: Path, files: Mapping[str, Path]) -> str:
    return write_bundle(
        out,
        files,
        created_by="safepip test",
        targets=[TARGET],
        lock_source="requirements.txt",
        advisory_date="2026-07-23",
        advisory_source="test data",
    )


def _manifest_bytes(files: Mapping[str, Path], **change: object) -> bytes:
    data: dict[str, object] = {
        "format": "safepip-bundle",
        "format_version": 1,
        "created_by": "x",
        "lock": {"source": "r.txt"},
        "advisories": {"date": None, "source": "x"},
        "targets": [{"implementation": "cpython", "python_version": "3.12", "platform": "any"}],
        "members": [
            {
                "name": n,
                "size": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
            for n, p in sorted(files.items())
        ],
    }
    data.update(change)
    return json.dumps(data).encode()


def _raw_tar(out: Path, entries: list[tuple[str, bytes]], *, end: bytes | None = None) -> None:
    """A tar laid out exactly as the writer does, with whatever members a test wants."""
    data = b""
    for name, payload in entries:
        data += bundle._member_headers(name, len(payload)) + bundle._padded(payload)
    out.write_bytes(data + (bytes(1024) if end is None else end))


class TestWrite:
    def test_round_trip(self, tmp_path: Path, members: dict[str, Path]) -> None:
        digest = _write(tmp_path / "app.safepip", members)
        assert digest == hashlib.sha256((tmp_path / "app.safepip").read_bytes()).hexdigest()
        opened = open_bundle(tmp_path / "app.safepip", tmp_path / "x", expect_sha256=digest)
        assert opened.sha256 == digest
        assert opened.manifest.targets == (TARGET,)
        assert opened.manifest.advisory_date == "2026-07-23"
        assert sorted(opened.wheels) == sorted(
            n.removeprefix("wheels/") for n in members if n.startswith("wheels/")
        )
        for name, source in members.items():
            assert (tmp_path / "x" / name).read_bytes() == source.read_bytes()

    def test_deterministic(self, tmp_path: Path, members: dict[str, Path]) -> None:
        first = _write(tmp_path / "a.safepip", members)
        second = _write(tmp_path / "b.safepip", dict(reversed(members.items())))
        assert first == second
        assert (tmp_path / "a.safepip").read_bytes() == (tmp_path / "b.safepip").read_bytes()

    def test_standard_tar(self, tmp_path: Path, members: dict[str, Path]) -> None:
        """Any tar reader lists the members, manifest first, with fixed owner and time."""
        _write(tmp_path / "app.safepip", members)
        with tarfile.open(tmp_path / "app.safepip") as tf:
            infos = tf.getmembers()
        names = [i.name for i in infos]
        assert names[:3] == [MANIFEST, ADVISORIES, LOCK]
        assert sorted(names[3:]) == names[3:]
        assert set(names) == {MANIFEST, *members}
        assert {(i.mtime, i.uid, i.gid, i.mode, i.type) for i in infos} == {
            (0, 0, 0, 0o644, tarfile.REGTYPE)
        }


class TestRefuse:
    """Every damaged or tampered bundle is refused with exit 3 before it can be used."""

    @pytest.fixture
    def made(self, tmp_path: Path, members: dict[str, Path]) -> Path:
        _write(tmp_path / "app.safepip", members)
        return tmp_path / "app.safepip"

    def _refused(self, path: Path, tmp_path: Path, **kwargs: str) -> BundleIntegrityError:
        dest = tmp_path / "out"
        dest.mkdir(exist_ok=True)
        with pytest.raises(BundleIntegrityError) as info:
            open_bundle(path, dest, **kwargs)
        assert info.value.exit_code == ExitCode.INTEGRITY
        return info.value

    def test_error_tampered_wheel(self, made: Path, tmp_path: Path) -> None:
        data = bytearray(made.read_bytes())
        at = data.index(b"alpha/__init__.py")  # inside the wheel member
        data[at] ^= 1
        made.write_bytes(bytes(data))
        err = self._refused(made, tmp_path)
        assert err.member == "wheels/alpha-1.0-py3-none-any.whl"
        assert str(err).startswith(f"Refusing bundle `{made}`: sha256 mismatch: the manifest says")

    @pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
    def test_truncated(self, made: Path, tmp_path: Path, keep: float) -> None:
        data = made.read_bytes()
        made.write_bytes(data[: int(len(data) * keep)])
        assert "truncated" in self._refused(made, tmp_path).problem

    def test_data_after_end(self, made: Path, tmp_path: Path) -> None:
        made.write_bytes(made.read_bytes() + b"\0" * 512 + b"evil")
        assert self._refused(made, tmp_path).problem == "data after the end of the archive"

    def test_wrong_external_digest(self, made: Path, tmp_path: Path) -> None:
        err = self._refused(made, tmp_path, expect_sha256="0" * 64)
        assert err.problem.endswith(f"not the expected {'0' * 64}")

    def test_member_not_in_manifest(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "extra.safepip"
        entries = [(MANIFEST, _manifest_bytes(members))]
        entries += [(n, p.read_bytes()) for n, p in sorted(members.items())]
        entries.append(("wheels/zzz-1.0-py3-none-any.whl", b"PK"))
        _raw_tar(path, entries)
        err = self._refused(path, tmp_path)
        assert (err.problem, err.member) == (
            "a member that is not in the manifest",
            "wheels/zzz-1.0-py3-none-any.whl",
        )

    @pytest.mark.parametrize(
        "name", ["../evil.whl", "wheels/../../evil.whl", "/etc/evil", "wheels/a/b.whl"]
    )
    def test_path_traversal_member(
        self, members: dict[str, Path], tmp_path: Path, name: str
    ) -> None:
        path = tmp_path / "evil.safepip"
        entries = [(MANIFEST, _manifest_bytes(members))]
        entries += [(name, b"x")]
        _raw_tar(path, entries)
        err = self._refused(path, tmp_path)
        assert err.problem == "a member with a name that is not allowed"
        assert not (tmp_path / "evil.whl").exists()
        assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == []

    def test_path_traversal_in_manifest(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "evil.safepip"
        manifest = json.loads(_manifest_bytes(members))
        manifest["members"].append({"name": "../evil", "size": 1, "sha256": "0" * 64})
        _raw_tar(path, [(MANIFEST, json.dumps(manifest).encode()), ("../evil", b"x")])
        err = self._refused(path, tmp_path)
        assert err.problem == "the manifest is invalid: member name `../evil` is not allowed"

    def test_duplicate_member(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "dup.safepip"
        entries = [(MANIFEST, _manifest_bytes(members))]
        entries += [(n, p.read_bytes()) for n, p in sorted(members.items())]
        entries.append((LOCK, members[LOCK].read_bytes()))
        _raw_tar(path, entries)
        assert self._refused(path, tmp_path).problem == "a member appears twice"

    def test_missing_member(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "short.safepip"
        entries = [(MANIFEST, _manifest_bytes(members))]
        entries += [(n, p.read_bytes()) for n, p in sorted(members.items()) if "alpha" not in n]
        _raw_tar(path, entries)
        err = self._refused(path, tmp_path)
        assert err.problem == "a member listed in the manifest is missing"

    def test_manifest_not_first(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "late.safepip"
        _raw_tar(path, [(LOCK, b""), (MANIFEST, _manifest_bytes(members))])
        assert self._refused(path, tmp_path).problem == "the first member is not `manifest.json`"

    def test_symlink_member(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "link.safepip"
        header = bytearray(bundle._header(LOCK, 0, b"2"))
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
        manifest = _manifest_bytes(members)
        data = bundle._member_headers(MANIFEST, len(manifest)) + bundle._padded(manifest)
        path.write_bytes(data + bytes(header) + bytes(1024))
        assert "symbolic link" in self._refused(path, tmp_path).problem

    def test_bad_checksum(self, made: Path, tmp_path: Path) -> None:
        data = bytearray(made.read_bytes())
        data[0] ^= 1  # the manifest's name, covered by the header checksum
        made.write_bytes(bytes(data))
        assert "checksum" in self._refused(made, tmp_path).problem

    def test_size_differs_from_manifest(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "size.safepip"
        entries = [(MANIFEST, _manifest_bytes(members))]
        entries += [
            (n, p.read_bytes() + (b"x" if n == LOCK else b"")) for n, p in sorted(members.items())
        ]
        _raw_tar(path, entries)
        err = self._refused(path, tmp_path)
        assert err.member == LOCK
        assert "bytes but the manifest says" in err.problem

    def test_hidden_padding(self, made: Path, tmp_path: Path) -> None:
        data = bytearray(made.read_bytes())
        manifest_size = int(bytes(data[124:135]), 8)
        assert manifest_size % 512  # there is padding to hide data in
        end = 512 + 512 * ((manifest_size + 511) // 512) - 1
        data[end] = 1
        made.write_bytes(bytes(data))
        assert self._refused(made, tmp_path).problem == "data hidden in the padding of a member"

    def test_lock_lists_unbundled_wheel(self, members: dict[str, Path], tmp_path: Path) -> None:
        lock = members[LOCK]
        lock.write_text(lock.read_text().replace("wheels/alpha", "wheels/omega"))
        _write(tmp_path / "app.safepip", members)
        err = self._refused(tmp_path / "app.safepip", tmp_path)
        assert err.member == LOCK
        assert err.problem == (
            "the lock lists `wheels/omega-1.0-py3-none-any.whl`, which is not a bundled wheel"
        )

    def test_wheel_not_in_lock(self, members: dict[str, Path], tmp_path: Path) -> None:
        lock = members[LOCK]
        alpha = {n: p for n, p in members.items() if "alpha" in n}
        lock.write_text(_lock_text({n.removeprefix("wheels/"): p for n, p in alpha.items()}))
        _write(tmp_path / "app.safepip", members)
        err = self._refused(tmp_path / "app.safepip", tmp_path)
        assert err.problem.endswith("is bundled but not in the lock")

    def test_future_format(self, members: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "v2.safepip"
        _raw_tar(path, [(MANIFEST, _manifest_bytes(members, format_version=2))])
        dest = tmp_path / "out"
        dest.mkdir()
        with pytest.raises(BundleError) as info:
            open_bundle(path, dest)
        assert info.value.exit_code == ExitCode.USAGE
        assert str(info.value) == (
            f"Bundle `{path}` has format version `2`; this safepip reads version 1"
        )


class TestTarget:
    def test_fits(self) -> None:
        from safepip.target import synthetic_target

        made = BundleTarget.of(synthetic_target("3.12", ["manylinux_2_28_x86_64"]))
        assert made == BundleTarget(
            implementation="cpython", python_version="3.12", platform="manylinux_2_28_x86_64"
        )
        assert made.fits(synthetic_target("3.12.4", ["manylinux_2_39_x86_64"]))
        assert not made.fits(synthetic_target("3.12", ["manylinux_2_17_x86_64"]))
        assert not made.fits(synthetic_target("3.11", ["manylinux_2_28_x86_64"]))
        assert not made.fits(synthetic_target("3.12", ["macosx_14_0_arm64"]))
