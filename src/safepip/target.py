"""The target environment: its interpreter, tags, markers, scheme paths and installed packages.

The target interpreter is consulted through one subprocess that prints JSON; safepip itself may run
from another environment and another Python version (as with pipx). The probe result is cached per
interpreter (keyed by its path and modification times), so a no-op run does not start Python twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from packaging import tags as ptags
from packaging.tags import Tag
from packaging.utils import NormalizedName, canonicalize_name

from safepip.errors import ExitCode, SafepipError, UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PROBE_VERSION = 3

# Runs inside the target interpreter. It borrows safepip's own `packaging` (pure Python) only to
# compute the wheel tags the way pip does; everything else comes from the target's stdlib.
_PROBE_ANSWER = r"""
def _safepip_probe(mode, where, tags):
    import os, sys, sysconfig, platform
    def impl_version():
        v = sys.implementation.version
        s = "{0.major}.{0.minor}.{0.micro}".format(v)
        if v.releaselevel != "final":
            s += v.releaselevel[0] + str(v.serial)
        return s
    markers = {
        "implementation_name": sys.implementation.name,
        "implementation_version": impl_version(),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }
    if mode == "prefix":
        scheme = "nt" if os.name == "nt" else "posix_prefix"
        roots = ("base", "platbase", "installed_base", "installed_platbase")
        paths = sysconfig.get_paths(scheme, vars={k: where for k in roots})
    else:
        paths = sysconfig.get_paths()
    return {
        "executable": sys.executable,
        "version": list(sys.version_info[:3]),
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "markers": markers,
        "tags": list(tags.sys_tags()),
        "paths": {k: paths[k] for k in ("purelib", "platlib", "scripts", "data", "include")},
        "stdlib": sysconfig.get_paths()["stdlib"],
    }
"""
_PROBE = (
    _PROBE_ANSWER
    + r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from packaging import tags
sys.path.pop(0)
print(json.dumps(_safepip_probe(sys.argv[2], sys.argv[3], tags), default=str))
"""
)

# What would make this interpreter answer the probe otherwise in a subprocess started with
# `-I`, which ignores them: they move its prefix or its library folders.
_LOCATION_VARIABLES = ("PYTHONHOME", "PYTHONPLATLIBDIR", "PYTHONEXECUTABLE")


def _is_this_interpreter(python: Path) -> bool:
    """Whether `python` is the interpreter running safepip, spelt as it was started, in an
    environment where asking it here answers what the probe subprocess would."""
    if not sys.executable or str(python) != sys.executable or sys.flags.no_site:
        return False
    return bool(sys.flags.ignore_environment) or not any(
        os.environ.get(name) for name in _LOCATION_VARIABLES
    )


def _probe_here(mode: str, where: str) -> dict[str, object]:
    """The probe's answer for the running interpreter, computed in this process (its tags as
    `Tag` objects: printing and parsing 900 of them again cost more than the rest)."""
    from packaging import tags

    namespace: dict[str, object] = {}
    exec(_PROBE_ANSWER, namespace)  # safepip's own constant, the code the probe runs
    probe_fn = namespace["_safepip_probe"]
    assert callable(probe_fn)
    answer: dict[str, object] = probe_fn(mode, where, tags)
    return answer


class TargetError(SafepipError):
    """The target environment cannot be used."""


class NoEnvironmentError(TargetError):
    """No target was named and none was found (a usage error: say which one)."""

    exit_code = ExitCode.USAGE


class InterpreterError(TargetError):
    """`--python` (or the interpreter found) is not a Python that safepip can inspect."""

    exit_code = ExitCode.USAGE


class ExternallyManagedError(TargetError):
    """PEP 668: the interpreter's distributor manages its packages (a policy refusal)."""

    exit_code = ExitCode.POLICY

    def __init__(self, python: Path, text: str) -> None:
        super().__init__(
            f"Refusing to install into `{python}`: it is externally managed (PEP 668)\n\n{text}",
            hint=(
                "create a virtual environment (`python -m venv .venv`) and pass `--python .venv`, "
                "or override with `--break-system-packages`"
            ),
        )
        self.python = python


