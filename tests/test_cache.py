"""The shared cache end to end: the right file for each target, and what the cache trusts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wheelbuild import build_wheel, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Cli
    from servers import StaticIndex

PY310 = Path("/root/.pyenv/versions/3.10.13/bin/python3.10")


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def py(venv: Path, code: str) -> str:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def installed_record(venv: Path, name: str, version: str) -> dict[str, object]:
    dist_info = site_packages(venv) / f"{name}-{version}.dist-info"
    data: dict[str, object] = json.loads((dist_info / "safepip.json").read_text())
    return data


@pytest.mark.skipif(
    not PY310.exists() or sys.version_info[:2] != (3, 11), reason="needs Python 3.10 and 3.11"
)
def test_each_interpreter_gets_its_own_wheel_from_one_cache(
    tmp_path: Path,
    venv_factory: Callable[..., Path],
    static_index: Callable[..., StaticIndex],
    cli: Cli,
) -> None:
    """A lock pins every wheel of a version (as `safepip lock`, uv and pip-compile write them):
    the cache must hand each target the file chosen for it, never another file whose hash the
    pin also accepts (issue 8, item 5)."""
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    index = static_index()
    wheels: dict[str, Path] = {}
    for abi in ("cp310", "cp311"):
        wheels[abi] = build_wheel(
            tmp_path / abi,
            "binpkg",
            "1.0",
            tag=f"{abi}-{abi}-{platform}",
            files={"binpkg/__init__.py": f"BUILT_FOR = {abi!r}\n"},
            root_is_purelib=False,
        )
        index.add(wheels[abi])
    lock = "binpkg==1.0 " + " ".join(f"--hash=sha256:{sha256_file(w)}" for w in wheels.values())
    venvs = [
        ("cp311", venv_factory(sys.executable)),
        ("cp310", venv_factory(PY310)),
        ("cp311", venv_factory(sys.executable)),
        ("cp310", venv_factory(PY310)),
    ]
    for i, (abi, venv) in enumerate(venvs):
        # The last run has no index at all: the cache alone must still choose right.
        sources = ["-i", index.url] if i < 3 else ["--no-index"]
        code, _, err = cli("install", lock, "--python", str(venv), *sources, "--no-audit")
        assert code == 0, err
        assert py(venv, "import binpkg; print(binpkg.BUILT_FOR)") == abi
        record = installed_record(venv, "binpkg", "1.0")
        assert (record["filename"], record["sha256"]) == (
            wheels[abi].name,
            sha256_file(wheels[abi]),
        )


def test_cache_entries_are_keyed_by_file_and_digest(
    tmp_path: Path,
    venv_factory: Callable[..., Path],
    static_index: Callable[..., StaticIndex],
    cli: Cli,
) -> None:
    """Two wheels of one version with the same tags but different bytes, both pinned: the index
    lists only the second; the unpacked first one in the cache must not stand in for it."""
    first = build_wheel(tmp_path / "a", "twin", "1.0", files={"twin/__init__.py": "WHO = 'a'\n"})
    second = build_wheel(
        tmp_path / "b",
        "twin",
        "1.0",
        tag="py3-none-any",
        files={"twin/__init__.py": "WHO = 'b'\n"},
    )
    # Same filename, other bytes: keying by filename alone would mix them up too.
    assert first.name == second.name
    lock = f"twin==1.0 --hash=sha256:{sha256_file(first)} --hash=sha256:{sha256_file(second)}"
    index_a = static_index()
    index_a.add(first)
    venv = venv_factory()
    assert cli("install", lock, "--python", str(venv), "-i", index_a.url, "--no-audit").code == 0
    assert py(venv, "import twin; print(twin.WHO)") == "a"
    index_b = static_index()
    index_b.add(second)
    venv = venv_factory()
    assert cli("install", lock, "--python", str(venv), "-i", index_b.url, "--no-audit").code == 0
    # Either file is acceptable to the pin; what matters is that the record tells the truth.
    who = py(venv, "import twin; print(twin.WHO)")
    record = installed_record(venv, "twin", "1.0")
    assert record["sha256"] == sha256_file(first if who == "a" else second)


def cached_copy(cache: Path, relpath: str) -> Path:
    """The unpacked cache's copy of an installed file."""
    (found,) = [p for p in (cache / "unpacked").rglob(relpath) if p.is_file()]
    return found


