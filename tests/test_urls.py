"""Tests for the URL helpers: redaction, host and port, loopback, fragments, `file:` URLs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safepip.urls import (
    file_url_to_path,
    host_of,
    host_port_of,
    is_loopback,
    redact_text,
    redact_url,
    strip_fragment,
)

# -- redaction ---------------------------------------------------------------------------------


class TestRedact:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("https://pypi.org/simple/", "https://pypi.org/simple/"),
            ("https://user:pw@host/simple/", "https://***:***@host/simple/"),
            ("https://TOKEN@host/simple/", "https://***@host/simple/"),
            ("https://user:p%40ss@host:8443/x", "https://***:***@host:8443/x"),
            ("https://u:p@ss@host/x", "https://***:***@host/x"),
            ("https://host/x?token=abc&page=2", "https://host/x?token=***&page=2"),
            ("https://host/x?API_KEY=abc", "https://host/x?API_KEY=***"),
            ("https://host/x?access_token=a&sig=b", "https://host/x?access_token=***&sig=***"),
            ("https://host/x.whl#sha256=abc", "https://host/x.whl#sha256=abc"),
            ("file:///tmp/x.whl", "file:///tmp/x.whl"),
        ],
    )
    def test_redact_url(self, url: str, shown: str) -> None:
        assert redact_url(url) == shown

    def test_redact_text_redacts_every_url(self) -> None:
        text = "from `https://u:pw1@a.example/x` via http://tok@b.example/y?key=k2 then 'c'"
        assert redact_text(text) == (
            "from `https://***:***@a.example/x` via http://***@b.example/y?key=*** then 'c'"
        )

    @given(
        st.lists(st.sampled_from(["a", "1", "+", ".", "-", ":", "/", "@", " ", "'", "://", "u:p@"]))
    )
    def test_redact_text_finds_what_the_plain_pattern_finds(self, parts: list[str]) -> None:
        text = "".join(parts)
        # The pattern only starts where a run of scheme characters starts (a long word was
        # quadratic); it must find exactly the URLs the plain pattern finds.
        plain = re.sub(
            r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+", lambda m: redact_url(m.group(0)), text
        )
        assert redact_text(text) == plain

    def test_redact_text_is_linear(self) -> None:
        start = time.process_time()
        redact_text("a" * 1_000_000 + " " + "1a" * 500_000 + "://x")
        assert time.process_time() - start < 1.0

    @pytest.mark.parametrize(
        "url", ["https://user:hunter2@[::1/simple/", "https://user:hunter2@[host]x/simple/"]
    )
    def test_malformed_url_does_not_leak_the_password(self, url: str) -> None:
        assert "hunter2" not in redact_url(url)

    @given(
        user=st.text(min_size=0, max_size=10),
        password=st.text(min_size=1, max_size=20),
        port=st.none() | st.integers(min_value=1, max_value=65535),
        query=st.sampled_from(["", "?page=2", "?token=t"]),
    )
    def test_password_in_userinfo_never_leaks(
        self, user: str, password: str, port: int | None, query: str
    ) -> None:
        secret = "pw" + password
        netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@h.example"
        url = f"https://{netloc}{'' if port is None else f':{port}'}/simple/{query}"
        for shown in (redact_url(url), redact_text(f"fetching {url} failed")):
            assert quote(secret, safe="") not in shown
            assert secret not in shown
            assert "@h.example" in shown

    @given(
        key=st.sampled_from(["token", "api_key", "secret", "password", "X-Amz-Signature"]),
        value=st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20),
    )
    def test_secret_query_values_never_leak(self, key: str, value: str) -> None:
        shown = redact_url(f"https://h.example/simple/?a=1&{key}=S{value}")
        assert f"S{value}" not in shown
        assert shown.startswith("https://h.example/simple/?a=1&")


class TestHosts:
    @pytest.mark.parametrize(
        ("url", "host", "host_port"),
        [
            ("https://PyPI.org/simple/", "pypi.org", "pypi.org"),
            ("https://pypi.org:8443/simple/", "pypi.org", "pypi.org:8443"),
            ("https://user:pw@pypi.org:1/x", "pypi.org", "pypi.org:1"),
            ("http://[::1]:8080/x", "::1", "[::1]:8080"),
            ("http://[2001:DB8::1]/x", "2001:db8::1", "[2001:db8::1]"),
            ("file:///tmp/x", "", ""),
        ],
    )
    def test_host_of_and_host_port_of(self, url: str, host: str, host_port: str) -> None:
        assert host_of(url) == host
        assert host_port_of(url) == host_port

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("localhost", True),
            ("LOCALHOST", True),
            ("api.localhost", True),
            ("127.0.0.1", True),
            ("127.8.9.10", True),
            ("::1", True),
            ("[::1]", True),
            ("128.0.0.1", False),
            ("10.0.0.1", False),
            ("localhost.example.com", False),
            ("notlocalhost", False),
            ("", False),
        ],
    )
    def test_is_loopback(self, host: str, expected: bool) -> None:
        assert is_loopback(host) is expected


class TestPaths:
    def test_file_url_to_path(self) -> None:
        assert file_url_to_path("file:///tmp/a%20b.whl") == Path("/tmp/a b.whl")
        assert file_url_to_path("file://localhost/tmp/x") == Path("/tmp/x")

    def test_strip_fragment(self) -> None:
        assert strip_fragment("https://h/x.whl?a=1#sha256=ab") == "https://h/x.whl?a=1"
