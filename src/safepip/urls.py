"""Pure URL helpers: credential redaction, host and port, fragments, `file:` URLs."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

_SECRET_QUERY_KEYS = re.compile(r"(token|key|secret|password|passwd|auth|signature|sig)", re.I)


def redact_url(url: str) -> str:
    """`url` with `user:password@` and secret-looking query parameters replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Never hand back the raw text: blank any userinfo and secret-looking parameters.
        text = re.sub(r"//[^/@\s]*@", "//***@", url)
        return re.sub(
            r"([?&][^=&#]*(?:token|key|secret|password|passwd|auth|signature|sig)[^=&#]*=)[^&#]*",
            r"\1***",
            text,
            flags=re.I,
        )
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{'***' if ':' in userinfo or not user else user}:***@{hostport}"
        if ":" not in userinfo:
            # A lone user part is usually a token (`https://TOKEN@host/`): hide it too.
            netloc = f"***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# A URL inside text: a scheme (from the first letter of its run) and `://`. Tries start only
# where a run of scheme characters starts, so a long run is scanned once, not once per
# character (which made redacting a 1 MB requirements line quadratic; issue 8).
_URL_IN_TEXT = re.compile(r"(?<![a-zA-Z0-9+.-])([0-9+.-]*)([a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+)")


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted."""
    return _URL_IN_TEXT.sub(lambda m: m.group(1) + redact_url(m.group(2)), text)


def file_url_to_path(url: str) -> Path:
    """The local path of a `file:` URL."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if os.name == "nt":  # pragma: no cover - POSIX paths are the URL path unquoted
        from nturl2path import url2pathname

        path = url2pathname(parts.path)
    else:
        path = unquote(parts.path)
    if netloc and netloc != "localhost":
        path = f"//{netloc}{path}"
    return Path(path)


def strip_fragment(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def without_credentials(url: str) -> str:
    """`url` with any `user:password@` removed (a lock is shared; its readers log in themselves)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def host_of(url: str) -> str:
    """The lower-case host name of `url`, without port or credentials."""
    return (urlsplit(url).hostname or "").lower()


def host_port_of(url: str) -> str:
    """`host` or `host:port` of `url`, as pip's `--trusted-host` accepts it."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def is_loopback(host: str) -> bool:
    """True for `localhost` and addresses in 127.0.0.0/8 or ::1."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
