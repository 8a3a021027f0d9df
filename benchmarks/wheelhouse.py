"""The benchmark wheelhouse: the workloads' pinned wheels, downloaded once, verified, indexed."""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from email.parser import BytesParser
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from pathlib import Path

    Log = Callable[[str], None]

PYPI_SIMPLE = "https://pypi.org/simple"
MANIFEST_VERSION = 2
WORKLOADS = ("small", "medium", "large")
# Index options that lock writers may emit; they do not change what the pins are.
_IGNORED_OPTIONS = ("--index-url", "-i ", "--extra-index-url", "--find-links", "--trusted-host")


class WheelhouseError(Exception):
    """The wheelhouse could not be built or does not match the locks."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Pin:
    """One `name==version` line of a hash-pinned lock."""

    name: NormalizedName
    version: Version
    hashes: frozenset[str]
    """Lower-case sha256 hex digests listed for this pin."""
    applies: bool
    """Whether the pin's marker (if any) holds for the running interpreter."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact:
    """A wheel in the wheelhouse, verified against its pin."""

    name: NormalizedName
    version: Version
    filename: str
    sha256: str
    size: int
    requires_python: str | None
    metadata_sha256: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Wheelhouse:
    """The verified wheelhouse: files under `root/packages/`, one index per workload."""

    root: Path
    artifacts: Mapping[str, tuple[Artifact, ...]]
    """Per workload, the wheels its lock installs on this platform."""

    def index_path(self, workload: str) -> str:
        """The URL path of a workload's simple index, to append to `http://host:port`."""
        return f"/{workload}/simple/"

    def expected(self, workload: str) -> frozenset[tuple[NormalizedName, Version]]:
        """The distributions a complete install of the workload's lock leaves behind."""
        return frozenset((a.name, a.version) for a in self.artifacts[workload])


def parse_lock(path: Path) -> list[Pin]:
    """Read the pins of a `uv pip compile --generate-hashes` lock.

    Handles continuation lines, comments and `--hash` options; other options are refused, since
    the workload locks never contain them.
    """
    text = path.read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    pins = []
    for line in logical:
        words = line.split()
        hashes = {w.split(":", 1)[1].lower() for w in words if w.startswith("--hash=sha256:")}
        requirement = " ".join(w for w in words if not w.startswith("--hash="))
        if requirement.startswith(_IGNORED_OPTIONS):
            continue
        if requirement.startswith("-"):
            raise WheelhouseError(f"{path}: unsupported option line {line!r}")
        req = Requirement(requirement)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or not hashes:
            raise WheelhouseError(f"{path}: {requirement!r} is not pinned with hashes")
        pins.append(
            Pin(
                name=canonicalize_name(req.name),
                version=Version(specs[0].version),
                hashes=frozenset(hashes),
                applies=req.marker is None or req.marker.evaluate(),
            )
        )
    return pins


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _lock_digest(workloads_dir: Path) -> str:
    digest = hashlib.sha256()
    for workload in WORKLOADS:
        digest.update((workloads_dir / f"{workload}.txt").read_bytes())
    return digest.hexdigest()


def load_or_build(
    *, cache: Path, workloads_dir: Path, pip: list[str], env: Mapping[str, str], log: Log
) -> Wheelhouse:
    """The verified wheelhouse under `cache`, downloading and indexing it first if needed.

    `pip` is the command that runs pip under a CPython 3.11 on the benchmark's platform, so
    `pip download` picks the files that the timed installs will pick.
    """
    root = cache / "wheelhouse"
    manifest_path = root / "manifest.json"
    lock_digest = _lock_digest(workloads_dir)
    if manifest_path.exists():
        try:
            house = _load(root, manifest_path, lock_digest)
        except WheelhouseError as exc:
            log(f"wheelhouse: rebuilding ({exc})")
        else:
            log(f"wheelhouse: verified {sum(map(len, house.artifacts.values()))} cached entries")
            return house
    return _build(
        root=root, workloads_dir=workloads_dir, pip=pip, env=env, lock_digest=lock_digest, log=log
    )


def _load(root: Path, manifest_path: Path, lock_digest: str) -> Wheelhouse:
    data = json.loads(manifest_path.read_text(encoding="utf-8"))
    if data.get("version") != MANIFEST_VERSION or data.get("locks_sha256") != lock_digest:
        raise WheelhouseError("the locks or the manifest format changed")
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    verified: dict[str, str] = {}
    for workload, entries in data["artifacts"].items():
        items = []
        for e in entries:
            path = root / "packages" / e["filename"]
            if e["filename"] not in verified:
                if not path.is_file() or path.stat().st_size != e["size"]:
                    raise WheelhouseError(f"{path.name} is missing or has the wrong size")
                verified[e["filename"]] = sha256_of(path)
            if verified[e["filename"]] != e["sha256"]:
                raise WheelhouseError(f"{path.name} does not match its recorded sha256")
            items.append(
                Artifact(
                    name=canonicalize_name(e["name"]),
                    version=Version(e["version"]),
                    filename=e["filename"],
                    sha256=e["sha256"],
                    size=e["size"],
                    requires_python=e["requires_python"],
                    metadata_sha256=e["metadata_sha256"],
                )
            )
        artifacts[workload] = tuple(items)
        if not (root / workload / "simple" / "index.html").is_file():
            raise WheelhouseError(f"the `{workload}` index is missing")
    return Wheelhouse(root=root, artifacts=artifacts)


