"""Whether an installed distribution is kept, verified and frozen rests on its install seal
(`safepip.seal`), never on `safepip.json` alone: end to end, with real wheels on a loopback
index, real venvs, pip as the tool that lets the forgery in, and the genuine install after it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from safepip import seal
from wheelbuild import build_wheel, record_digest, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import Cli
    from servers import StaticIndex

SITE = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"


def site_packages(venv: Path) -> Path:
    return venv / SITE


def forged_victim(sha256: str, *, seal_line: bytes | None) -> dict[str, bytes]:
    """What the attacker's wheel plants for `victim 1.0`, relative to site-packages: the
    metadata, `INSTALLER: safepip`, an install record naming the genuine wheel's public sha256,
    a RECORD that matches all of it, optionally a made-up seal, and the hijacked module."""
    info = "victim-1.0.dist-info"
    files = {
        "victim/__init__.py": b"HIJACKED = True\n",
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: victim\nVersion: 1.0\n\n",
        f"{info}/INSTALLER": b"safepip\n",
        f"{info}/safepip.json": json.dumps(
            {
                "name": "victim",
                "version_installed": "1.0",
                "filename": "victim-1.0-py3-none-any.whl",
                "sha256": sha256,
            }
        ).encode(),
    }
    if seal_line is not None:
        files[f"{info}/{seal.SEAL_FILE}"] = seal_line
    record = "".join(f"{p},{record_digest(d)},{len(d)}\n" for p, d in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    return files


@pytest.fixture
def victim(tmp_path: Path, static_index: Callable[..., StaticIndex]) -> tuple[Path, StaticIndex]:
    folder = tmp_path / "genuine"
    folder.mkdir()
    wheel = build_wheel(folder, "victim", "1.0", files={"victim/__init__.py": "GENUINE = True\n"})
    index = static_index()
    index.add(wheel)
    return wheel, index


SEALS = {
    "no seal (the attack as first seen)": None,
    "a made-up seal": b"safepip-seal-v1:" + b"0" * 64 + b"\n",
    "a seal made with another key": seal.make(os.urandom(32), "victim-1.0.dist-info", b""),
}


class TestForgedInstallRecord:
    @pytest.mark.parametrize("seal_line", list(SEALS.values()), ids=list(SEALS))
    def test_forged_record_is_refused_then_never_trusted(
        self,
        tmp_path: Path,
        victim: tuple[Path, StaticIndex],
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        cli: Cli,
        seal_line: bytes | None,
    ) -> None:
        genuine, index = victim
        sha = sha256_file(genuine)
        planted = forged_victim(sha, seal_line=seal_line)
        evil_dir = tmp_path / "evil"
        evil_dir.mkdir()
        evil = build_wheel(
            evil_dir,
            "evil",
            "1.0",
            files={"evil/__init__.py": ""},
            data_files={f"data/{SITE}/{p}": d for p, d in planted.items()},
        )
        index.add(evil)
        lock = tmp_path / "lock.txt"
        lock.write_text(f"victim==1.0 --hash=sha256:{sha}\n")
        cache = str(tmp_path / "cache")
        venv = venv_factory()

        # safepip refuses the evil wheel outright, before touching the environment.
        before = tree_snapshot(venv)
        evil_pin = f"evil==1.0 --hash=sha256:{sha256_file(evil)}"
        code, _, err = cli(
            "install", evil_pin, "--python", str(venv), "-i", index.url,
            "--cache-dir", cache, "--no-audit",
        )  # fmt: skip
        assert code == 3, err
        assert (
            "error: Refusing wheel `evil-1.0-py3-none-any.whl`: it would write into the "
            "metadata folder `victim-1.0.dist-info` through its `.data` folder (member "
            f"`evil-1.0.data/data/{SITE}/victim-1.0.dist-info/"
        ) in err
        assert tree_snapshot(venv) == before

        # pip installs it (it does not look inside `.data/data`): the environment now claims
        # that safepip installed the genuine `victim` wheel.
        subprocess.run(
            [
                sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                "install", "--no-deps", "--no-index", "--isolated", str(evil),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        info = site_packages(venv) / "victim-1.0.dist-info"
        assert (info / "INSTALLER").read_text() == "safepip\n"
        assert json.loads((info / "safepip.json").read_text())["sha256"] == sha

        # `verify -r` does not take the record's word for it.
        code, _, err = cli("verify", "--python", str(venv), "-r", str(lock))
        assert code == 3, err
        if seal_line is None:
            assert "`victim`: not installed from a file whose hash the lock pins (no valid " in err
        else:
            assert (
                f"`victim==1.0`: {info / seal.SEAL_FILE} is forged or modified (the install "
                "seal does not match the `.dist-info` folder)"
            ) in err

        # The genuine, hash-pinned install replaces the forgery instead of keeping it.
        code, _, err = cli(
            "install", "-r", str(lock), "--python", str(venv), "-i", index.url,
            "--cache-dir", cache, "--no-audit",
        )  # fmt: skip
        assert code == 0, err
        assert "kept" not in err
        assert "replaced 1" in err
        module = site_packages(venv) / "victim" / "__init__.py"
        assert module.read_text() == "GENUINE = True\n"
        code, _, err = cli("verify", "--python", str(venv), "-r", str(lock))
        assert "`victim" not in err
        # evil's own RECORD still lists the files it planted, which now hold victim's bytes.

    def test_genuine_install_is_kept_and_a_tampered_record_is_not(
        self,
        tmp_path: Path,
        victim: tuple[Path, StaticIndex],
        venv_factory: Callable[..., Path],
        cli: Cli,
    ) -> None:
        genuine, index = victim
        sha = sha256_file(genuine)
        lock = tmp_path / "lock.txt"
        lock.write_text(f"victim==1.0 --hash=sha256:{sha}\n")
        venv = venv_factory()
        args = ["-r", str(lock), "--python", str(venv), "-i", index.url, "--no-audit"]
        args += ["--cache-dir", str(tmp_path / "cache")]
        assert cli("install", *args).code == 0
        info = site_packages(venv) / "victim-1.0.dist-info"
        assert (info / seal.SEAL_FILE).read_bytes().startswith(b"safepip-seal-v1:")
        assert f"victim-1.0.dist-info/{seal.SEAL_FILE},," in (info / "RECORD").read_text()
        code, _, err = cli("install", *args)
        assert (code, "kept 1 already installed" in err) == (0, True), err
        assert cli("verify", "--python", str(venv), "-r", str(lock)).code == 0

        # Someone edits the install record in place (its RECORD row no longer matches).
        record = json.loads((info / "safepip.json").read_text())
        record["url"] = "https://example.invalid/"
        (info / "safepip.json").write_text(json.dumps(record))
        code, _, err = cli("verify", "--python", str(venv), "-r", str(lock))
        assert code == 3
        assert "is forged or modified (the install seal does not match" in err
        code, _, err = cli("install", *args)
        assert (code, "replaced 1" in err) == (0, True), err
        assert cli("verify", "--python", str(venv), "-r", str(lock)).code == 0

    def test_without_this_users_key_nothing_is_kept(
        self,
        tmp_path: Path,
        victim: tuple[Path, StaticIndex],
        venv_factory: Callable[..., Path],
        cli: Cli,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        genuine, index = victim
        lock = tmp_path / "lock.txt"
        lock.write_text(f"victim==1.0 --hash=sha256:{sha256_file(genuine)}\n")
        venv = venv_factory()
        args = ["-r", str(lock), "--python", str(venv), "-i", index.url, "--no-audit"]
        args += ["--cache-dir", str(tmp_path / "cache")]
        assert cli("install", *args).code == 0
        monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "other-data"))
        code, _, err = cli("verify", "--python", str(venv), "-r", str(lock))
        assert code == 3
        assert "warning: `victim==1.0`: sealed with an install key this user does not have" in err
        assert "`victim`: not installed from a file whose hash the lock pins" in err
        code, _, err = cli("install", *args)
        assert (code, "replaced 1" in err) == (0, True), err
        assert (tmp_path / "other-data" / seal.KEY_FILE).stat().st_mode & 0o777 == 0o600
        assert cli("verify", "--python", str(venv), "-r", str(lock)).code == 0

    def test_a_wheels_own_copies_of_safepips_files_are_never_installed(
        self,
        tmp_path: Path,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        cli: Cli,
    ) -> None:
        info = "sly-1.0.dist-info"
        shipped = {
            f"{info}/INSTALLER": "pip\n",
            f"{info}/safepip.json": '{"sha256": "' + "0" * 64 + '"}',
            f"{info}/{seal.SEAL_FILE}": "safepip-seal-v1:" + "0" * 64 + "\n",
        }
        folder = tmp_path / "sly"
        folder.mkdir()
        wheel = build_wheel(
            folder,
            "sly",
            "1.0",
            data_files={f"purelib/{info}/REQUESTED": "x"},
            files={"sly/__init__.py": "", **shipped},
        )
        index = static_index()
        index.add(wheel)
        venv = venv_factory()
        lock = tmp_path / "lock.txt"
        lock.write_text(f"sly==1.0 --hash=sha256:{sha256_file(wheel)}\n")
        args = ["-r", str(lock), "--python", str(venv), "-i", index.url, "--no-audit"]
        code, _, err = cli("install", *args, "--cache-dir", str(tmp_path / "cache"))
        assert code == 0, err
        installed = site_packages(venv) / info
        assert (installed / "INSTALLER").read_text() == "safepip\n"
        assert json.loads((installed / "safepip.json").read_text())["sha256"] == sha256_file(wheel)
        assert (installed / "REQUESTED").read_text() == ""
        assert seal.check(installed) is seal.SealState.VALID
        record = (installed / "RECORD").read_text().splitlines()
        assert len(record) == len({row.split(",")[0] for row in record})
        assert cli("verify", "--python", str(venv), "-r", str(lock)).code == 0

    def test_error_install_key_of_another_user(
        self,
        tmp_path: Path,
        victim: tuple[Path, StaticIndex],
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        cli: Cli,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        if os.getuid() != 0:
            pytest.skip("giving a file to another user needs root")
        genuine, index = victim
        monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "data"))
        seal.load_key(create=True)
        key = seal.key_path()
        os.chown(key, 4321, 4321)
        seal._loaded.clear()
        venv = venv_factory()
        before = tree_snapshot(venv)
        code, _, err = cli(
            "install", f"victim==1.0 --hash=sha256:{sha256_file(genuine)}",
            "--python", str(venv), "-i", index.url, "--no-audit",
            "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert code == 4
        assert (
            f"error: Refusing the install key: the key file `{key}` belongs to another user "
            "(uid 4321)"
        ) in err
        assert tree_snapshot(venv) == before

    def test_error_install_key_folder_writable_by_others(
        self,
        tmp_path: Path,
        victim: tuple[Path, StaticIndex],
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        cli: Cli,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Whoever can write the folder can swap the key for one they know."""
        genuine, index = victim
        folder = tmp_path / "data"
        monkeypatch.setenv("SAFEPIP_DATA_DIR", str(folder))
        seal.load_key(create=True)
        folder.chmod(0o777)
        seal._loaded.clear()
        venv = venv_factory()
        before = tree_snapshot(venv)
        code, _, err = cli(
            "install", f"victim==1.0 --hash=sha256:{sha256_file(genuine)}",
            "--python", str(venv), "-i", index.url, "--no-audit",
            "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert code == 4
        assert (
            f"error: Refusing the install key: its folder `{folder}` can be written by other "
            "users (mode 0777)"
        ) in err
        assert f"hint: `chmod go-w {folder}`" in err
        assert tree_snapshot(venv) == before

    @pytest.mark.parametrize("mode", [0o644, 0o620, 0o604])
    def test_error_install_key_open_to_others(
        self,
        tmp_path: Path,
        victim: tuple[Path, StaticIndex],
        venv_factory: Callable[..., Path],
        tree_snapshot: Callable[[Path], object],
        cli: Cli,
        monkeypatch: pytest.MonkeyPatch,
        mode: int,
    ) -> None:
        genuine, index = victim
        monkeypatch.setenv("SAFEPIP_DATA_DIR", str(tmp_path / "data"))
        seal.load_key(create=True)
        key = seal.key_path()
        key.chmod(mode)
        seal._loaded.clear()
        venv = venv_factory()
        before = tree_snapshot(venv)
        code, _, err = cli(
            "install", f"victim==1.0 --hash=sha256:{sha256_file(genuine)}",
            "--python", str(venv), "-i", index.url, "--no-audit",
            "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert code == 4
        assert (
            f"error: Refusing the install key: the key file `{key}` can be read or written by "
            f"other users (mode {mode:04o})"
        ) in err
        assert f"hint: `chmod 600 {key}`" in err
        assert tree_snapshot(venv) == before


class TestOtherHashAlgorithms:
    """Pins with only sha384 or sha512 digests: kept and verified by those digests, never by
    an empty set of sha256 digests."""

    @pytest.mark.parametrize("algorithm", ["sha384", "sha512"])
    def test_other_build_of_the_same_version_is_replaced(
        self,
        tmp_path: Path,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        cli: Cli,
        algorithm: str,
    ) -> None:
        builds = {}
        for label in ("a", "b"):
            folder = tmp_path / label
            folder.mkdir()
            builds[label] = build_wheel(
                folder, "gamma", "1.0", files={"gamma/__init__.py": f"BUILD = {label!r}\n"}
            )
        first, second = static_index(), static_index()
        first.add(builds["a"])
        second.add(builds["b"])
        venv = venv_factory()
        cache = str(tmp_path / "cache")
        code, _, err = cli(
            "install", f"gamma==1.0 --hash=sha256:{sha256_file(builds['a'])}",
            "--python", str(venv), "-i", first.url, "--cache-dir", cache, "--no-audit",
        )  # fmt: skip
        assert code == 0, err
        digest = hashlib.new(algorithm, builds["b"].read_bytes()).hexdigest()
        lock = tmp_path / "lock.txt"
        lock.write_text(f"gamma==1.0 --hash={algorithm}:{digest}\n")

        code, _, err = cli("verify", "--python", str(venv), "-r", str(lock))
        assert code == 3
        assert "`gamma`: not installed from a file whose hash the lock pins" in err

        args = ["-r", str(lock), "--python", str(venv), "-i", second.url]
        args += ["--cache-dir", cache, "--no-audit"]
        code, _, err = cli("install", *args)
        assert code == 0, err
        assert "replaced 1" in err
        assert (site_packages(venv) / "gamma" / "__init__.py").read_text() == "BUILD = 'b'\n"
        assert cli("verify", "--python", str(venv), "-r", str(lock)).code == 0
        # The record now holds the pinned algorithm's digest: the next run keeps the package.
        code, _, err = cli("install", *args)
        assert (code, "kept 1 already installed" in err) == (0, True), err


class TestOverwrittenFiles:
    """A wheel may overwrite another installed distribution's file (pip lets it): that
    distribution is then no longer what safepip installed and must not be kept."""

    def test_overwritten_distribution_loses_its_seal_and_is_reinstalled(
        self,
        tmp_path: Path,
        victim: tuple[Path, StaticIndex],
        venv_factory: Callable[..., Path],
        cli: Cli,
    ) -> None:
        genuine, index = victim
        folder = tmp_path / "evil"
        folder.mkdir()
        evil = build_wheel(
            folder,
            "evil",
            "1.0",
            files={"evil/__init__.py": "", "victim/__init__.py": "HIJACKED = True\n"},
        )
        index.add(evil)
        lock = tmp_path / "lock.txt"
        lock.write_text(f"victim==1.0 --hash=sha256:{sha256_file(genuine)}\n")
        venv = venv_factory()
        common = ["--python", str(venv), "-i", index.url, "--no-audit"]
        common += ["--cache-dir", str(tmp_path / "cache")]
        assert cli("install", "-r", str(lock), *common).code == 0
        module = site_packages(venv) / "victim" / "__init__.py"

        code, _, err = cli("install", f"evil==1.0 --hash=sha256:{sha256_file(evil)}", *common)
        assert code == 0, err
        assert module.read_text() == "HIJACKED = True\n"
        assert (
            f"warning: `victim==1.0`: `{module}` replaced by a file of `evil==1.0`; its install "
            "seal was removed, so the next install reinstalls it"
        ) in err
        assert not (site_packages(venv) / "victim-1.0.dist-info" / seal.SEAL_FILE).exists()

        code, _, err = cli("verify", "--python", str(venv), "-r", str(lock))
        assert code == 3
        assert f"`victim==1.0`: {module} is modified" in err

        code, _, err = cli("install", "-r", str(lock), *common)
        assert (code, "replaced 1" in err, "kept" in err) == (0, True, False), err
        assert module.read_text() == "GENUINE = True\n"

    def test_identical_shared_file_changes_nothing(
        self,
        tmp_path: Path,
        static_index: Callable[..., StaticIndex],
        venv_factory: Callable[..., Path],
        cli: Cli,
    ) -> None:
        """Old-style namespace packages ship the same `__init__.py` in several wheels."""
        shared = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
        index = static_index()
        lines = []
        for name in ("ns-one", "ns-two"):
            folder = tmp_path / name
            folder.mkdir()
            module = name.replace("-", "_")
            wheel = build_wheel(
                folder, name, "1.0", files={"ns/__init__.py": shared, f"ns/{module}.py": ""}
            )
            index.add(wheel)
            lines.append(f"{name}==1.0 --hash=sha256:{sha256_file(wheel)}")
        venv = venv_factory()
        common = ["--python", str(venv), "-i", index.url, "--no-audit"]
        common += ["--cache-dir", str(tmp_path / "cache")]
        assert cli("install", lines[0], *common).code == 0
        code, _, err = cli("install", lines[1], *common)
        assert (code, "replaced by a file" in err) == (0, False), err
        both = tmp_path / "both.txt"
        both.write_text("\n".join(lines) + "\n")
        code, _, err = cli("install", "-r", str(both), *common)
        assert (code, "kept 2 already installed" in err) == (0, True), err
