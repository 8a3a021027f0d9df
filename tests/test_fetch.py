"""Tests for fetching (hash-verified downloads, the cache) and unpacking wheels against RECORD."""

from __future__ import annotations

import base64
import concurrent.futures
import errno
import hashlib
import json
import os
import random
import re
import stat
import threading
import time
import zipfile
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from safepip import fetch as fetch_module
from safepip.errors import ExitCode
from safepip.fetch import (
    MANIFEST,
    Cache,
    FetchedArtifact,
    UnpackedWheel,
    WheelIntegrityError,
    _all_safe,
    _clock_past,
    _Feeder,
    _load_manifest,
    _process_pool,
    _safe_member,
    _try_load_manifest,
    check_unpacked,
    fetch_and_unpack,
    fetch_artifacts,
    restamp,
    unpack_all,
    unpack_wheel,
)
from safepip.hashes import HashCheckError, ProblemKind
from safepip.net import NetConfig, NetworkError, Session
from safepip.plan import Artifact
from safepip.policy import HostPolicy, PolicyViolation
from wheelbuild import build_wheel, record_digest, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from servers import FileServer, StaticIndex
    from wheelbuild import WheelFactory


def artifact(
    wheel: Path,
    url: str,
    *,
    expected: frozenset[str] | None = None,
    hash_source: str = "pinned",
    size: int | None = None,
) -> Artifact:
    name, version = wheel.name.split("-")[:2]
    return Artifact(
        name=canonicalize_name(name),
        version=version,
        filename=wheel.name,
        url=url,
        origin="https://origin.example/simple/",
        expected_hashes=(
            frozenset({f"sha256:{sha256_file(wheel)}"}) if expected is None else expected
        ),
        hash_source=hash_source,
        size=size,
    )


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.fixture
def index(static_index: Callable[..., StaticIndex]) -> StaticIndex:
    return static_index()


@pytest.fixture
def session(index: StaticIndex) -> Iterator[Session]:
    with Session(NetConfig(policy=HostPolicy().with_hosts(index.url))) as session:
        yield session


@pytest.fixture
def wheels(wheel_factory: WheelFactory, index: StaticIndex) -> list[Path]:
    """Three wheels served by `index`."""
    made = [wheel_factory(name, "1.0") for name in ("alpha", "beta", "gamma")]
    for wheel in made:
        index.add(wheel)
    return made


def served(index: StaticIndex, wheel: Path, **kwargs: Any) -> Artifact:
    return artifact(wheel, index.file_url(wheel.name), **kwargs)


def cached_files(cache: Cache) -> list[str]:
    root = cache.root / "artifacts"
    return sorted(p.name for p in root.rglob("*.whl")) if root.exists() else []


def leftover_tmp(cache: Cache) -> list[Path]:
    tmp = cache.root / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()

    def start(self, artifact: Artifact, total: int | None) -> None:
        with self._lock:
            self.events.append(("start", artifact.filename, total))

    def advance(self, artifact: Artifact, size: int) -> None:
        with self._lock:
            self.events.append(("advance", artifact.filename, size))

    def finish(self, artifact: Artifact, *, cached: bool) -> None:
        with self._lock:
            self.events.append(("finish", artifact.filename, cached))


def mock_session(handler: Callable[[httpx.Request], httpx.Response]) -> Session:
    session = Session(NetConfig(policy=HostPolicy().with_hosts("https://files.example")))
    session._client = httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False)
    return session


# -- fetching ------------------------------------------------------------------------------------


