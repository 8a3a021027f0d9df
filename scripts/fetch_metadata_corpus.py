"""Build the corpus of real METADATA files for the metadata differential test, once.

    python scripts/fetch_metadata_corpus.py --wheels DIR [--pypi NAME==VERSION ...] \
        -o tests/data/metadata-corpus.zip

`--wheels DIR` takes the METADATA of the newest wheel of each project in a folder of wheels (a
local mirror of the most used projects); `--pypi NAME==VERSION` fetches that release's PEP 658
`.metadata` file from PyPI (one look-up per named release: pin the regression cases). Each file
is stored as `<name>-<version>.metadata` in a deflated zip. The script never runs package code.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
import zipfile
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

PYPI = "https://pypi.org"


def newest_wheels(folder: Path) -> dict[str, Path]:
    """The newest wheel of each project in `folder`, by version."""
    best: dict[str, tuple[Version, Path]] = {}
    for path in sorted(folder.glob("*.whl")):
        try:
            name, version, _, _ = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if name not in best or version > best[name][0]:
            best[name] = (version, path)
    return {name: path for name, (_, path) in best.items()}


def wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            parts = member.split("/")
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                return archive.read(member)
    raise ValueError(f"{path.name} has no METADATA")


def pypi_metadata(pin: str) -> tuple[str, bytes]:
    """The PEP 658 `.metadata` of the first wheel of `NAME==VERSION` on PyPI (PEP 691 JSON)."""
    name, _, version = pin.partition("==")
    request = urllib.request.Request(
        f"{PYPI}/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        page = json.load(response)
    for file in page["files"]:
        filename = file["filename"]
        # PyPI serves `.metadata` even where its JSON omits `core-metadata`
        if not filename.endswith(".whl"):
            continue
        if parse_wheel_filename(filename)[1] == Version(version):
            with urllib.request.urlopen(file["url"] + ".metadata", timeout=30) as response:
                return f"{name}-{version}", response.read()
    raise ValueError(f"{pin} has no wheel with PEP 658 metadata on PyPI")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="a folder of wheels")
    parser.add_argument("--pypi", action="append", default=[], metavar="NAME==VERSION")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    files: dict[str, bytes] = {}
    if args.wheels is not None:
        for name, path in sorted(newest_wheels(args.wheels).items()):
            version = parse_wheel_filename(path.name)[1]
            try:
                files[f"{name}-{version}"] = wheel_metadata(path)
            except (zipfile.BadZipFile, ValueError) as exc:
                print(f"skipped {path.name}: {exc}", file=sys.stderr)
    for pin in args.pypi:
        stem, data = pypi_metadata(pin)
        files[stem] = data
    with zipfile.ZipFile(args.output, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for stem, data in sorted(files.items()):
            info = zipfile.ZipInfo(f"{stem}.metadata", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    print(f"{len(files)} files, {args.output.stat().st_size} bytes: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
