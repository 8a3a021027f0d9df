"""Hostile but correctly hash-pinned wheels, end to end: real bytes from a loopback index, a real
venv, and a refusal that leaves the venv byte-for-byte as it was."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from conftest import Environment
from rawzip import RawEntry, build, entries_of, wheel_files
from safepip import seal
from wheelbuild import record_digest, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import Cli
    from servers import StaticIndex


def with_record(files: dict[str, bytes], dist_info: str = "demo-1.0.dist-info") -> dict[str, bytes]:
    """`files` with a RECORD that lists every one of them honestly."""
    record_name = f"{dist_info}/RECORD"
    body = "".join(
        f"{path},{record_digest(data)},{len(data)}\n"
        for path, data in files.items()
        if path != record_name
    )
    return {
        **{k: v for k, v in files.items() if k != record_name},
        record_name: (body + f"{record_name},,\n").encode(),
    }


@pytest.fixture
def attempt(
    tmp_path: Path,
    venv_factory: Callable[..., Path],
    static_index: Callable[..., StaticIndex],
    cli: Cli,
) -> Callable[[bytes], tuple[int, str]]:
    """Serve these wheel bytes as `demo-1.0-py3-none-any.whl`, install them hash-pinned into a
    fresh venv (or `venv`), check the venv is unchanged, and give (exit code, stderr)."""

    def run(data: bytes, venv: Path | None = None) -> tuple[int, str]:
        wheel = tmp_path / "dist" / "demo-1.0-py3-none-any.whl"
        wheel.parent.mkdir(exist_ok=True)
        wheel.write_bytes(data)
        index = static_index()
        index.add(wheel, metadata=False)
        environment = Environment(venv or venv_factory(), cli)
        line = f"demo==1.0 --hash=sha256:{sha256_file(wheel)}"
        code, _, err = environment.install(line, "-i", index.url, "--no-audit")
        environment.assert_unchanged()
        return code, err

    return run


def refusal(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("error: "))


class TestAmbiguousArchives:
    def test_error_second_local_header_for_a_member(
        self, attempt: Callable[[bytes], tuple[int, str]]
    ) -> None:
        files = wheel_files()
        evil = RawEntry("demo/__init__.py", b"import os\nos.system('id')\n")
        code, err = attempt(build(entries_of(files), hidden=[evil]))
        assert code == 3
        assert refusal(err) == (
            "error: Refusing wheel `demo-1.0-py3-none-any.whl`: ambiguous or malformed zip "
            "archive: multiple local headers for one name (member `demo/__init__.py`)"
        )

    def test_error_sizes_disagree(self, attempt: Callable[[bytes], tuple[int, str]]) -> None:
        entries = entries_of(wheel_files())
        entries[0] = RawEntry(entries[0].name, entries[0].data, local={"usize": 1})
        code, err = attempt(build(entries))
        assert code == 3
        assert "uncompressed size differs between local header and central directory" in err
        assert "(member `demo/__init__.py`)" in err

    def test_error_zip_bomb(self, attempt: Callable[[bytes], tuple[int, str]]) -> None:
        files = wheel_files(extra={"demo/data.bin": b"x" * 1000})
        entries = entries_of(files)
        bomb = b"\0" * (32 << 20)
        entries = [
            RawEntry(e.name, bomb, central={"usize": 1000}, local={"usize": 1000})
            if e.name == "demo/data.bin"
            else e
            for e in entries
        ]
        code, err = attempt(build(entries))
        assert code == 3
        assert refusal(err) == (
            "error: Refusing wheel `demo-1.0-py3-none-any.whl`: member inflates to more than "
            "its declared size (member `demo/data.bin`)"
        )


VICTIM = {
    "victim-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: victim\nVersion: 1.0\n\n",
    "victim-1.0.dist-info/INSTALLER": b"safepip\n",
    "victim/__init__.py": b"hijacked = True\n",
}


class TestForeignMetadata:
    """A wheel must not be able to make the environment claim another distribution."""

    def test_error_second_dist_info(self, attempt: Callable[[bytes], tuple[int, str]]) -> None:
        files = with_record({**wheel_files(), **VICTIM})
        code, err = attempt(build(entries_of(files)))
        assert code == 3
        assert refusal(err) == (
            "error: Refusing wheel `demo-1.0-py3-none-any.whl`: a wheel must have exactly one "
            "`.dist-info` folder, for `demo` (found `demo-1.0.dist-info`, "
            "`victim-1.0.dist-info`)"
        )

    @pytest.mark.parametrize(
        ("member", "rule"),
        [
            (
                "victim.egg-info/PKG-INFO",
                "it carries the metadata folder `victim.egg-info` of another distribution (only "
                "`demo-1.0.dist-info` is allowed) (member `victim.egg-info/PKG-INFO`)",
            ),
            (
                "demo-1.0.data/purelib/victim-1.0.dist-info/METADATA",
                "it carries the metadata folder `victim-1.0.dist-info` of another distribution "
                "(only `demo-1.0.dist-info` is allowed) (member `victim-1.0.dist-info/METADATA`)",
            ),
            (
                "victim-1.0.data/purelib/victim/__init__.py",
                "`.data` folder `victim-1.0.data` does not match the wheel's own (`demo-1.0.data`)",
            ),
        ],
    )
    def test_error_foreign_metadata_or_data(
        self, attempt: Callable[[bytes], tuple[int, str]], member: str, rule: str
    ) -> None:
        files = with_record({**wheel_files(), member: b"Name: victim\n"})
        code, err = attempt(build(entries_of(files)))
        assert code == 3
        assert refusal(err) == f"error: Refusing wheel `demo-1.0-py3-none-any.whl`: {rule}"


SITE = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"


class TestInstallTimeLayout:
    """Members that pass the archive checks but would land where no wheel may write, once
    their `.data` scheme is mapped onto the target's folders: refused (exit 3) before the
    environment is touched."""

    @pytest.mark.parametrize(
        ("member", "rule"),
        [
            (
                f"demo-1.0.data/data/{SITE}/victim-1.0.dist-info/METADATA",
                "it would write into the metadata folder `victim-1.0.dist-info` through its "
                f"`.data` folder (member `demo-1.0.data/data/{SITE}/victim-1.0.dist-info/"
                "METADATA`)",
            ),
            (
                f"demo-1.0.data/data/{SITE}/victim.egg-info/PKG-INFO",
                "it would write into the metadata folder `victim.egg-info` through its `.data` "
                f"folder (member `demo-1.0.data/data/{SITE}/victim.egg-info/PKG-INFO`)",
            ),
            (
                "demo-1.0.data/lib/victim.py",
                "`.data` scheme `lib` is not one of purelib, platlib, headers, scripts, data "
                "(member `demo-1.0.data/lib/victim.py`)",
            ),
            (
                "demo-1.0.data/scripts",
                "`.data` scheme `scripts` is not one of purelib, platlib, headers, scripts, "
                "data (member `demo-1.0.data/scripts`)",
            ),
        ],
    )
    def test_error_member_lands_where_no_wheel_may_write(
        self, attempt: Callable[[bytes], tuple[int, str]], member: str, rule: str
    ) -> None:
        files = with_record({**wheel_files(), member: b"Name: victim\n"})
        code, err = attempt(build(entries_of(files)))
        assert code == 3
        assert refusal(err) == f"error: Refusing wheel `demo-1.0-py3-none-any.whl`: {rule}"
        assert "Traceback" not in err

    def test_error_write_into_safepips_own_data_folder(
        self,
        attempt: Callable[..., tuple[int, str]],
        monkeypatch: pytest.MonkeyPatch,
        venv_factory: Callable[..., Path],
    ) -> None:
        """With safepip's data folder under the target's prefix (say `--prefix ~/.local`), a
        wheel could otherwise replace the install key that seals every install."""
        venv = venv_factory()
        monkeypatch.setenv("SAFEPIP_DATA_DIR", str(venv / "share" / "safepip"))
        key = seal.load_key(create=True)
        member = "demo-1.0.data/data/share/safepip/install-key"
        files = with_record({**wheel_files(), member: b"k" * 32})
        code, err = attempt(build(entries_of(files)), venv=venv)
        assert code == 3
        assert refusal(err) == (
            "error: Refusing wheel `demo-1.0-py3-none-any.whl`: it would write into safepip's "
            f"own data folder (member `{member}`)"
        )
        assert seal.key_path().read_bytes() == key

    @pytest.mark.parametrize("name", ["../../evil", "sub/evil", ".."])
    def test_error_entry_point_name_leaves_the_scripts_folder(
        self, attempt: Callable[[bytes], tuple[int, str]], name: str
    ) -> None:
        entry_points = f"[console_scripts]\n{name} = demo:main\n".encode()
        files = with_record({**wheel_files(), "demo-1.0.dist-info/entry_points.txt": entry_points})
        code, err = attempt(build(entries_of(files)))
        assert code == 3
        assert refusal(err) == (
            f"error: Refusing wheel `demo-1.0-py3-none-any.whl`: entry point name `{name}` is "
            "not a plain file name (it would leave the scripts folder) (member "
            "`demo-1.0.dist-info/entry_points.txt`)"
        )

    @pytest.mark.parametrize(
        "member",
        [
            "demo/" + "n" * 300 + ".py",  # one name longer than NAME_MAX
            "demo/" + "/".join(["d" * 200] * 22) + "/x.py",  # a path longer than PATH_MAX
        ],
    )
    def test_error_member_path_longer_than_the_file_system_allows(
        self, attempt: Callable[[bytes], tuple[int, str]], member: str
    ) -> None:
        files = with_record({**wheel_files(), member: b"X = 1\n"})
        code, err = attempt(build(entries_of(files)))
        assert code == 3
        assert refusal(err) == (
            "error: Refusing wheel `demo-1.0-py3-none-any.whl`: a member's path is longer than "
            f"the file system allows (member `{member}`)"
        )
        assert "Traceback" not in err
