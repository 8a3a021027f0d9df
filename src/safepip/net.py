"""The one HTTP client: policy-checked requests, redirects, retries, TLS and credential redaction.

This is the only module that imports httpx at run time. It turns httpx errors into
`NetworkError` (with the URL redacted), so stages never see httpx exceptions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from safepip import __version__
from safepip.credentials import CredentialStore, KeyringProvider, Login
from safepip.errors import SafepipError
from safepip.policy import HostPolicy, PolicyViolation
from safepip.urls import file_url_to_path, redact_text, redact_url

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator, Mapping

    import httpx

USER_AGENT = f"safepip/{__version__}"
MAX_REDIRECTS = 10
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class NetworkError(SafepipError):
    """A request failed: connection, TLS, timeout or an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        hint: str | None = None,
        retryable: bool = False,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status
        self.retryable = retryable
        """A transfer cut short: starting the download again may succeed."""
        self.timed_out = timed_out
        """The server stopped answering for longer than the timeout (before or mid-body)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Response:
    """A whole response body, after redirects."""

    url: str
    """The final URL (after redirects); relative links resolve against it."""
    status: int
    headers: Mapping[str, str]
    """Header names in lower case."""
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True, kw_only=True, slots=True)
class NetConfig:
    """How to reach the network: TLS, timeouts, retries, the host policy."""

    policy: HostPolicy
    cert: str | None = None
    """A CA bundle (pip's `--cert`); added to the system trust store."""
    client_cert: str | None = None
    timeout: float = 15.0
    retries: int = 3
    proxy: str | None = None
    http2: bool = False
    """Off by default: httpx's synchronous HTTP/2 is not safe to share between the download
    threads (encode/httpx#3072: `KeyError` from httpcore's HTTP/2 stream table under load, seen
    in this project's test runs). HTTP/1.1 with a pool of keep-alive connections is used."""
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: CredentialStore | None = None
    """Where logins for index hosts come from (`credentials.py`); without one, only
    `user:password@` in a URL and netrc are used, never a keyring."""


# Where distributions keep the system's CA bundle, for an OpenSSL built with other defaults.
_CA_BUNDLES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)


def _system_trust() -> ssl.SSLContext:
    """A verifying context with the system's CA certificates.

    On macOS and Windows the platform verifies certificates (truststore). Elsewhere OpenSSL
    does, against the system bundle: truststore would do the same, but it loads the bundle
    again for every connection and holds one lock over every TLS handshake, so the downloads of
    a run queued behind each other (a lock on the real index opened 34 connections, each
    parsing the ~150 certificates again). Here the bundle is loaded once, at the first TLS
    connection (a run that only reads a plain-HTTP loopback index never parses it), from where
    truststore looks for it: OpenSSL's default locations (`SSL_CERT_FILE`, `SSL_CERT_DIR`) when
    they hold certificates, else the first bundle a distribution keeps.
    """
    import ssl
    import sys

    if sys.platform in ("darwin", "win32"):
        import truststore

        platform_ctx: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return platform_ctx
    # verify_mode CERT_REQUIRED and check_hostname, as for any PROTOCOL_TLS_CLIENT context
    ctx: ssl.SSLContext = _trust_on_first_use()(ssl.PROTOCOL_TLS_CLIENT)
    return ctx


def _load_system_trust(ctx: ssl.SSLContext) -> None:
    import ssl

    paths = ssl.get_default_verify_paths()
    if paths.cafile or (paths.capath and _has_hashed_certificates(paths.capath)):
        ctx.set_default_verify_paths()
    else:
        bundle = next((b for b in _CA_BUNDLES if os.path.isfile(b)), None)
        if bundle is not None:
            ctx.load_verify_locations(cafile=bundle)


@functools.cache
def _trust_on_first_use() -> type[ssl.SSLContext]:
    """`ssl.SSLContext` that loads the system trust store before its first TLS session (every
    TLS connection, direct or through a proxy, starts in `wrap_socket` or `wrap_bio`; one
    that did not would find no CA and fail verification, never skip it)."""
    import ssl

    class TrustOnFirstUse(ssl.SSLContext):
        _trust_lock = threading.Lock()
        _trust_loaded = False

        def _trust(self) -> None:
            if self._trust_loaded:
                return
            with self._trust_lock:
                if not self._trust_loaded:
                    _load_system_trust(self)
                    self._trust_loaded = True

        def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
            self._trust()
            return super().wrap_socket(*args, **kwargs)

        def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
            self._trust()
            return super().wrap_bio(*args, **kwargs)

    return TrustOnFirstUse