@dataclass(frozen=True, kw_only=True, slots=True)
class SchemePaths:
    """Where each part of a wheel goes (the install scheme of PEP 427 / sysconfig)."""

    purelib: Path
    platlib: Path
    scripts: Path
    data: Path
    headers: Path
    """The folder that holds one header folder per distribution, named as the requirement
    spells it (pip's `get_scheme(dist_name)`)."""

    def as_dict(self) -> dict[str, str]:
        return {
            "purelib": str(self.purelib),
            "platlib": str(self.platlib),
            "scripts": str(self.scripts),
            "data": str(self.data),
            "headers": str(self.headers),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """An interpreter and the folders that an install writes to."""

    python: Path
    """The target interpreter (used for shebangs and markers)."""
    version: tuple[int, int, int]
    markers: Mapping[str, str]
    """PEP 508 environment of the target interpreter."""
    tags: tuple[Tag, ...]
    """Supported wheel tags, most preferred first."""
    paths: SchemePaths
    prefix: Path
    is_virtualenv: bool
    externally_managed: Path | None
    kind: str = "env"
    """`env` (the interpreter's own scheme), `target` (`--target DIR`) or `prefix`
    (`--prefix DIR`)."""

    @property
    def python_version(self) -> str:
        return ".".join(map(str, self.version))

    def tag_priority(self) -> dict[Tag, int]:
        """Tag → rank (lower is preferred); computed once per tag list."""
        return _priority(self.tags)

    def site_dirs(self) -> tuple[Path, ...]:
        """Folders that hold `.dist-info` directories (purelib and platlib, deduplicated)."""
        if self.paths.purelib == self.paths.platlib:
            return (self.paths.purelib,)
        return (self.paths.purelib, self.paths.platlib)


_PRIORITIES: dict[int, tuple[tuple[Tag, ...], dict[Tag, int]]] = {}


def _priority(tags: tuple[Tag, ...]) -> dict[Tag, int]:
    # Keyed by identity: hashing a thousand tags on every call would cost more than the dict.
    cached = _PRIORITIES.get(id(tags))
    if cached is None or cached[0] is not tags:
        cached = (tags, {tag: i for i, tag in enumerate(tags)})
        _PRIORITIES[id(tags)] = cached
    return cached[1]


def find_python(
    python: str | None, *, system: bool, environ: Mapping[str, str] | None = None
) -> Path:
    """The interpreter to install into: `--python`, else `$VIRTUAL_ENV`, else `./.venv`.

    A system interpreter is used only with `system=True` (`--system`).
    """
    env = os.environ if environ is None else environ
    if python:
        return _interpreter_of(Path(python), given=python)
    if system:
        found = shutil.which("python3") or shutil.which("python")
        if not found:
            raise TargetError("No `python3` found on `PATH` for `--system`")
        return Path(found)
    if env.get("VIRTUAL_ENV"):
        return _interpreter_of(Path(env["VIRTUAL_ENV"]), given=env["VIRTUAL_ENV"])
    if Path(".venv").is_dir():
        return _interpreter_of(Path(".venv"), given=".venv")
    raise NoEnvironmentError(
        "No virtual environment to install into: `VIRTUAL_ENV` is not set and there is no `.venv`",
        hint=(
            "pass `--python PATH` (an interpreter or a venv folder), create one with "
            "`python -m venv .venv`, or use `--system` to install into the system interpreter"
        ),
    )


def _interpreter_of(path: Path, *, given: str) -> Path:
    if path.is_dir():
        for candidate in (
            path / "bin" / "python",
            path / "bin" / "python3",
            path / "Scripts" / "python.exe",
        ):
            if candidate.exists():
                return candidate.absolute()
        raise UsageError(
            f"`{given}` is a folder but has no `bin/python`",
            hint="pass a virtual environment folder or the path of a Python interpreter",
        )
    if path.exists():
        return path.absolute()
    found = shutil.which(str(path))
    if found:
        return Path(found)
    raise UsageError(f"Python interpreter `{given}` does not exist")


def _cache_key(python: Path, mode: str, where: str) -> str:
    parts = [str(PROBE_VERSION), str(python), mode, where]
    for candidate in (python, python.resolve(), python.parent.parent / "pyvenv.cfg"):
        try:
            st = candidate.stat()
            parts.append(f"{candidate}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append(f"{candidate}:-")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _template_key(python: Path) -> tuple[str, str] | None:
    """For an interpreter of a virtual environment: a key naming its base interpreter and its
    `pyvenv.cfg` (not the folder), and the folder; None when a probe of another environment
    cannot stand in for this one.

    Every venv made from one base interpreter with the same `pyvenv.cfg` settings answers the
    probe alike but for its own folder in the paths: one probe serves them all (a new venv in a
    Dockerfile or CI job would otherwise cost an interpreter start). Only a folder spelled without
    symbolic links qualifies, so no spelling question can arise, and only an interpreter that is a
    link to the base (a `--copies` venv is probed on its own).
    """
    prefix = python.parent.parent
    cfg = prefix / "pyvenv.cfg"
    try:
        if os.path.realpath(prefix) != str(prefix) or not python.is_symlink():
            return None
        base = python.resolve(strict=True)
        st = base.stat()
        settings = [
            line.strip()
            for line in cfg.read_text("utf-8").splitlines()
            if not line.strip().startswith("command")  # names the venv's folder
        ]
    except (OSError, ValueError, RuntimeError):
        return None
    parts = [
        str(PROBE_VERSION),
        "venv-template",
        f"{python.parent.name}/{python.name}",
        str(base),
        f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}",
        *settings,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32], str(prefix)


_TEMPLATE_FIELDS = ("executable", "prefix")
_VENV = "\0venv\0"


def _to_template(data: dict[str, object], prefix: str) -> dict[str, object] | None:
    """The probe answer with the venv's folder replaced by a placeholder, or None when the
    answer does not have the shape a venv's always has (its own folder as `prefix`)."""
    if data.get("prefix") != prefix:
        return None
    out = dict(data)

    def swap(value: object) -> object:
        if isinstance(value, str) and (value == prefix or value.startswith(prefix + os.sep)):
            return _VENV + value[len(prefix) :]
        return value

    for key in _TEMPLATE_FIELDS:
        out[key] = swap(data.get(key))
    paths = data.get("paths")
    if not isinstance(paths, dict):
        return None
    swapped = {k: swap(v) for k, v in paths.items()}
    out["paths"] = swapped
    if any(
        isinstance(v, str) and not v.startswith(_VENV) and prefix in v
        for v in (out.get("base_prefix"), out.get("stdlib"), *swapped.values())
    ):
        return None  # the folder appears where a plain swap would not put it back
    return out


def _from_template(template: dict[str, object], prefix: str) -> dict[str, object]:
    def put(value: object) -> object:
        if isinstance(value, str) and value.startswith(_VENV):
            return prefix + value[len(_VENV) :]
        return value

    out = dict(template)
    for key in _TEMPLATE_FIELDS:
        out[key] = put(template.get(key))
    paths = template.get("paths")
    assert isinstance(paths, dict)
    out["paths"] = {k: put(v) for k, v in paths.items()}
    return out


def _write_json(path: Path, data: object) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), "utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def _run_probe(python: Path, mode: str, where: str, cache_dir: Path | None) -> dict[str, object]:
    if _is_this_interpreter(python):
        # safepip runs in the target (`safepip lock` with no environment named, or a tool
        # installed into the environment it manages): no second interpreter to start.
        return _probe_here(mode, where)
    cache_file = (
        cache_dir / "targets" / f"{_cache_key(python, mode, where)}.json" if cache_dir else None
    )
    if cache_file is not None:
        try:
            data: dict[str, object] = json.loads(cache_file.read_text("utf-8"))
            return data
        except (OSError, ValueError):
            pass
    template = _template_key(python) if cache_dir is not None and mode == "env" else None
    template_file = (
        cache_dir / "targets" / f"venv-{template[0]}.json"
        if cache_dir is not None and template is not None
        else None
    )
    if template is not None and template_file is not None:
        try:
            found = json.loads(template_file.read_text("utf-8"))
            data = _probe_answer(python, json.dumps(_from_template(found, template[1])))
            return data
        except (OSError, ValueError, AssertionError, InterpreterError):
            pass
    import packaging

    packaging_parent = str(Path(packaging.__file__).resolve().parent.parent)
    try:
        proc = subprocess.run(
            [str(python), "-I", "-c", _PROBE, packaging_parent, mode, where],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
        )
    except OSError as exc:
        raise InterpreterError(
            f"`{python}` is not a Python interpreter: it cannot be run ({exc.strerror})"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise InterpreterError(
            f"`{python}` is not a usable Python interpreter: it did not answer within 60 s"
        ) from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InterpreterError(
            f"`{python}` is not a usable Python interpreter: it exited with status "
            f"{proc.returncode} ({last})",
            hint="safepip supports target interpreters of Python 3.8 and newer",
        )
    data = _probe_answer(python, proc.stdout)
    if cache_file is not None:
        _write_json(cache_file, data)
    if template is not None and template_file is not None:
        shape = _to_template(data, template[1])
        if shape is not None:
            _write_json(template_file, shape)
    return data


_PROBE_KEYS = {
    "version": list,
    "prefix": str,
    "base_prefix": str,
    "markers": dict,
    "tags": list,
    "paths": dict,
    "stdlib": str,
}


def _probe_answer(python: Path, stdout: str) -> dict[str, object]:
    """The probe's JSON, checked for the fields `probe` reads (a program that is not Python may
    print anything)."""
    try:
        data = json.loads(stdout)
    except ValueError:
        data = None
    if not isinstance(data, dict) or any(
        not isinstance(data.get(key), kind) for key, kind in _PROBE_KEYS.items()
    ):
        raise InterpreterError(
            f"`{python}` is not a Python interpreter: it did not answer safepip's probe"
        )
    return data


def probe(
    python: str | Path,
    *,
    target_dir: Path | None = None,
    prefix: Path | None = None,
    cache_dir: Path | None = None,
) -> Target:
    """Inspect `python` and return the environment an install would write to.

    With `target_dir` (`--target`) packages go flat into that folder and scripts into its `bin`;
    with `prefix` (`--prefix`) the interpreter's prefix scheme is rooted at that folder.
    """
    python = Path(python)
    mode, where = "env", ""
    if prefix is not None:
        mode, where = "prefix", str(prefix.absolute())
    data = _run_probe(python, mode, where, cache_dir)
    raw_paths = data["paths"]
    assert isinstance(raw_paths, dict)
    paths = SchemePaths(
        purelib=Path(raw_paths["purelib"]),
        platlib=Path(raw_paths["platlib"]),
        scripts=Path(raw_paths["scripts"]),
        data=Path(raw_paths["data"]),
        headers=Path(raw_paths["include"]),
    )
    kind = mode
    version = data["version"]
    assert isinstance(version, list)
    is_virtualenv = data["prefix"] != data["base_prefix"]
    if target_dir is not None:
        root = target_dir.absolute()
        paths = SchemePaths(
            purelib=root,
            platlib=root,
            scripts=root / "bin",
            data=root,
            headers=_headers_root(root, version, is_virtualenv),
        )
        kind = "target"
    elif is_virtualenv:
        base = Path(where) if mode == "prefix" else Path(str(data["prefix"]))
        paths = replace(paths, headers=_headers_root(base, version, is_virtualenv))
    markers = data["markers"]
    assert isinstance(markers, dict)
    raw_tags = data["tags"]
    assert isinstance(raw_tags, list)
    tags = tuple(t if isinstance(t, Tag) else Tag(*str(t).split("-", 2)) for t in raw_tags)
    # PEP 668's marker is looked for on every run (one stat), never cached with the probe: it is
    # added by distributors and removed in Dockerfiles after the interpreter was first seen.
    marker = Path(str(data["stdlib"])) / "EXTERNALLY-MANAGED"
    return Target(
        python=python,
        version=(int(version[0]), int(version[1]), int(version[2])),
        markers={str(k): str(v) for k, v in markers.items()},
        tags=tags,
        paths=paths,
        prefix=Path(str(data["prefix"])),
        is_virtualenv=is_virtualenv,
        externally_managed=marker if marker.is_file() else None,
        kind=kind,
    )


def _headers_root(base: Path, version: Sequence[object], is_virtualenv: bool) -> Path:
    """Where pip puts `.data/headers` (pip `_internal/locations/_sysconfig.py`): in a virtual
    environment (also with `--prefix` or `--target`) `<base>/include/site/pythonX.Y`, never the
    base interpreter's `include` that sysconfig names; for `--target` from a system interpreter
    `<dir>/include/python` (the `posix_home` scheme that pip's `--target` uses)."""
    if is_virtualenv:
        return base / "include" / "site" / f"python{version[0]}.{version[1]}"
    return base / "include" / "python"  # only reached for --target


def check_externally_managed(target: Target, *, break_system_packages: bool) -> None:
    """PEP 668: refuse a distributor-managed interpreter unless the user overrides it."""
    if target.kind != "env" or target.is_virtualenv or target.externally_managed is None:
        return
    if break_system_packages:
        return
    import configparser

    text = "The interpreter is managed by its distributor."
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(target.externally_managed, encoding="utf-8")
        text = parser.get("externally-managed", "Error", fallback=text)
    except (OSError, configparser.Error):
        pass
    raise ExternallyManagedError(target.python, text)


@dataclass(frozen=True, kw_only=True, slots=True)
class InstalledDistribution:
    """A `.dist-info` folder found in the target's site folders."""

    name: NormalizedName
    display_name: str
    version: str
    dist_info: Path
    installer: str | None
    damage: str | None = None
    """What is torn in this `.dist-info` (`METADATA is missing`, `RECORD is empty`, …), as a
    crash or power cut in the middle of another installer's work leaves it; None when intact."""

    @property
    def has_metadata(self) -> bool:
        """Whether its METADATA was read (name and version come from it, not the folder name)."""
        return self.damage is None or not self.damage.startswith("METADATA")

    def read_text(self, filename: str) -> str | None:
        try:
            return (self.dist_info / filename).read_text("utf-8")
        except OSError:
            return None


def _read_name_version(metadata: Path) -> tuple[str, str] | None:
    name = version = None
    try:
        with metadata.open("r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "name":
                    name = value.strip()
                elif key == "version":
                    version = value.strip()
                if name and version:
                    break
    except OSError:
        return None
    if name is None or version is None:
        return None
    return name, version


def _metadata_damage(metadata: Path) -> str:
    try:
        size = metadata.stat().st_size
    except FileNotFoundError:
        return "METADATA is missing"
    except OSError:
        return "METADATA is unreadable"
    return "METADATA is empty" if size == 0 else "METADATA is incomplete"


def _record_damage(record: Path) -> str | None:
    try:
        size = record.stat().st_size
    except FileNotFoundError:
        return "RECORD is missing"
    except OSError:
        return "RECORD is unreadable"
    return "RECORD is empty" if size == 0 else None


def installed_distributions(
    target: Target, *, damaged: bool = False
) -> tuple[InstalledDistribution, ...]:
    """Every distribution installed in the target's site folders, read from `.dist-info`.

    Reads files only (no subprocess); `.egg-info` installs are not reported. One per name (the
    first folder in name order). A distribution whose RECORD is missing or empty is reported with
    its `damage`. `.dist-info` folders without a usable METADATA are left out unless `damaged`:
    then they follow the others, named and versioned by their folder name, with their `damage`
    (those are what `verify` reports and a repair install replaces).
    """
    found: dict[NormalizedName, InstalledDistribution] = {}
    torn: list[InstalledDistribution] = []
    for site in target.site_dirs():
        try:
            entries = sorted(os.scandir(site), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith(".dist-info") or not entry.is_dir():
                continue
            path = Path(entry.path)
            installer = None
            nv = _read_name_version(path / "METADATA")
            if nv is None:
                stem = entry.name[: -len(".dist-info")]
                folder_name, _, folder_version = stem.rpartition("-")
                if not damaged or not folder_name:
                    continue
                with contextlib.suppress(OSError):
                    installer = (path / "INSTALLER").read_text("utf-8").strip() or None
                torn.append(
                    InstalledDistribution(
                        name=canonicalize_name(folder_name),
                        display_name=folder_name,
                        version=folder_version,
                        dist_info=path,
                        installer=installer,
                        damage=_metadata_damage(path / "METADATA"),
                    )
                )
                continue
            name = canonicalize_name(nv[0])
            if name in found:
                continue
            with contextlib.suppress(OSError):
                installer = (path / "INSTALLER").read_text("utf-8").strip() or None
            found[name] = InstalledDistribution(
                name=name,
                display_name=nv[0],
                version=nv[1],
                dist_info=path,
                installer=installer,
                damage=_record_damage(path / "RECORD"),
            )
    return (*found.values(), *torn)


def current_python() -> Path:
    return Path(sys.executable)


# --- the synthetic target -------------------------------------------------------------------


def synthetic_target(python_version: str, platforms: Sequence[str] = ()) -> Target:
    """A `Target` for another machine: CPython `python_version` on the given platform tags.

    With no platforms, the platforms of the machine safepip runs on are used. `manylinux` and
    `macosx` platform tags are widened the way installers do (a `manylinux_2_28` machine also
    takes `manylinux_2_17` wheels). The result has no interpreter and no folders: it is for
    choosing versions and files, not for installing.
    """
    parts = python_version.split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts) or parts[0] != "3":
        raise UsageError(
            f"`--python-version {python_version}` is not a Python 3 version",
            hint="give it as `3.X` or `3.X.Y`, e.g. `--python-version 3.11`",
        )
    version = (int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 0)
    wanted = list(platforms) or list(ptags.platform_tags())
    expanded = list(dict.fromkeys(p for given in wanted for p in _widen_platform(given)))
    tags: list[Tag] = list(ptags.cpython_tags(version[:2], platforms=expanded))
    tags += [
        t for t in ptags.compatible_tags(version[:2], f"cp3{version[1]}", expanded) if t not in tags
    ]
    markers = _platform_markers(wanted[0] if wanted else "any")
    full = ".".join(map(str, version))
    markers |= {
        "implementation_name": "cpython",
        "implementation_version": full,
        "platform_python_implementation": "CPython",
        "python_full_version": full,
        "python_version": f"{version[0]}.{version[1]}",
        "platform_release": "",
        "platform_version": "",
    }
    nowhere = Path("/nonexistent")
    return Target(
        python=Path(f"<python {full}>"),
        version=version,
        markers=markers,
        tags=tuple(tags),
        paths=SchemePaths(
            purelib=nowhere, platlib=nowhere, scripts=nowhere, data=nowhere, headers=nowhere
        ),
        prefix=nowhere,
        is_virtualenv=True,
        externally_managed=None,
        kind="synthetic",
    )


_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def _widen_platform(platform: str) -> list[str]:
    platform = platform.replace("-", "_").replace(".", "_").lower()
    for legacy, (major, minor) in _LEGACY_MANYLINUX.items():
        if platform.startswith(legacy + "_"):
            platform = f"manylinux_{major}_{minor}_{platform[len(legacy) + 1 :]}"
    parts = platform.split("_")
    if parts[0] == "manylinux" and len(parts) >= 4 and parts[1].isdigit() and parts[2].isdigit():
        arch = "_".join(parts[3:])
        major, top = int(parts[1]), int(parts[2])
        out = [f"manylinux_{major}_{m}_{arch}" for m in range(top, 4, -1)]
        out += [f"{legacy}_{arch}" for legacy, mm in _LEGACY_MANYLINUX.items() if mm[1] <= top]
        return [*out, f"linux_{arch}"]
    if parts[0] == "musllinux" and len(parts) >= 4 and parts[2].isdigit():
        arch = "_".join(parts[3:])
        return [f"musllinux_{parts[1]}_{m}_{arch}" for m in range(int(parts[2]), -1, -1)] + [
            f"linux_{arch}"
        ]
    if parts[0] == "macosx" and len(parts) >= 4 and parts[1].isdigit() and parts[2].isdigit():
        arch = "_".join(parts[3:])
        return list(ptags.mac_platforms((int(parts[1]), int(parts[2])), arch))
    return [platform]


def _platform_markers(platform: str) -> dict[str, str]:
    if platform.startswith(("manylinux", "musllinux", "linux")):
        arch = platform.split("_", 3)[-1] if platform.count("_") >= 3 else platform.split("_", 1)[1]
        return {
            "os_name": "posix",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": arch,
        }
    if platform.startswith("macosx"):
        arch = platform.split("_", 3)[-1]
        return {
            "os_name": "posix",
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "platform_machine": "arm64" if arch in ("arm64", "universal2") else arch,
        }
    if platform.startswith("win"):
        machine = {"win32": "x86", "win_amd64": "AMD64", "win_arm64": "ARM64"}.get(platform, "")
        return {
            "os_name": "nt",
            "sys_platform": "win32",
            "platform_system": "Windows",
            "platform_machine": machine,
        }
    return {"os_name": "posix", "sys_platform": "", "platform_system": "", "platform_machine": ""}
