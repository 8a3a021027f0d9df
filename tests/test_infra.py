"""Proves the test infrastructure (wheel builder, servers, fixtures) does what tests assume."""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import os
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import pytest
from installer.sources import WheelFile
from packaging.metadata import Metadata
from packaging.version import Version

from servers import JSON_CONTENT_TYPE, FileServer, PypiServer, StaticIndex
from wheelbuild import (
    build_sdist,
    build_wheel,
    record_digest,
    sdist_marker_path,
    sha256_file,
    wheel_filename,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import TreeSnapshot
    from wheelbuild import WheelFactory

PIP_JSON_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


def run_pip(*args: str) -> subprocess.CompletedProcess[str]:
    """Real pip from the test interpreter, no cache, no retries; fails the test on error."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--retries",
        "0",
        "--timeout",
        "15",
        "--only-binary",
        ":all:",
        "--no-compile",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def import_versions(target: Path, *modules: str) -> list[str]:
    """`__version__` of `modules` imported from `target` by a fresh interpreter."""
    code = f"import sys; sys.path.insert(0, {str(target)!r})\n" + "".join(
        f"import {m}; print({m}.__version__)\n" for m in modules
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def fetch(
    url: str,
    *,
    accept: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request, without following redirects."""
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    if accept is not None:
        request.add_header("Accept", accept)
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), error.read()


def _connection_threads(server: StaticIndex) -> list[threading.Thread]:
    """Live threads handling a connection of `server`."""
    targets = [(t, getattr(t, "_target", None)) for t in threading.enumerate()]
    return [
        thread
        for thread, target in targets
        if getattr(target, "__self__", None) is server._httpd
        and getattr(target, "__name__", "") == "process_request_thread"
    ]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class TestEnvironment:
    def test_pip_configuration_is_neutralised(self) -> None:
        pip_vars = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
        assert pip_vars == {
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
        }
        assert os.environ["SAFEPIP_NO_BACKOFF"] == "1"
        assert os.environ["NO_COLOR"] == "1"

    def test_xdg_dirs_point_into_a_session_temp_dir(self) -> None:
        home = os.path.expanduser("~")
        for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            assert not os.environ[name].startswith(home + os.sep)
            assert "safepip-tests-" in os.environ[name]

    def test_pip_sees_no_configuration(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            check=True,
        )
        # Only the three variables set above remain; no file adds an index, link or cert.
        assert sorted(result.stdout.splitlines()) == [
            f":env:.config-file='{os.devnull}'",
            ":env:.disable-pip-version-check='1'",
            ":env:.no-input='1'",
        ]


