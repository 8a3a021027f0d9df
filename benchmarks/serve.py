"""Static servers for the benchmark index: nginx when installed, else a sendfile asyncio server.

Run as a script, this module is the asyncio server: `python serve.py ROOT --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# The public index's caching headers, so that clients cache (and reuse) exactly what they would
# cache from it: files are immutable, project pages are fresh for ten minutes.
FILE_CACHE_CONTROL = "max-age=365000000, immutable, public"
PAGE_CACHE_CONTROL = "max-age=600, public"

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    types {{
        text/html html;
        {json_type} json;
    }}
    default_type application/octet-stream;
    map $http_accept $simple_index {{
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
        default index.html;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /packages/ {{
            add_header Cache-Control "{file_cache}";
        }}
        location / {{
            index $simple_index;
            add_header Cache-Control "{page_cache}";
            add_header Vary Accept;
        }}
    }}
}}
"""


@dataclass(kw_only=True)
class Server:
    """A running static server on 127.0.0.1; `stop()` ends it."""

    kind: str
    version: str
    port: int
    process: subprocess.Popen[bytes]
    run_dir: Path
    _ticks: float = field(default_factory=lambda: float(os.sysconf("SC_CLK_TCK")))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far (10 ms resolution)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    return found


def start(root: Path, run_dir: Path, kind: str = "auto") -> Server:
    """Serve `root` on a free loopback port with nginx (`kind="nginx"`), asyncio, or the first
    that works (`"auto"`)."""
    errors = []
    if kind in ("auto", "nginx"):
        binary = nginx_binary()
        if binary is None:
            errors.append("nginx: not installed (`apt-get install -y nginx-light`)")
        else:
            try:
                return _start_nginx(binary, root, run_dir)
            except RuntimeError as exc:
                errors.append(f"nginx: {exc}")
        if kind == "nginx":
            raise RuntimeError("; ".join(errors))
    try:
        server = _start_asyncio(root, run_dir)
    except RuntimeError as exc:
        errors.append(f"asyncio: {exc}")
        raise RuntimeError("; ".join(errors)) from None
    server.version += f" (nginx unavailable: {'; '.join(errors)})" if errors else ""
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = log.read_text(errors="replace").strip() if log.exists() else ""
            raise RuntimeError(f"exited with {process.returncode}: {detail[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    process.kill()
    raise RuntimeError("did not start listening within 10 s")


def _start_nginx(binary: str, root: Path, run_dir: Path) -> Server:
    version = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(3):
        port = _free_port()
        conf = run_dir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                run=run_dir,
                port=port,
                root=root.resolve(),
                json_type=JSON_TYPE,
                file_cache=FILE_CACHE_CONTROL,
                page_cache=PAGE_CACHE_CONTROL,
            )
        )
        log = run_dir / "nginx.stderr"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [binary, "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        try:
            _wait_listening(process, port, log)
        except RuntimeError as exc:
            last = str(exc)
            continue
        return Server(
            kind="nginx",
            version=version.removeprefix("nginx version: ").removeprefix("nginx/"),
            port=port,
            process=process,
            run_dir=run_dir,
        )
    raise RuntimeError(last)


def _start_asyncio(root: Path, run_dir: Path) -> Server:
    run_dir.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(3):
        port = _free_port()
        log = run_dir / "asyncio.stderr"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, __file__, str(root.resolve()), "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        try:
            _wait_listening(process, port, log)
        except RuntimeError as exc:
            last = str(exc)
            continue
        return Server(
            kind="asyncio",
            version=f"benchmarks/serve.py on CPython {sys.version.split()[0]} (os.sendfile)",
            port=port,
            process=process,
            run_dir=run_dir,
        )
    raise RuntimeError(last)


# The asyncio server: HTTP/1.1 keep-alive, GET and HEAD, bodies sent with `loop.sendfile`
# (`os.sendfile` on a plain socket), so file bytes never pass through Python.

_CONTENT_TYPES = {".html": "text/html", ".json": JSON_TYPE}


class _BadRequest(Exception):
    pass


async def _handle(root: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ")
            except ValueError:
                return
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            status, extra, path = _route(root, method, target, headers.get("accept", ""))
            common = [
                f"Date: {formatdate(usegmt=True)}",
                "Server: safepip-bench",
                "Connection: keep-alive" if keep_alive else "Connection: close",
            ]
            if path is None:
                body = f"{status}\n".encode()
                writer.write(
                    "\r\n".join(
                        [
                            f"HTTP/1.1 {status}",
                            *common,
                            *extra,
                            "Content-Type: text/plain",
                            f"Content-Length: {len(body)}",
                            "",
                            "",
                        ]
                    ).encode()
                    + (body if method != "HEAD" else b"")
                )
                await writer.drain()
            else:
                with path.open("rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    writer.write(
                        "\r\n".join(
                            [
                                "HTTP/1.1 200 OK",
                                *common,
                                *extra,
                                f"Content-Type: {_content_type(path)}",
                                f"Content-Length: {size}",
                                "",
                                "",
                            ]
                        ).encode()
                    )
                    await writer.drain()
                    if method != "HEAD" and size:
                        await loop.sendfile(writer.transport, f)
            if not keep_alive:
                return
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def _content_type(path: Path) -> str:
    return _CONTENT_TYPES.get(path.suffix, "application/octet-stream")


def _route(root: Path, method: str, target: str, accept: str) -> tuple[str, list[str], Path | None]:
    """Status line, extra headers and the file to send (None: send the status as the body)."""
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", ["Allow: GET, HEAD"], None
    url_path = unquote(urlsplit(target).path)
    parts = [p for p in url_path.split("/") if p]
    if any(p in (".", "..") or "\\" in p or "\x00" in p for p in parts):
        return "404 Not Found", [], None
    path = root.joinpath(*parts)
    if parts and parts[0] == "packages":
        return (
            ("200 OK", [f"Cache-Control: {FILE_CACHE_CONTROL}"], path)
            if path.is_file()
            else (
                "404 Not Found",
                [],
                None,
            )
        )
    if path.is_dir():
        if not url_path.endswith("/"):
            return "301 Moved Permanently", [f"Location: {url_path}/"], None
        wants_json = "application/vnd.pypi.simple.v1+json" in accept
        path = path / ("index.json" if wants_json else "index.html")
    if not path.is_file():
        return "404 Not Found", [], None
    return "200 OK", [f"Cache-Control: {PAGE_CACHE_CONTROL}", "Vary: Accept"], path


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _serve(root: Path, port: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: _handle(root, r, w), "127.0.0.1", port, backlog=256
    )
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _resolve, stop)
    async with server:
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.root, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
