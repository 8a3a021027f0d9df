"""Credentials for index hosts, found the way pip finds them: the URL, the configured index
URLs, netrc, then keyring (after a 401), remembered per host for the rest of the run.

Lookup for a request (before it is sent), first match wins:

1. `user:password@` in the request URL itself;
2. the configured index or find-links URL that matches the request best (same scheme, host and
   port; the longest common path; one that carries credentials wins a tie). Every URL given
   by `-i`, `--extra-index-url`, `PIP_INDEX_URL`, pip.conf or a requirements file counts, also
   one a lock file's `--index-url` has replaced: credentials given for a host and path apply
   wherever that index is named again (uv does this; pip forgets them);
3. netrc (`NETRC`, else `~/.netrc`, else `~/_netrc`) for the host name;
4. credentials already used for this host during the run (a keyring answer, say).

After a 401, and only then, the keyring is asked (pip's `--keyring-provider`): first for the
matching index URL (`https://host/simple/`), then for `host[:port]`, with the user name from
the URL if it names one. The request is repeated once with what it returns.

Secrets never leave this module in a URL: requests are sent with the credentials stripped from
the URL and an `Authorization` header instead.
"""

from __future__ import annotations

import base64
import enum
import json
import netrc
import os
import shutil
import subprocess
import sysconfig
import threading
from dataclasses import dataclass, field
from pathlib import Path
from posixpath import commonpath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from safepip.urls import redact_text, without_credentials

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import ModuleType

__all__ = ["CredentialStore", "KeyringProvider", "Login", "split_credentials"]

KEYRING_TIMEOUT = 60.0
"""Seconds a `keyring` subprocess may take (a backend that waits for an unlock prompt would
otherwise hang the run: its standard input is closed)."""


class KeyringProvider(enum.Enum):
    """pip's `--keyring-provider`."""

    AUTO = "auto"
    """The `keyring` module if safepip can import it, else a `keyring` command on PATH; not
    used at all under `--no-input` (pip's rule: it may want to ask something)."""
    IMPORT = "import"
    SUBPROCESS = "subprocess"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Login:
    """A user name and password for HTTP basic authentication, and where they came from."""

    username: str
    password: str = field(repr=False)
    source: str = ""
    """For messages: "the URL", "the index URL `https://host/simple/`", "netrc `~/.netrc`",
    "keyring (`keyring` command)"; never the secret itself."""

    def header(self) -> str:
        """The `Authorization` header value."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`url` without `user:password@`, and the (percent-decoded) user and password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    return without_credentials(url), unquote(user), unquote(password) if colon else None


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if scheme == "https" else 80
    return scheme, parts.hostname.lower(), None if port in (None, default) else port


def _netloc(url: str) -> str:
    """`host[:port]` as written in `url` (the keyring service name pip uses for a host)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def _directory(path: str) -> str:
    return path.rstrip("/") + "/"


@dataclass(frozen=True, slots=True)
class _Index:
    url: str
    """Without credentials, ending in `/`."""
    origin: tuple[str, str, int | None]
    path: str
    username: str | None
    password: str | None