class TestBuildWheel:
    def test_full_wheel_passes_installer_record_validation(self, tmp_path: Path) -> None:
        wheel = build_wheel(
            tmp_path,
            "Infra.Full_Pkg",
            "1.0.post1",
            requires=["six>=1", "colorama; sys_platform == 'win32'"],
            requires_python=">=3.8,<4",
            extras={"socks": ["pysocks>=1.5", "win-inet; os_name == 'nt'"]},
            entry_points={"console_scripts": {"full-tool": "infra_full_pkg:main"}},
            data_files={"scripts/full-script": "#!python\nprint('hi')\n", "data/share/x": b"x"},
            tag="py2.py3-none-any",
        )
        assert wheel.name == "infra_full_pkg-1.0.post1-py2.py3-none-any.whl"
        with WheelFile.open(wheel) as source:
            source.validate_record(validate_contents=True)
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            wheel_info = archive.read("infra_full_pkg-1.0.post1.dist-info/WHEEL").decode()
            script = archive.getinfo("infra_full_pkg-1.0.post1.data/scripts/full-script")
            entry_points = archive.read(
                "infra_full_pkg-1.0.post1.dist-info/entry_points.txt"
            ).decode()
        assert names[-1] == "infra_full_pkg-1.0.post1.dist-info/RECORD"
        assert "infra_full_pkg-1.0.post1.data/data/share/x" in names
        assert "Tag: py2-none-any\nTag: py3-none-any\n" in wheel_info
        assert "Root-Is-Purelib: true" in wheel_info
        assert script.external_attr >> 16 & 0o111
        assert "[console_scripts]\nfull-tool = infra_full_pkg:main\n" in entry_points

    def test_metadata_declares_requirements_python_and_extras(self, tmp_path: Path) -> None:
        wheel = build_wheel(
            tmp_path,
            "infra-meta",
            "2.0",
            requires=["six>=1"],
            requires_python=">=3.8",
            extras={"socks": ["pysocks>=1.5; os_name == 'posix'"]},
        )
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read("infra_meta-2.0.dist-info/METADATA").decode()
        meta = Metadata.from_email(text, validate=True)
        assert meta.metadata_version == "2.1"
        assert meta.name == "infra-meta"
        assert meta.version == Version("2.0")
        assert str(meta.requires_python) == ">=3.8"
        assert meta.provides_extra == ["socks"]
        requires = meta.requires_dist or []
        assert str(requires[0]) == "six>=1"
        socks = requires[1]
        assert socks.name == "pysocks"
        assert socks.marker is not None
        assert socks.marker.evaluate({"extra": "socks", "os_name": "posix"})
        assert not socks.marker.evaluate({"extra": "", "os_name": "posix"})

    def test_record_rows_are_urlsafe_unpadded_sha256_with_sizes(self, tmp_path: Path) -> None:
        wheel = build_wheel(tmp_path, "infra-rec", "1.0", files={"infra_rec.py": "x = 1\n"})
        with zipfile.ZipFile(wheel) as archive:
            record = archive.read("infra_rec-1.0.dist-info/RECORD").decode()
            rows = list(csv.reader(io.StringIO(record)))
            members = {name: archive.read(name) for name in archive.namelist()}
        assert {row[0] for row in rows} == set(members)
        for path, digest, size in rows:
            if path.endswith("/RECORD"):
                assert (digest, size) == ("", "")
                continue
            assert not digest.endswith("=")
            assert digest == record_digest(members[path])
            assert int(size) == len(members[path])

    def test_default_module_carries_the_version(self, tmp_path: Path) -> None:
        wheel = build_wheel(tmp_path, "Infra-Mod", "3.1")
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read("infra_mod/__init__.py") == b'__version__ = "3.1"\n'

    def test_same_inputs_give_same_bytes_and_salt_changes_only_bytes(
        self, wheel_factory: WheelFactory
    ) -> None:
        first = wheel_factory("infra-repro", "1.0", requires=["six"])
        second = wheel_factory("infra-repro", "1.0", requires=["six"])
        salted = wheel_factory("infra-repro", "1.0", requires=["six"], salt="other")
        assert first != second != salted
        assert first.name == salted.name == wheel_filename("infra-repro", "1.0")
        assert sha256_file(first) == sha256_file(second)
        assert sha256_file(first) != sha256_file(salted)
        with zipfile.ZipFile(first) as a, zipfile.ZipFile(salted) as b:
            assert [(i.filename, a.read(i)) for i in a.infolist()] == [
                (i.filename, b.read(i)) for i in b.infolist()
            ]
        with WheelFile.open(salted) as source:
            source.validate_record(validate_contents=True)

    def test_lying_record_fails_validation(self, tmp_path: Path) -> None:
        wheel = build_wheel(
            tmp_path,
            "infra-liar",
            "1.0",
            record_override=lambda record: record.replace("sha256=", "sha256=AAAA", 1),
        )
        with WheelFile.open(wheel) as source, pytest.raises(ValueError, match="infra_liar"):
            source.validate_record(validate_contents=True)

    def test_record_given_as_text_replaces_it(self, tmp_path: Path) -> None:
        record = "infra_text/__init__.py,sha256=AAAA,3\ninfra_text-1.0.dist-info/RECORD,,\n"
        wheel = build_wheel(tmp_path, "infra-text", "1.0", record_override=record)
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read("infra_text-1.0.dist-info/RECORD").decode() == record
        with WheelFile.open(wheel) as source, pytest.raises(ValueError, match="infra_text"):
            source.validate_record(validate_contents=True)

    def test_extra_members_are_raw_and_unrecorded(self, tmp_path: Path) -> None:
        wheel = build_wheel(
            tmp_path, "infra-evil", "1.0", extra_members={"../evil.py": b"import os\n"}
        )
        with zipfile.ZipFile(wheel) as archive:
            assert "../evil.py" in archive.namelist()
        with WheelFile.open(wheel) as source, pytest.raises(ValueError, match="evil"):
            source.validate_record(validate_contents=True)

    def test_pip_installs_the_wheel_and_it_imports(self, tmp_path: Path) -> None:
        wheel = build_wheel(tmp_path / "dist", "infra-pipok", "1.2.3", requires=["absent-dep"])
        target = tmp_path / "target"
        run_pip("--no-index", "--no-deps", "--target", str(target), str(wheel))
        assert import_versions(target, "infra_pipok") == ["1.2.3"]
        assert (target / "infra_pipok-1.2.3.dist-info" / "RECORD").is_file()

    def test_sha256_file(self, tmp_path: Path) -> None:
        path = tmp_path / "blob"
        path.write_bytes(b"abc" * 100_000)
        assert sha256_file(path) == hashlib.sha256(b"abc" * 100_000).hexdigest()


