"""`safepip bundle`, `safepip bundle verify` and `safepip install --bundle`, end to end: a real
loopback index for the bundle half, no network at all for the install half."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from safepip import bundle as bundle_format
from wheelbuild import sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import Cli, CliResult, TreeSnapshot
    from servers import StaticIndex
    from wheelbuild import WheelFactory


def lock_line(path: Path) -> str:
    name, version = path.name.split("-")[:2]
    return f"{name}=={version} --hash=sha256:{sha256_file(path)}"


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def py(venv: Path, code: str) -> str:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


@dataclass
class Made:
    lock: Path
    bundle: Path
    digest: str
    index: StaticIndex
    venv: Path


@pytest.fixture
def made(
    tmp_path: Path,
    wheel_factory: WheelFactory,
    static_index: Callable[..., StaticIndex],
    venv_factory: Callable[..., Path],
    cli: Cli,
) -> Made:
    """A bundle of `alpha==1.0` (needs `beta`) and `beta==1.2`, made for a fresh venv."""
    alpha = wheel_factory(
        "alpha",
        "1.0",
        requires=["beta>=1"],
        files={"alpha/__init__.py": "from beta import B\nA = 'alpha ' + B\n"},
    )
    beta = wheel_factory("beta", "1.2", files={"beta/__init__.py": "B = 'beta'\n"})
    index = static_index()
    index.add(alpha)
    index.add(beta)
    lock = tmp_path / "requirements.txt"
    lock.write_text(f"{lock_line(alpha)}\n{lock_line(beta)}\n")
    venv = venv_factory()
    out = tmp_path / "app.safepip"
    result = cli(
        "bundle", "-r", str(lock), "-o", str(out), "--python", str(venv),
        "-i", index.url, "--cache-dir", str(tmp_path / "cache-build"), "--print-digest",
    )  # fmt: skip
    assert result.code == 0, result.err
    digest = result.out.strip()
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    return Made(lock=lock, bundle=out, digest=digest, index=index, venv=venv)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every attempt to open a connection is recorded and fails."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network is off for this test")

    def refuse_ex(self: socket.socket, address: object) -> int:
        attempts.append(address)
        return 111

    def refuse_create(address: object, *args: object, **kwargs: object) -> socket.socket:
        attempts.append(address)
        raise OSError("network is off for this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_ex)
    monkeypatch.setattr(socket, "create_connection", refuse_create)
    return attempts


class TestRoundTrip:
    def test_install_offline(
        self,
        made: Made,
        tmp_path: Path,
        cli: Cli,
        venv_factory: Callable[..., Path],
        no_network: list[object],
    ) -> None:
        made.index.close()
        dead = f"http://127.0.0.1:{_closed_port()}/simple/"
        target = venv_factory()
        result = cli(
            "install", "--bundle", str(made.bundle), "--expect-sha256", made.digest,
            "--python", str(target), "-i", dead, "--cache-dir", str(tmp_path / "cache-install"),
        )  # fmt: skip
        assert result.code == 0, result.err
        assert no_network == []
        assert f"Verified bundle `{made.bundle}` (2 wheels, the expected sha256 " in result.err
        assert "Auditing with the bundle's advisory data (" in result.err
        assert py(target, "import alpha; print(alpha.A)") == "alpha beta"
        record = json.loads(
            next(site_packages(target).glob("alpha-1.0.dist-info"))
            .joinpath("safepip.json")
            .read_text()
        )
        (tmp_path / "x").mkdir()
        opened = bundle_format.open_bundle(made.bundle, tmp_path / "x")
        assert record["sha256"] == sha256_file(opened.wheels["alpha-1.0-py3-none-any.whl"])

    def test_deterministic(self, made: Made, tmp_path: Path, cli: Cli) -> None:
        again = tmp_path / "again.safepip"
        result = cli(
            "bundle", "-r", str(made.lock), "-o", str(again), "--python", str(made.venv),
            "-i", made.index.url, "--cache-dir", str(tmp_path / "cache-other"),
        )  # fmt: skip
        assert result.code == 0, result.err
        assert again.read_bytes() == made.bundle.read_bytes()
        assert f"sha256 {made.digest}" in result.err

    def test_verify(self, made: Made, cli: Cli) -> None:
        result = cli("bundle", "verify", str(made.bundle), "--expect-sha256", made.digest)
        assert result.code == 0, result.err
        assert f"Verified bundle `{made.bundle}` (2 wheels, the expected sha256 " in result.err
        assert "alpha==1.0" in result.err

    def test_newer_local_database_is_used(
        self,
        made: Made,
        tmp_path: Path,
        cli: Cli,
        venv_factory: Callable[..., Path],
        no_network: list[object],
    ) -> None:
        from safepip.audit.database import import_database

        record = {
            "id": "PYSEC-2099-1",
            "modified": "2026-01-01T00:00:00Z",
            "summary": "beta leaks",
            "affected": [{"package": {"name": "beta", "ecosystem": "PyPI"}, "versions": ["1.2"]}],
        }
        osv = tmp_path / "osv"
        osv.mkdir()
        (osv / "PYSEC-2099-1.json").write_text(json.dumps(record))
        # `safepip db import` into the user data folder: the local database, newer than the
        # bundle's.
        import_database(osv, data_dir=tmp_path / "userdata", date=dt.date(2099, 1, 1))
        local = tmp_path / "userdata" / "advisory-db.zip"
        target = venv_factory()
        result = cli(
            "install", "--bundle", str(made.bundle), "--python", str(target),
            "--cache-dir", str(tmp_path / "cache-install"),
        )  # fmt: skip
        assert result.code == 5, result.err
        assert (
            f"Auditing with the local advisory database `{local}` (2099-01-01), newer than the "
            "bundle's (" in result.err
        )
        assert "PYSEC-2099-1" in result.err
        assert no_network == []


class TestRefused:
    """A bundle that is not exactly what was made is refused with exit 3 and nothing written."""

    def _refused(
        self,
        bundle: Path,
        cli: Cli,
        venv: Path,
        tree_snapshot: Callable[[Path], TreeSnapshot],
        *extra: str,
    ) -> CliResult:
        before = tree_snapshot(venv)
        result = cli(
            "install", "--bundle", str(bundle), "--python", str(venv), "--no-cache", *extra
        )
        assert result.code == 3, result.err
        assert tree_snapshot(venv) == before
        return result

    def test_error_tampered_wheel(
        self,
        made: Made,
        cli: Cli,
        tree_snapshot: Callable[[Path], TreeSnapshot],
        no_network: list[object],
    ) -> None:
        data = bytearray(made.bundle.read_bytes())
        at = data.index(b"beta/__init__.py")  # in the wheel's zip headers
        data[at] ^= 1
        made.bundle.write_bytes(bytes(data))
        result = self._refused(made.bundle, cli, made.venv, tree_snapshot)
        assert result.err.startswith(
            f"error: Refusing bundle `{made.bundle}`: sha256 mismatch: the manifest says "
        )
        assert "(member `wheels/beta-1.2-py3-none-any.whl`)" in result.err
        assert "hint: get the bundle again from its source" in result.err

    def test_wrong_digest(
        self, made: Made, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot]
    ) -> None:
        result = self._refused(
            made.bundle, cli, made.venv, tree_snapshot, "--expect-sha256", "ab" * 32
        )
        assert f"the file's sha256 is {made.digest}, not the expected {'ab' * 32}" in result.err

    def test_truncated(
        self, made: Made, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot]
    ) -> None:
        data = made.bundle.read_bytes()
        made.bundle.write_bytes(data[: len(data) - 2000])
        result = self._refused(made.bundle, cli, made.venv, tree_snapshot)
        assert "the file is truncated" in result.err

    def test_member_not_in_manifest(
        self, made: Made, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot]
    ) -> None:
        data = made.bundle.read_bytes()[:-1024]
        extra = b"import os\n"
        made.bundle.write_bytes(
            data
            + bundle_format._member_headers("wheels/evil-1.0-py3-none-any.whl", len(extra))
            + bundle_format._padded(extra)
            + bytes(1024)
        )
        result = self._refused(made.bundle, cli, made.venv, tree_snapshot)
        assert (
            "a member that is not in the manifest (member `wheels/evil-1.0-py3-none-any.whl`)"
            in result.err
        )

    def test_path_traversal(
        self, made: Made, cli: Cli, tree_snapshot: Callable[[Path], TreeSnapshot]
    ) -> None:
        data = made.bundle.read_bytes()[:-1024]
        name = "../" * 8 + "tmp/evil.pth"
        made.bundle.write_bytes(
            data + bundle_format._member_headers(name, 2) + bundle_format._padded(b"x\n")
            + bytes(1024)
        )  # fmt: skip
        result = self._refused(made.bundle, cli, made.venv, tree_snapshot)
        assert f"a member with a name that is not allowed (member `{name}`)" in result.err

    def test_verify_refuses(self, made: Made, cli: Cli) -> None:
        made.bundle.write_bytes(made.bundle.read_bytes()[:-1])
        result = cli("bundle", "verify", str(made.bundle))
        assert result.code == 3
        assert f"error: Refusing bundle `{made.bundle}`: " in result.err

    def test_error_other_platform(
        self,
        made: Made,
        tmp_path: Path,
        cli: Cli,
        tree_snapshot: Callable[[Path], TreeSnapshot],
    ) -> None:
        other = tmp_path / "mac.safepip"
        result = cli(
            "bundle", "-r", str(made.lock), "-o", str(other), "--python-version", "3.11",
            "--platform", "macosx_14_0_arm64", "-i", made.index.url, "--no-cache",
        )  # fmt: skip
        assert result.code == 0, result.err
        before = tree_snapshot(made.venv)
        result = cli("install", "--bundle", str(other), "--python", str(made.venv), "--no-cache")
        assert result.code == 2, result.err
        assert tree_snapshot(made.venv) == before
        here = py(made.venv, "import sys; print('%d.%d' % sys.version_info[:2])")
        assert f"error: Bundle `{other}` was made for `cpython 3.11 on macosx_14_0_arm64`" in (
            result.err
        )
        assert f"is `cpython {here} on " in result.err


class TestOptions:
    def test_several_targets(
        self,
        made: Made,
        tmp_path: Path,
        cli: Cli,
        venv_factory: Callable[..., Path],
    ) -> None:
        out = tmp_path / "two.safepip"
        result = cli(
            "bundle", "-r", str(made.lock), "-o", str(out), "--python", str(made.venv),
            "--python-version", "3.11", "--python-version", "3.12",
            "--platform", "macosx_14_0_arm64", "-i", made.index.url, "--no-cache",
        )  # fmt: skip
        assert result.code == 0, result.err
        # Audited once per target; the age of the advisory data is said once (issue 11).
        assert result.err.count("The advisory data is from") <= 1
        (tmp_path / "x").mkdir()
        manifest = bundle_format.open_bundle(out, tmp_path / "x").manifest
        assert [t.describe() for t in manifest.targets][1:] == [
            "cpython 3.11 on macosx_14_0_arm64",
            "cpython 3.12 on macosx_14_0_arm64",
        ]
        target = venv_factory()
        installed = cli("install", "--bundle", str(out), "--python", str(target), "--no-cache")
        assert installed.code == 0, installed.err

    def test_error_network_audit_refused(
        self, made: Made, cli: Cli, no_network: list[object]
    ) -> None:
        for option in ("--refresh", "--audit-source=osv"):
            result = cli(
                "install", "--bundle", str(made.bundle), "--python", str(made.venv), option
            )
            assert result.code == 2, result.err
            assert (
                "error: An install from a bundle never uses the network: `--audit-source osv` "
                "and `--refresh` cannot be used with `--bundle`"
            ) in result.err
        assert no_network == []

    def test_error_unhashed_lock(self, made: Made, tmp_path: Path, cli: Cli) -> None:
        loose = tmp_path / "requirements.in"
        loose.write_text("alpha==1.0\nbeta==1.2\n")
        out = tmp_path / "loose.safepip"
        result = cli(
            "bundle", "-r", str(loose), "-o", str(out), "--python", str(made.venv),
            "-i", made.index.url, "--no-cache",
        )  # fmt: skip
        assert result.code == 2, result.err
        assert "error: `safepip bundle` needs a hash-pinned lock" in result.err
        assert not out.exists()


# Loaded by every Python process of the run below (through PYTHONPATH): records each attempt
# to create an internet socket, connect, resolve a name or send a datagram. Unix sockets (a
# process pool may use them) are not the network.
SOCKET_PROBE = """
import os, socket, sys

