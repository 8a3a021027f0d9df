"""Tests for the index client's on-disk cache: HTTP validators, content-addressed metadata."""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safepip.credentials import CredentialStore
from safepip.index import ACCEPT, IndexClient, IndexFile, MetadataHashError, project_url
from safepip.net import NetConfig, Session
from safepip.policy import HostPolicy
from servers import LoopbackServer, _Handler, _Reply

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

WHEEL = "demo-1.0-py3-none-any.whl"
WHEEL_2 = "demo-2.0-py3-none-any.whl"
METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: dep>=1\n"
PASSWORD = "s3cr3t-pw"
TOKEN = "tok3n-abcdef"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def page(*filenames: str) -> bytes:
    anchors = "".join(f'<a href="/files/{f}">{f}</a>' for f in filenames)
    return f"<!DOCTYPE html><html><body>{anchors}</body></html>".encode()


class ValidatingServer(LoopbackServer):
    """Serves fixed bodies with an `ETag` and/or `Last-Modified`, answering 304 when they match.

    `replies` records the status of every answer, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, tuple[str, bytes, str | None, str | None]] = {}
        self.replies: list[int] = []

    def put(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "text/html; charset=utf-8",
        etag: str | None = "auto",
        last_modified: str | None = None,
    ) -> None:
        if etag == "auto":
            etag = f'"{sha256(body)[:16]}"'
        self.routes[path] = (content_type, body, etag, last_modified)

    def headers_sent(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.request_headers)

    def _route(self, handler: _Handler, method: str, path: str) -> _Reply:
        reply = self._answer(handler, path)
        with self._lock:
            self.replies.append(reply.status)
        return reply

    def _answer(self, handler: _Handler, path: str) -> _Reply:
        if path not in self.routes:
            return _Reply(404, b"404 not here\n")
        content_type, body, etag, modified = self.routes[path]
        validators = tuple(
            (name, value)
            for name, value in (("ETag", etag), ("Last-Modified", modified))
            if value is not None
        )
        if etag is not None and handler.headers.get("If-None-Match") == etag:
            return _Reply(304, b"", validators)
        if (
            modified is not None
            and handler.headers.get("If-None-Match") is None
            and handler.headers.get("If-Modified-Since") == modified
        ):
            return _Reply(304, b"", validators)
        return _Reply(200, body, (("Content-Type", content_type), *validators))


@pytest.fixture
def server() -> Iterator[ValidatingServer]:
    with ValidatingServer() as srv:
        yield srv


@pytest.fixture
def session(server: ValidatingServer) -> Iterator[Session]:
    host = server.base_url.removeprefix("http://")
    policy = HostPolicy(allowed_hosts=frozenset({host}))
    with Session(NetConfig(policy=policy, retries=0)) as sess:
        yield sess


def client(session: Session, index: str, cache: Path) -> IndexClient:
    return IndexClient(session, index_urls=[index], cache_dir=cache)


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


def page_entries(cache: Path) -> list[Path]:
    return sorted((cache / "index-pages").glob("*"))


def metadata_file(server: ValidatingServer, core_metadata: dict[str, str] | bool) -> IndexFile:
    return IndexFile(
        filename=WHEEL,
        url=f"{server.base_url}/files/{WHEEL}",
        hashes={},
        core_metadata=core_metadata,
        origin=f"{server.base_url}/simple/",
    )


class TestProjectPages:
    def test_revalidates_and_uses_the_cached_body_on_304(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        first = client(session, index, tmp_path).project_page(index, "demo")
        # A fresh client (a later run) only has the disk to go on.
        second = client(session, index, tmp_path).project_page(index, "Demo")
        assert first is not None
        assert second is not None
        assert [f.filename for f in second.files] == [WHEEL]
        assert second.files == first.files
        assert second.url == f"{index}demo/"
        assert server.replies == [200, 304]
        sent = server.headers_sent()
        assert "if-none-match" not in sent[0]
        assert sent[1]["if-none-match"] == server.routes["/simple/demo/"][2]
        assert sent[1]["accept"] == ACCEPT
        assert len(page_entries(tmp_path)) == 1

    def test_last_modified_alone_is_a_validator(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        stamp = "Wed, 21 Oct 2015 07:28:00 GMT"
        server.put("/simple/demo/", page(WHEEL), etag=None, last_modified=stamp)
        index = f"{server.base_url}/simple/"
        for _ in range(2):
            result = client(session, index, tmp_path).project_page(index, "demo")
            assert result is not None
            assert [f.filename for f in result.files] == [WHEEL]
        assert server.replies == [200, 304]
        assert server.headers_sent()[1]["if-modified-since"] == stamp
        assert "if-none-match" not in server.headers_sent()[1]

    def test_changed_page_replaces_the_entry(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        client(session, index, tmp_path).project_page(index, "demo")
        old_etag = server.routes["/simple/demo/"][2]
        # The index yanks 1.0 and publishes 2.0: the stored page must not be served again.
        server.put("/simple/demo/", page(WHEEL_2))
        new_etag = server.routes["/simple/demo/"][2]
        changed = client(session, index, tmp_path).project_page(index, "demo")
        again = client(session, index, tmp_path).project_page(index, "demo")
        assert changed is not None
        assert [f.filename for f in changed.files] == [WHEEL_2]
        assert again is not None
        assert [f.filename for f in again.files] == [WHEEL_2]
        assert server.replies == [200, 200, 304]
        sent = [h.get("if-none-match") for h in server.headers_sent()]
        assert sent == [None, old_etag, new_etag]
        (entry,) = page_entries(tmp_path)
        assert page(WHEEL_2) in entry.read_bytes()

    def test_a_page_that_disappears_is_forgotten(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        client(session, index, tmp_path).project_page(index, "demo")
        del server.routes["/simple/demo/"]
        assert client(session, index, tmp_path).project_page(index, "demo") is None
        assert page_entries(tmp_path) == []

    def test_a_page_without_validators_is_not_stored(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/simple/demo/", page(WHEEL), etag=None)
        index = f"{server.base_url}/simple/"
        for _ in range(2):
            client(session, index, tmp_path).project_page(index, "demo")
        assert server.replies == [200, 200]
        assert cache_files(tmp_path) == []

    def test_without_cache_dir_nothing_is_conditional(
        self, server: ValidatingServer, session: Session
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        plain = IndexClient(session, index_urls=[index])
        for _ in range(2):
            plain.project_page(index, "demo")
        assert server.replies == [200, 200]

    @pytest.mark.parametrize(
        "damage",
        [
            lambda data: b"",
            lambda data: b"{not json\n" + data.partition(b"\n")[2],
            lambda data: data.partition(b"\n")[0],
            lambda data: data[:-5],
            lambda data: data[:-1] + b"X",
            lambda data: b"[1, 2]\n" + data.partition(b"\n")[2],
            lambda data: data.replace(b'"format":1', b'"format":99'),
            lambda data: data.replace(b'"etag":', b'"etag":1,"was":'),
            lambda data: b"\xff\xfe\x00" + data,
        ],
        ids=[
            "empty",
            "bad-json",
            "no-body",
            "truncated",
            "altered-body",
            "not-an-object",
            "unknown-format",
            "wrong-type",
            "garbage-prefix",
        ],
    )
    def test_a_corrupt_entry_is_ignored_and_rewritten(
        self,
        server: ValidatingServer,
        session: Session,
        tmp_path: Path,
        damage: Callable[[bytes], bytes],
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        client(session, index, tmp_path).project_page(index, "demo")
        (entry,) = page_entries(tmp_path)
        good = entry.read_bytes()
        entry.write_bytes(damage(good))
        result = client(session, index, tmp_path).project_page(index, "demo")
        assert result is not None
        assert [f.filename for f in result.files] == [WHEEL]
        # The damaged entry was not trusted: no validator was sent, the full page came back.
        assert server.replies == [200, 200]
        assert "if-none-match" not in server.headers_sent()[1]
        assert entry.read_bytes() == good

    def test_a_missing_entry_file_is_fetched_again(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        client(session, index, tmp_path).project_page(index, "demo")
        for entry in page_entries(tmp_path):
            entry.unlink()
        assert client(session, index, tmp_path).project_page(index, "demo") is not None
        assert server.replies == [200, 200]

    def test_json_and_html_answers_are_kept_apart(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        server.put("/links/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        client(session, index, tmp_path).project_page(index, "demo")
        # The same URL asked with another `Accept` (a find-links page) is another entry.
        server.put("/simple/demo/", page(WHEEL_2))
        links = IndexClient(
            session, index_urls=[], find_links=[f"{index}demo/"], cache_dir=tmp_path
        )
        assert [f.filename for f in links.find_links_files()] == [WHEEL_2]
        assert len(page_entries(tmp_path)) == 2

    def test_find_links_pages_are_revalidated(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/links/", page(WHEEL, WHEEL_2))
        for _ in range(2):
            links = IndexClient(
                session, index_urls=[], find_links=[f"{server.base_url}/links/"], cache_dir=tmp_path
            )
            assert [f.filename for f in links.find_links_files()] == [WHEEL, WHEEL_2]
        assert server.replies == [200, 304]

    def test_concurrent_clients_share_one_entry(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/simple/demo/", page(WHEEL))
        index = f"{server.base_url}/simple/"
        start = threading.Barrier(8)

        def lookup(_: int) -> list[str]:
            start.wait()
            names: list[str] = []
            for _ in range(5):
                result = client(session, index, tmp_path).project_page(index, "demo")
                assert result is not None
                names.extend(f.filename for f in result.files)
            return names

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lookup, range(8)))
        assert results == [[WHEEL] * 5] * 8
        # Whole files renamed into place: no temporary file is left, the one entry is valid.
        (entry,) = cache_files(tmp_path)
        assert entry.parent.name == "index-pages"
        again = client(session, index, tmp_path).project_page(index, "demo")
        assert again is not None
        assert server.replies[-1] == 304


class TestMetadata:
    def test_hashed_metadata_is_served_from_disk_without_a_request(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put(f"/files/{WHEEL}.metadata", METADATA, content_type="binary/octet-stream")
        file = metadata_file(server, {"sha256": sha256(METADATA)})
        index = f"{server.base_url}/simple/"
        assert client(session, index, tmp_path).fetch_metadata(file) == METADATA
        server.clear_requests()
        assert client(session, index, tmp_path).fetch_metadata(file) == METADATA
        assert server.requests == []
        assert (tmp_path / "metadata" / sha256(METADATA)).read_bytes() == METADATA

    def test_a_damaged_hashed_copy_is_fetched_again(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put(f"/files/{WHEEL}.metadata", METADATA)
        file = metadata_file(server, {"sha256": sha256(METADATA)})
        index = f"{server.base_url}/simple/"
        stored = tmp_path / "metadata" / sha256(METADATA)
        stored.parent.mkdir(parents=True)
        stored.write_bytes(b"Name: evil\n")
        assert client(session, index, tmp_path).fetch_metadata(file) == METADATA
        assert server.replies == [200]
        assert stored.read_bytes() == METADATA

    def test_a_wrong_body_is_refused_and_not_stored(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put(f"/files/{WHEEL}.metadata", b"Name: evil\n")
        file = metadata_file(server, {"sha256": sha256(METADATA)})
        index = f"{server.base_url}/simple/"
        with pytest.raises(MetadataHashError):
            client(session, index, tmp_path).fetch_metadata(file)
        assert cache_files(tmp_path) == []

    def test_other_published_hashes_still_apply_to_a_cached_copy(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put(f"/files/{WHEEL}.metadata", METADATA)
        index = f"{server.base_url}/simple/"
        client(session, index, tmp_path).fetch_metadata(
            metadata_file(server, {"sha256": sha256(METADATA)})
        )
        inconsistent = metadata_file(server, {"sha256": sha256(METADATA), "md5": "0" * 32})
        with pytest.raises(MetadataHashError) as info:
            client(session, index, tmp_path).fetch_metadata(inconsistent)
        assert info.value.algorithm == "md5"

    @pytest.mark.parametrize(
        "published",
        [True, False, {"blake2b": hashlib.blake2b(METADATA).hexdigest()}],
        ids=["advertised", "not-advertised", "no-sha256"],
    )
    def test_metadata_without_a_sha256_is_revalidated(
        self,
        server: ValidatingServer,
        session: Session,
        tmp_path: Path,
        published: dict[str, str] | bool,
    ) -> None:
        server.put(f"/files/{WHEEL}.metadata", METADATA)
        file = metadata_file(server, published)
        index = f"{server.base_url}/simple/"
        for _ in range(2):
            assert client(session, index, tmp_path).fetch_metadata(file) == METADATA
        assert server.replies == [200, 304]
        assert "if-none-match" in server.headers_sent()[1]
        assert not (tmp_path / "metadata").exists()

    def test_unhashed_metadata_that_changed_is_served_fresh(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put(f"/files/{WHEEL}.metadata", METADATA)
        file = metadata_file(server, True)
        index = f"{server.base_url}/simple/"
        client(session, index, tmp_path).fetch_metadata(file)
        server.put(f"/files/{WHEEL}.metadata", METADATA + b"Summary: new\n")
        assert client(session, index, tmp_path).fetch_metadata(file) == (
            METADATA + b"Summary: new\n"
        )
        assert server.replies == [200, 200]


class TestCredentials:
    @pytest.mark.parametrize(
        ("userinfo", "auth", "shown"),
        [
            (f"alice:{PASSWORD}", ("alice", PASSWORD), "***:***@"),
            (TOKEN, (TOKEN, ""), "***@"),
        ],
        ids=["user-password", "token"],
    )
    def test_credentials_never_reach_the_disk(
        self,
        server: ValidatingServer,
        session: Session,
        tmp_path: Path,
        userinfo: str,
        auth: tuple[str, str],
        shown: str,
    ) -> None:
        server.basic_auth = auth
        server.put("/simple/demo/", page(WHEEL))
        server.put(f"/files/{WHEEL}.metadata", METADATA)
        server.put(f"/files/{WHEEL_2}.metadata", METADATA + b"\n")
        index = f"http://{userinfo}@{server.base_url.removeprefix('http://')}/simple/"
        first = client(session, index, tmp_path)
        result = first.project_page(index, "demo")
        assert result is not None
        (file,) = result.files
        hashed = IndexFile(
            filename=WHEEL,
            url=file.url,
            hashes={},
            core_metadata={"sha256": sha256(METADATA)},
            origin=index,
        )
        unhashed = IndexFile(
            filename=WHEEL_2, url=file.url.replace(WHEEL, WHEEL_2), hashes={}, origin=index
        )
        assert first.fetch_metadata(hashed) == METADATA
        assert first.fetch_metadata(unhashed) == METADATA + b"\n"
        again = client(session, index, tmp_path).project_page(index, "demo")
        assert again is not None
        assert again.files == result.files
        assert server.replies.count(304) == 1
        written = cache_files(tmp_path)
        assert len(written) == 3
        for path in written:
            for secret in filter(None, auth):
                assert secret not in str(path.relative_to(tmp_path))
                assert secret.encode() not in path.read_bytes()
        (entry,) = page_entries(tmp_path)
        header = json.loads(entry.read_bytes().partition(b"\n")[0])
        assert (
            header["url"] == f"http://{shown}{server.base_url.removeprefix('http://')}/simple/demo/"
        )

    def test_a_page_that_echoes_the_password_is_not_stored(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.basic_auth = ("alice", PASSWORD)
        host = server.base_url.removeprefix("http://")
        link = f"http://alice:{PASSWORD}@{host}/files/{WHEEL}"
        server.put("/simple/demo/", f'<a href="{link}">{WHEEL}</a>'.encode())
        index = f"http://alice:{PASSWORD}@{host}/simple/"
        for _ in range(2):
            result = client(session, index, tmp_path).project_page(index, "demo")
            assert result is not None
            assert [f.filename for f in result.files] == [WHEEL]
        assert server.replies == [200, 200]
        assert cache_files(tmp_path) == []

    def test_a_page_that_echoes_a_netrc_password_is_not_stored(
        self, server: ValidatingServer, tmp_path: Path
    ) -> None:
        """The password never appears in a URL: the session's credential store names it."""
        server.basic_auth = ("alice", PASSWORD)
        (tmp_path / "netrc").write_text(f"machine 127.0.0.1 login alice password {PASSWORD}\n")
        host = server.base_url.removeprefix("http://")
        server.put("/simple/demo/", page(WHEEL) + f"<!-- {PASSWORD} -->".encode())
        server.put("/simple/other/", page(WHEEL))
        creds = CredentialStore(environ={"NETRC": str(tmp_path / "netrc")})
        policy = HostPolicy(allowed_hosts=frozenset({host}))
        cache = tmp_path / "cache"
        with Session(NetConfig(policy=policy, retries=0, credentials=creds)) as session:
            for name in ("demo", "other"):
                found = client(session, f"{server.base_url}/simple/", cache).project_page(
                    f"{server.base_url}/simple/", name
                )
                assert found is not None
        (entry,) = page_entries(cache)  # only the page that does not echo it
        assert PASSWORD.encode() not in entry.read_bytes()

    def test_secret_query_values_count_as_credentials(
        self, server: ValidatingServer, session: Session, tmp_path: Path
    ) -> None:
        server.put("/links/", page(WHEEL) + b"<!-- hunter2-token -->")
        links = IndexClient(
            session,
            index_urls=[],
            find_links=[f"{server.base_url}/links/?api_token=hunter2-token"],
            cache_dir=tmp_path,
        )
        assert [f.filename for f in links.find_links_files()] == [WHEEL]
        assert cache_files(tmp_path) == []