class TestBuildSdist:
    def test_sdist_is_minimal_and_reproducible(self, tmp_path: Path) -> None:
        first = build_sdist(tmp_path / "a", "Infra.Sdist", "1.0")
        second = build_sdist(tmp_path / "b", "Infra.Sdist", "1.0")
        assert first.name == "infra_sdist-1.0.tar.gz"
        with tarfile.open(first) as archive:
            assert sorted(archive.getnames()) == [
                "infra_sdist-1.0/PKG-INFO",
                "infra_sdist-1.0/setup.py",
            ]
            pkg_info = archive.extractfile("infra_sdist-1.0/PKG-INFO")
            assert pkg_info is not None
            assert b"Name: Infra.Sdist\nVersion: 1.0\n" in pkg_info.read()
        # Markers point into each build folder, so only same-folder builds are identical.
        assert sha256_file(first) == sha256_file(build_sdist(tmp_path / "a", "Infra.Sdist", "1.0"))
        assert sha256_file(first) != sha256_file(second)

    def test_setup_py_leaves_its_marker_when_run(self, tmp_path: Path) -> None:
        sdist = build_sdist(tmp_path, "infra-marker", "1.0")
        marker = sdist_marker_path(tmp_path, "infra-marker")
        assert not marker.exists()
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp_path / "src", filter="data")
        subprocess.run(
            [sys.executable, "setup.py", "--name"],
            cwd=tmp_path / "src" / "infra_marker-1.0",
            capture_output=True,
            check=False,
        )
        assert marker.read_text() == "setup.py ran\n"