_LOG = os.environ["SAFEPIP_SOCKET_LOG"]
_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto"}

def _probe(event, args):
    if event == "socket.__new__":
        if args[1] not in (socket.AF_INET, socket.AF_INET6):
            return
    elif event not in _EVENTS:
        return
    elif event == "socket.connect" and isinstance(args[1], (str, bytes)):
        return
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()} {event} {args[1:]!r}\\n")

sys.addaudithook(_probe)
"""


@pytest.mark.parametrize("command", ["install", "sync"])
def test_offline_install_opens_no_socket(
    made: Made, tmp_path: Path, venv_factory: Callable[..., Path], command: str
) -> None:
    """With an index configured (`-i` and `PIP_INDEX_URL`) on a closed loopback port, no
    process of the install creates an internet socket, resolves a name or connects; the probe
    is shown to catch safepip's own attempt to reach that port when it is asked to."""
    import os
    import sys

    made.index.close()
    dead = f"http://127.0.0.1:{_closed_port()}/simple/"
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(SOCKET_PROBE)
    log = tmp_path / "sockets.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env |= {
        "PYTHONPATH": str(probe),
        "SAFEPIP_SOCKET_LOG": str(log),
        "SAFEPIP_DATA_DIR": str(tmp_path / "userdata"),
        "PIP_INDEX_URL": dead,
        "PIP_CONFIG_FILE": os.devnull,
    }
    target = venv_factory()
    # The control: the same safepip, installing from the index, does try to connect.
    control = subprocess.run(
        [
            sys.executable,
            "-m",
            "safepip",
            "install",
            "alpha==1.0",
            "--python",
            str(target),
            "--retries",
            "0",
            "--no-cache",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert control.returncode != 0, control.stderr  # the port is closed
    assert "socket.connect" in log.read_text()
    log.unlink()

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "safepip",
            command,
            "--bundle",
            str(made.bundle),
            "--expect-sha256",
            made.digest,
            "--python",
            str(target),
            "-i",
            dead,
            "--cache-dir",
            str(tmp_path / "cache-offline"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not log.exists(), log.read_text()
    assert py(target, "import alpha; print(alpha.A)") == "alpha beta"
