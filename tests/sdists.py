"""Sdists the build tests make themselves (issue 13), and the backend wheels they serve.

`flit_sdist` is a pure-Python project with the real flit_core backend (its wheel is committed in
`tests/data/build-backends/`, see the README there). `intree_sdist` carries its own tiny PEP 517
backend (`backend-path`), so a test can make the backend do what it wants: ask for build
requirements, open a socket, record its environment, sleep, or build the wrong wheel.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import textwrap
from pathlib import Path

from packaging.utils import canonicalize_name

BACKENDS = Path(__file__).parent / "data" / "build-backends"
FLIT_CORE = BACKENDS / "flit_core-3.10.1-py3-none-any.whl"
FLIT_CORE_SHA256 = "cb31a76e8b31ad3351bb89e531f64ef2b05d1e65bd939183250bf81ddf4922a8"


def _pkg_info(
    name: str,
    version: str,
    *,
    metadata_version: str,
    dependencies: tuple[str, ...],
    dynamic: tuple[str, ...],
) -> str:
    lines = [f"Metadata-Version: {metadata_version}", f"Name: {name}", f"Version: {version}"]
    lines += [f"Dynamic: {d}" for d in dynamic]
    lines += [f"Requires-Dist: {d}" for d in dependencies]
    return "\n".join(lines) + "\n\n"


def write_sdist(
    dest: Path,
    name: str,
    version: str,
    files: dict[str, str | bytes],
    *,
    symlinks: dict[str, str] | None = None,
    top: str | None = None,
) -> Path:
    """`<name>-<version>.tar.gz` in `dest` holding `files` under one top folder (reproducible)."""
    dest.mkdir(parents=True, exist_ok=True)
    base = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    top = top or base
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{top}/{member}")
            info.size = len(data)
            info.mtime = 1_600_000_000
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        for member, link in (symlinks or {}).items():
            info = tarfile.TarInfo(f"{top}/{member}")
            info.type = tarfile.SYMTYPE
            info.linkname = link
            info.mtime = 1_600_000_000
            archive.addfile(info)
    path = dest / f"{base}.tar.gz"
    with (
        path.open("wb") as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed,
    ):
        compressed.write(raw.getvalue())
    return path


def flit_sdist(
    dest: Path,
    name: str,
    version: str,
    *,
    dependencies: tuple[str, ...] = (),
    metadata_version: str = "2.2",
    dynamic: tuple[str, ...] = (),
    requires: tuple[str, ...] = ("flit_core>=3.2,<4",),
) -> Path:
    """A pure-Python project built by flit_core; its module `<name>` has `VALUE = "<version>"`."""
    module = canonicalize_name(name).replace("-", "_")
    deps = ", ".join(f'"{d}"' for d in dependencies)
    reqs = ", ".join(f'"{r}"' for r in requires)
    pyproject = textwrap.dedent(
        f"""\
        [build-system]
        requires = [{reqs}]
        build-backend = "flit_core.buildapi"

        [project]
        name = "{name}"
        version = "{version}"
        description = "A test project built from its sdist"
        dependencies = [{deps}]
        """
    )
    return write_sdist(
        dest,
        name,
        version,
        {
            "PKG-INFO": _pkg_info(
                name,
                version,
                metadata_version=metadata_version,
                dependencies=dependencies,
                dynamic=dynamic,
            ),
            "pyproject.toml": pyproject,
            f"{module}/__init__.py": f'"""Built from an sdist."""\n\nVALUE = "{version}"\n',
        },
    )


_BACKEND = '''\
"""A PEP 517 backend in the source tree (for tests)."""
import base64, hashlib, json, os, sysconfig, zipfile

NAME, VERSION, MODULE, DIST = {name!r}, {version!r}, {module!r}, {dist!r}
DYNAMIC = {dynamic!r}
WHEEL_NAME = {wheel_name!r}


def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def get_requires_for_build_wheel(config_settings=None):
    return list(DYNAMIC)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
{prelude}
    info = DIST + "-" + VERSION + ".dist-info"
    meta = "Metadata-Version: 2.1\\nName: " + NAME + "\\nVersion: " + VERSION + "\\n"
    for dep in {dependencies!r}:
        meta += "Requires-Dist: " + dep + "\\n"
    files = {{
        MODULE + "/__init__.py": ("VALUE = " + repr(VERSION) + "\\n").encode(),
        MODULE + "/buildenv.json": json.dumps({{
            "env": dict(os.environ), "home": os.path.expanduser("~"), "cwd": os.getcwd(),
            "site": sorted(os.listdir(sysconfig.get_paths()["purelib"])),
        }}).encode(),
        info + "/METADATA": meta.encode(),
        info + "/WHEEL": (
            b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\n"
            b"Tag: py3-none-any\\n"
        ),
    }}
    record = "".join(p + "," + _digest(d) + "," + str(len(d)) + "\\n" for p, d in files.items())
    if {bad_record!r}:
        files[MODULE + "/__init__.py"] += b"# changed after RECORD was written\\n"
    record += info + "/RECORD,,\\n"
    name = WHEEL_NAME or (DIST + "-" + VERSION + "-py3-none-any.whl")
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(info + "/RECORD", record)
    return name
'''


def intree_sdist(
    dest: Path,
    name: str,
    version: str,
    *,
    prelude: str = "",
    dynamic: tuple[str, ...] = (),
    requires: tuple[str, ...] = (),
    dependencies: tuple[str, ...] = (),
    wheel_name: str | None = None,
    metadata_version: str = "2.1",
    pkg_info_name: str | None = None,
    bad_record: bool = False,
) -> Path:
    """A project whose backend lives in `_backend/backend.py`; `prelude` is Python run first in
    `build_wheel` (indented by the caller's text being dedented here)."""
    module = canonicalize_name(name).replace("-", "_")
    body = textwrap.indent(textwrap.dedent(prelude), "    ") if prelude.strip() else "    pass"
    backend = _BACKEND.format(
        name=name,
        version=version,
        module=module,
        dist=module,
        dynamic=tuple(dynamic),
        wheel_name=wheel_name,
        prelude=body,
        dependencies=tuple(dependencies),
        bad_record=bad_record,
    )
    reqs = ", ".join(f'"{r}"' for r in requires)
    pyproject = (
        f'[build-system]\nrequires = [{reqs}]\nbuild-backend = "backend"\n'
        'backend-path = ["_backend"]\n'
    )
    return write_sdist(
        dest,
        name,
        version,
        {
            "PKG-INFO": _pkg_info(
                pkg_info_name or name,
                version,
                metadata_version=metadata_version,
                dependencies=dependencies,
                dynamic=(),
            ),
            "pyproject.toml": pyproject,
            "_backend/backend.py": backend,
        },
    )