class TestFetch:
    def test_fetches_verifies_and_stores_by_sha256(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        arts = [served(index, w) for w in wheels]
        results = fetch_artifacts(session, arts, cache)
        assert [r.artifact for r in results] == arts
        for wheel, result in zip(wheels, results, strict=True):
            sha = sha256_file(wheel)
            assert result.sha256 == sha
            assert result.path == cache.artifact_path(sha, wheel.name)
            assert result.path.read_bytes() == wheel.read_bytes()
            assert not result.cached
        assert leftover_tmp(cache) == []

    def test_downloads_run_concurrently(self, tmp_path: Path, cache: Cache) -> None:
        bodies = {f"f{i}-1.0-py3-none-any.whl": f"body {i}".encode() for i in range(3)}
        everyone_in = threading.Barrier(len(bodies), timeout=10)

        def handler(request: httpx.Request) -> httpx.Response:
            everyone_in.wait()  # breaks unless all downloads are in flight at once
            return httpx.Response(200, stream=httpx.ByteStream(bodies[request.url.path[1:]]))

        arts = [
            Artifact(
                name=canonicalize_name(name.split("-")[0]),
                version="1.0",
                filename=name,
                url=f"https://files.example/{name}",
                origin="https://files.example/",
                expected_hashes=frozenset({f"sha256:{hashlib.sha256(body).hexdigest()}"}),
                hash_source="pinned",
            )
            for name, body in bodies.items()
        ]
        with mock_session(handler) as session:
            results = fetch_artifacts(session, arts, cache, max_workers=8)
        assert [r.path.read_bytes() for r in results] == list(bodies.values())

    def test_progress_hooks(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        wheel = wheels[0]
        size = wheel.stat().st_size
        progress = RecordingProgress()
        fetch_artifacts(session, [served(index, wheel)], cache, progress=progress)
        assert progress.events[0] == ("start", wheel.name, size)
        advanced = [n for kind, _, n in progress.events if kind == "advance"]
        assert sum(n for n in advanced if isinstance(n, int)) == size
        assert all(isinstance(n, int) for n in advanced)
        assert progress.events[-1] == ("finish", wheel.name, False)
        progress.events.clear()
        fetch_artifacts(session, [served(index, wheel)], cache, progress=progress)
        assert progress.events == [("finish", wheel.name, True)]

    def test_cache_hit_is_used_without_a_request(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        arts = [served(index, w) for w in wheels]
        first = fetch_artifacts(session, arts, cache)
        index.clear_requests()
        second = fetch_artifacts(session, arts, cache)
        assert index.requests == []
        assert [r.cached for r in second] == [True, True, True]
        assert [r.path for r in second] == [r.path for r in first]
        assert [r.artifact for r in second] == arts

    def test_corrupted_cache_entry_is_replaced(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        art = served(index, wheels[0])
        (first,) = fetch_artifacts(session, [art], cache)
        first.path.write_bytes(b"bit rot")
        index.clear_requests()
        (again,) = fetch_artifacts(session, [art], cache)
        assert not again.cached
        assert again.path == first.path
        assert again.path.read_bytes() == wheels[0].read_bytes()
        assert index.paths_requested() == [f"/files/{wheels[0].name}"]

    def test_error_hash_mismatch_collects_every_file(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        alpha, beta, gamma = wheels
        index.serve_bytes_override[alpha.name] = b"tampered alpha"
        index.serve_bytes_override[gamma.name] = b"tampered gamma"
        arts = [served(index, w) for w in wheels]
        with pytest.raises(HashCheckError) as info:
            fetch_artifacts(session, arts, cache)
        err = info.value
        assert str(err) == "\n".join(
            [
                "2 hash-checking problems",
                "",
                "Hash mismatch: these files do not match any hash in the requirements; someone "
                "may have tampered with them:",
                "    `alpha==1.0`",
                f"        file:     {index.file_url(alpha.name)}",
                f"        expected: sha256:{sha256_file(alpha)}",
                f"        got:      sha256:{hashlib.sha256(b'tampered alpha').hexdigest()}",
                "    `gamma==1.0`",
                f"        file:     {index.file_url(gamma.name)}",
                f"        expected: sha256:{sha256_file(gamma)}",
                f"        got:      sha256:{hashlib.sha256(b'tampered gamma').hexdigest()}",
            ]
        )
        assert err.exit_code is ExitCode.INTEGRITY
        assert {p.kind for p in err.problems} == {ProblemKind.MISMATCH}
        # Nothing that mismatched reached the cache; the good file did.
        assert cached_files(cache) == [beta.name]
        assert leftover_tmp(cache) == []

    def test_any_expected_digest_is_enough(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        wheel = wheels[0]
        sha512 = hashlib.sha512(wheel.read_bytes()).hexdigest()
        expected = frozenset({f"sha256:{'0' * 64}", f"sha512:{sha512}"})
        (result,) = fetch_artifacts(session, [served(index, wheel, expected=expected)], cache)
        assert result.sha256 == sha256_file(wheel)

    def test_unhashed_artifact_is_stored_by_its_digest(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        art = served(index, wheels[0], expected=frozenset(), hash_source="none")
        (result,) = fetch_artifacts(session, [art], cache)
        assert result.path == cache.artifact_path(sha256_file(wheels[0]), wheels[0].name)

    def test_error_size_differs_from_index(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        wheel = wheels[0]
        art = served(index, wheel, expected=frozenset(), hash_source="index", size=10)
        with pytest.raises(NetworkError) as info:
            fetch_artifacts(session, [art], cache)
        assert str(info.value) == (
            f"`{wheel.name}` has {wheel.stat().st_size} bytes but the index announced 10"
        )
        assert cached_files(cache) == []

    def test_pinned_hash_overrides_the_announced_size(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        art = served(index, wheels[0], size=10)
        assert fetch_artifacts(session, [art], cache)[0].sha256 == sha256_file(wheels[0])

    def test_http_error_is_raised(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        index.status[f"/files/{wheels[1].name}"] = 404
        with pytest.raises(NetworkError) as info:
            fetch_artifacts(session, [served(index, w) for w in wheels], cache)
        assert info.value.status == 404
        assert leftover_tmp(cache) == []

    def test_untrusted_host_is_refused(
        self,
        foreign_server: FileServer,
        session: Session,
        cache: Cache,
        wheel_factory: WheelFactory,
    ) -> None:
        wheel = wheel_factory("alpha", "1.0")
        url = foreign_server.add(wheel)
        with pytest.raises(PolicyViolation, match="is not a trusted host"):
            fetch_artifacts(session, [artifact(wheel, url)], cache)
        assert foreign_server.requests == []

    def test_truncated_download_is_an_error(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        index.truncate[wheels[0].name] = 10
        with pytest.raises(NetworkError):
            fetch_artifacts(session, [served(index, wheels[0])], cache)
        assert cached_files(cache) == []
        assert leftover_tmp(cache) == []

    def test_error_truncated_download_retried_once(
        self, index: StaticIndex, session: Session, cache: Cache, wheels: list[Path]
    ) -> None:
        wheel = wheels[0]
        index.truncate[wheel.name] = 10
        with pytest.raises(NetworkError) as info:
            fetch_artifacts(session, [served(index, wheel)], cache)
        assert index.paths_requested() == [f"/files/{wheel.name}"] * 2
        assert re.fullmatch(
            rf"Download of `{re.escape(wheel.name)}` was cut short: got \d+ of "
            rf"{wheel.stat().st_size} bytes",
            str(info.value),
        )
        assert info.value.hint == "retry; if it keeps happening the server or a proxy is at fault"

    def test_short_body_is_retried_once(self, cache: Cache) -> None:
        body = b"complete wheel body"
        answers = iter([body[:5], body])

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200,
                headers={"content-length": str(len(body))},
                stream=httpx.ByteStream(next(answers)),
            )

        art = Artifact(
            name=canonicalize_name("demo"),
            version="1.0",
            filename="demo-1.0-py3-none-any.whl",
            url="https://files.example/demo-1.0-py3-none-any.whl",
            origin="https://files.example/",
            expected_hashes=frozenset({f"sha256:{hashlib.sha256(body).hexdigest()}"}),
            hash_source="pinned",
        )
        with mock_session(handler) as session:
            (result,) = fetch_artifacts(session, [art], cache)
        assert result.path.read_bytes() == body

    def test_file_url(self, tmp_path: Path, cache: Cache, wheel_factory: WheelFactory) -> None:
        wheel = wheel_factory("alpha", "1.0")
        with Session(NetConfig(policy=HostPolicy())) as session:
            (result,) = fetch_artifacts(session, [artifact(wheel, wheel.as_uri())], cache)
        assert result.path.read_bytes() == wheel.read_bytes()

    def test_error_file_url_missing(self, tmp_path: Path, cache: Cache) -> None:
        wheel = tmp_path / "alpha-1.0-py3-none-any.whl"
        art = artifact_from_name(wheel)
        with Session(NetConfig(policy=HostPolicy())) as session:
            with pytest.raises(NetworkError) as info:
                fetch_artifacts(session, [art], cache)
        assert str(info.value) == (
            f"Could not read `{wheel}` for `alpha`: No such file or directory"
        )
        assert leftover_tmp(cache) == []


def artifact_from_name(wheel: Path) -> Artifact:
    return Artifact(
        name=canonicalize_name("alpha"),
        version="1.0",
        filename=wheel.name,
        url=wheel.as_uri(),
        origin="local",
        expected_hashes=frozenset({"sha256:" + "0" * 64}),
        hash_source="pinned",
    )


# -- unpacking -----------------------------------------------------------------------------------


def rewrite_zip(
    wheel: Path,
    *,
    drop: frozenset[str] = frozenset(),
    add: dict[str, tuple[bytes, int]] | None = None,
) -> Path:
    """Rewrite `wheel` in place without `drop` and with `add` members (`name: (data, mode)`)."""
    with zipfile.ZipFile(wheel) as src:
        members = [(i, src.read(i)) for i in src.infolist() if i.filename not in drop]
    with zipfile.ZipFile(wheel, "w") as out:
        for info, data in members:
            out.writestr(info, data)
        for name, (data, mode) in (add or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2020, 2, 2, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            out.writestr(info, data)
    return wheel


def unpack(wheel: Path, cache: Cache) -> object:
    return unpack_wheel(wheel, sha256_file(wheel), str(cache.root))


def assert_nothing_unpacked(wheel: Path, cache: Cache) -> None:
    final = cache.unpacked_path(sha256_file(wheel))
    assert not final.exists()
    if final.parent.exists():
        assert list(final.parent.iterdir()) == []  # no staging folder left behind


class TestUnpackWheel:
    def test_good_wheel(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory(
            "Demo.Pkg",
            "1.0",
            data_files={"scripts/tool": "#!/bin/sh\n", "data/share/x.txt": "x"},
        )
        sha = sha256_file(wheel)
        unpacked = unpack_wheel(wheel, sha, str(cache.root))
        assert unpacked.root == cache.unpacked_path(sha)
        assert (unpacked.sha256, unpacked.filename) == (sha, wheel.name)
        assert unpacked.dist_info == "demo_pkg-1.0.dist-info"
        assert unpacked.data_dir == "demo_pkg-1.0.data"
        assert unpacked.root_is_purelib
        assert unpacked.metadata.startswith(b"Metadata-Version: 2.1\nName: Demo.Pkg\n")
        with zipfile.ZipFile(wheel) as zf:
            names = sorted(zf.namelist())
            for name in names:
                assert (unpacked.root / name).read_bytes() == zf.read(name)
        by_path = {e.path: e for e in unpacked.entries}
        assert sorted(by_path) == names
        init = by_path["demo_pkg/__init__.py"]
        assert init.hash == record_digest(b'__version__ = "1.0"\n')
        assert init.size == len(b'__version__ = "1.0"\n')
        assert by_path["demo_pkg-1.0.data/scripts/tool"].executable
        assert not init.executable
        assert (unpacked.root / "demo_pkg-1.0.data/scripts/tool").stat().st_mode & stat.S_IXUSR
        assert (unpacked.root / MANIFEST).is_file()
        assert check_unpacked(unpacked)

    def test_error_corrupt_deflate_stream(
        self, wheel_factory: WheelFactory, cache: Cache, tmp_path: Path
    ) -> None:
        """Members are inflated straight from the archive (no CRC check); a damaged stream
        must still be refused, by the decoder or by the RECORD digest."""
        wheel = wheel_factory("crumbly", "1.0", files={"crumbly/__init__.py": "x = 1\n" * 4000})
        data = bytearray(wheel.read_bytes())
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo("crumbly/__init__.py")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        for i in range(start + 2, start + info.compress_size - 2):
            data[i] ^= 0x5A
        broken = tmp_path / wheel.name
        broken.write_bytes(bytes(data))
        with pytest.raises(WheelIntegrityError) as info_:
            unpack_wheel(broken, "0" * 64, str(cache.root))
        assert info_.value.member == "crumbly/__init__.py"
        assert info_.value.problem in (
            "member cannot be decompressed",
            "content does not match its RECORD digest",
            "member size differs from the archive directory",
        )
        assert not cache.unpacked_path("0" * 64).exists()

    def test_every_reading_path_and_record_digest(
        self, wheel_factory: WheelFactory, cache: Cache
    ) -> None:
        """A deep folder before its parent's files, a member too big to inflate in one call
        (read in bounded chunks) and a RECORD row with a sha512 digest: all unpacked byte for
        byte, and what `unpack_wheel` returns is what its manifest says."""
        big = random.Random(14).randbytes(5 << 20)
        files: dict[str, bytes] = {
            "deep/a/b/c/leaf.py": b"x = 1\n",
            "deep/top.py": b"y = 2\n",
            "deep/blob.bin": big,
            "deep/a/mid.py": b"z = 3\n",
        }

        def sha512_row(record: str) -> str:
            digest = base64.urlsafe_b64encode(hashlib.sha512(b"y = 2\n").digest()).rstrip(b"=")
            return record.replace(record_digest(b"y = 2\n"), f"sha512={digest.decode()}")

        wheel = wheel_factory("deep", "1.0", files=files, record_override=sha512_row)
        sha = sha256_file(wheel)
        unpacked = unpack_wheel(wheel, sha, str(cache.root))
        for name, data in files.items():
            assert (unpacked.root / name).read_bytes() == data
        assert unpacked == _load_manifest(unpacked.root)
        assert check_unpacked(unpacked)

        lying = wheel_factory(
            "deep",
            "1.0",
            files=files,
            record_override=lambda r: sha512_row(r).replace("sha512=", "sha512=A", 1),
            salt="other",
        )
        with pytest.raises(WheelIntegrityError) as info:
            unpack_wheel(lying, sha256_file(lying), str(cache.root))
        assert (info.value.problem, info.value.member) == (
            "content does not match its RECORD digest",
            "deep/top.py",
        )

    def test_folders_spelled_two_ways(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        """`a//b` is a safe member name (an empty part); its folder and `a/b`'s are one."""
        files = {"dbl//x.py": "x", "dbl/y.py": "y", "dbl//sub/z.py": "z", "dbl/sub/w.py": "w"}
        wheel = wheel_factory("dbl", "1.0", files=files)
        unpacked = unpack_wheel(wheel, sha256_file(wheel), str(cache.root))
        for name, text in files.items():
            assert (unpacked.root / name).read_text() == text
        assert check_unpacked(unpacked)

    def test_idempotent(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory("demo", "1.0")
        sha = sha256_file(wheel)
        first = unpack_wheel(wheel, sha, str(cache.root))
        wheel.unlink()  # the second call must not need the archive again
        assert unpack_wheel(wheel, sha, str(cache.root)) == first

    def test_not_root_is_purelib(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory("demo", "1.0", root_is_purelib=False, tag="cp311-cp311-linux_x86_64")
        assert not unpack_wheel(wheel, sha256_file(wheel), str(cache.root)).root_is_purelib

    def test_record_signature_is_allowed(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory("demo", "1.0", extra_members={"demo-1.0.dist-info/RECORD.jws": "{}"})
        unpacked = unpack_wheel(wheel, sha256_file(wheel), str(cache.root))
        assert "demo-1.0.dist-info/RECORD.jws" not in {e.path for e in unpacked.entries}

    def test_pyc_with_empty_record_hash_is_allowed(
        self, wheel_factory: WheelFactory, cache: Cache
    ) -> None:
        wheel = wheel_factory(
            "demo",
            "1.0",
            extra_members={"demo/__pycache__/x.cpython-311.pyc": b"\x00bytecode"},
            record_override=lambda r: r + "demo/__pycache__/x.cpython-311.pyc,,\n",
        )
        unpack(wheel, cache)

    def test_error_wheel_integrity(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory("demo", "1.0", extra_members={"../evil.py": "import os"})
        with pytest.raises(WheelIntegrityError) as info:
            unpack(wheel, cache)
        err = info.value
        assert str(err) == (
            "Refusing wheel `demo-1.0-py3-none-any.whl`: unsafe path in archive "
            "(member `../evil.py`)"
        )
        assert err.hint == (
            "the wheel is malformed or was tampered with; report it to the package's maintainers"
        )
        assert (err.filename, err.problem, err.member) == (
            "demo-1.0-py3-none-any.whl",
            "unsafe path in archive",
            "../evil.py",
        )
        assert err.exit_code is ExitCode.INTEGRITY
        assert_nothing_unpacked(wheel, cache)

    @pytest.mark.parametrize(
        "member",
        [
            "../evil.py",
            "demo/../../evil.py",
            "/etc/evil.py",
            "demo\\evil.py",
            "\\evil.py",
            "C:/evil.py",
            "demo/./evil.py",
        ],
    )
    def test_unsafe_member_paths(
        self, wheel_factory: WheelFactory, cache: Cache, member: str
    ) -> None:
        wheel = wheel_factory("demo", "1.0", extra_members={member: "x"})
        with pytest.raises(WheelIntegrityError) as info:
            unpack(wheel, cache)
        assert (info.value.problem, info.value.member) == ("unsafe path in archive", member)
        assert_nothing_unpacked(wheel, cache)

    def test_symlink(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = rewrite_zip(
            wheel_factory("demo", "1.0"),
            add={"demo/link.py": (b"/etc/passwd", stat.S_IFLNK | 0o777)},
        )
        with pytest.raises(WheelIntegrityError) as info:
            unpack(wheel, cache)
        assert (info.value.problem, info.value.member) == (
            "symbolic link in archive",
            "demo/link.py",
        )
        assert_nothing_unpacked(wheel, cache)

    def test_member_missing_from_record(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory("demo", "1.0", extra_members={"demo/extra.py": "x = 1\n"})
        with pytest.raises(WheelIntegrityError) as info:
            unpack(wheel, cache)
        assert (info.value.problem, info.value.member) == (
            "file not listed in RECORD",
            "demo/extra.py",
        )
        assert_nothing_unpacked(wheel, cache)

    @pytest.mark.parametrize(
        ("edit", "problem", "member"),
        [
            (
                lambda r: r + f"demo/ghost.py,{record_digest(b'x')},1\n",
                "RECORD lists a file the archive lacks",
                "demo/ghost.py",
            ),
            (
                lambda r: r.replace(record_digest(b'__version__ = "1.0"\n'), record_digest(b"x")),
                "content does not match its RECORD digest",
                "demo/__init__.py",
            ),
            (
                lambda r: r.replace(
                    record_digest(b'__version__ = "1.0"\n') + ",20",
                    record_digest(b'__version__ = "1.0"\n') + ",21",
                ),
                "size does not match RECORD",
                "demo/__init__.py",
            ),
            (
                lambda r: r.replace(
                    record_digest(b'__version__ = "1.0"\n'),
                    "md5=" + "A" * 22,
                ),
                "RECORD digest `md5` is not acceptable (use sha256)",
                "demo/__init__.py",
            ),
            (
                lambda r: r.replace(record_digest(b'__version__ = "1.0"\n') + ",20", ","),
                "RECORD has no digest for a file",
                "demo/__init__.py",
            ),
            (
                lambda r: r + f"../evil.py,{record_digest(b'x')},1\n",
                "unsafe path in RECORD",
                "../evil.py",
            ),
            (
                lambda r: r + f"demo/__init__.py,{record_digest(b'x')},1\n",
                "RECORD lists a file twice",
                "demo/__init__.py",
            ),
            (
                lambda r: r.replace(",20", ",twenty"),
                "RECORD has an invalid size",
                "demo/__init__.py",
            ),
        ],
    )
    def test_record_lies(
        self,
        wheel_factory: WheelFactory,
        cache: Cache,
        edit: Callable[[str], str],
        problem: str,
        member: str,
    ) -> None:
        wheel = wheel_factory("demo", "1.0", record_override=edit)
        with pytest.raises(WheelIntegrityError) as info:
            unpack(wheel, cache)
        assert (info.value.problem, info.value.member) == (problem, member)
        assert_nothing_unpacked(wheel, cache)

    def test_missing_record(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = rewrite_zip(
            wheel_factory("demo", "1.0"), drop=frozenset({"demo-1.0.dist-info/RECORD"})
        )
        with pytest.raises(WheelIntegrityError, match="no RECORD file"):
            unpack(wheel, cache)

    def test_duplicate_members(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory("demo", "1.0")
        with (
            pytest.warns(UserWarning, match="Duplicate name"),
            zipfile.ZipFile(wheel, "a") as zf,
        ):
            zf.writestr("demo/__init__.py", "evil = True\n")
        with pytest.raises(WheelIntegrityError, match="two central directory entries for one name"):
            unpack(wheel, cache)

    @pytest.mark.parametrize(
        ("filename", "problem"),
        [
            (
                "demo-2.0-py3-none-any.whl",
                "`demo-1.0.dist-info` does not match the version in the filename (2.0)",
            ),
            (
                "other-1.0-py3-none-any.whl",
                "its `.dist-info` folder `demo-1.0.dist-info` belongs to another distribution "
                "than `other`",
            ),
        ],
    )
    def test_wrong_dist_info(
        self, wheel_factory: WheelFactory, cache: Cache, filename: str, problem: str
    ) -> None:
        wheel = wheel_factory("demo", "1.0")
        renamed = wheel.rename(wheel.with_name(filename))
        with pytest.raises(WheelIntegrityError) as info:
            unpack(renamed, cache)
        assert info.value.problem == problem

    def test_two_dist_infos(self, wheel_factory: WheelFactory, cache: Cache) -> None:
        wheel = wheel_factory(
            "demo", "1.0", extra_members={"demo-2.0.dist-info/METADATA": "Name: demo\n"}
        )
        with pytest.raises(WheelIntegrityError) as info:
            unpack(wheel, cache)
        assert info.value.problem == (
            "a wheel must have exactly one `.dist-info` folder, for `demo` "
            "(found `demo-1.0.dist-info`, `demo-2.0.dist-info`)"
        )

    def test_error_survives_pickling(self) -> None:
        import pickle

        err = WheelIntegrityError("demo-1.0-py3-none-any.whl", "bad", member="demo/x.py")
        copy = pickle.loads(pickle.dumps(err))
        assert (str(copy), copy.hint, copy.member) == (str(err), err.hint, err.member)

    def test_not_a_zip(self, tmp_path: Path, cache: Cache) -> None:
        wheel = tmp_path / "demo-1.0-py3-none-any.whl"
        wheel.write_bytes(b"not a zip")
        with pytest.raises(WheelIntegrityError, match=r"no end-of-central-directory record"):
            unpack(wheel, cache)


def big_wheel(dest: Path, name: str, seed: int) -> Path:
    """A wheel over the 256 KiB multi-process threshold (incompressible content)."""
    payload = random.Random(seed).randbytes(300 * 1024)
    return build_wheel(dest, name, "1.0", files={f"{name}/blob.bin": payload})


def fetched(wheel: Path) -> FetchedArtifact:
    return FetchedArtifact(
        artifact=artifact(wheel, wheel.as_uri()), path=wheel, sha256=sha256_file(wheel), cached=True
    )


class TestUnpackAll:
    def test_sequential_and_reuse(
        self, wheel_factory: WheelFactory, cache: Cache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        wheels = [wheel_factory("alpha", "1.0"), wheel_factory("beta", "1.0")]
        items = [fetched(w) for w in wheels]
        result = unpack_all(items, cache)
        assert sorted(result) == sorted(i.sha256 for i in items)
        for item in items:
            assert result[item.sha256].filename == item.path.name

        def no_unpack(*args: object) -> None:
            raise AssertionError("should have reused the unpacked folder")

        monkeypatch.setattr("safepip.fetch.unpack_wheel", no_unpack)
        assert unpack_all(items, cache) == result

    def test_damaged_unpacked_folder_is_redone(
        self, wheel_factory: WheelFactory, cache: Cache
    ) -> None:
        wheel = wheel_factory("alpha", "1.0")
        item = fetched(wheel)
        unpacked = unpack_all([item], cache)[item.sha256]
        damaged = unpacked.root / "alpha" / "__init__.py"
        damaged.write_text("truncated")
        assert not check_unpacked(unpacked)
        again = unpack_all([item], cache)[item.sha256]
        assert damaged.read_text() == '__version__ = "1.0"\n'
        assert check_unpacked(again)

    def test_big_wheels_unpack_in_processes(
        self, tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pools: list[object] = []

        class RecordingPool(concurrent.futures.ProcessPoolExecutor):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pools.append(kwargs.get("max_workers"))
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", RecordingPool)
        monkeypatch.setattr("safepip.fetch.os.cpu_count", lambda: 4)
        wheels = [big_wheel(tmp_path / "w", n, i) for i, n in enumerate(("alpha", "beta", "c"))]
        items = [fetched(w) for w in wheels]
        result = unpack_all(items, cache)
        assert pools == [3]
        for item in items:
            unpacked = result[item.sha256]
            assert check_unpacked(unpacked)
            name = item.path.name.split("-")[0]
            with zipfile.ZipFile(item.path) as zf:
                blob = zf.read(f"{name}/blob.bin")
            assert (unpacked.root / name / "blob.bin").read_bytes() == blob

    def test_refusal_in_a_process_is_raised(self, tmp_path: Path, cache: Cache) -> None:
        good = big_wheel(tmp_path / "w", "alpha", 1)
        bad = build_wheel(
            tmp_path / "w",
            "beta",
            "1.0",
            files={"beta/blob.bin": random.Random(2).randbytes(300 * 1024)},
            extra_members={"beta/extra.py": "x"},
        )
        with pytest.raises(WheelIntegrityError, match="file not listed in RECORD"):
            unpack_all([fetched(good), fetched(bad)], cache)


CHECK_SCRIPT = """
import json, os, sys
from pathlib import Path
from types import SimpleNamespace
from safepip import fetch

root, log, mode = sys.argv[1:4]
shas = sys.argv[4:]
fetch.SHARE_CHECK_FILES = 1
parent = os.getpid()
real = fetch.check_unpacked

def check(unpacked):
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()} {unpacked.sha256}\\n")
    if os.getpid() != parent:
        if mode == "child-fails":
            raise RuntimeError("boom")
        if mode == "child-killed":
            os.kill(os.getpid(), 9)
    return real(unpacked)

fetch.check_unpacked = check
items = [SimpleNamespace(sha256=s) for s in shas]
intact = fetch.check_unpacked_many(items, fetch.Cache(Path(root)))
try:
    os.waitpid(-1, os.WNOHANG)
    children = "left"
except ChildProcessError:
    children = "none"
print(json.dumps({"intact": sorted(intact), "parent": parent, "children": children}))
"""


class TestCheckUnpackedMany:
    """The unpacked trees of a warm install are checked up front, by this process and a forked
    one side by side when they hold many files (issue 14)."""

    def make(self, tmp_path: Path, cache: Cache) -> list[str]:
        shas = []
        for i in range(6):
            files = {f"p{i}/m{j}.py": f"x = {i * 10 + j}\n" for j in range(5)}
            wheel = build_wheel(tmp_path / "w" / str(i), f"p{i}", "1.0", files=files)
            shas.append(unpack_wheel(wheel, sha256_file(wheel), str(cache.root)).sha256)
        # One changed file in the first wheel (this process's half) and the last (the child's)
        for sha in (shas[0], shas[-1]):
            changed = next(cache.unpacked_path(sha).glob("p*/m1.py"))
            changed.write_text("x = 99\n")
        return shas

    def run(self, tmp_path: Path, cache: Cache, shas: list[str], mode: str) -> Any:
        import subprocess
        import sys

        script = tmp_path / "check.py"
        script.write_text(CHECK_SCRIPT)
        log = tmp_path / f"log-{mode}"
        done = subprocess.run(
            [sys.executable, str(script), str(cache.root), str(log), mode, *shas],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        result = json.loads(done.stdout)
        checked = [line.split() for line in log.read_text().splitlines()]
        return result, checked

    @pytest.mark.parametrize("mode", ["shared", "child-fails", "child-killed"])
    def test_two_processes_find_exactly_the_changed_trees(
        self, tmp_path: Path, cache: Cache, mode: str
    ) -> None:
        shas = self.make(tmp_path, cache)
        result, checked = self.run(tmp_path, cache, shas, mode)
        assert result["intact"] == sorted(shas[1:-1])
        assert result["children"] == "none"
        parent = str(result["parent"])
        mine = {sha for pid, sha in checked if pid == parent}
        theirs = {sha for pid, sha in checked if pid != parent}
        assert theirs
        assert len({pid for pid, _ in checked}) == 2
        if mode == "shared":
            assert mine | theirs == set(shas)
            assert not mine & theirs
        else:  # the child failed: this process checked the child's half itself
            assert mine == set(shas)

    def test_few_files_or_another_thread_are_checked_here(
        self, tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from types import SimpleNamespace

        fetch = fetch_module
        shas = self.make(tmp_path, cache)
        items: Any = [SimpleNamespace(sha256=s) for s in shas]

        def no_fork() -> int:
            raise AssertionError("forked")

        monkeypatch.setattr(os, "fork", no_fork)
        assert sorted(fetch.check_unpacked_many(items, cache)) == sorted(shas[1:-1])
        monkeypatch.setattr(fetch, "SHARE_CHECK_FILES", 1)
        release = threading.Event()
        other = threading.Thread(target=release.wait)
        other.start()
        try:
            assert sorted(fetch.check_unpacked_many(items, cache)) == sorted(shas[1:-1])
        finally:
            release.set()
            other.join()

    def test_no_process_to_be_had_checks_all_here(
        self, tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`fork` failing (EAGAIN: too many processes) is no error: every tree is checked here,
        and both ends of the pipe are closed."""
        from types import SimpleNamespace

        shas = self.make(tmp_path, cache)
        items: Any = [SimpleNamespace(sha256=s) for s in shas]
        tried: list[int] = []

        def no_process() -> int:
            tried.append(1)
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

        monkeypatch.setattr(fetch_module, "SHARE_CHECK_FILES", 1)
        monkeypatch.setattr(threading, "active_count", lambda: 1)
        monkeypatch.setattr(os, "fork", no_process)
        before = len(os.listdir("/proc/self/fd"))
        assert sorted(fetch_module.check_unpacked_many(items, cache)) == sorted(shas[1:-1])
        assert tried == [1]
        assert len(os.listdir("/proc/self/fd")) == before


class TestFetchAndUnpack:
    """Downloads and unpacking overlapped: wheels go to the worker processes as they arrive."""

    def test_wheels_unpacked_in_processes_as_they_arrive(
        self, tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("safepip.fetch.os.cpu_count", lambda: 2)
        wheels = [big_wheel(tmp_path / "w", n, i) for i, n in enumerate(("alpha", "beta", "c"))]
        wheels.append(build_wheel(tmp_path / "w", "small", "1.0"))  # unpacked in this process
        with Session(NetConfig(policy=HostPolicy())) as session:
            got, unpacked = fetch_and_unpack(
                session, [artifact(w, w.as_uri()) for w in wheels], cache
            )
        assert [g.path.name for g in got] == [w.name for w in wheels]
        assert sorted(unpacked) == sorted(sha256_file(w) for w in wheels)
        for item in got:
            assert check_unpacked(unpacked[item.sha256])
            with zipfile.ZipFile(item.path) as zf:
                for name in zf.namelist():
                    assert (unpacked[item.sha256].root / name).read_bytes() == zf.read(name)

    def test_refusal_in_a_process_is_raised(self, tmp_path: Path, cache: Cache) -> None:
        wheels = [big_wheel(tmp_path / "w", n, i) for i, n in enumerate(("alpha", "beta", "c"))]
        wheels.append(
            build_wheel(
                tmp_path / "w",
                "bad",
                "1.0",
                files={"bad/blob.bin": random.Random(9).randbytes(300 * 1024)},
                extra_members={"bad/extra.py": "x"},
            )
        )
        with (
            Session(NetConfig(policy=HostPolicy())) as session,
            pytest.raises(WheelIntegrityError, match="file not listed in RECORD"),
        ):
            fetch_and_unpack(session, [artifact(w, w.as_uri()) for w in wheels], cache)
        assert not cache.unpacked_path(sha256_file(wheels[-1])).exists()

    def test_workers_start_with_the_unpacking_code_imported(self) -> None:
        """The fork server imports safepip.fetch once, before it forks the workers."""
        import multiprocessing.forkserver

        pool = _process_pool(1)
        try:
            assert pool.submit(os.getpid).result() != os.getpid()
        finally:
            pool.shutdown()
        preload = multiprocessing.forkserver._forkserver._preload_modules  # type: ignore[attr-defined]
        assert "safepip.fetch" in preload

    def test_the_largest_waiting_wheel_goes_first(self, tmp_path: Path) -> None:
        """A wheel whose download ends after smaller ones is still unpacked before them (in
        arrival order the largest wheel was the tail of cold installs)."""
        submitted: list[str] = []
        futures: list[concurrent.futures.Future[Any]] = []

        class HeldPool:
            """Each unpacking runs until the test lets it finish."""

            def submit(self, fn: object, path: Path, *args: object) -> object:
                future: concurrent.futures.Future[Any] = concurrent.futures.Future()
                submitted.append(path.name.split("-")[0])
                futures.append(future)
                return future

        def waiting_for(count: int) -> None:
            deadline = time.monotonic() + 10
            while len(submitted) < count:
                assert time.monotonic() < deadline, submitted
                time.sleep(0.005)

        def item(name: str) -> FetchedArtifact:
            path = tmp_path / f"{name}-1.0-py3-none-any.whl"
            path.write_bytes(name.encode())
            return FetchedArtifact(
                artifact=artifact(path, path.as_uri()), path=path, sha256=name, cached=False
            )

        feeder = _Feeder(HeldPool(), 1, str(tmp_path))  # type: ignore[arg-type]
        try:
            feeder.add(item("first"), 10)
            waiting_for(1)
            for name, size in (("small", 20), ("largest", 40), ("middle", 30)):
                feeder.add(item(name), size)
            for count in (2, 3, 4):
                futures[count - 2].set_result(submitted[count - 2])
                waiting_for(count)
            futures[3].set_result(submitted[3])
            assert feeder.finish() == ["first", "largest", "middle", "small"]  # type: ignore[comparison-overlap]
        finally:
            feeder.stop()
            feeder.join()
        assert submitted == ["first", "largest", "middle", "small"]


def edit_in_place(path: Path, data: bytes) -> None:
    """Same size, the old mtime put back: only the ctime shows the change."""
    before = path.stat()
    assert len(data) == before.st_size
    with path.open("r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def move_ctime(path: Path) -> None:
    """What a hard link made or removed by another environment does to a cached file."""
    aside = path.with_name(path.name + ".link")
    os.link(path, aside)
    os.unlink(aside)


def manifest_stamps(root: Path) -> dict[str, list[int]]:
    data = json.loads((root / MANIFEST).read_text("utf-8"))
    return {row[0]: row[4:] for row in data["entries"]}


class TestCacheStamps:
    """Issue 14: the warm check stats every file once, hashes only files whose stamp moved (in
    threads when there is much to hash), and never records a stamp it has not verified."""

    @pytest.fixture
    def many(self, wheel_factory: WheelFactory, cache: Cache) -> UnpackedWheel:
        files = {f"many/m{i}.py": f"VALUE = {i:04d}\n" for i in range(40)}
        wheel = wheel_factory("many", "1.0", files=files)
        return unpack_wheel(wheel, sha256_file(wheel), str(cache.root))

    @given(
        st.lists(
            st.text(alphabet=st.sampled_from(["a", "/", ".", "\\", ":", "\x00", "\n", "é"])),
            max_size=6,
        )
    )
    def test_bulk_path_check_agrees_with_the_per_path_rules(self, paths: list[str]) -> None:
        assert _all_safe(paths) == all(_safe_member(p) for p in paths)

    @pytest.mark.parametrize(
        "paths",
        [
            [""],
            ["a/b", ""],
            ["a", "/etc/passwd"],
            ["c:x"],
            ["a/../b"],
            ["a/.."],
            ["./a"],
            ["a/./b"],
            ["a\\b"],
            ["a\x00b"],
        ],
    )
    def test_bulk_path_check_refuses_each_unsafe_path(self, paths: list[str]) -> None:
        assert not _all_safe(["ok/fine.py", *paths, "ok/last.py"])
        assert _all_safe(["ok/fine.py", "ok/a.", "ok/last.py"])

    @pytest.mark.parametrize("field", [0, 1])
    def test_manifest_with_a_path_or_digest_not_a_string_is_damaged(
        self, many: UnpackedWheel, field: int
    ) -> None:
        data = json.loads((many.root / MANIFEST).read_text("utf-8"))
        data["entries"][3][field] = 7
        (many.root / MANIFEST).write_text(json.dumps(data), "utf-8")
        assert _try_load_manifest(many.root) is None

    @pytest.mark.parametrize("split", [1, 1 << 40])
    def test_moved_files_are_hashed_again_and_restamped(
        self, many: UnpackedWheel, monkeypatch: pytest.MonkeyPatch, split: int
    ) -> None:
        monkeypatch.setattr("safepip.fetch._HASH_SPLIT", split)  # in threads, or not
        monkeypatch.setattr("safepip.fetch.os.cpu_count", lambda: 3)
        before = manifest_stamps(many.root)
        for i in range(0, 40, 3):
            move_ctime(many.root / f"many/m{i}.py")
        assert check_unpacked(many)
        after = manifest_stamps(many.root)
        changed = {p for p in before if before[p] != after[p]}
        assert changed == {f"many/m{i}.py" for i in range(0, 40, 3)}
        # The new stamps are trusted: no file is hashed again.
        monkeypatch.setattr("safepip.fetch._hash_each", lambda *a: pytest.fail("hashed"))
        reloaded = _try_load_manifest(many.root)
        assert reloaded is not None
        assert check_unpacked(reloaded)

    @pytest.mark.parametrize("split", [1, 1 << 40])
    @pytest.mark.parametrize("victim", [0, 17, 39])
    def test_an_edit_keeping_size_and_mtime_is_caught_among_moved_files(
        self, many: UnpackedWheel, monkeypatch: pytest.MonkeyPatch, split: int, victim: int
    ) -> None:
        monkeypatch.setattr("safepip.fetch._HASH_SPLIT", split)
        monkeypatch.setattr("safepip.fetch.os.cpu_count", lambda: 3)
        for i in range(40):
            move_ctime(many.root / f"many/m{i}.py")
        edit_in_place(many.root / f"many/m{victim}.py", b"VALUE = 6666\n")
        manifest = (many.root / MANIFEST).read_bytes()
        assert not check_unpacked(many)
        assert (many.root / MANIFEST).read_bytes() == manifest  # nothing recorded

    def test_the_stamp_recorded_is_the_one_taken_before_hashing(
        self, many: UnpackedWheel, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An edit made after a moved file was hashed (before the manifest is written) must
        not be recorded as verified: the next check hashes the file again and finds it."""
        target = many.root / "many/m5.py"
        move_ctime(target)  # just now: the check waits for the clock to move on first
        real = fetch_module._hash_each

        def hash_then_edit(*args: Any) -> bool:
            ok = real(*args)
            edit_in_place(target, b"VALUE = 6666\n")
            return ok

        monkeypatch.setattr("safepip.fetch._hash_each", hash_then_edit)
        assert check_unpacked(many)  # what it hashed was intact
        monkeypatch.setattr("safepip.fetch._hash_each", real)
        reloaded = _try_load_manifest(many.root)
        assert reloaded is not None
        assert not check_unpacked(reloaded)

    def test_restamp_records_new_links_and_keeps_stamps_of_changed_files(
        self, many: UnpackedWheel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = tmp_path / "env"
        env.mkdir()
        for i in range(40):
            os.link(many.root / f"many/m{i}.py", env / f"m{i}.py")
        # Between the check and the restamp, one file is rewritten (a new mtime), another
        # replaced by a new inode: their stamps must stay the verified ones.
        (env / "m7.py").write_bytes(b"VALUE = 7777\n")
        replaced = many.root / "many/m8.py"
        replaced.with_name("new").write_bytes(b"VALUE = 8888\n")
        os.replace(replaced.with_name("new"), replaced)
        before = manifest_stamps(many.root)
        restamp([many])
        after = manifest_stamps(many.root)
        assert {p for p in before if before[p] != after[p]} == {
            f"many/m{i}.py" for i in range(40) if i not in (7, 8)
        }
        reloaded = _try_load_manifest(many.root)
        assert reloaded is not None
        assert not check_unpacked(reloaded)

    def test_an_edit_through_a_hard_linked_environment_after_the_restamp_is_caught(
        self, many: UnpackedWheel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = tmp_path / "env"
        env.mkdir()
        for i in range(40):
            os.link(many.root / f"many/m{i}.py", env / f"m{i}.py")
        restamp([many])  # waits for the clock to pass the links, then takes the stamps
        reloaded = _try_load_manifest(many.root)
        assert reloaded is not None
        with monkeypatch.context() as m:
            m.setattr("safepip.fetch._hash_each", lambda *a: pytest.fail("hashed"))
            assert check_unpacked(reloaded)  # the new links are recorded: stats suffice
        edit_in_place(env / "m3.py", b"VALUE = 3333\n")
        assert not check_unpacked(reloaded)

    def test_clock_past_waits_for_the_file_system_clock_and_leaves_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        probe = tmp_path / "probe"
        probe.write_bytes(b"")
        assert _clock_past(tmp_path, probe.stat().st_ctime_ns)
        assert _clock_past(tmp_path, None)
        monkeypatch.setattr("safepip.fetch.CLOCK_WAIT", 0.05)
        tomorrow = time.time_ns() + 86_400 * 10**9
        started = time.monotonic()
        assert not _clock_past(tmp_path, tomorrow)  # a clock that never gets there
        assert time.monotonic() - started < 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["probe"]
        assert not _clock_past(tmp_path / "missing", None)

    def test_unpacking_records_stamps_only_once_the_clock_has_moved_past_them(
        self, wheel_factory: WheelFactory, cache: Cache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: list[int | None] = []

        def still(folder: Path, newest: int | None) -> bool:
            seen.append(newest)
            return False

        monkeypatch.setattr("safepip.fetch._clock_past", still)
        wheel = wheel_factory(
            "still", "1.0", files={f"still/m{i}.py": f"V = {i}\n" for i in range(5)}
        )
        unpacked = unpack_wheel(wheel, sha256_file(wheel), str(cache.root))
        newest = max(os.stat(unpacked.root / e.path).st_ctime_ns for e in unpacked.entries)
        assert seen == [newest]  # asked about the newest file written
        assert {e.stamp for e in unpacked.entries} == {(0, 0, 0)}  # nothing recorded
        reloaded = _try_load_manifest(unpacked.root)
        assert reloaded is not None
        assert {e.stamp for e in reloaded.entries} == {(0, 0, 0)}
        hashed: list[str] = []
        real = fetch_module._hash_each

        def spy(prefix: str, dir_fd: int | None, entries: Any) -> bool:
            entries = list(entries)
            hashed.extend(e.path for e in entries)
            return real(prefix, dir_fd, entries)

        monkeypatch.setattr("safepip.fetch._hash_each", spy)
        assert check_unpacked(reloaded)  # its first use hashes every file again
        assert sorted(hashed) == sorted(e.path for e in reloaded.entries)

    def test_nothing_is_recorded_while_the_clock_stands_still(
        self, many: UnpackedWheel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("safepip.fetch._clock_past", lambda folder, newest: False)
        move_ctime(many.root / "many/m1.py")
        manifest = (many.root / MANIFEST).read_bytes()
        assert check_unpacked(many)  # intact, but its new stamp is not recorded
        env = tmp_path / "env"
        env.mkdir()
        os.link(many.root / "many/m2.py", env / "m2.py")
        restamp([many])
        assert (many.root / MANIFEST).read_bytes() == manifest
