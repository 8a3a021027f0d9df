"""`safepip db`: show, import or update the offline advisory database."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape

from safepip.audit import database
from safepip.cli import options


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser(
        "db",
        help="manage the offline advisory database",
        description="Manage the offline advisory database used by `safepip audit` and installs.",
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    status = db_commands.add_parser(
        "status",
        help="show the database in use",
        description="Show the advisory database an audit would use: its source, data date, "
        "record count, skipped files and SHA-256.",
    )
    status.add_argument("--db", type=Path, metavar="PATH", help="show this OSV zip or folder")
    status.add_argument(
        "--format", choices=("text", "json"), default="text", help="`text` (default) or `json`"
    )
    status.set_defaults(handler=run_status)
    imp = db_commands.add_parser(
        "import",
        help="replace the database with an OSV zip or folder",
        description="Read an OSV zip or folder and make it the database every audit uses "
        "(replaced atomically in the user data folder).",
    )
    imp.add_argument("path", type=Path, metavar="PATH", help="an OSV zip or folder")
    imp.add_argument("--date", type=_date_arg, help="the snapshot's date (YYYY-MM-DD)")
    imp.set_defaults(handler=run_import)
    update = db_commands.add_parser(
        "update",
        help="download the current OSV data",
        description="Download OSV's PyPI export (or read `--from`) and make it the database "
        "every audit uses.",
    )
    update.add_argument(
        "--from",
        dest="source",
        metavar="URL|PATH",
        help="an OSV all.zip URL or path (default: the `audit.update-url` setting)",
    )
    update.add_argument("--date", type=_date_arg, help="the snapshot's date (YYYY-MM-DD)")
    update.set_defaults(handler=run_update)
    options.output_group(db)


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _print_info(info: Any, *, bundled: bool) -> None:
    lines = [
        f"Database:  {info.path} ({'bundled with safepip' if bundled else info.origin})",
        f"Source:    {info.source}",
        f"Data date: {info.data_date.isoformat() if info.data_date else 'unknown'}",
        f"Records:   {info.records} ({info.packages} packages; "
        f"{info.withdrawn} withdrawn records left out)",
    ]
    if info.skipped:
        lines.append(
            f"Skipped:   {info.skipped} files that are not OSV records"
            + (f", e.g. {'; '.join(info.skipped_examples)}" if info.skipped_examples else "")
        )
    if info.source_sha256:
        lines.append(f"Source SHA-256: {info.source_sha256}")
    sys.stdout.write("\n".join(lines) + "\n")


def run_status(args: argparse.Namespace) -> int:
    """`safepip db status`: which database an audit would use, its date, size and digest."""
    settings = options.settings(args)
    db_path = args.db or settings.audit.db
    db = (
        database.open_database(db_path)
        if db_path
        else database.default_database(database.user_data_dir())
    )
    info = db.info()
    digest = database.file_sha256(info.path) if info.path.is_file() else None
    if args.format == "json":
        document = {
            "path": str(info.path),
            "origin": info.origin,
            "source": info.source,
            "date": info.data_date.isoformat() if info.data_date else None,
            "records": info.records,
            "packages": info.packages,
            "withdrawn": info.withdrawn,
            "skipped": info.skipped,
            "skipped_examples": list(info.skipped_examples),
            "sha256": digest,
            "source_sha256": info.source_sha256,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        _print_info(info, bundled=info.origin == "bundled")
        if digest:
            sys.stdout.write(f"SHA-256:   {digest}\n")
    for warning in db.warnings:
        options.console(args).print(f"[yellow]warning:[/] {warning}")
    return 0


def _report_replaced(args: argparse.Namespace, verb: str, info: Any) -> None:
    if info.skipped:
        examples = "; ".join(info.skipped_examples)
        options.console(args).print(
            f"[yellow]warning:[/] skipped {info.skipped} files that are not OSV records: "
            f"{escape(examples)}{' and more' if info.skipped > len(info.skipped_examples) else ''}"
        )
    if getattr(args, "quiet", 0):
        return
    date = info.data_date.isoformat() if info.data_date else "unknown date"
    options.console(args).print(
        f"[green]{verb} the advisory database:[/] {info.records} records for "
        f"{info.packages} packages, data as of {date} (`{escape(str(info.path))}`)"
    )


def run_import(args: argparse.Namespace) -> int:
    """`safepip db import PATH`: replace the user database with an OSV zip or folder."""
    info = database.import_database(args.path, data_dir=database.user_data_dir(), date=args.date)
    _report_replaced(args, "Imported", info)
    return 0


def run_update(args: argparse.Namespace) -> int:
    """`safepip db update [--from URL|PATH]`: download OSV data and replace the user database."""
    settings = options.settings(args)
    source = args.source or settings.audit.update_url
    info = database.update_database(source, data_dir=database.user_data_dir(), date=args.date)
    _report_replaced(args, "Updated", info)
    return 0
