"""Fetch the build backend wheels the build tests serve on loopback, once.

    python scripts/fetch_build_backends.py [-o tests/data/build-backends]

The tests of issue 13 build sdists with a real PEP 517 backend without reaching the network, so
the backend's wheel is committed under `tests/data/build-backends/`. This script downloads each
pinned wheel from PyPI and refuses any file whose sha256 is not the pinned one; run it again only
to change a pin (then update `PINS` and the attribution in that folder's README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import urllib.request
from pathlib import Path

PINS = {
    # flit_core has no dependencies: its wheel alone is a complete build environment.
    "flit_core-3.10.1-py3-none-any.whl": (
        "flit-core",
        "cb31a76e8b31ad3351bb89e531f64ef2b05d1e65bd939183250bf81ddf4922a8",
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(__file__).parent.parent / "tests/data/build-backends",
    )
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for filename, (project, sha256) in PINS.items():
        request = urllib.request.Request(
            f"https://pypi.org/simple/{project}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            page = json.load(response)
        url = next(f["url"] for f in page["files"] if f["filename"] == filename)
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise SystemExit(f"{filename}: sha256 {got}, expected {sha256}")
        (args.output / filename).write_bytes(data)
        print(f"{filename} {sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