def edit_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """What an attacker without privileges can do: same size, the old mtime put back."""
    before = path.stat()
    assert len(data) == before.st_size
    with path.open("r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns


class TestTrustModel:
    """Issue 8, item 6: what the cache trusts, and what each link mode protects."""

    @pytest.fixture
    def pkg(
        self, tmp_path: Path, static_index: Callable[..., StaticIndex]
    ) -> tuple[str, str, bytes]:
        wheel = build_wheel(
            tmp_path / "w", "cachepkg", "1.0", files={"cachepkg/__init__.py": "VALUE = 'good'\n"}
        )
        index = static_index()
        index.add(wheel)
        return f"cachepkg==1.0 --hash=sha256:{sha256_file(wheel)}", index.url, b"VALUE = 'good'\n"

    @pytest.mark.parametrize("mode", ["reflink", "copy", "hardlink"])
    def test_tampered_cache_file_never_reaches_a_new_environment(
        self,
        tmp_path: Path,
        venv_factory: Callable[..., Path],
        cli: Cli,
        pkg: tuple[str, str, bytes],
        mode: str,
    ) -> None:
        lock, url, good = pkg
        first = venv_factory()
        assert (
            cli(
                "install",
                lock,
                "--python",
                str(first),
                "-i",
                url,
                "--link-mode",
                mode,
                "--no-audit",
            ).code
            == 0
        )
        edit_keeping_size_and_mtime(
            cached_copy(tmp_path / "cache", "cachepkg/__init__.py"), b"VALUE = 'evil'\n"
        )
        fresh = venv_factory()
        code, _, err = cli(
            "install", lock, "--python", str(fresh), "-i", url, "--link-mode", mode, "--no-audit"
        )
        assert code == 0, err
        assert (
            "warning: The unpacked cache entry for `cachepkg-1.0-py3-none-any.whl` was modified"
            in err
        )
        assert (site_packages(fresh) / "cachepkg" / "__init__.py").read_bytes() == good
        assert cached_copy(tmp_path / "cache", "cachepkg/__init__.py").read_bytes() == good

    @pytest.mark.parametrize("args", [(), ("--link-mode", "copy"), ("--copy",)])
    def test_default_and_copy_modes_keep_environments_apart(
        self,
        tmp_path: Path,
        venv_factory: Callable[..., Path],
        cli: Cli,
        pkg: tuple[str, str, bytes],
        args: tuple[str, ...],
    ) -> None:
        lock, url, good = pkg
        a, b = venv_factory(), venv_factory()
        for venv in (a, b):
            assert (
                cli("install", lock, "--python", str(venv), "-i", url, *args, "--no-audit").code
                == 0
            )
        in_a = site_packages(a) / "cachepkg" / "__init__.py"
        cached = cached_copy(tmp_path / "cache", "cachepkg/__init__.py")
        assert in_a.stat().st_ino != cached.stat().st_ino
        edit_keeping_size_and_mtime(in_a, b"VALUE = 'evil'\n")
        assert (site_packages(b) / "cachepkg" / "__init__.py").read_bytes() == good
        assert cached.read_bytes() == good

    def test_hardlink_mode_shares_inodes_and_the_cache_notices_edits(
        self,
        tmp_path: Path,
        venv_factory: Callable[..., Path],
        cli: Cli,
        pkg: tuple[str, str, bytes],
    ) -> None:
        lock, url, good = pkg
        a = venv_factory()
        assert (
            cli(
                "install",
                lock,
                "--python",
                str(a),
                "-i",
                url,
                "--link-mode",
                "hardlink",
                "--no-audit",
            ).code
            == 0
        )
        in_a = site_packages(a) / "cachepkg" / "__init__.py"
        cached = cached_copy(tmp_path / "cache", "cachepkg/__init__.py")
        assert in_a.stat().st_ino == cached.stat().st_ino
        # A second hard-linked install reuses the entry (the stamps follow the new link)...
        b = venv_factory()
        assert (
            cli(
                "install",
                lock,
                "--python",
                str(b),
                "-i",
                url,
                "--link-mode",
                "hardlink",
                "--no-audit",
            ).code
            == 0
        )
        assert (site_packages(b) / "cachepkg" / "__init__.py").stat().st_ino == cached.stat().st_ino
        # ... and an edit made in one environment is not handed to the next one.
        edit_keeping_size_and_mtime(in_a, b"VALUE = 'evil'\n")
        c = venv_factory()
        assert (
            cli(
                "install",
                lock,
                "--python",
                str(c),
                "-i",
                url,
                "--link-mode",
                "hardlink",
                "--no-audit",
            ).code
            == 0
        )
        assert (site_packages(c) / "cachepkg" / "__init__.py").read_bytes() == good

    @pytest.mark.parametrize(
        ("mode", "owner", "reason"),
        [
            (0o777, None, "is writable by anyone (mode 0777)"),
            (0o770, None, "is writable by its group (mode 0770)"),
            (0o700, 65534, "belongs to another user (uid 65534, you are 0)"),
        ],
    )
    def test_error_cache_writable_by_others_is_refused(
        self,
        tmp_path: Path,
        venv_factory: Callable[..., Path],
        cli: Cli,
        pkg: tuple[str, str, bytes],
        mode: int,
        owner: int | None,
        reason: str,
    ) -> None:
        if owner is not None and os.geteuid() != 0:
            pytest.skip("changing a folder's owner needs root")
        lock, url, _ = pkg
        cache = tmp_path / "shared-cache"
        cache.mkdir()
        (cache / "unpacked").mkdir(mode=0o700)
        os.chmod(cache / "unpacked", mode)
        if owner is not None:
            os.chown(cache / "unpacked", owner, owner)
        venv = venv_factory()
        code, _, err = cli(
            "install", lock, "--python", str(venv), "-i", url, "--cache-dir", cache, "--no-audit"
        )
        assert code == 4
        assert err.splitlines()[0] == (
            f"error: Refusing the cache folder `{cache}`: `{cache / 'unpacked'}` {reason}"
        )
        assert f"hint: make it yours and private (`chmod go-w {cache}`)" in err
        assert not (site_packages(venv) / "cachepkg").exists()


def test_removing_a_hard_linked_environment_keeps_the_cache_warm(
    tmp_path: Path,
    venv_factory: Callable[..., Path],
    static_index: Callable[..., StaticIndex],
    cli: Cli,
) -> None:
    """Deleting an environment unlinks its hard links, which moves the cached files' ctimes:
    the files are hashed again and kept, not unpacked again."""
    wheel = build_wheel(tmp_path / "w", "keeppkg", "1.0")
    index = static_index()
    index.add(wheel)
    lock = f"keeppkg==1.0 --hash=sha256:{sha256_file(wheel)}"
    a = venv_factory()
    assert (
        cli(
            "install",
            lock,
            "--python",
            str(a),
            "-i",
            index.url,
            "--link-mode",
            "hardlink",
            "--no-audit",
        ).code
        == 0
    )
    cached = cached_copy(tmp_path / "cache", "keeppkg/__init__.py")
    inode = cached.stat().st_ino
    (site_packages(a) / "keeppkg" / "__init__.py").unlink()
    b = venv_factory()
    code, _, err = cli(
        "install",
        lock,
        "--python",
        str(b),
        "-i",
        index.url,
        "--link-mode",
        "hardlink",
        "--no-audit",
    )
    assert code == 0, err
    assert "cache entry" not in err
    assert (site_packages(b) / "keeppkg" / "__init__.py").stat().st_ino == inode


def test_warm_install_starts_no_process_pool(
    tmp_path: Path,
    venv_factory: Callable[..., Path],
    static_index: Callable[..., StaticIndex],
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every wheel already unpacked: nothing needs a worker, so no pool (and no fork server)
    is started for a warm install (issue 14)."""
    import concurrent.futures

    index = static_index()
    lines = []
    for name in ("one", "two", "three"):
        wheel = build_wheel(tmp_path / name, name, "1.0")
        index.add(wheel)
        lines.append(f"{name}==1.0 --hash=sha256:{sha256_file(wheel)}")
    lock = tmp_path / "requirements.txt"
    lock.write_text("\n".join(lines) + "\n")
    first = cli("install", "-r", lock, "--python", venv_factory(), "-i", index.url, "--no-audit")
    assert first.code == 0, first.err

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    venv = venv_factory()
    warm = cli("install", "-r", lock, "--python", venv, "-i", index.url, "--no-audit")
    assert warm.code == 0, warm.err
    assert py(venv, "import one, two, three; print(three.__version__)") == "1.0"


def test_warm_install_of_wheels_imports_neither_the_build_stage_nor_filelock(
    tmp_path: Path,
    venv_factory: Callable[..., Path],
    static_index: Callable[..., StaticIndex],
    cli: Cli,
) -> None:
    """Startup is part of a warm install's time: only sdists need `safepip.build`, and the
    environment lock is a plain flock (filelock only where there is no fcntl) (issue 14)."""
    index = static_index()
    wheel = build_wheel(tmp_path / "one", "one", "1.0")
    index.add(wheel)
    lock = tmp_path / "requirements.txt"
    lock.write_text(f"one==1.0 --hash=sha256:{sha256_file(wheel)}\n")
    args = ["install", "-r", str(lock), "-i", index.url, "--no-audit", "-q"]
    assert cli(*args, "--python", venv_factory()).code == 0
    code = (
        "import sys\n"
        "from safepip.cli import main\n"
        f"code = main({[*args, '--python', str(venv_factory())]!r})\n"
        "print(code, sorted(m for m in ('safepip.build', 'filelock') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "0 []", done.stderr