# -- damaged entries never break a lookup (fast, through an in-memory transport)

INDEX = "https://idx.example/simple"
PAGE_BODY = page(WHEEL)


def _serve(request: httpx.Request) -> httpx.Response:
    headers = {"content-type": "text/html", "etag": '"v1"'}
    status = 304 if request.headers.get("if-none-match") == '"v1"' else 200
    body = b"" if status == 304 else PAGE_BODY
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def _mock_session() -> Session:
    session = Session(
        NetConfig(policy=HostPolicy(allowed_hosts=frozenset({"idx.example"})), retries=0)
    )
    # The private client is the agreed seam for tests: no test hooks in net.py.
    session._client = httpx.Client(transport=httpx.MockTransport(_serve), follow_redirects=False)
    return session


_HEADER_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.just('"v1"')
)
_HEADERS = st.dictionaries(
    st.sampled_from(
        ["format", "url", "content_type", "etag", "last_modified", "size", "sha256", "x"]
    ),
    _HEADER_VALUES,
).map(lambda d: json.dumps(d).encode())


@settings(max_examples=75, deadline=None)
@given(
    head=st.one_of(_HEADERS, st.binary(max_size=60)),
    sep=st.sampled_from([b"\n", b"", b"\r\n"]),
    body=st.one_of(st.just(PAGE_BODY), st.binary(max_size=60)),
)
def test_any_damaged_entry_falls_back_to_a_fresh_fetch(
    head: bytes, sep: bytes, body: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp, _mock_session() as session:
        cache = Path(tmp)
        indexes = IndexClient(session, index_urls=[INDEX], cache_dir=cache)
        indexes.project_page(INDEX, "demo")
        (entry,) = page_entries(cache)
        entry.write_bytes(head + sep + body)
        again = IndexClient(session, index_urls=[INDEX], cache_dir=cache)
        result = again.project_page(INDEX, "demo")
        assert result is not None
        assert [f.filename for f in result.files] == [WHEEL]
        assert project_url(INDEX, "demo") == result.url