class TestStaticIndex:
    @pytest.mark.parametrize("mode", ["json-only", "html-only"])
    def test_pip_resolves_and_installs_from_the_index(
        self,
        mode: str,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        tmp_path: Path,
    ) -> None:
        index = static_index(mode=mode)
        index.add(wheel_factory("infra-app", "1.0", requires=["infra-lib>=2"]))
        index.add(wheel_factory("infra-lib", "1.0"))
        index.add(wheel_factory("infra-lib", "2.0"))
        target = tmp_path / "target"
        run_pip("--index-url", index.url, "--target", str(target), "infra-app")
        assert import_versions(target, "infra_app", "infra_lib") == ["1.0", "2.0"]
        paths = index.paths_requested("GET")
        assert "/simple/infra-app/" in paths
        # PEP 658: pip reads the advertised metadata file before the wheel itself.
        assert "/files/infra_app-1.0-py3-none-any.whl.metadata" in paths
        assert "/files/infra_lib-2.0-py3-none-any.whl" in paths
        assert "/files/infra_lib-1.0-py3-none-any.whl" not in paths
        page = next(r for r in index.requests if r.path == "/simple/infra-app/")
        assert page.accept is not None
        assert JSON_CONTENT_TYPE in page.accept

    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            (PIP_JSON_ACCEPT, JSON_CONTENT_TYPE),
            (None, "text/html; charset=utf-8"),
            ("text/html", "text/html; charset=utf-8"),
            ("*/*", "text/html; charset=utf-8"),
            (
                "application/vnd.pypi.simple.v1+json;q=0.5, application/vnd.pypi.simple.v1+html",
                "application/vnd.pypi.simple.v1+html",
            ),
            ("application/vnd.pypi.simple.latest+json", JSON_CONTENT_TYPE),
        ],
    )
    def test_content_negotiation(
        self,
        accept: str | None,
        expected: str,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
    ) -> None:
        index = static_index()
        index.add(wheel_factory("infra-neg", "1.0"))
        status, headers, body = fetch(index.project_url("infra-neg"), accept=accept)
        assert status == 200
        assert headers["Content-Type"] == expected
        assert headers["Vary"] == "Accept"
        if expected == JSON_CONTENT_TYPE:
            assert json.loads(body)["name"] == "infra-neg"
        else:
            assert b">infra_neg-1.0-py3-none-any.whl</a>" in body

    def test_unacceptable_accept_gets_406(self, static_index: Callable[..., StaticIndex]) -> None:
        index = static_index()
        index.add_project("infra-none")
        assert fetch(index.project_url("infra-none"), accept="application/xml")[0] == 406

    @pytest.mark.parametrize(("mode", "kind"), [("json-only", "json"), ("html-only", "html")])
    def test_forced_modes_ignore_accept(
        self, mode: str, kind: str, static_index: Callable[..., StaticIndex]
    ) -> None:
        index = static_index(mode=mode)
        index.add_project("infra-forced")
        json_status, json_headers, _ = fetch(index.url, accept=JSON_CONTENT_TYPE)
        html_status, html_headers, _ = fetch(index.url, accept="text/html")
        assert json_status == html_status == 200
        assert json_headers["Content-Type"] == html_headers["Content-Type"]
        assert (json_headers["Content-Type"] == JSON_CONTENT_TYPE) == (kind == "json")

    def test_listings_describe_files_as_added(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> None:
        index = static_index()
        yanked = index.add(
            wheel_factory("infra-attrs", "1.0"),
            yanked="broken <build> & more",
            requires_python=">=3.8,<4",
        )
        plain = index.add(wheel_factory("infra-attrs", "1.1"), metadata=False)
        bare = index.add(wheel_factory("infra-attrs", "1.2"), hash_in_listing=False)
        silent_yank = index.add(wheel_factory("infra-attrs", "1.3"), yanked=True)
        metadata_url = index.file_url(yanked.filename) + ".metadata"
        _, _, core_metadata = fetch(metadata_url)
        assert core_metadata.startswith(b"Metadata-Version: 2.1\nName: infra-attrs\n")
        assert yanked.metadata_sha256 == hashlib.sha256(core_metadata).hexdigest()
        assert plain.metadata_sha256 is None
        assert fetch(index.file_url(plain.filename) + ".metadata")[0] == 404

        _, _, page = fetch(index.project_url("infra-attrs"), accept="text/html")
        html = page.decode()
        assert (
            f'<a href="../../files/{yanked.filename}#sha256={yanked.sha256}" '
            'data-requires-python="&gt;=3.8,&lt;4" data-yanked="broken &lt;build&gt; &amp; more" '
            f'data-core-metadata="sha256={yanked.metadata_sha256}">{yanked.filename}</a>'
        ) in html
        assert f'href="../../files/{plain.filename}#sha256={plain.sha256}">' in html
        assert f'href="../../files/{bare.filename}" data-core-metadata=' in html
        assert f'data-yanked="" data-core-metadata="sha256={silent_yank.metadata_sha256}"' in html

        _, _, raw = fetch(index.project_url("infra-attrs"), accept=JSON_CONTENT_TYPE)
        document = json.loads(raw)
        assert document["meta"] == {"api-version": "1.1"}
        assert document["versions"] == ["1.0", "1.1", "1.2", "1.3"]
        files = {f["filename"]: f for f in document["files"]}
        assert files[yanked.filename] == {
            "filename": yanked.filename,
            "url": f"../../files/{yanked.filename}",
            "hashes": {"sha256": yanked.sha256},
            "size": yanked.size,
            "yanked": "broken <build> & more",
            "requires-python": ">=3.8,<4",
            "core-metadata": {"sha256": yanked.metadata_sha256},
        }
        assert "core-metadata" not in files[plain.filename]
        assert files[bare.filename]["hashes"] == {}
        assert files[silent_yank.filename]["yanked"] is True
        # Relative links resolve to the real file, whose bytes match the listed digest.
        _, _, data = fetch(urljoin(index.project_url("infra-attrs"), files[plain.filename]["url"]))
        assert (
            hashlib.sha256(data).hexdigest()
            == plain.sha256
            == files[plain.filename]["hashes"]["sha256"]
        )

    def test_legacy_metadata_key_and_absolute_links(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> None:
        index = static_index()
        index.metadata_keys = ("dist-info-metadata",)
        index.absolute_links = True
        entry = index.add(wheel_factory("infra-legacy", "1.0"))
        _, _, raw = fetch(index.project_url("infra-legacy"), accept=JSON_CONTENT_TYPE)
        (item,) = json.loads(raw)["files"]
        assert item["url"] == index.file_url(entry.filename)
        assert item["dist-info-metadata"] == {"sha256": entry.metadata_sha256}
        assert "core-metadata" not in item

    def test_project_list(self, static_index: Callable[..., StaticIndex]) -> None:
        index = static_index()
        index.add_project("Infra_B")
        index.add_project("infra-a")
        _, _, raw = fetch(index.url, accept=JSON_CONTENT_TYPE)
        assert json.loads(raw)["projects"] == [{"name": "infra-a"}, {"name": "infra-b"}]
        _, _, page = fetch(index.url, accept="text/html")
        assert b'<a href="infra-a/">infra-a</a>' in page

    def test_paths_outside_the_index_and_unknown_projects_are_404(
        self, static_index: Callable[..., StaticIndex]
    ) -> None:
        index = static_index()
        index.add_project("infra-known")
        assert fetch(index.base_url + "/")[0] == 404
        assert fetch(index.url + "infra-unknown/")[0] == 404
        assert fetch(index.files_url + "nothing.whl")[0] == 404
        assert fetch(index.files_url + "..%2Fsimple")[0] == 404

    def test_non_normalised_project_paths_redirect(
        self, static_index: Callable[..., StaticIndex]
    ) -> None:
        index = static_index()
        index.add_project("infra-norm")
        status, headers, _ = fetch(index.url + "Infra_Norm/")
        assert (status, headers["Location"]) == (301, "/simple/infra-norm/")
        status, headers, _ = fetch(index.url + "infra-norm")
        assert (status, headers["Location"]) == (301, "/simple/infra-norm/")

    def test_url_host_points_the_listing_at_another_server(
        self,
        static_index: Callable[..., StaticIndex],
        foreign_server: FileServer,
        wheel_factory: WheelFactory,
    ) -> None:
        index = static_index()
        wheel = wheel_factory("infra-far", "1.0")
        foreign_server.add(wheel)
        index.add(wheel, url_host=foreign_server.url)
        _, _, raw = fetch(index.project_url("infra-far"), accept=JSON_CONTENT_TYPE)
        (item,) = json.loads(raw)["files"]
        assert item["url"] == f"http://127.0.0.2:{foreign_server.port}/{wheel.name}"
        status, _, data = fetch(item["url"])
        assert status == 200
        assert data == wheel.read_bytes()
        assert foreign_server.requests == [("GET", f"/{wheel.name}", None)]

    def test_head_and_ranges(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> None:
        index = static_index()
        entry = index.add(wheel_factory("infra-range", "1.0"))
        url = index.file_url(entry.filename)
        data = (index.files_dir / entry.filename).read_bytes()
        size = len(data)

        status, headers, body = fetch(url, method="HEAD")
        assert (status, body) == (200, b"")
        assert headers["Content-Length"] == str(size)
        assert headers["Accept-Ranges"] == "bytes"

        cases = {
            "bytes=0-9": (0, 9),
            "bytes=10-": (10, size - 1),
            "bytes=-22": (size - 22, size - 1),
            f"bytes=5-{size + 100}": (5, size - 1),
        }
        for header, (start, end) in cases.items():
            status, headers, body = fetch(url, headers={"Range": header})
            assert status == 206, header
            assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
            assert body == data[start : end + 1]

        status, headers, _ = fetch(url, headers={"Range": f"bytes={size}-"})
        assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
        assert fetch(url, headers={"Range": "bytes=0-1,4-5"})[2] == data

    def test_truncated_download_ends_early(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> None:
        index = static_index()
        entry = index.add(wheel_factory("infra-trunc", "1.0"))
        index.truncate[entry.filename] = 100
        connection = http.client.HTTPConnection("127.0.0.1", index.port, timeout=10)
        try:
            connection.request("GET", f"/files/{entry.filename}")
            response = connection.getresponse()
            assert response.getheader("Content-Length") == str(entry.size)
            with pytest.raises(http.client.IncompleteRead) as caught:
                response.read()
            assert len(caught.value.partial) == 100
        finally:
            connection.close()

    def test_other_bytes_under_the_listed_name(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory
    ) -> None:
        index = static_index()
        entry = index.add(wheel_factory("infra-swap", "1.0"))
        evil = wheel_factory("infra-swap", "1.0", salt="evil")
        index.serve_bytes_override[entry.filename] = evil.read_bytes()
        _, headers, data = fetch(index.file_url(entry.filename))
        assert data == evil.read_bytes()
        assert headers["Content-Length"] == str(len(data))
        assert hashlib.sha256(data).hexdigest() != entry.sha256
        _, _, raw = fetch(index.project_url("infra-swap"), accept=JSON_CONTENT_TYPE)
        assert json.loads(raw)["files"][0]["hashes"] == {"sha256": entry.sha256}

    def test_status_fail_times_and_redirect(
        self, static_index: Callable[..., StaticIndex], foreign_server: FileServer
    ) -> None:
        index = static_index()
        index.add_project("infra-flaky")
        page = "/simple/infra-flaky/"
        index.fail_times[page] = (503, 2)
        assert [fetch(index.base_url + page)[0] for _ in range(3)] == [503, 503, 200]
        index.status[page] = 500
        assert fetch(index.base_url + page)[0] == 500
        del index.status[page]
        target = foreign_server.add_bytes("elsewhere.txt", b"moved")
        index.redirect[page] = target
        status, headers, _ = fetch(index.base_url + page + "?q=1")
        assert (status, headers["Location"]) == (302, target)
        assert index.paths_requested()[-1] == page + "?q=1"
        index.redirect_code = 307
        assert fetch(index.base_url + page)[0] == 307

    def test_basic_auth(self, static_index: Callable[..., StaticIndex]) -> None:
        index = static_index()
        index.add_project("infra-private")
        index.basic_auth = ("user", "s3cret")
        status, headers, _ = fetch(index.url)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic ")
        good = {"Authorization": "Basic dXNlcjpzM2NyZXQ="}
        assert fetch(index.url, headers=good)[0] == 200
        assert index.request_headers[-1]["authorization"] == good["Authorization"]

    def test_request_log_is_complete_under_concurrency(
        self, static_index: Callable[..., StaticIndex]
    ) -> None:
        index = static_index()
        index.add_project("infra-busy")
        statuses: list[int] = []

        def worker(n: int) -> None:
            statuses.append(fetch(f"{index.url}infra-busy/?n={n}", accept="text/html")[0])

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 24
        assert sorted(r.path for r in index.requests) == sorted(
            f"/simple/infra-busy/?n={n}" for n in range(24)
        )
        assert index.errors == []

    def test_close_drops_idle_connections_joins_threads_and_frees_the_port(self) -> None:
        index = StaticIndex()
        url = index.url
        idle = http.client.HTTPConnection("127.0.0.1", index.port, timeout=10)
        try:
            idle.request("GET", "/simple/")
            response = idle.getresponse()
            response.read()
            assert response.getheader("Connection") != "close"
            assert len(_connection_threads(index)) == 1  # kept alive, waiting for more
            started = time.monotonic()
            index.close()
            index.close()
            assert time.monotonic() - started < 2
        finally:
            idle.close()
        assert not [t for t in threading.enumerate() if f":{index.port}" in t.name]
        assert _connection_threads(index) == []
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=2)


class TestTLS:
    def test_pip_installs_over_https_with_the_ca_bundle(
        self, tls_index: StaticIndex, wheel_factory: WheelFactory, tmp_path: Path
    ) -> None:
        tls_index.add(wheel_factory("infra-tls", "1.0"))
        assert tls_index.url.startswith("https://127.0.0.1:")
        assert tls_index.ca_bundle is not None
        target = tmp_path / "target"
        run_pip(
            "--index-url",
            tls_index.url,
            "--cert",
            str(tls_index.ca_bundle),
            "--target",
            str(target),
            "infra-tls",
        )
        assert import_versions(target, "infra_tls") == ["1.0"]

    def test_certificate_is_trusted_only_through_the_test_ca(self, tls_index: StaticIndex) -> None:
        tls_index.add_project("infra-cert")
        assert tls_index.ca_bundle is not None
        trusting = ssl.create_default_context(cafile=str(tls_index.ca_bundle))
        assert fetch(tls_index.url, context=trusting)[0] == 200
        localhost_url = tls_index.url.replace("127.0.0.1", "localhost")
        assert fetch(localhost_url, context=trusting)[0] == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(tls_index.url, context=ssl.create_default_context())

    def test_static_index_factory_serves_https(
        self, static_index: Callable[..., StaticIndex]
    ) -> None:
        index = static_index(tls=True)
        assert index.url.startswith("https://")
        assert index.ca_bundle is not None
        context = ssl.create_default_context(cafile=str(index.ca_bundle))
        assert fetch(index.url, context=context)[0] == 200


class TestFileServer:
    def test_listing_has_an_anchor_per_entry(self, foreign_server: FileServer) -> None:
        foreign_server.add_bytes("a-1.0.tar.gz", b"aaa")
        foreign_server.add_bytes("sub/b.txt", b"bbb")
        assert foreign_server.url.startswith("http://127.0.0.2:")
        _, headers, page = fetch(foreign_server.url)
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'<a href="a-1.0.tar.gz">a-1.0.tar.gz</a>' in page
        assert b'<a href="sub/">sub</a>' in page
        foreign_server.listing_hashes = True
        digest = hashlib.sha256(b"aaa").hexdigest()
        assert f'href="a-1.0.tar.gz#sha256={digest}"'.encode() in fetch(foreign_server.url)[2]
        assert fetch(foreign_server.url + "sub/b.txt")[2] == b"bbb"
        assert fetch(foreign_server.url + "sub")[1]["Location"] == "/sub/"

    def test_index_html_is_served_for_its_folder(self, foreign_server: FileServer) -> None:
        foreign_server.add_bytes("links/index.html", "<a href='x'>x</a>")
        assert fetch(foreign_server.url + "links/")[2] == b"<a href='x'>x</a>"

    def test_paths_cannot_leave_the_root(self, foreign_server: FileServer) -> None:
        (foreign_server.root.parent / "secret").write_bytes(b"secret")
        for path in ("/../secret", "/%2e%2e/secret", "/sub/../../secret"):
            connection = http.client.HTTPConnection("127.0.0.2", foreign_server.port, timeout=10)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                assert (response.status, response.read()) == (404, b"404 no such file\n"), path
            finally:
                connection.close()
        with pytest.raises(ValueError, match="leaves"):
            foreign_server.add_bytes("../escape", b"x")

    def test_pip_installs_from_find_links_page(
        self, foreign_server: FileServer, wheel_factory: WheelFactory, tmp_path: Path
    ) -> None:
        foreign_server.add(wheel_factory("infra-links", "4.0"))
        target = tmp_path / "target"
        run_pip(
            "--no-index", "--find-links", foreign_server.url, "--target", str(target), "infra-links"
        )
        assert import_versions(target, "infra_links") == ["4.0"]
        assert "/" in foreign_server.paths_requested("GET")
        assert "/infra_links-4.0-py3-none-any.whl" in foreign_server.paths_requested("GET")


class TestPypiserver:
    def test_pip_installs_from_pypiserver(
        self, pypiserver: PypiServer, wheel_factory: WheelFactory, tmp_path: Path
    ) -> None:
        pypiserver.add(wheel_factory("infra-pypiserver", "0.5", requires=["infra-pypiserver-dep"]))
        pypiserver.add(wheel_factory("infra-pypiserver-dep", "1.5"))
        target = tmp_path / "target"
        run_pip("--index-url", pypiserver.url, "--target", str(target), "infra-pypiserver")
        assert import_versions(target, "infra_pypiserver", "infra_pypiserver_dep") == [
            "0.5",
            "1.5",
        ]

    def test_each_test_starts_with_an_empty_server(
        self, pypiserver: PypiServer, pypiserver_url: str
    ) -> None:
        assert pypiserver_url == pypiserver.url
        assert list(pypiserver.packages_dir.iterdir()) == []
        # Unknown projects stay 404: the fallback redirect to pypi.org is disabled.
        assert fetch(pypiserver_url + "infra-pypiserver/")[0] == 404


class TestVenvAndSnapshot:
    def test_venv_factory_gives_fresh_pipless_envs(self, venv_factory: Callable[..., Path]) -> None:
        first = venv_factory()
        second = venv_factory()
        assert first != second
        probe = (
            "import sys, importlib.util; print(sys.prefix); print(importlib.util.find_spec('pip'))"
        )
        result = subprocess.run(
            [str(first / "bin" / "python"), "-c", probe],
            capture_output=True,
            text=True,
            check=True,
        )
        prefix, pip_spec = result.stdout.splitlines()
        assert prefix == str(first)
        assert pip_spec == "None"
        (first / "marker").write_text("only here")
        assert not (second / "marker").exists()

    def test_copies_of_the_template_are_identical(
        self,
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], TreeSnapshot],
    ) -> None:
        assert tree_snapshot(venv_factory()) == tree_snapshot(venv_factory())

    def test_snapshot_detects_every_kind_of_change(
        self, tmp_path: Path, tree_snapshot: Callable[[Path], TreeSnapshot]
    ) -> None:
        root = tmp_path / "tree"
        (root / "pkg").mkdir(parents=True)
        (root / "pkg" / "mod.py").write_bytes(b"x = 1\n")
        (root / "link").symlink_to("pkg/mod.py")
        before = tree_snapshot(root)
        assert set(before) == {"pkg", "pkg/mod.py", "link"}
        assert before["link"][1] == "-> pkg/mod.py"
        assert tree_snapshot(root) == before

        (root / "pkg" / "mod.py").write_bytes(b"x = 2\n")  # one byte, same size
        assert tree_snapshot(root) != before
        (root / "pkg" / "mod.py").write_bytes(b"x = 1\n")
        assert tree_snapshot(root) == before

        (root / "pkg" / "mod.py").chmod(0o755)
        assert tree_snapshot(root) != before
        (root / "pkg" / "mod.py").chmod(before["pkg/mod.py"][0] & 0o7777)
        assert tree_snapshot(root) == before

        (root / "link").unlink()
        (root / "link").symlink_to("pkg")
        assert tree_snapshot(root) != before
        (root / "link").unlink()
        (root / "link").symlink_to("pkg/mod.py")

        (root / "pkg" / "empty").mkdir()
        assert tree_snapshot(root) != before
