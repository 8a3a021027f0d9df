"""Tests for the HTTP session: policy on each hop, redirects, retries, TLS, file URLs."""

from __future__ import annotations

import gzip
import hashlib
import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from safepip import net
from safepip.errors import ExitCode
from safepip.net import MAX_REDIRECTS, USER_AGENT, NetConfig, NetworkError, Response, Session
from safepip.policy import HostPolicy, PolicyViolation

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from conftest import Environment
    from servers import FileServer, StaticIndex
    from wheelbuild import WheelFactory

BODY = b"wheel bytes " * 100


@pytest.fixture
def sessions() -> Iterator[Callable[..., Session]]:
    """Factory `sessions(*allowed_urls, **netconfig) -> Session`, closed at teardown."""
    made: list[Session] = []

    def make(*urls: str, **config: Any) -> Session:
        policy = HostPolicy().with_hosts(*urls)
        session = Session(NetConfig(policy=policy, **config))
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


@pytest.fixture
def index(static_index: Callable[..., StaticIndex], tmp_path: Path) -> StaticIndex:
    """A plain HTTP index on 127.0.0.1 serving `/files/demo.bin` (BODY)."""
    idx = static_index()
    (idx.files_dir / "demo.bin").write_bytes(BODY)
    return idx


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays, recorded instead of slept (real backoff computation enabled)."""
    recorded: list[float] = []
    monkeypatch.delenv("SAFEPIP_NO_BACKOFF", raising=False)
    monkeypatch.setattr("safepip.net.time.sleep", recorded.append)
    return recorded


def mock_session(handler: Callable[[httpx.Request], httpx.Response], **config: Any) -> Session:
    session = Session(NetConfig(policy=HostPolicy().with_hosts("https://h.example"), **config))
    session._client = httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False)
    return session


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestHelpers:
    def test_response_content_type(self) -> None:
        resp = Response(
            url="u", status=200, headers={"content-type": "Text/HTML; charset=utf-8"}, content=b""
        )
        assert resp.content_type == "text/html"
        assert Response(url="u", status=200, headers={}, content=b"").content_type == ""


# -- real loopback servers -----------------------------------------------------------------------


class TestGet:
    def test_get_sends_user_agent(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        resp = sessions(index.url).get(index.files_url + "demo.bin")
        assert (resp.status, resp.content) == (200, BODY)
        assert resp.url == index.files_url + "demo.bin"
        assert resp.headers["content-type"] == "application/octet-stream"
        assert index.request_headers[-1]["user-agent"] == USER_AGENT

    def test_stream_yields_the_body(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        with sessions(index.url).stream(index.files_url + "demo.bin") as resp:
            assert resp.status == 200
            assert resp.headers["content-length"] == str(len(BODY))
            assert b"".join(resp.iter_bytes(7)) == BODY
            resp.raise_for_status()

    def test_policy_refusal_sends_nothing(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        session = sessions("https://pypi.org/simple/")
        with pytest.raises(PolicyViolation, match="is not a trusted host"):
            session.get(index.files_url + "demo.bin")
        assert index.requests == []

    def test_ok_statuses(self, index: StaticIndex, sessions: Callable[..., Session]) -> None:
        resp = sessions(index.url).get(index.url + "nope/", ok_statuses=frozenset({200, 404}))
        assert resp.status == 404

    def test_error_http_status(self, index: StaticIndex, sessions: Callable[..., Session]) -> None:
        url = f"http://alice:hunter2@127.0.0.1:{index.port}/files/missing.whl"
        with pytest.raises(NetworkError) as info:
            sessions(index.url).get(url)
        err = info.value
        # The credentials go in a header, never in the URL the request (and the error) names.
        shown = f"http://127.0.0.1:{index.port}/files/missing.whl"
        assert str(err) == f"HTTP 404 from `{shown}`"
        assert err.hint == "check the URL and that the index serves this project"
        assert (err.status, err.url, err.exit_code) == (404, shown, ExitCode.FAILURE)

    def test_401_hint_names_credentials(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        index.basic_auth = ("alice", "pw")
        with pytest.raises(NetworkError) as info:
            sessions(index.url).get(index.url)
        assert info.value.status == 401
        assert info.value.hint is not None
        assert "credentials" in info.value.hint


class TestRedirects:
    def test_same_host_relative_redirect_is_followed(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        index.redirect["/old/demo.bin"] = "/files/demo.bin"
        resp = sessions(index.url).get(index.base_url + "/old/demo.bin")
        assert resp.content == BODY
        assert resp.url == index.files_url + "demo.bin"
        assert index.paths_requested() == ["/old/demo.bin", "/files/demo.bin"]

    def test_redirect_to_other_allowed_host_is_followed(
        self,
        index: StaticIndex,
        foreign_server: FileServer,
        sessions: Callable[..., Session],
    ) -> None:
        target = foreign_server.add_bytes("demo.bin", b"mirror")
        index.redirect["/old"] = target
        session = sessions(index.url, foreign_server.url)
        assert session.get(index.base_url + "/old").content == b"mirror"

    def test_error_redirect_to_untrusted_host(
        self,
        index: StaticIndex,
        foreign_server: FileServer,
        sessions: Callable[..., Session],
    ) -> None:
        target = foreign_server.add_bytes("demo.bin", b"evil")
        index.redirect["/files/demo.bin"] = target
        source = index.files_url + "demo.bin"
        with pytest.raises(PolicyViolation) as info:
            sessions(index.url).get(source, package="demo==1.0")
        host = f"127.0.0.2:{foreign_server.port}"
        assert str(info.value) == (
            f"Refusing redirect from `{source}` to `{target}`: host `{host}` is not a trusted host"
        )
        assert info.value.hint == (
            "if `127.0.0.2` is a host you trust, add `--allow-host 127.0.0.2` "
            "(or list it as an index or find-links location)"
        )
        assert info.value.exit_code is ExitCode.POLICY
        assert foreign_server.requests == []

    def test_error_https_downgrade(
        self,
        tls_index: StaticIndex,
        index: StaticIndex,
        sessions: Callable[..., Session],
    ) -> None:
        # The plain-HTTP target is loopback and allowed: only the downgrade is at fault.
        target = index.files_url + "demo.bin"
        tls_index.redirect["/files/demo.bin"] = target
        session = sessions(tls_index.url, index.url, cert=str(tls_index.ca_bundle))
        source = tls_index.files_url + "demo.bin"
        with pytest.raises(PolicyViolation) as info:
            session.get(source)
        assert str(info.value) == (f"Refusing redirect from `{source}` to plain HTTP `{target}`")
        assert info.value.hint == (
            "a downgrade from HTTPS to HTTP is never followed; fix the server or the URL"
        )
        assert index.requests == []

    def test_error_too_many_redirects(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        index.redirect["/loop"] = "/loop"
        url = index.base_url + "/loop"
        with pytest.raises(NetworkError) as info:
            sessions(index.url).get(url)
        assert str(info.value) == f"Too many redirects fetching `{url}`"
        assert len(index.requests) == MAX_REDIRECTS + 1

    def test_redirect_to_unsupported_scheme_names_the_scheme(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        index.redirect["/x"] = "ftp://127.0.0.1/demo.bin"
        with pytest.raises(PolicyViolation) as info:
            sessions(index.url).get(index.base_url + "/x")
        assert "unsupported URL scheme `ftp`" in str(info.value)
        assert "is not a trusted host" not in str(info.value)

    def test_redirect_to_file_url_is_a_policy_violation(
        self, index: StaticIndex, sessions: Callable[..., Session], tmp_path: Path
    ) -> None:
        secret = tmp_path / "secret.txt"
        secret.write_text("local secret")
        index.redirect["/x"] = secret.as_uri()
        with pytest.raises(PolicyViolation):
            sessions(index.url).get(index.base_url + "/x")


class TestRetries:
    @pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
    def test_transient_status_is_retried(
        self, index: StaticIndex, sessions: Callable[..., Session], code: int
    ) -> None:
        index.fail_times["/files/demo.bin"] = (code, 2)
        assert sessions(index.url).get(index.files_url + "demo.bin").content == BODY
        assert index.paths_requested() == ["/files/demo.bin"] * 3

    def test_retries_give_up_with_the_last_status(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        index.status["/files/demo.bin"] = 503
        with pytest.raises(NetworkError) as info:
            sessions(index.url, retries=2).get(index.files_url + "demo.bin")
        assert info.value.status == 503
        assert len(index.requests) == 3

    @pytest.mark.parametrize("code", [400, 403, 404, 410])
    def test_client_errors_are_not_retried(
        self, index: StaticIndex, sessions: Callable[..., Session], code: int
    ) -> None:
        index.status["/files/demo.bin"] = code
        with pytest.raises(NetworkError):
            sessions(index.url).get(index.files_url + "demo.bin")
        assert len(index.requests) == 1

    def test_zero_retries(self, index: StaticIndex, sessions: Callable[..., Session]) -> None:
        index.fail_times["/files/demo.bin"] = (503, 1)
        with pytest.raises(NetworkError):
            sessions(index.url, retries=0).get(index.files_url + "demo.bin")
        assert len(index.requests) == 1

    def test_backoff_grows_exponentially(
        self, index: StaticIndex, sessions: Callable[..., Session], sleeps: list[float]
    ) -> None:
        index.status["/files/demo.bin"] = 500
        with pytest.raises(NetworkError):
            sessions(index.url, retries=4).get(index.files_url + "demo.bin")
        assert len(sleeps) == 4
        for attempt, delay in enumerate(sleeps):
            full = 0.25 * 2**attempt
            assert full / 2 <= delay <= full

    def test_connection_refused_is_retried_then_reported(self, sleeps: list[float]) -> None:
        url = f"http://127.0.0.1:{closed_port()}/simple/"
        with Session(NetConfig(policy=HostPolicy().with_hosts(url), retries=2)) as session:
            with pytest.raises(NetworkError) as info:
                session.get(url)
        assert len(sleeps) == 2
        assert str(info.value).startswith(f"Could not fetch `{url}`: ")
        assert info.value.url == url

    def test_retry_after_is_honoured_and_capped(self, sleeps: list[float]) -> None:
        answers = iter(["3", "3600", None])

        def handler(request: httpx.Request) -> httpx.Response:
            retry_after = next(answers)
            if retry_after is None:
                return httpx.Response(200, stream=httpx.ByteStream(b"ok"))
            return httpx.Response(
                429, headers={"retry-after": retry_after}, stream=httpx.ByteStream(b"")
            )

        with mock_session(handler) as session:
            assert session.get("https://h.example/x").content == b"ok"
        assert sleeps == [3.0, 10.0]

    def test_error_timeout(self) -> None:
        calls: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(str(request.url))
            raise httpx.ReadTimeout("timed out", request=request)

        with mock_session(handler, retries=1) as session:
            with pytest.raises(NetworkError) as info:
                session.get("https://u:pw@h.example/simple/")
        assert str(info.value) == "Timed out fetching `https://***:***@h.example/simple/`"
        assert info.value.hint == "retry, or raise `--timeout`"
        assert len(calls) == 2

    def test_error_transport_failure(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadError("connection reset by http://u:pw@proxy.example/", request=request)

        with mock_session(handler, retries=0) as session:
            with pytest.raises(NetworkError) as info:
                session.get("https://h.example/x?token=abc")
        assert str(info.value) == (
            "Could not fetch `https://h.example/x?token=***`: "
            "connection reset by http://***:***@proxy.example/"
        )
        assert info.value.hint is None

    def test_non_transient_errors_are_not_retried(self) -> None:
        calls: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            raise httpx.ProxyError("proxy refused", request=request)

        with mock_session(handler) as session, pytest.raises(NetworkError):
            session.get("https://h.example/x")
        assert calls == [1]

    def test_body_failure_is_not_retried(self) -> None:
        calls: list[int] = []

        class Broken(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                yield b"first"
                raise httpx.ReadError("reset")

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            return httpx.Response(200, stream=Broken())

        with mock_session(handler) as session, pytest.raises(NetworkError, match="reset"):
            session.get("https://h.example/x")
        assert calls == [1]

    def test_encoded_body_is_decoded(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200,
                headers={"content-encoding": "gzip"},
                stream=httpx.ByteStream(gzip.compress(b"page")),
            )

        with mock_session(handler) as session:
            assert session.get("https://h.example/x").content == b"page"

    def test_identity_body_is_passed_raw(self) -> None:
        raw = gzip.compress(b"a .tar.gz is not decoded")

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, stream=httpx.ByteStream(raw))

        with mock_session(handler) as session:
            assert session.get("https://h.example/x.tar.gz").content == raw


class TestTLS:
    def test_cert_bundle_is_trusted(
        self, tls_index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        session = sessions(tls_index.url, cert=str(tls_index.ca_bundle))
        assert session.get(tls_index.url).status == 200

    @pytest.mark.skipif(
        sys.platform in ("darwin", "win32"), reason="the platform verifies there (truststore)"
    )
    def test_system_store_is_trusted(
        self,
        tls_index: StaticIndex,
        sessions: Callable[..., Session],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without `--cert`, OpenSSL's system store decides; `SSL_CERT_FILE` names it."""
        monkeypatch.setenv("SSL_CERT_FILE", str(tls_index.ca_bundle))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        session = sessions(tls_index.url, retries=0)
        assert [session.get(tls_index.url).status for _ in range(2)] == [200, 200]

    @pytest.mark.skipif(
        sys.platform in ("darwin", "win32"), reason="the platform verifies there (truststore)"
    )
    def test_system_store_is_read_once_and_only_for_tls(
        self,
        tls_index: StaticIndex,
        index: StaticIndex,
        sessions: Callable[..., Session],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A run that only speaks plain HTTP (a loopback index) never parses the CA bundle; a
        TLS run parses it once, however many connections it opens."""
        loads: list[object] = []
        real = net._load_system_trust

        def counted(ctx: ssl.SSLContext) -> None:
            loads.append(ctx)
            real(ctx)

        monkeypatch.setattr(net, "_load_system_trust", counted)
        monkeypatch.setenv("SSL_CERT_FILE", str(tls_index.ca_bundle))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        plain = sessions(index.url, retries=0)
        assert plain.get(index.files_url + "demo.bin").content == BODY
        assert loads == []
        session = sessions(tls_index.url, retries=0)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: session.get(tls_index.url).status, range(16)))
        assert statuses == [200] * 16
        assert len(loads) == 1

    def test_error_tls_unverified(
        self, tls_index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        with pytest.raises(NetworkError) as info:
            sessions(tls_index.url, retries=0).get(tls_index.url)
        assert str(info.value) == f"TLS certificate of `{tls_index.url}` could not be verified"
        assert info.value.hint == "pass the CA bundle that signs this server with `--cert PATH`"
        assert tls_index.requests == []


class TestFileUrls:
    def test_file(self, tmp_path: Path, sessions: Callable[..., Session]) -> None:
        path = tmp_path / "a b.whl"
        path.write_bytes(BODY)
        resp = sessions().get(path.as_uri())
        assert (resp.status, resp.content, resp.content_type) == (
            200,
            BODY,
            "application/octet-stream",
        )

    def test_folder_serves_index_html(
        self, tmp_path: Path, sessions: Callable[..., Session]
    ) -> None:
        (tmp_path / "index.html").write_text("<a href='x.whl'>x</a>")
        resp = sessions().get(tmp_path.as_uri() + "/")
        assert resp.content_type == "text/html"
        assert resp.content == b"<a href='x.whl'>x</a>"

    def test_missing_file_with_404_allowed(
        self, tmp_path: Path, sessions: Callable[..., Session]
    ) -> None:
        resp = sessions().get((tmp_path / "nope").as_uri(), ok_statuses=frozenset({200, 404}))
        assert resp.status == 404

    def test_missing_file_raises(self, tmp_path: Path, sessions: Callable[..., Session]) -> None:
        with pytest.raises(NetworkError):
            sessions().get((tmp_path / "requirements.txt").as_uri())

    def test_unreadable_file(self, tmp_path: Path, sessions: Callable[..., Session]) -> None:
        folder = tmp_path / "index.html"
        folder.mkdir()  # `index.html` that is a folder cannot be read
        with pytest.raises(NetworkError, match=r"^Could not read `.*index\.html`: "):
            sessions().get(tmp_path.as_uri())


class TestStalls:
    """A server that stops sending mid-body: the message says it timed out (issue 11)."""

    def test_error_stall_mid_body(
        self, index: StaticIndex, sessions: Callable[..., Session]
    ) -> None:
        index.stall["demo.bin"] = 100
        session = sessions(index.url, timeout=0.5)
        with (
            session.stream(index.files_url + "demo.bin") as resp,
            pytest.raises(NetworkError) as info,
        ):
            b"".join(resp.iter_bytes(10))
        assert str(info.value) == (
            f"Timed out reading `{index.files_url}demo.bin`: the server stopped sending after "
            "100 bytes"
        )
        assert info.value.hint == "retry, or raise `--timeout` for a slow server"
        assert (info.value.timed_out, info.value.retryable) == (True, True)
        with pytest.raises(NetworkError, match=r"^Timed out reading"):
            session.get(index.files_url + "demo.bin")

    def test_error_install_of_a_stalled_download(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        environment: Environment,
    ) -> None:
        index = static_index()
        wheel = wheel_factory("stally", "1.0", files={"stally/__init__.py": "x = 1\n" * 5000})
        index.add(wheel)
        index.stall[wheel.name] = 100
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        result = environment.install(
            f"stally==1.0 --hash=sha256:{digest}", "-i", index.url, "--timeout", "0.5"
        )
        assert result.code == 1
        assert re.fullmatch(
            rf"error: Download of `{re.escape(wheel.name)}` timed out: the server stopped "
            rf"sending after \d+ of {wheel.stat().st_size} bytes\n\n"
            r"hint: retry, or raise `--timeout` for a slow server\n",
            result.err,
        ), result.err
        environment.assert_unchanged()