def _has_hashed_certificates(folder: str) -> bool:
    """Whether `folder` holds certificates under OpenSSL's hashed names (`1a2b3c4d.0`)."""
    import re

    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(re.fullmatch(r"[0-9a-fA-F]{8}\.[0-9]", name) for name in names)


def _ssl_context(config: NetConfig) -> ssl.SSLContext:
    ctx = _system_trust()
    if config.cert:
        path = Path(config.cert)
        if path.is_dir():
            ctx.load_verify_locations(capath=str(path))
        else:
            ctx.load_verify_locations(cafile=str(path))
    if config.client_cert:
        ctx.load_cert_chain(config.client_cert)
    return ctx


class Session:
    """A policy-checked HTTP session shared by every stage (thread-safe).

    Every request, and every redirect hop, is checked against the `HostPolicy` before it is sent:
    a redirect to a host that is not allowed, or from HTTPS to plain HTTP, is refused with
    `PolicyViolation`. Transient failures (connection errors, timeouts, 429 and 5xx) are retried
    with exponential backoff. `file:` URLs are read from disk (a folder serves its `index.html`).
    """

    def __init__(self, config: NetConfig) -> None:
        self.config = config
        self.credentials = config.credentials or CredentialStore(
            keyring_provider=KeyringProvider.DISABLED
        )
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def policy(self) -> HostPolicy:
        return self.config.policy

    def _http(self) -> httpx.Client:
        with self._lock:
            return self._client or self._make_client()

    def _make_client(self) -> httpx.Client:
        import httpx

        http2 = self.config.http2
        if http2:
            try:
                import h2  # noqa: F401
            except ImportError:
                http2 = False
        self._client = httpx.Client(
            verify=_ssl_context(self.config),
            http2=http2,
            timeout=httpx.Timeout(self.config.timeout, connect=self.config.timeout),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, **self.config.headers},
            proxy=self.config.proxy,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            trust_env=self.config.proxy is None,
        )
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        purpose: str = "a download",
        package: str | None = None,
        ok_statuses: frozenset[int] = frozenset({200}),
    ) -> Response:
        """GET `url` into memory. A status outside `ok_statuses` raises `NetworkError`."""
        if urlsplit(url).scheme == "file":
            response = self._get_file(url)
            if response.status not in ok_statuses:
                raise status_error(url, response.status)
            return response
        with self.stream(url, headers=headers, purpose=purpose, package=package) as resp:
            if resp.status not in ok_statuses:
                raise resp.status_error()
            body = b"".join(resp.iter_bytes())
            return Response(url=resp.url, status=resp.status, headers=resp.headers, content=body)

    def post_json(
        self, url: str, payload: object, *, purpose: str = "a query", retries: bool = True
    ) -> Response:
        """POST a JSON body (the OSV API) with the same policy checks, retries and error mapping.

        Redirects are not followed: an API that redirects a POST is refused.
        """
        import json

        import httpx

        self.policy.check(url, purpose=purpose)
        client = self._http()
        body = json.dumps(payload).encode()
        send_url, login = self.credentials.login_for(url)
        headers = {"Content-Type": "application/json"}
        if login is not None:
            headers["Authorization"] = login.header()
        attempt = 0
        while True:
            try:
                response = client.post(send_url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                attempt += 1
                if not retries or attempt > self.config.retries or not _transient(exc):
                    raise _wrap(exc, url) from exc
                _backoff(attempt)
                continue
            if response.status_code in RETRY_STATUSES and retries and attempt < self.config.retries:
                attempt += 1
                _backoff(attempt, response.headers.get("retry-after"))
                continue
            if response.status_code != 200:
                raise status_error(
                    str(response.url), response.status_code, login=login, store=self.credentials
                )
            return Response(
                url=str(response.url),
                status=response.status_code,
                headers={k.lower(): v for k, v in response.headers.items()},
                content=response.content,
            )

    def _get_file(self, url: str) -> Response:
        path = file_url_to_path(url)
        if path.is_dir():
            path = path / "index.html"
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            return Response(url=url, status=404, headers={}, content=b"")
        except OSError as exc:
            raise NetworkError(f"Could not read `{path}`: {exc.strerror}", url=url) from exc
        ctype = "text/html" if path.suffix in (".html", ".htm") else "application/octet-stream"
        return Response(url=url, status=200, headers={"content-type": ctype}, content=content)

    @contextlib.contextmanager
    def stream(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        purpose: str = "a download",
        package: str | None = None,
    ) -> Iterator[StreamResponse]:
        """Open `url` for streaming, following allowed redirects, retrying transient errors.

        Retries happen only before the body is handed out; a failure while reading the body
        raises `NetworkError` and the caller decides whether to start over.
        """
        import httpx

        client = self._http()
        attempt = 0
        while True:
            current = url
            hops = 0
            try:
                while True:
                    self.policy.check(current, purpose=purpose, package=package)
                    response, login = self._send(client, current, headers)
                    if response.is_redirect and "location" in response.headers:
                        response.close()
                        hops += 1
                        if hops > MAX_REDIRECTS:
                            raise NetworkError(
                                f"Too many redirects fetching `{redact_url(url)}`",
                                url=redact_url(url),
                            )
                        target = urljoin(current, response.headers["location"])
                        self._check_redirect(current, target, purpose=purpose, package=package)
                        current = target
                        continue
                    break
            except httpx.HTTPError as exc:
                attempt += 1
                if attempt > self.config.retries or not _transient(exc):
                    raise _wrap(exc, current) from exc
                _backoff(attempt)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.config.retries:
                response.close()
                attempt += 1
                _backoff(attempt, response.headers.get("retry-after"))
                continue
            break
        try:
            yield StreamResponse(response, str(response.url), login=login, store=self.credentials)
        except httpx.HTTPError as exc:
            raise _wrap(exc, str(response.url)) from exc
        finally:
            response.close()

    def _send(
        self, client: httpx.Client, url: str, headers: Mapping[str, str] | None
    ) -> tuple[httpx.Response, Login | None]:
        """Send one GET with the login `credentials` finds for `url` (never in the URL itself);
        after a 401, once more with what the keyring has, if it has something new."""
        send_url, login = self.credentials.login_for(url)
        response = client.send(_request(client, send_url, headers, login), stream=True)
        if response.status_code == 401:
            fresh = self.credentials.login_after_401(url, login)
            if fresh is not None:
                response.close()
                login = fresh
                response = client.send(_request(client, send_url, headers, login), stream=True)
        return response, login

    def _check_redirect(
        self, source: str, target: str, *, purpose: str, package: str | None
    ) -> None:
        src, dst = urlsplit(source), urlsplit(target)
        if dst.scheme.lower() not in ("http", "https"):
            raise PolicyViolation(
                f"Refusing redirect from `{redact_url(source)}` to `{redact_url(target)}`: "
                f"unsupported URL scheme `{dst.scheme}`",
                url=redact_url(target),
                reason=f"unsupported URL scheme `{dst.scheme}`",
                hint="a server may only redirect to http(s) URLs on the allowed hosts",
            )
        if src.scheme == "https" and dst.scheme == "http":
            raise PolicyViolation(
                f"Refusing redirect from `{redact_url(source)}` to plain HTTP "
                f"`{redact_url(target)}`",
                url=redact_url(target),
                host=dst.hostname,
                hint="a downgrade from HTTPS to HTTP is never followed; fix the server or the URL",
            )
        try:
            self.policy.check(target, purpose=purpose, package=package)
        except PolicyViolation as exc:
            raise PolicyViolation(
                f"Refusing redirect from `{redact_url(source)}` to `{redact_url(target)}`: "
                f"{exc.reason}",
                reason=exc.reason,
                url=redact_url(target),
                host=exc.host,
                hint=exc.hint,
            ) from None


def _request(
    client: httpx.Client, url: str, headers: Mapping[str, str] | None, login: Login | None
) -> httpx.Request:
    sent = dict(headers or {})
    if login is not None:
        sent["Authorization"] = login.header()
    return client.build_request("GET", url, headers=sent)


class StreamResponse:
    """A response whose body is read in chunks."""

    def __init__(
        self,
        response: httpx.Response,
        url: str,
        *,
        login: Login | None = None,
        store: CredentialStore | None = None,
    ) -> None:
        self._response = response
        self.url = url
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}
        self.login = login
        """The login sent with the request that got this response (None: none was sent)."""
        self._store = store

    def iter_bytes(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The body in chunks; a transfer that breaks off raises a retryable `NetworkError`."""
        import httpx

        chunks = (
            self._response.iter_raw(chunk_size)
            if _identity(self.headers)
            else self._response.iter_bytes(chunk_size)
        )
        got = 0
        try:
            for chunk in chunks:
                got += len(chunk)
                yield chunk
        except httpx.TimeoutException as exc:
            shown = redact_url(self.url)
            raise NetworkError(
                f"Timed out reading `{shown}`: the server stopped sending after {got} bytes",
                url=shown,
                hint="retry, or raise `--timeout` for a slow server",
                retryable=True,
                timed_out=True,
            ) from exc
        except httpx.HTTPError as exc:
            error = _wrap(exc, self.url)
            error.retryable = True
            raise error from exc

    def raise_for_status(self) -> None:
        if self.status != 200:
            raise self.status_error()

    def status_error(self) -> NetworkError:
        """The error for this response's status, with a hint that says which login was sent."""
        return status_error(self.url, self.status, login=self.login, store=self._store)


def _identity(headers: Mapping[str, str]) -> bool:
    return headers.get("content-encoding", "identity").lower() in ("identity", "")


def _transient(exc: Exception) -> bool:
    import httpx

    return isinstance(
        exc,
        (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError),
    )


def _backoff(attempt: int, retry_after: str | None = None) -> None:
    delay = min(0.25 * (2 ** (attempt - 1)), 4.0) * (0.5 + random.random() / 2)
    if retry_after and retry_after.isdigit():
        delay = min(float(retry_after), 10.0)
    if os.environ.get("SAFEPIP_NO_BACKOFF"):
        delay = 0.0
    time.sleep(delay)


def status_error(
    url: str, status: int, *, login: Login | None = None, store: CredentialStore | None = None
) -> NetworkError:
    """`HTTP <status> from <url>` with a hint; for 401 and 403 the hint names where the login
    that was sent came from (never the login itself), or where one could come from."""
    shown = redact_url(url)
    hint = None
    if status in (401, 403) and login is not None:
        verb = "refused" if status == 401 else "not allowed to read this URL"
        hint = (
            f"the credentials from {login.source} (user `{login.username}`) were {verb}"
            if login.password
            else f"the token from {login.source} was {verb}"
        )
        hint = (store.redact(hint) if store is not None else hint) + "; check them"
    elif status == 401:
        hint = (
            store.explain_missing(url)
            if store is not None
            else "check the credentials for this index (pip.conf, `PIP_INDEX_URL`, or netrc)"
        )
    elif status == 403:
        hint = "check the credentials for this index (pip.conf, `PIP_INDEX_URL`, or netrc)"
    elif status == 404:
        hint = "check the URL and that the index serves this project"
    return NetworkError(f"HTTP {status} from `{shown}`", url=shown, status=status, hint=hint)


def _wrap(exc: Exception, url: str) -> NetworkError:
    import httpx

    shown = redact_url(url)
    if isinstance(exc, httpx.TimeoutException):
        return NetworkError(
            f"Timed out fetching `{shown}`",
            url=shown,
            hint="retry, or raise `--timeout`",
            timed_out=True,
        )
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return NetworkError(
            f"TLS certificate of `{shown}` could not be verified",
            url=shown,
            hint="pass the CA bundle that signs this server with `--cert PATH`",
        )
    return NetworkError(
        f"Could not fetch `{shown}`: {redact_text(str(exc)) or type(exc).__name__}", url=shown
    )