def _build(
    *,
    root: Path,
    workloads_dir: Path,
    pip: list[str],
    env: Mapping[str, str],
    lock_digest: str,
    log: Log,
) -> Wheelhouse:
    packages = root / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    for workload in WORKLOADS:
        lock = workloads_dir / f"{workload}.txt"
        log(f"wheelhouse: downloading the wheels of {lock.name} from {PYPI_SIMPLE}")
        # Files left by an earlier workload are re-checked by pip against this lock's hashes.
        subprocess.run(
            [
                *pip,
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--require-hashes",
                "--disable-pip-version-check",
                "--index-url",
                PYPI_SIMPLE,
                "-r",
                str(lock),
                "-d",
                str(packages),
                "-q",
            ],
            env=dict(env),
            check=True,
        )
        artifacts[workload] = tuple(_match(parse_lock(lock), packages, lock))
    for workload, items in artifacts.items():
        _write_index(root / workload / "simple", items)
    manifest = {
        "version": MANIFEST_VERSION,
        "locks_sha256": lock_digest,
        "artifacts": {
            workload: [
                {
                    "name": a.name,
                    "version": str(a.version),
                    "filename": a.filename,
                    "sha256": a.sha256,
                    "size": a.size,
                    "requires_python": a.requires_python,
                    "metadata_sha256": a.metadata_sha256,
                }
                for a in items
            ]
            for workload, items in artifacts.items()
        },
    }
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    tmp.replace(root / "manifest.json")
    return Wheelhouse(root=root, artifacts=artifacts)


def _match(pins: Iterable[Pin], packages: Path, lock: Path) -> list[Artifact]:
    """The downloaded wheel of every applicable pin, each hash checked against the lock."""
    by_pin: dict[tuple[NormalizedName, Version], list[Path]] = {}
    for path in packages.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(path.name)
        by_pin.setdefault((name, version), []).append(path)
    found = []
    for pin in pins:
        if not pin.applies:
            continue
        candidates = [p for p in by_pin.get((pin.name, pin.version), []) if p.suffix == ".whl"]
        digests = {p: sha256_of(p) for p in candidates}
        good = [p for p, d in digests.items() if d in pin.hashes]
        if len(good) != 1:
            raise WheelhouseError(
                f"{lock.name}: expected exactly one wheel of {pin.name}=={pin.version} whose "
                f"sha256 is in the lock, found {[p.name for p in good]}"
            )
        found.append(_artifact(pin, good[0], digests[good[0]], packages))
    return found


def _artifact(pin: Pin, path: Path, digest: str, packages: Path) -> Artifact:
    with zipfile.ZipFile(path) as wheel:
        members = [
            n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
        ]
        if len(members) != 1:
            raise WheelhouseError(f"{path.name}: cannot find its METADATA")
        metadata = wheel.read(members[0])
    metadata_path = packages / f"{path.name}.metadata"
    metadata_path.write_bytes(metadata)
    requires_python = BytesParser().parsebytes(metadata, headersonly=True).get("Requires-Python")
    return Artifact(
        name=pin.name,
        version=pin.version,
        filename=path.name,
        sha256=digest,
        size=path.stat().st_size,
        requires_python=str(requires_python).strip() if requires_python else None,
        metadata_sha256=hashlib.sha256(metadata).hexdigest(),
    )


def _write_index(simple: Path, artifacts: Iterable[Artifact]) -> None:
    """A PEP 503 HTML and PEP 691 JSON simple index whose file links point at `/packages/`.

    Links are relative (`../../../packages/<file>`), so the index works on any host and port.
    PEP 658/714 metadata is announced, as the public index does.
    """
    if simple.exists():
        shutil.rmtree(simple)
    projects: dict[NormalizedName, list[Artifact]] = {}
    for a in artifacts:
        projects.setdefault(a.name, []).append(a)
    for name, files in sorted(projects.items()):
        folder = simple / name
        folder.mkdir(parents=True)
        anchors = []
        entries = []
        for a in sorted(files, key=lambda a: a.filename):
            url = f"../../../packages/{a.filename}"
            attrs = f' data-dist-info-metadata="sha256={a.metadata_sha256}"'
            attrs += f' data-core-metadata="sha256={a.metadata_sha256}"'
            if a.requires_python:
                attrs += f' data-requires-python="{html.escape(a.requires_python)}"'
            anchors.append(f'<a href="{url}#sha256={a.sha256}"{attrs}>{a.filename}</a><br>')
            entries.append(
                {
                    "filename": a.filename,
                    "url": url,
                    "hashes": {"sha256": a.sha256},
                    "requires-python": a.requires_python,
                    "size": a.size,
                    "core-metadata": {"sha256": a.metadata_sha256},
                    "dist-info-metadata": {"sha256": a.metadata_sha256},
                }
            )
        _write_text(
            folder / "index.html",
            '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.1">'
            f"<title>Links for {name}</title></head><body><h1>Links for {name}</h1>\n"
            + "\n".join(anchors)
            + "\n</body></html>\n",
        )
        versions = sorted({str(a.version) for a in files}, key=Version)
        _write_text(
            folder / "index.json",
            json.dumps(
                {
                    "meta": {"api-version": "1.1"},
                    "name": name,
                    "versions": versions,
                    "files": entries,
                }
            ),
        )
    names = sorted(projects)
    _write_text(
        simple / "index.html",
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.1">'
        "<title>Simple index</title></head><body>\n"
        + "\n".join(f'<a href="{n}/">{n}</a><br>' for n in names)
        + "\n</body></html>\n",
    )
    _write_text(
        simple / "index.json",
        json.dumps({"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}),
    )


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o644)
