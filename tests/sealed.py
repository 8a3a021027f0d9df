"""Hand-made `.dist-info` folders exactly as safepip leaves them: an install record listed in a
RECORD and sealed with this user's install key (see `safepip.seal`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from safepip import seal
from safepip.install import ARTIFACT_RECORD
from wheelbuild import record_digest

if TYPE_CHECKING:
    from pathlib import Path


def write_sealed_record(info: Path, record: dict[str, object], *, sealed: bool = True) -> None:
    """Write `record` as the install record of the `.dist-info` folder `info` (which holds a
    METADATA), list every file of the folder in its RECORD and, when `sealed`, seal it."""
    (info / ARTIFACT_RECORD).write_text(json.dumps(record), "utf-8")
    (info / "INSTALLER").write_text("safepip\n", "utf-8")
    rows = [
        f"{info.name}/{p.name},{record_digest(p.read_bytes())},{p.stat().st_size}\n"
        for p in sorted(info.iterdir())
        if p.name not in ("RECORD", seal.SEAL_FILE)
    ]
    rows += [f"{info.name}/{seal.SEAL_FILE},,\n", f"{info.name}/RECORD,,\n"]
    data = "".join(rows).encode()
    (info / "RECORD").write_bytes(data)
    if sealed:
        key = seal.load_key(create=True)
        assert key is not None
        (info / seal.SEAL_FILE).write_bytes(seal.make(key, info.name, data))