class CredentialStore:
    """Finds the credentials for each request and remembers them per host (thread-safe)."""

    def __init__(
        self,
        *,
        index_urls: Iterable[str] = (),
        keyring_provider: KeyringProvider = KeyringProvider.AUTO,
        no_input: bool = False,
        environ: Mapping[str, str] | None = None,
        home: Path | None = None,
    ) -> None:
        self._indexes: list[_Index] = []
        for url in dict.fromkeys(index_urls):
            origin = _origin(url)
            if origin is None:
                continue
            clean, user, password = split_credentials(url)
            parts = urlsplit(clean)
            self._indexes.append(
                _Index(
                    url=urlunsplit((parts.scheme, parts.netloc, _directory(parts.path), "", "")),
                    origin=origin,
                    path=_directory(parts.path),
                    username=user or None,
                    password=password,
                )
            )
        self.keyring_provider = keyring_provider
        self.no_input = no_input
        self._environ = os.environ if environ is None else environ
        self._home = home
        self._lock = threading.RLock()
        self._by_host: dict[tuple[str, str, int | None], Login] = {}
        self._netrc: tuple[Path, netrc.netrc] | None = None
        self._netrc_read = False
        self._keyring: _Keyring | None = None
        self._keyring_opened = False
        self._keyring_answers: dict[tuple[str, str | None], Login | None] = {}
        self._keyring_lock = threading.Lock()
        self._secrets: set[str] = set()
        self.keyring_problem: str | None = None
        """Why the keyring could not be asked (for the hint of a 401), when it could not."""
        self.netrc_problem: str | None = None
        for index in self._indexes:
            self._remember_secrets(index.username, index.password)

    # -- what the session asks

    def login_for(self, url: str) -> tuple[str, Login | None]:
        """The URL to send (no credentials in it) and the login to send with it, if any."""
        clean, user, password = split_credentials(url)
        origin = _origin(clean)
        if origin is None:
            return clean, None
        source = "the URL"
        if user is None:
            index = self._matching_index(clean, origin)
            if index is not None and index.username is not None:
                user, password = index.username, index.password
                source = f"the index URL `{index.url}`"
        if user is not None and password is not None:
            given = Login(user, password, source)
            self._remember(origin, given)
            return clean, given
        found = self._from_netrc(origin[1])
        if found is not None:
            self._remember(origin, found)
            return clean, found
        with self._lock:
            known = self._by_host.get(origin)
        if known is not None and (user is None or user == known.username):
            return clean, known
        if user is None:
            return clean, None
        # A user name alone (`https://TOKEN@host/`): sent with an empty password, as pip does.
        token = Login(user, "", source)
        self._remember(origin, token)
        return clean, token

    def login_after_401(self, url: str, sent: Login | None) -> Login | None:
        """New credentials from the keyring after `url` answered 401 to `sent`; None when there
        are none (or they are what was sent)."""
        clean, user, password = split_credentials(url)
        origin = _origin(clean)
        if origin is None or (user is not None and password is not None):
            return None
        index = self._matching_index(clean, origin)
        if user is None and index is not None:
            user = index.username
        if sent is not None and sent.password and not sent.source.startswith("netrc"):
            # Credentials the user gave for this URL were refused; pip does not second-guess them.
            return None
        keyring = self._keyring_backend()
        if keyring is None:
            return None
        services = [index.url] if index is not None else []
        services.append(_netloc(clean))
        for service in services:
            found = self._ask_keyring(keyring, service, user)
            if found is not None:
                if sent is not None and (found.username, found.password) == (
                    sent.username,
                    sent.password,
                ):
                    return None
                self._remember(origin, found)
                return found
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every secret known so far (passwords, lone tokens), longest first, for redaction."""
        with self._lock:
            return tuple(sorted(self._secrets, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """`text` with URLs redacted and every known secret replaced by `***`."""
        text = redact_text(text)
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def explain_missing(self, url: str) -> str:
        """Where credentials for `url` could have come from, for the hint of a 401."""
        host = _netloc(split_credentials(url)[0])
        places = (
            f"no credentials for `{host}` were found: put them in the index URL "
            "(`https://USER:PASSWORD@host/simple/` in `-i`, `PIP_INDEX_URL` or pip.conf), "
            "in netrc, or in a keyring"
        )
        notes = [p for p in (self.netrc_problem, self._keyring_note()) if p]
        return "; ".join([places, *notes])

    # -- matching

    def _matching_index(self, clean: str, origin: tuple[str, str, int | None]) -> _Index | None:
        path = _directory(urlsplit(clean).path)
        best: tuple[int, bool] | None = None
        chosen: _Index | None = None
        for index in self._indexes:
            if index.origin != origin:
                continue
            common = len(commonpath([path, index.path]).rstrip("/"))
            if path.startswith(index.path):
                common += 1 << 20  # under the index's path: beats any partial overlap
            key = (common, index.username is not None)
            if best is None or key > best:
                best, chosen = key, index
        return chosen

    def _remember(self, origin: tuple[str, str, int | None], login: Login) -> None:
        with self._lock:
            self._by_host[origin] = login
        self._remember_secrets(login.username, login.password)

    def _remember_secrets(self, username: str | None, password: str | None) -> None:
        with self._lock:
            if password:
                if len(password) >= 3:
                    self._secrets.add(password)
            elif username and len(username) >= 3:
                self._secrets.add(username)

    # -- netrc

    def _netrc_path(self) -> Path | None:
        named = self._environ.get("NETRC")
        if named is not None:
            path = Path(named).expanduser()
            return path if path.exists() else None
        home = self._home or Path(self._environ.get("HOME") or os.path.expanduser("~"))
        for name in (".netrc", "_netrc"):
            if (home / name).exists():
                return home / name
        return None

    def _from_netrc(self, host: str) -> Login | None:
        with self._lock:
            if not self._netrc_read:
                self._netrc_read = True
                self._netrc = self._read_netrc()
            loaded = self._netrc
        if loaded is None:
            return None
        path, parsed = loaded
        entry = parsed.authenticators(host)
        if not entry or not any(entry):
            return None
        login, account, password = entry
        # requests' rule (pip): the login, else the account, is the user name.
        return Login(login or account or "", password or "", f"netrc `{path}`")

    def _read_netrc(self) -> tuple[Path, netrc.netrc] | None:
        path = self._netrc_path()
        if path is None:
            return None
        try:
            # An explicit path: Python's ownership/permission check applies only to the default
            # file, and pip (through requests) passes the path too.
            parsed = netrc.netrc(str(path))
        except (netrc.NetrcParseError, OSError, UnicodeDecodeError) as exc:
            reason = (
                f"{exc.msg} on line {exc.lineno}"
                if isinstance(exc, netrc.NetrcParseError)
                else str(exc)
            )
            self.netrc_problem = f"netrc `{path}` was ignored: {reason}"
            return None
        for _host, (login, account, password) in parsed.hosts.items():
            self._remember_secrets(login or account, password)
        return path, parsed

    # -- keyring

    def _keyring_note(self) -> str | None:
        if self.keyring_problem:
            return self.keyring_problem
        if self.keyring_provider is KeyringProvider.DISABLED:
            return "the keyring is not asked (`--keyring-provider disabled`)"
        if self.keyring_provider is KeyringProvider.AUTO and self.no_input:
            return (
                "the keyring is not asked under `--no-input` with `--keyring-provider auto` "
                "(pip's rule): choose `import` or `subprocess`"
            )
        return None

    def _keyring_backend(self) -> _Keyring | None:
        with self._lock:
            if not self._keyring_opened:
                self._keyring_opened = True
                self._keyring = self._open_keyring()
            return self._keyring

    def _open_keyring(self) -> _Keyring | None:
        provider = self.keyring_provider
        if provider is KeyringProvider.DISABLED:
            return None
        if provider is KeyringProvider.AUTO and self.no_input:
            return None
        module_problem = "the `keyring` module is not installed next to safepip"
        if provider in (KeyringProvider.IMPORT, KeyringProvider.AUTO):
            try:
                import keyring
            except ImportError:
                pass
            except Exception as exc:
                module_problem = f"the `keyring` module failed to load ({self.redact(str(exc))})"
            else:
                return _ImportedKeyring(keyring)
            if provider is KeyringProvider.IMPORT:
                self.keyring_problem = (
                    f"`--keyring-provider import`: {module_problem} "
                    "(`pip install 'safepip[keyring]'`)"
                )
                return None
        command = _keyring_command(self._environ)
        if command is None:
            self.keyring_problem = (
                "`--keyring-provider subprocess` found no `keyring` command on PATH"
                if provider is KeyringProvider.SUBPROCESS
                else f"no keyring to ask: {module_problem}, and no `keyring` command is on PATH"
            )
            return None
        return _KeyringCommand(command, self._environ)

    def _ask_keyring(self, keyring: _Keyring, service: str, user: str | None) -> Login | None:
        # One question at a time, each asked once per run: the download threads that all met
        # the same 401 wait for the first answer instead of starting a keyring each.
        key = (service, user)
        with self._keyring_lock:
            if key in self._keyring_answers:
                return self._keyring_answers[key]
            if self._keyring is None:
                return None  # it failed meanwhile
            try:
                found = keyring.get(service, user)
            except Exception as exc:
                text = str(exc).strip()
                message = self.redact(text.splitlines()[0]) if text else type(exc).__name__
                with self._lock:
                    self.keyring_problem = f"the keyring was skipped after an error: {message}"
                    self._keyring = None
                return None
            login = None
            if found is not None:
                username, password = found
                login = Login(username, password, f"keyring ({keyring.name}, `{service}`)")
                self._remember_secrets(username, password)
            self._keyring_answers[key] = login
            return login


class _Keyring:
    name = "keyring"

    def get(self, service: str, username: str | None) -> tuple[str, str] | None:
        raise NotImplementedError


class _ImportedKeyring(_Keyring):
    name = "the `keyring` module"

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def get(self, service: str, username: str | None) -> tuple[str, str] | None:
        credential = self._module.get_credential(service, username)
        if credential is None:
            return None
        user = getattr(credential, "username", None)
        password = getattr(credential, "password", None)
        if password is None:
            return None
        return str(user or username or ""), str(password)


class _KeyringCommand(_Keyring):
    """The `keyring` command line (keyring >= 25.2: `--mode=creds --output=json`)."""

    def __init__(self, command: str, environ: Mapping[str, str]) -> None:
        self.command = command
        self.name = f"`{command}`"
        self._environ = environ

    def get(self, service: str, username: str | None) -> tuple[str, str] | None:
        argv = [self.command, "--mode=creds", "--output=json", "get", service]
        if username is not None:
            argv.append(username)
        env = {**self._environ, "PYTHONIOENCODING": "utf-8"}
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=KEYRING_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"`{self.command}` did not answer within {KEYRING_TIMEOUT:.0f} seconds"
            ) from None
        errors = result.stderr.decode("utf-8", "replace")
        if result.returncode == 2 and "--mode" in errors and "unrecognized" in errors:
            raise RuntimeError(f"`{self.command}` is too old: keyring 25.2.1 or later is needed")
        if result.returncode != 0:
            return None
        try:
            data = json.loads(result.stdout.decode("utf-8"))
            return str(data["username"] or username or ""), str(data["password"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"`{self.command}` answered something that is not JSON") from None


def _keyring_command(environ: Mapping[str, str]) -> str | None:
    """The `keyring` command on PATH, skipping the one in safepip's own scripts folder (pip's
    rule: that copy belongs to the environment safepip runs in, not to the user)."""
    path = environ.get("PATH", os.defpath)
    found = shutil.which("keyring", path=path)
    if found is None:
        return None
    scripts = sysconfig.get_path("scripts")
    if not found.startswith(scripts):
        return found
    kept = []
    for folder in path.split(os.pathsep):
        try:
            if not Path(folder).samefile(scripts):
                kept.append(folder)
        except OSError:
            continue
    return shutil.which("keyring", path=os.pathsep.join(kept))
