"""Loopback HTTP(S) servers for end-to-end tests: a simple index, a file server and pypiserver."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar
from urllib.parse import quote, unquote, urlsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

if TYPE_CHECKING:
    import trustme
    from packaging.utils import NormalizedName

__all__ = [
    "JSON_CONTENT_TYPE",
    "FileServer",
    "IndexFile",
    "LoopbackServer",
    "PypiServer",
    "RecordedRequest",
    "StaticIndex",
    "free_port",
]

JSON_CONTENT_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_V1_CONTENT_TYPE = "application/vnd.pypi.simple.v1+html"
IndexMode = Literal["auto", "html-only", "json-only"]
_ServerT = TypeVar("_ServerT", bound="LoopbackServer")

# Idle keep-alive connections give up after this long, so no handler thread outlives a test
# by much even when a client forgets to close its connection.
_CONNECTION_TIMEOUT = 15.0


class RecordedRequest(NamedTuple):
    """One request as the server saw it; compares equal to a plain `(method, path, accept)`."""

    method: str
    path: str
    """The request target as sent, query string included."""
    accept: str | None
    """The `Accept` header, or None when the client sent none."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    filename: str | None = None
    """Set for file downloads: enables byte overrides, truncation and Range handling."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.owner._dispatch(self, "GET")

    def do_HEAD(self) -> None:
        self.server.owner._dispatch(self, "HEAD")

    def log_message(self, format: str, *args: object) -> None:
        # Tests read `requests`; a line per request on stderr would only add noise.
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # `LoopbackServer.close` joins them; daemon only as a safety net.

    def __init__(self, address: tuple[str, int], owner: LoopbackServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take
        # seconds for 127.0.0.2; the name is never needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # A TCP server: the request is always the connection's socket (a tuple only for UDP).
        assert isinstance(request, socket.socket)
        owner = self.owner
        request.settimeout(_CONNECTION_TIMEOUT)
        conn = request
        if owner._ssl_context is not None:
            try:
                # The TLS handshake runs here, in the connection's own thread, so a client
                # that never finishes it cannot stall the accept loop.
                conn = owner._ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ValueError):
                return
        owner._track(conn, add=True)
        try:
            if not owner._closed:
                _Handler(conn, client_address, self)
        finally:
            owner._track(conn, add=False)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
                conn.close()

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        exc = sys.exc_info()[1]
        # A client hanging up mid-response (truncation tests, refused downloads) is expected.
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        self.owner.errors.append(repr(exc))
        super().handle_error(request, client_address)


class LoopbackServer:
    """A threaded HTTP(S) server on a loopback address, port chosen by the OS.

    Every request is appended to `requests` (under a lock) before anything else happens. The
    misbehaviour switches apply to every server and are plain dicts the test mutates:

    - `redirect[path] = url`: answer `redirect_code` (302) with that `Location`.
    - `status[path] = code`: always answer `code`.
    - `fail_times[path] = (code, k)`: answer `code` to the first `k` requests, then normally.
    - `serve_bytes_override[filename] = data`: serve `data` for that file instead of its
      bytes (listings still describe the real file).
    - `truncate[filename] = n`: announce the full `Content-Length`, send `n` bytes, hang up.
    - `stall[filename] = n`: announce the full `Content-Length`, send `n` bytes, then send
      nothing more until the client gives up (or the server closes).
    - `basic_auth = (user, password)`: answer 401 unless the request carries them.

    Keys called `path` are URL paths without query string (`/files/a-1.0-py3-none-any.whl`);
    keys called `filename` are the last path segment of a file download. File downloads answer
    HEAD and single `Range` requests (`bytes=a-b`, `bytes=a-`, `bytes=-n`) with 206 or 416.

    `close()` (or leaving the `with` block) stops the server, drops open connections and
    joins every thread, so nothing outlives the test.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        root: Path | None = None,
        tls: trustme.CA | None = None,
    ) -> None:
        self.host = host
        self._private = tempfile.TemporaryDirectory(prefix="safepip-server-")
        if root is None:
            root = Path(self._private.name) / "root"
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        """Folder holding the files this server serves."""
        self.requests: list[RecordedRequest] = []
        self.request_headers: list[dict[str, str]] = []
        """All headers of each request, same order as `requests` (names lower-cased)."""
        self.errors: list[str] = []
        """Unexpected exceptions raised while handling requests (a bug in the test server)."""
        self.serve_bytes_override: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.stall: dict[str, int] = {}
        self.redirect: dict[str, str] = {}
        self.status: dict[str, int] = {}
        self.fail_times: dict[str, tuple[int, int]] = {}
        self.redirect_code = 302
        self.basic_auth: tuple[str, str] | None = None
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._closed = False

        self.ca_bundle: Path | None = None
        """PEM file of the CA that signed this server's certificate (HTTPS servers only)."""
        self._ssl_context: ssl.SSLContext | None = None
        if tls is not None:
            identities = dict.fromkeys([host, "127.0.0.1", "localhost"])
            leaf = tls.issue_cert(*identities)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            leaf.configure_cert(context)
            self._ssl_context = context
            self.ca_bundle = Path(self._private.name) / "ca-bundle.pem"
            tls.cert_pem.write_to_path(str(self.ca_bundle))

        self._httpd = _HTTPServer((host, 0), self)
        self.port: int = self._httpd.server_port
        self.scheme = "https" if tls is not None else "http"
        self.base_url = f"{self.scheme}://{host}:{self.port}"
        """`scheme://host:port` without trailing slash."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{host}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving, drop open connections, join all threads; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._thread.join()
        with self._lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(timeout=10)
        self._httpd.server_close()
        self._private.cleanup()

    def __enter__(self: _ServerT) -> _ServerT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections[conn] = threading.current_thread()
            else:
                self._connections.pop(conn, None)

    def clear_requests(self) -> None:
        """Forget the recorded requests (the `fail_times` counters are kept)."""
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()

    def paths_requested(self, method: str | None = None) -> list[str]:
        """The recorded request paths, optionally only those made with `method`."""
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    # -- request handling ------------------------------------------------------------------

    def _dispatch(self, handler: _Handler, method: str) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, handler.path, handler.headers["Accept"]))
            self.request_headers.append({k.lower(): v for k, v in handler.headers.items()})
        path = unquote(urlsplit(handler.path).path)
        reply = self._precheck(handler, path) or self._route(handler, method, path)
        self._send(handler, method, reply)

    def _precheck(self, handler: _Handler, path: str) -> _Reply | None:
        if self.basic_auth is not None:
            user, password = self.basic_auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            if handler.headers.get("Authorization") != f"Basic {token}":
                return _Reply(
                    401,
                    b"401 credentials required\n",
                    (("WWW-Authenticate", 'Basic realm="safepip-tests"'),),
                )
        if path in self.redirect:
            return _redirect(self.redirect_code, self.redirect[path])
        if path in self.status:
            code = self.status[path]
            return _Reply(code, f"{code} forced by the test\n".encode())
        if path in self.fail_times:
            code, times = self.fail_times[path]
            with self._lock:
                self._hits[path] += 1
                hit = self._hits[path]
            if hit <= times:
                return _Reply(code, f"{code} forced by the test ({hit}/{times})\n".encode())
        return None

    def _route(self, handler: _Handler, method: str, path: str) -> _Reply:
        raise NotImplementedError

    def _file_reply(self, filename: str, data: bytes, content_type: str) -> _Reply:
        return _Reply(200, data, (("Content-Type", content_type),), filename=filename)

    def _send(self, handler: _Handler, method: str, reply: _Reply) -> None:
        status, body, headers = reply.status, reply.body, list(reply.headers)
        truncate_at: int | None = None
        stall_at: int | None = None
        if reply.filename is not None:
            body = self.serve_bytes_override.get(reply.filename, body)
            truncate_at = self.truncate.get(reply.filename)
            stall_at = self.stall.get(reply.filename)
            headers.append(("Accept-Ranges", "bytes"))
            headers.append(("ETag", f'"{hashlib.sha256(body).hexdigest()}"'))
            status, body, range_headers = _apply_range(handler.headers.get("Range"), body)
            headers.extend(range_headers)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        if truncate_at is not None or stall_at is not None:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if method == "HEAD":
            return
        if stall_at is not None:
            handler.wfile.write(body[:stall_at])
            handler.wfile.flush()
            handler.close_connection = True
            # Blocks until the client hangs up, the connection timeout, or `close()`.
            with contextlib.suppress(OSError):
                handler.rfile.read(1)
            return
        if truncate_at is not None:
            handler.wfile.write(body[:truncate_at])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)


def _redirect(code: int, location: str) -> _Reply:
    return _Reply(code, f"{code} see {location}\n".encode(), (("Location", location),))


def _apply_range(header: str | None, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers answering a single-range `Range` header (RFC 9110 §14)."""
    size = len(body)
    if header is None or not header.startswith("bytes=") or "," in header:
        # No range, another unit or several ranges: a server may always send everything.
        return 200, body, []
    spec = header.removeprefix("bytes=").strip()
    first, dash, last = spec.partition("-")
    unsatisfiable = 416, b"", [("Content-Range", f"bytes */{size}")]
    try:
        if not dash:
            return 200, body, []
        if not first:
            suffix = int(last)
            if suffix <= 0:
                return unsatisfiable
            start, end = max(size - suffix, 0), size - 1
        else:
            start = int(first)
            if start >= size:
                return unsatisfiable
            end = int(last) if last else size - 1
            if end < start:
                return 200, body, []
            end = min(end, size - 1)
    except ValueError:
        return 200, body, []
    return 206, body[start : end + 1], [("Content-Range", f"bytes {start}-{end}/{size}")]


