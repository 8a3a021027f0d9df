"""Trust policy: which hosts may serve files, and when plain HTTP is allowed."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from safepip.errors import ExitCode, SafepipError
from safepip.urls import host_of, host_port_of, is_loopback, redact_url


class PolicyViolation(SafepipError):
    """A source or artifact that the trust policy refuses."""

    exit_code = ExitCode.POLICY

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        host: str | None = None,
        hint: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason or message
        """The refusal's reason without the request it refused (for redirect messages)."""
        self.url = url
        self.host = host


def _matches(entry: str, url: str) -> bool:
    """A `host` entry matches any port; a `host:port` entry only that port."""
    entry = entry.lower()
    host = host_of(url)
    return entry in (host, f"[{host}]", host_port_of(url))


@dataclass(frozen=True, kw_only=True, slots=True)
class HostPolicy:
    """Which hosts may be contacted, and over which scheme.

    A URL is allowed when its host is one of `allowed_hosts` (the configured indexes, find-links,
    `--allow-host` and `--trusted-host`). HTTPS is required unless the host is loopback or listed
    in `trusted_hosts` (pip's `--trusted-host`: plain HTTP allowed for that host). `file:` URLs are
    local and always allowed.
    """

    allowed_hosts: frozenset[str] = frozenset()
    trusted_hosts: frozenset[str] = frozenset()
    allow_any_host: bool = False
    """Only for commands that fetch a URL the user typed (a remote requirements file)."""

    def with_hosts(self, *urls_or_hosts: str) -> HostPolicy:
        """A copy that also allows the hosts of the given URLs (or bare hosts)."""
        added = {(host_port_of(u) if "://" in u else u.lower()) for u in urls_or_hosts}
        return HostPolicy(
            allowed_hosts=self.allowed_hosts | added,
            trusted_hosts=self.trusted_hosts,
            allow_any_host=self.allow_any_host,
        )

    def host_allowed(self, url: str) -> bool:
        if self.allow_any_host:
            return True
        return any(_matches(h, url) for h in self.allowed_hosts | self.trusted_hosts)

    def check(self, url: str, *, purpose: str, package: str | None = None) -> None:
        """Raise `PolicyViolation` unless `url` may be fetched for `purpose`."""
        shown = redact_url(url)
        what = f" for `{package}`" if package else ""
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            host = host_port_of(url)
        except ValueError:
            raise PolicyViolation(
                f"Refusing {purpose}{what} from `{shown}`: not a valid URL",
                url=shown,
                reason="not a valid URL",
                hint="check the URL in the requirements file or the configuration",
            ) from None
        if scheme == "file":
            return
        if scheme not in ("http", "https"):
            raise PolicyViolation(
                f"Refusing {purpose}{what} from `{shown}`: unsupported URL scheme `{scheme}`",
                reason=f"unsupported URL scheme `{scheme}`",
                url=shown,
                host=host,
                hint="use an https:// index or a local folder",
            )
        if not self.host_allowed(url):
            raise PolicyViolation(
                f"Refusing {purpose}{what} from `{shown}`: host `{host}` is not a trusted host",
                reason=f"host `{host}` is not a trusted host",
                url=shown,
                host=host,
                hint=(
                    f"if `{host_of(url)}` is a host you trust, add `--allow-host {host_of(url)}` "
                    "(or list it as an index or find-links location)"
                ),
            )
        plain = scheme == "http" and not is_loopback(host_of(url))
        if plain and not any(_matches(h, url) for h in self.trusted_hosts):
            raise PolicyViolation(
                f"Refusing {purpose}{what} from `{shown}`: plain HTTP to `{host}` is not allowed",
                reason=f"plain HTTP to `{host}` is not allowed",
                url=shown,
                host=host,
                hint=(
                    "use https://, or accept the risk for this host with "
                    f"`--trusted-host {host_of(url)}`"
                ),
            )
