"""Hermetic test environment and the shared fixtures: wheels, loopback servers, venvs, snapshots,
the `cli(*argv)` runner and the installed `environment`."""

from __future__ import annotations

import os
import shutil
import tempfile

# This machine's pip.conf files and PIP_* variables add local indexes, find-links and
# certificates. Neither the code under test nor pip used as an oracle may see them, so the
# environment is cleaned before anything else is imported.
# requests (inside pip) lets these override an explicit `--cert`, so pip run as an oracle
# could not trust a test CA while they are set.
_ALSO_REMOVED = {"FORCE_COLOR", "PYTHONWARNINGS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
for _name in list(os.environ):
    if _name.startswith(("PIP_", "SAFEPIP_")) or _name in _ALSO_REMOVED:
        del os.environ[_name]
_SESSION_HOME = tempfile.mkdtemp(prefix="safepip-tests-")
os.environ.update(
    {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "SAFEPIP_NO_BACKOFF": "1",
        "NO_COLOR": "1",
        "XDG_CACHE_HOME": os.path.join(_SESSION_HOME, "cache"),
        "XDG_DATA_HOME": os.path.join(_SESSION_HOME, "data"),
        "XDG_CONFIG_HOME": os.path.join(_SESSION_HOME, "config"),
        # Never a developer's credentials: no netrc (this file does not exist), no keyring.
        "NETRC": os.path.join(_SESSION_HOME, "netrc"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
)
# Loopback servers must never be reached through a proxy a developer may have configured.
for _name in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_name, "").split(",") if h.strip()]
    os.environ[_name] = ",".join([*_hosts, "127.0.0.1", "127.0.0.2", "localhost"])

import functools  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, NamedTuple  # noqa: E402

import pytest  # noqa: E402
import trustme  # noqa: E402
from hypothesis import settings  # noqa: E402

from safepip.cli import main  # noqa: E402
from servers import FileServer, IndexMode, PypiServer, StaticIndex  # noqa: E402
from wheelbuild import WheelFactory  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# Property tests check results, never speed: on a loaded 2-core CI machine a single example can
# take longer than hypothesis's default 200 ms deadline (seen in CI as DeadlineExceeded).
settings.register_profile("safepip", deadline=None)
settings.load_profile("safepip")

TreeSnapshot = dict[str, tuple[int, str]]
"""`tree_snapshot` result: relative POSIX path -> (lstat mode, sha256 / link target / `<dir>`)."""

NETWORK_MARKER = "network: reaches the real package index; runs only when selected (`-m network`)"
NETWORK_PROBE_URL = "https://pypi.org/simple/"
NETWORK_PROBE_TIMEOUT = 5.0


def pytest_configure(config: pytest.Config) -> None:
    known = {line.split(":", 1)[0] for line in config.getini("markers")}
    if "network" not in known:
        config.addinivalue_line("markers", NETWORK_MARKER)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@functools.cache
def _network_unavailable() -> str | None:
    """Why tests marked `network` cannot run, or None; the index is probed once per session."""
    request = urllib.request.Request(NETWORK_PROBE_URL, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=NETWORK_PROBE_TIMEOUT):
            pass
    except urllib.error.HTTPError as exc:
        with exc:
            return f"{NETWORK_PROBE_URL} answered HTTP {exc.code}"
    except Exception as exc:  # DNS, TLS, refused, timeout: all mean "unreachable"
        return f"{NETWORK_PROBE_URL} unreachable (timeout {NETWORK_PROBE_TIMEOUT:g} s): {exc}"
    return None


def _network_selected(config: pytest.Config) -> bool:
    """The run asked for the network tests by marker (`-m network`, `-m "network or slow"`)."""
    expression = str(config.getoption("markexpr", "") or "")
    return "network" in expression and "not network" not in expression


def pytest_runtest_setup(item: pytest.Item) -> None:
    # The default suite is hermetic: it talks only to the loopback servers it starts.
    if item.get_closest_marker("network") is not None:
        if not _network_selected(item.config):
            pytest.skip("reaches the real package index: run with `-m network`")
        reason = _network_unavailable()
        if reason is not None:
            pytest.skip(reason)


# -- artifacts -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel_factory(tmp_path_factory: pytest.TempPathFactory) -> WheelFactory:
    """`wheel_factory(name, version, **build_wheel_kwargs) -> Path`; `.sdist(name, version)`.

    Each call writes into a fresh folder of a session temp dir (see `wheelbuild.WheelFactory`).
    """
    return WheelFactory(tmp_path_factory.mktemp("wheels"))


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway certificate authority; nothing outside the test session trusts it."""
    return trustme.CA()


@pytest.fixture
def static_index(tls_ca: trustme.CA) -> Iterator[Callable[..., StaticIndex]]:
    """Factory `static_index(*, mode="auto", tls=False, host="127.0.0.1") -> StaticIndex`.

    `tls=True` serves HTTPS with a certificate from the session's `tls_ca` (`.ca_bundle`);
    a `trustme.CA` may be passed instead. Every index is closed at teardown.
    """
    made: list[StaticIndex] = []

    def make(
        *, mode: IndexMode = "auto", tls: bool | trustme.CA = False, host: str = "127.0.0.1"
    ) -> StaticIndex:
        ca = tls_ca if tls is True else (tls or None)
        index = StaticIndex(mode=mode, host=host, tls=ca)
        made.append(index)
        return index

    yield make
    for index in made:
        index.close()


@pytest.fixture
def foreign_server() -> Iterator[FileServer]:
    """A plain HTTP file server on 127.0.0.2, the host no index policy trusts."""
    with FileServer("127.0.0.2") as server:
        yield server


@pytest.fixture
def tls_index(tls_ca: trustme.CA) -> Iterator[StaticIndex]:
    """An HTTPS `StaticIndex` on 127.0.0.1 (cert for 127.0.0.1 and localhost); `.ca_bundle`."""
    with StaticIndex(tls=tls_ca) as index:
        yield index


@pytest.fixture(scope="session")
def _pypiserver_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PypiServer]:
    root = tmp_path_factory.mktemp("pypiserver")
    server = PypiServer(root / "packages", log_path=root / "pypiserver.log")
    yield server
    server.close()


@pytest.fixture
def pypiserver(_pypiserver_process: PypiServer) -> PypiServer:
    """A real pypiserver (session-wide process) whose package folder starts empty each test.

    Publish with `pypiserver.add(path)` (a copy into `pypiserver.packages_dir`); the index
    URL is `pypiserver.url`.
    """
    _pypiserver_process.clear()
    return _pypiserver_process


@pytest.fixture
def pypiserver_url(pypiserver: PypiServer) -> str:
    """The `/simple/` URL of the `pypiserver` fixture."""
    return pypiserver.url


# -- environments ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _venv_templates() -> dict[str, Path]:
    return {}


@pytest.fixture
def venv_factory(
    tmp_path_factory: pytest.TempPathFactory, _venv_templates: dict[str, Path]
) -> Callable[..., Path]:
    """Factory `venv_factory(python=sys.executable) -> Path` of a fresh, pip-less venv.

    The venv is built once per interpreter and session (`python -m venv --without-pip`) and
    copied for each call, symlinks kept. Its interpreter is `<venv>/bin/python`.
    """
    counter = itertools.count()

    def make(python: str | os.PathLike[str] = sys.executable) -> Path:
        key = os.fspath(python)
        template = _venv_templates.get(key)
        if template is None:
            template = tmp_path_factory.mktemp("venv-template") / "venv"
            subprocess.run(
                [key, "-m", "venv", "--without-pip", str(template)],
                check=True,
                capture_output=True,
            )
            _venv_templates[key] = template
        target = tmp_path_factory.mktemp("venv") / f"venv{next(counter)}"
        shutil.copytree(template, target, symlinks=True)
        return target

    return make


def snapshot_tree(root: Path) -> TreeSnapshot:
    """Every entry under `root`: relative POSIX path -> (lstat mode, content fingerprint).

    The fingerprint is the sha256 of a file, `-> target` for a symlink (never followed) and
    `<dir>` for a folder, so equal snapshots mean same names, kinds, modes and bytes.
    Timestamps are ignored.
    """
    snapshot: TreeSnapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                snapshot[rel] = (info.st_mode, f"-> {os.readlink(path)}")
            elif stat.S_ISDIR(info.st_mode):
                snapshot[rel] = (info.st_mode, "<dir>")
            else:
                snapshot[rel] = (info.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return snapshot


@pytest.fixture
def tree_snapshot() -> Callable[[Path], TreeSnapshot]:
    """`tree_snapshot(path) -> {relpath: (mode, sha256 | "-> target" | "<dir>")}`."""
    return snapshot_tree


# -- the command line ------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The bundled advisory data ages with the calendar, so whether this warning appears depends on
# the day the suite runs; it is asserted in test_audit.py against a fixed date.
_STALE_DATA_WARNING = "warning: The advisory data is from"


class CliResult(NamedTuple):
    """What one `safepip` run returned and printed (`code, out, err = cli(...)` also works)."""

    code: int
    out: str  # stdout, ANSI escapes removed
    err: str  # stderr, ANSI escapes and the bundled data's staleness warning removed

    def flat(self) -> CliResult:
        """The same with stderr's whitespace collapsed to single spaces: rich wraps tables and
        long messages to the terminal's width, so a phrase may span lines."""
        return self._replace(err=" ".join(self.err.split()))


class Cli:
    """`cli(*argv) -> CliResult`: `safepip.cli.main(argv)` in this process, output captured."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str | os.PathLike[str]) -> CliResult:
        self._capsys.readouterr()
        code = main([os.fspath(arg) for arg in argv])
        captured = self._capsys.readouterr()
        err = "".join(
            line
            for line in ANSI.sub("", captured.err).splitlines(keepends=True)
            if not line.startswith(_STALE_DATA_WARNING)
        )
        return CliResult(code=code, out=ANSI.sub("", captured.out), err=err)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The one CLI runner. Each test gets its own cache (`SAFEPIP_CACHE_DIR`, `tmp_path/cache`)
    and user data folder (`SAFEPIP_DATA_DIR`, `tmp_path/userdata`)."""
    monkeypatch.setenv("SAFEPIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "userdata"))
    return Cli(capsys)


class Environment:
    """A virtual environment that tests install into with safepip, then inspect.

    `install(...)` snapshots the tree first, so `assert_unchanged()` proves that the last
    install left it byte-for-byte as it was (names, kinds, modes, bytes, link targets).
    """

    def __init__(self, path: Path, cli: Cli) -> None:
        self.path = path
        self._cli = cli
        self._before: TreeSnapshot | None = None

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return next((self.path / "lib").glob("python3*/site-packages"))

    def install(self, *argv: str | os.PathLike[str]) -> CliResult:
        """`safepip install ARGV --python <this environment>`."""
        self._before = snapshot_tree(self.path)
        return self._cli("install", *argv, "--python", self.path)

    def assert_unchanged(self) -> None:
        """The last `install` changed nothing in the environment."""
        assert self._before is not None, "assert_unchanged() before any install()"
        assert snapshot_tree(self.path) == self._before

    def run(self, code: str) -> str:
        """stdout (stripped) of `python -c CODE` in the environment; it must succeed."""
        proc = subprocess.run(
            [str(self.python), "-c", code], capture_output=True, text=True, check=True
        )
        return proc.stdout.strip()


@pytest.fixture
def environment(venv_factory: Callable[..., Path], cli: Cli) -> Environment:
    """A fresh, pip-less venv of the interpreter running the tests, as an `Environment`."""
    return Environment(venv_factory(), cli)