def _content_type(filename: str) -> str:
    if filename.endswith((".html", ".htm")):
        return "text/html; charset=utf-8"
    if filename.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


# -- the simple index ------------------------------------------------------------------------


@dataclass(slots=True)
class IndexFile:
    """One file listed by a `StaticIndex`; mutate it to change what the listing says."""

    project: NormalizedName
    filename: str
    sha256: str
    """Digest of the real file (what the listing announces when `hash_in_listing`)."""
    size: int
    yanked: str | bool = False
    requires_python: str | None = None
    metadata_sha256: str | None = None
    """Digest of the served `<file>.metadata`; None when no metadata is advertised."""
    hash_in_listing: bool = True
    url_host: str | None = None
    link: str | None = None
    """The exact URL the listing shows instead of the served file (a hostile index)."""


class StaticIndex(LoopbackServer):
    """A PEP 503 / PEP 691 simple index serving files added by the test.

    Layout: `/simple/` lists projects, `/simple/<normalized-name>/` lists files,
    `/files/<filename>` serves them and `/files/<filename>.metadata` their core metadata
    (PEP 658/714). A non-normalised project path is 301-redirected to the normalised one;
    `/`, unknown paths and unknown projects answer 404.

    Pages are JSON (`application/vnd.pypi.simple.v1+json`, API 1.1 with `versions` and
    `size`) or HTML, chosen by the `Accept` header's q-values as PEP 691 describes (406 when
    nothing acceptable is asked for; HTML when there is no `Accept`). `mode` forces one form
    regardless of `Accept`: `"html-only"` behaves like a PEP 503-only server, `"json-only"`
    always answers JSON.

    Links are relative to the page (`../../files/x.whl`) unless `absolute_links` is set.
    `metadata_keys` names the metadata keys/attributes written: PEP 714's `core-metadata`
    by default; set `("dist-info-metadata",)` to imitate an older server.
    """

    def __init__(
        self,
        *,
        mode: IndexMode = "auto",
        host: str = "127.0.0.1",
        root: Path | None = None,
        tls: trustme.CA | None = None,
    ) -> None:
        super().__init__(host=host, root=root, tls=tls)
        self.mode: IndexMode = mode
        self.absolute_links = False
        self.metadata_keys: tuple[str, ...] = ("core-metadata",)
        self.projects: dict[NormalizedName, list[IndexFile]] = {}
        """What the listings show, by project; `add` fills it."""
        self.files_dir = self.root / "files"
        self.files_dir.mkdir(exist_ok=True)
        self.url = f"{self.base_url}/simple/"
        """The index URL to give clients (`--index-url`)."""
        self.files_url = f"{self.base_url}/files/"

    def file_url(self, filename: str) -> str:
        """Where this server serves `filename`."""
        return self.files_url + quote(filename)

    def project_url(self, project: str) -> str:
        """The normalised project page URL."""
        return f"{self.url}{canonicalize_name(project)}/"

    def add_project(self, project: str) -> NormalizedName:
        """Make `project` known, possibly with no files (an empty but existing page)."""
        name = canonicalize_name(project)
        self.projects.setdefault(name, [])
        return name

    def add(
        self,
        path: Path,
        *,
        project: str | None = None,
        yanked: str | bool = False,
        requires_python: str | None = None,
        metadata: bool = True,
        hash_in_listing: bool = True,
        url_host: str | None = None,
    ) -> IndexFile:
        """Copy `path` into the index and list it under its project; return the listing entry.

        The project comes from the wheel or sdist filename unless `project` is given.
        `yanked` is True or a reason (PEP 592). `metadata` serves the wheel's METADATA as
        `<file>.metadata` and advertises its sha256 (ignored for non-wheels).
        `hash_in_listing=False` lists no hash at all. `url_host` is the base URL of another
        server (`foreign_server.url`) the listing should point at instead: the file must be
        served there too, and so must `<file>.metadata` if a client is to fetch it.
        Adding a filename again replaces the earlier entry.
        """
        filename = path.name
        name = canonicalize_name(project) if project is not None else _project_of(filename)
        target = self.files_dir / filename
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
        data = target.read_bytes()
        metadata_sha256 = None
        if metadata and filename.endswith(".whl"):
            core = _wheel_metadata(target)
            (self.files_dir / f"{filename}.metadata").write_bytes(core)
            metadata_sha256 = hashlib.sha256(core).hexdigest()
        entry = IndexFile(
            project=name,
            filename=filename,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            yanked=yanked,
            requires_python=requires_python,
            metadata_sha256=metadata_sha256,
            hash_in_listing=hash_in_listing,
            url_host=url_host,
        )
        with self._lock:
            entries = self.projects.setdefault(name, [])
            entries[:] = [e for e in entries if e.filename != filename]
            entries.append(entry)
        return entry

    # -- rendering -------------------------------------------------------------------------

    def _link(self, entry: IndexFile) -> str:
        if entry.link is not None:
            return entry.link
        if entry.url_host is not None:
            return f"{entry.url_host.rstrip('/')}/{quote(entry.filename)}"
        if self.absolute_links:
            return self.file_url(entry.filename)
        return f"../../files/{quote(entry.filename)}"

    def _project_json(self, name: NormalizedName, entries: list[IndexFile]) -> bytes:
        files = []
        for entry in entries:
            item: dict[str, object] = {
                "filename": entry.filename,
                "url": self._link(entry),
                "hashes": {"sha256": entry.sha256} if entry.hash_in_listing else {},
                "size": entry.size,
                "yanked": entry.yanked,
            }
            if entry.requires_python is not None:
                item["requires-python"] = entry.requires_python
            if entry.metadata_sha256 is not None:
                for key in self.metadata_keys:
                    item[key] = {"sha256": entry.metadata_sha256}
            files.append(item)
        document = {
            "meta": {"api-version": "1.1"},
            "name": name,
            "versions": sorted({v for e in entries if (v := _version_of(e.filename))}),
            "files": files,
        }
        return json.dumps(document, indent=1).encode("utf-8")

    def _project_html(self, name: NormalizedName, entries: list[IndexFile]) -> bytes:
        anchors = []
        for entry in entries:
            href = self._link(entry)
            if entry.hash_in_listing:
                href += f"#sha256={entry.sha256}"
            attrs = [f'href="{html.escape(href)}"']
            if entry.requires_python is not None:
                attrs.append(f'data-requires-python="{html.escape(entry.requires_python)}"')
            if entry.yanked is not False:
                reason = "" if entry.yanked is True else entry.yanked
                attrs.append(f'data-yanked="{html.escape(reason)}"')
            if entry.metadata_sha256 is not None:
                for key in self.metadata_keys:
                    attrs.append(f'data-{key}="sha256={entry.metadata_sha256}"')
            anchors.append(f"    <a {' '.join(attrs)}>{html.escape(entry.filename)}</a><br/>")
        return _html_page(f"Links for {name}", anchors)

    def _root_json(self) -> bytes:
        document = {
            "meta": {"api-version": "1.1"},
            "projects": [{"name": name} for name in sorted(self.projects)],
        }
        return json.dumps(document, indent=1).encode("utf-8")

    def _root_html(self) -> bytes:
        anchors = [f'    <a href="{name}/">{name}</a><br/>' for name in sorted(self.projects)]
        return _html_page("Simple index", anchors)

    def _negotiated(self, accept: str | None) -> str | None:
        """The content type to answer with, or None for 406."""
        match self.mode:
            case "json-only":
                return JSON_CONTENT_TYPE
            case "html-only":
                return "text/html; charset=utf-8"
        return _negotiate(accept)

    def _route(self, handler: _Handler, method: str, path: str) -> _Reply:
        if path.startswith("/files/"):
            filename = path.removeprefix("/files/")
            target = self.files_dir / filename
            if "/" in filename or not filename or not target.is_file():
                return _Reply(404, b"404 no such file\n")
            return self._file_reply(filename, target.read_bytes(), _content_type(filename))
        if not path.startswith("/simple/"):
            return _Reply(404, b"404 not an index path\n")
        rest = path.removeprefix("/simple/")
        if rest and not rest.endswith("/"):
            return _redirect(301, f"{path}/")
        project = rest.rstrip("/")
        if "/" in project:
            return _Reply(404, b"404 not an index path\n")
        if project and canonicalize_name(project) != project:
            if canonicalize_name(project) in self.projects:
                return _redirect(301, f"/simple/{canonicalize_name(project)}/")
            return _Reply(404, b"404 no such project\n")
        content_type = self._negotiated(handler.headers.get("Accept"))
        if content_type is None:
            return _Reply(406, b"406 ask for JSON or HTML\n")
        as_json = content_type == JSON_CONTENT_TYPE
        with self._lock:
            if not project:
                body = self._root_json() if as_json else self._root_html()
            else:
                name = canonicalize_name(project)
                if name not in self.projects:
                    return _Reply(404, b"404 no such project\n")
                entries = list(self.projects[name])
                body = (
                    self._project_json(name, entries)
                    if as_json
                    else self._project_html(name, entries)
                )
        return _Reply(200, body, (("Content-Type", content_type), ("Vary", "Accept")))


