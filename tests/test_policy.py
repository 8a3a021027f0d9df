"""Tests for the host policy: allowed hosts, `host:port` entries, plain HTTP, schemes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safepip.errors import ExitCode
from safepip.policy import HostPolicy, PolicyViolation
from safepip.urls import is_loopback

POLICY = HostPolicy(allowed_hosts=frozenset({"pypi.org", "files.example:8443"}))


def allowed(policy: HostPolicy, url: str) -> bool:
    try:
        policy.check(url, purpose="a download")
    except PolicyViolation:
        return False
    return True


class TestCheck:
    @pytest.mark.parametrize(
        "url",
        [
            "https://pypi.org/simple/",
            "https://PYPI.ORG/simple/",
            "https://pypi.org:444/simple/",  # a bare host entry allows any port
            "https://user:secret@pypi.org/simple/",
            "https://files.example:8443/a.whl",
            "file:///tmp/wheels/a.whl",
            "FILE:///tmp/wheels/a.whl",
        ],
    )
    def test_allowed(self, url: str) -> None:
        POLICY.check(url, purpose="a download")

    @pytest.mark.parametrize(
        "url",
        [
            "https://evil.example/simple/",
            "https://pypi.org.evil.example/simple/",
            "https://evilpypi.org/simple/",
            "https://files.example/a.whl",  # a `host:port` entry allows only that port
            "https://files.example:8444/a.whl",
            "https://pypi.org@evil.example/simple/",  # userinfo is not the host
            "https://pypi.org:443@evil.example/simple/",
            "https://evil.example/pypi.org/simple/",
            "https://evil.example/?host=pypi.org",
        ],
    )
    def test_refused_hosts(self, url: str) -> None:
        with pytest.raises(PolicyViolation) as info:
            POLICY.check(url, purpose="a download")
        assert "is not a trusted host" in info.value.message
        assert info.value.exit_code is ExitCode.POLICY

    def test_plain_http_to_allowed_host_is_refused(self) -> None:
        assert not allowed(POLICY, "http://pypi.org/simple/")

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"])
    def test_plain_http_to_loopback_is_allowed(self, host: str) -> None:
        url = f"http://{host}:8000/simple/"
        assert allowed(HostPolicy().with_hosts(url), url)

    def test_loopback_still_needs_to_be_allowed(self) -> None:
        assert not allowed(POLICY, "http://127.0.0.1:8000/simple/")

    def test_trusted_host_allows_plain_http(self) -> None:
        policy = HostPolicy(trusted_hosts=frozenset({"mirror.example"}))
        assert allowed(policy, "http://mirror.example/simple/")
        assert allowed(policy, "http://mirror.example:8080/simple/")
        assert allowed(policy, "https://mirror.example/simple/")

    def test_trusted_host_with_port_allows_only_that_port(self) -> None:
        policy = HostPolicy(
            allowed_hosts=frozenset({"mirror.example"}),
            trusted_hosts=frozenset({"mirror.example:8080"}),
        )
        assert allowed(policy, "http://mirror.example:8080/simple/")
        assert not allowed(policy, "http://mirror.example:8081/simple/")
        assert not allowed(policy, "http://mirror.example/simple/")
        assert allowed(policy, "https://mirror.example:9999/simple/")

    def test_allowed_but_not_trusted_host_is_https_only(self) -> None:
        policy = HostPolicy(
            allowed_hosts=frozenset({"a.example"}), trusted_hosts=frozenset({"b.example"})
        )
        assert not allowed(policy, "http://a.example/x")
        assert allowed(policy, "http://b.example/x")

    def test_allow_any_host_still_refuses_plain_http(self) -> None:
        policy = HostPolicy(allow_any_host=True)
        assert allowed(policy, "https://anything.example/req.txt")
        assert not allowed(policy, "http://anything.example/req.txt")
        assert allowed(policy, "http://127.0.0.1:9/req.txt")

    @pytest.mark.parametrize(
        "url", ["ftp://pypi.org/x", "git+https://pypi.org/x", "data:text/plain,x", "javascript:x"]
    )
    def test_unsupported_schemes(self, url: str) -> None:
        with pytest.raises(PolicyViolation, match="unsupported URL scheme"):
            POLICY.check(url, purpose="a download")

    def test_with_hosts_adds_urls_and_bare_hosts(self) -> None:
        policy = HostPolicy(trusted_hosts=frozenset({"t.example"})).with_hosts(
            "https://Idx.Example:8443/simple/", "Other.Example"
        )
        assert policy.allowed_hosts == frozenset({"idx.example:8443", "other.example"})
        assert policy.trusted_hosts == frozenset({"t.example"})
        assert allowed(policy, "https://other.example:1/x")
        assert not allowed(policy, "https://idx.example/x")

    def test_bare_ipv6_entry_allows_any_port(self) -> None:
        policy = HostPolicy(allowed_hosts=frozenset({"[2001:db8::1]"}))
        assert allowed(policy, "https://[2001:db8::1]/simple/")
        assert allowed(policy, "https://[2001:db8::1]:8443/simple/")

    @pytest.mark.parametrize(
        "url", ["https://pypi.org:99999/simple/", "https://[pypi.org/simple/", "https://h:x/"]
    )
    def test_malformed_url_is_a_policy_violation(self, url: str) -> None:
        with pytest.raises(PolicyViolation):
            POLICY.check(url, purpose="a download")

    def test_error_untrusted_host(self) -> None:
        with pytest.raises(PolicyViolation) as info:
            POLICY.check(
                "https://user:secret@evil.example:8443/simple/demo/?token=abc",
                purpose="a download",
                package="demo==1.0",
            )
        err = info.value
        assert str(err) == (
            "Refusing a download for `demo==1.0` from "
            "`https://***:***@evil.example:8443/simple/demo/?token=***`: "
            "host `evil.example:8443` is not a trusted host"
        )
        assert err.hint == (
            "if `evil.example` is a host you trust, add `--allow-host evil.example` "
            "(or list it as an index or find-links location)"
        )
        assert err.host == "evil.example:8443"
        assert err.url == "https://***:***@evil.example:8443/simple/demo/?token=***"
        assert "secret" not in str(err)

    def test_error_plain_http(self) -> None:
        with pytest.raises(PolicyViolation) as info:
            POLICY.check("http://pypi.org/simple/", purpose="an index page")
        assert str(info.value) == (
            "Refusing an index page from `http://pypi.org/simple/`: "
            "plain HTTP to `pypi.org` is not allowed"
        )
        assert info.value.hint == (
            "use https://, or accept the risk for this host with `--trusted-host pypi.org`"
        )

    def test_error_unsupported_scheme(self) -> None:
        with pytest.raises(PolicyViolation) as info:
            POLICY.check("ftp://pypi.org/demo.whl", purpose="a download")
        assert str(info.value) == (
            "Refusing a download from `ftp://pypi.org/demo.whl`: unsupported URL scheme `ftp`"
        )
        assert info.value.hint == "use an https:// index or a local folder"


# -- properties over generated URLs ------------------------------------------------------------

_label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_hostname = st.lists(_label, min_size=1, max_size=3).map(".".join)
_port = st.none() | st.integers(min_value=1, max_value=65535)
_path = st.lists(_label, max_size=3).map(lambda parts: "/" + "/".join(parts))
_case = st.sampled_from([str.lower, str.upper, str.title])


def _url(scheme: str, host: str, port: int | None, path: str) -> str:
    return f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_hostname,
    port=_port,
    path=_path,
    allowed_hosts=st.sets(_hostname, max_size=3),
    trusted_hosts=st.sets(_hostname, max_size=2),
    case=_case,
)
def test_check_matches_the_rule(
    scheme: str,
    host: str,
    port: int | None,
    path: str,
    allowed_hosts: set[str],
    trusted_hosts: set[str],
    case: object,
) -> None:
    """Allowed iff the host is listed, and plain HTTP only for trusted or loopback hosts."""
    assert callable(case)
    policy = HostPolicy(
        allowed_hosts=frozenset(allowed_hosts), trusted_hosts=frozenset(trusted_hosts)
    )
    url = _url(scheme, case(host), port, path)
    listed = host in allowed_hosts or host in trusted_hosts
    plain_ok = scheme == "https" or host in trusted_hosts or is_loopback(host)
    assert allowed(policy, url) is (listed and plain_ok)


@given(host=_hostname, port=st.integers(min_value=1, max_value=65535), other=_port)
def test_host_port_entry_matches_only_its_port(host: str, port: int, other: int | None) -> None:
    policy = HostPolicy(allowed_hosts=frozenset({f"{host}:{port}"}))
    assert allowed(policy, _url("https", host, other, "/x")) is (other == port)


@given(
    allowed_host=_hostname,
    evil=_hostname,
    user=_label,
    password=_label,
)
def test_userinfo_never_makes_a_host_allowed(
    allowed_host: str, evil: str, user: str, password: str
) -> None:
    policy = HostPolicy(allowed_hosts=frozenset({allowed_host}))
    for userinfo in (allowed_host, f"{allowed_host}:443", f"{user}:{password}"):
        url = f"https://{userinfo}@{evil}/simple/"
        assert allowed(policy, url) is (evil == allowed_host)
