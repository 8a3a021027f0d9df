"""Rebuild safepip's bundled advisory database from an OSV `all.zip` (or a folder of records).

Usage:
    python scripts/build_advisory_db.py SOURCE [--date YYYY-MM-DD] [--out PATH]

The default output is `src/safepip/audit/data/pypi-advisory-db.zip`. The date is the snapshot's
date; without `--date` it is the zip's newest member timestamp that is not in the future (never
the records' `modified` fields, some of which are in the future). The output is reproducible:
the same input and date give the same bytes. The data is CC BY 4.0: keep
`src/safepip/audit/data/LICENSE-CC-BY-4.0.txt` and `NOTICE.md` next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from safepip.audit import database  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an OSV all.zip or a folder of OSV JSON files")
    parser.add_argument("--date", type=dt.date.fromisoformat, help="the snapshot date")
    parser.add_argument("--out", type=Path, default=database.SHIPPED)
    parser.add_argument(
        "--source-name", help="how `db status` names the source (default: the file name)"
    )
    args = parser.parse_args(argv)
    date = args.date or database.osv_snapshot_date(args.source)
    digest = database.file_sha256(args.source) if args.source.is_file() else None
    info = database.build_database(
        database.OsvReader(args.source),
        args.out,
        date=date,
        source=args.source_name or args.source.name,
        source_sha256=digest,
    )
    size = args.out.stat().st_size
    print(
        f"{args.out}: {info.records} records, {info.packages} packages, "
        f"{info.withdrawn} withdrawn left out, data as of {info.data_date}, {size:,} bytes, "
        f"sha256 {database.file_sha256(args.out)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