_JSON_TYPES = {JSON_CONTENT_TYPE, "application/vnd.pypi.simple.latest+json"}
_HTML_TYPES = {HTML_V1_CONTENT_TYPE, "application/vnd.pypi.simple.latest+html"}


def _negotiate(accept: str | None) -> str | None:
    """PEP 691 content negotiation: the best-rated type we serve, JSON winning ties."""
    if accept is None or not accept.strip():
        return "text/html; charset=utf-8"
    best: tuple[float, int, str] | None = None
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        media = media.lower()
        if media in _JSON_TYPES:
            offer = (quality, 2, JSON_CONTENT_TYPE)
        elif media in _HTML_TYPES:
            offer = (quality, 1, HTML_V1_CONTENT_TYPE)
        elif media in {"text/html", "text/*", "*/*"}:
            offer = (quality, 0, "text/html; charset=utf-8")
        else:
            continue
        if best is None or offer[:2] > best[:2]:
            best = offer
    return None if best is None else best[2]


def _html_page(title: str, lines: list[str]) -> bytes:
    text = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n" + "\n".join(lines) + "\n  </body>\n</html>\n"
    )
    return text.encode("utf-8")


def _project_of(filename: str) -> NormalizedName:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[0]
        return parse_sdist_filename(filename)[0]
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise ValueError(f"cannot tell the project of {filename!r}: pass project=") from exc


def _version_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _wheel_metadata(wheel: Path) -> bytes:
    """The `METADATA` of the wheel's top-level `.dist-info` folder."""
    with zipfile.ZipFile(wheel) as archive:
        candidates = [
            name
            for name in archive.namelist()
            if name.count("/") == 1
            and name.endswith("/METADATA")
            and name.split("/")[0].endswith(".dist-info")
        ]
        if len(candidates) != 1:
            raise ValueError(f"{wheel.name} has {len(candidates)} top-level METADATA files")
        return archive.read(candidates[0])


# -- a plain file server -------------------------------------------------------------------


class FileServer(LoopbackServer):
    """Serves the files under `root` as they are, by default on 127.0.0.2 (the foreign host).

    A folder answers its `index.html` if it has one, otherwise a generated listing with one
    anchor per entry (what pip's `--find-links` reads); set `listing_hashes` to add
    `#sha256=` fragments to file anchors. Paths leaving `root` answer 404.
    """

    def __init__(
        self,
        host: str = "127.0.0.2",
        *,
        root: Path | None = None,
        tls: trustme.CA | None = None,
    ) -> None:
        super().__init__(host=host, root=root, tls=tls)
        self.listing_hashes = False
        self.url = f"{self.base_url}/"
        """The root URL (ends with `/`); `url + filename` reaches files added with `add`."""
        self.files_url = self.url

    def add(self, path: Path, *, name: str | None = None) -> str:
        """Copy `path` to the root (as `name` if given) and return its URL."""
        return self.add_bytes(name or path.name, path.read_bytes())

    def add_bytes(self, relpath: str, data: bytes | str) -> str:
        """Write `data` at `relpath` under the root (folders created) and return its URL."""
        target = self._resolve(relpath)
        if target is None:
            raise ValueError(f"{relpath!r} leaves the served folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return self.url + quote(relpath)

    def file_url(self, relpath: str) -> str:
        """Where this server serves `relpath`."""
        return self.url + quote(relpath)

    def _resolve(self, relpath: str) -> Path | None:
        root = self.root.resolve()
        target = (root / relpath.lstrip("/")).resolve()
        return target if target == root or target.is_relative_to(root) else None

    def _route(self, handler: _Handler, method: str, path: str) -> _Reply:
        target = self._resolve(path)
        if target is None or not target.exists():
            return _Reply(404, b"404 no such file\n")
        if target.is_dir():
            if not path.endswith("/"):
                return _redirect(301, f"{path}/")
            index = target / "index.html"
            if index.is_file():
                return _Reply(
                    200, index.read_bytes(), (("Content-Type", "text/html; charset=utf-8"),)
                )
            return _Reply(
                200, self._listing(target, path), (("Content-Type", "text/html; charset=utf-8"),)
            )
        return self._file_reply(target.name, target.read_bytes(), _content_type(target.name))

    def _listing(self, folder: Path, path: str) -> bytes:
        anchors = []
        for child in sorted(folder.iterdir()):
            href = quote(child.name) + ("/" if child.is_dir() else "")
            if self.listing_hashes and child.is_file():
                href += f"#sha256={hashlib.sha256(child.read_bytes()).hexdigest()}"
            label = html.escape(child.name)
            anchors.append(f'    <a href="{html.escape(href)}">{label}</a><br/>')
        return _html_page(f"Index of {path}", anchors)


# -- pypiserver ------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class PypiServer:
    """A real `pypiserver` process serving `packages_dir` on 127.0.0.1 (no fallback).

    Publish by copying files into `packages_dir` (`add`); the `simple-dir` backend re-reads
    the folder on every request, so files appear at once. `--disable-fallback` keeps unknown
    projects a 404 instead of a redirect to pypi.org. With `htpasswd` (an Apache htpasswd
    file; pypiserver reads it with passlib), listing and downloading need basic auth.
    """

    STARTUP_TIMEOUT = 30.0

    def __init__(self, packages_dir: Path, *, log_path: Path, htpasswd: Path | None = None) -> None:
        self.packages_dir = packages_dir
        self.log_path = log_path
        self.htpasswd = htpasswd
        packages_dir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        for _attempt in range(3):
            self.port = free_port()
            if self._start():
                break
        else:
            raise RuntimeError(f"pypiserver did not start; see {log_path}")
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/simple/"
        """The index URL to give clients."""

    def _start(self) -> bool:
        command = [
            sys.executable,
            "-m",
            "pypiserver",
            "run",
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "-a",
            "list,download" if self.htpasswd else ".",
            "-P",
            str(self.htpasswd) if self.htpasswd else ".",
            "--disable-fallback",
            "--backend",
            "simple-dir",
            "--hash-algo",
            "sha256",
            "--server",
            "wsgiref",
            str(self.packages_dir),
        ]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        deadline = time.monotonic() + self.STARTUP_TIMEOUT
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(health, timeout=1) as response:
                    if response.status == 200:
                        self._process = process
                        return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        _stop(process)
        return False

    def add(self, path: Path) -> Path:
        """Publish `path` by copying it into `packages_dir`; return the copy."""
        target = self.packages_dir / path.name
        shutil.copyfile(path, target)
        return target

    def clear(self) -> None:
        """Remove every published file."""
        for child in self.packages_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def close(self) -> None:
        """Stop the process and wait for it."""
        if self._process is not None:
            _stop(self._process)
            self._process = None


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
