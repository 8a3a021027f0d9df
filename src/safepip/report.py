"""What users see: progress on stderr, a one-line summary, and the JSON installation report."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from safepip import __version__
from safepip.metadata import parse_metadata
from safepip.urls import redact_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    from safepip.fetch import Progress
    from safepip.pipeline import InstallOutcome
    from safepip.plan import Artifact

REPORT_VERSION = "1"


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def use_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty()


class ConsoleReporter:
    """Renders pipeline messages on stderr; progress bars only when stderr is a terminal."""

    def __init__(
        self, *, verbosity: int = 0, stream: TextIO | None = None, color: bool | None = None
    ):
        self.stream = stream or sys.stderr
        self.verbosity = verbosity
        self.color = use_color(self.stream) if color is None else color
        self._lock = threading.Lock()
        self._noticed: set[str] = set()

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def info(self, text: str) -> None:
        if self.verbosity >= 0:
            self._write(text)

    def warn(self, text: str) -> None:
        if self.verbosity >= -1:
            self._write(self._style("warning:", "33") + " " + text)

    def notice(self, text: str) -> None:
        """A warning about the circumstances rather than this run (such as the age of the
        advisory data): shown once per run, and not with `-q`."""
        if self.verbosity >= 0 and text not in self._noticed:
            self._noticed.add(text)
            self._write(self._style("warning:", "33") + " " + text)

    def detail(self, text: str) -> None:
        if self.verbosity >= 1:
            self._write(text)

    def error(self, message: str, hint: str | None) -> None:
        self._write(self._style("error:", "31") + " " + message)
        if hint:
            self._write("")
            self._write(self._style("hint:", "36") + " " + hint)

    def success(self, text: str) -> None:
        if self.verbosity >= 0:
            self._write(self._style(text, "32") if self.color else text)

    def progress(self) -> Progress:
        if self.verbosity < 0:
            # Imported here: `fetch` brings the network stack, which `audit`, `hash`, `verify`
            # and `db` never need (about 40 ms of an audit's start; `python -X importtime`).
            from safepip.fetch import NoProgress

            return NoProgress()
        if self.stream.isatty() and self.verbosity >= 0:
            return RichProgress(self.stream)
        return LineProgress(self)


class LineProgress:
    """Plain lines for logs and CI: with `-v`, one per download or cache hit (the summary line
    says how many packages were installed either way)."""

    def __init__(self, reporter: ConsoleReporter) -> None:
        self.reporter = reporter

    def start(self, artifact: Artifact, total: int | None) -> None:
        pass

    def advance(self, artifact: Artifact, size: int) -> None:
        pass

    def finish(self, artifact: Artifact, *, cached: bool) -> None:
        if cached:
            self.reporter.detail(f"Using cached {artifact.filename}")
        else:
            self.reporter.detail(f"Downloaded {artifact.filename}")


class RichProgress:
    """A rich progress display for interactive terminals."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(file=stream),
            transient=True,
        )
        self._tasks: dict[str, Any] = {}
        self._started = False
        self._lock = threading.Lock()

    def start(self, artifact: Artifact, total: int | None) -> None:
        with self._lock:
            if not self._started:
                self._progress.start()
                self._started = True
            self._tasks[artifact.filename] = self._progress.add_task(artifact.filename, total=total)

    def advance(self, artifact: Artifact, size: int) -> None:
        task = self._tasks.get(artifact.filename)
        if task is not None:
            self._progress.advance(task, size)

    def finish(self, artifact: Artifact, *, cached: bool) -> None:
        with self._lock:
            task = self._tasks.pop(artifact.filename, None)
            if task is not None:
                self._progress.remove_task(task)
            if self._started and not self._tasks:
                self._progress.stop()
                self._started = False


SHOWN_CHANGES = 40
"""At most this many per-package change lines after an install (all of them with `-v`)."""


def capped(lines: Sequence[str], *, everything: bool = False) -> list[str]:
    """`lines`, or for a big install the first `SHOWN_CHANGES - 1` and a line saying how many
    more there are (uv lists them all; a 400-package install would bury the summary)."""
    if everything or len(lines) <= SHOWN_CHANGES:
        return list(lines)
    shown = SHOWN_CHANGES - 1
    return [*lines[:shown], f"… and {len(lines) - shown} more (`-v` lists every change)"]


def summary(outcome: InstallOutcome, seconds: float) -> str:
    changes = outcome.changes
    if outcome.result is None:
        parts = [f"Would install {plural(len(changes.install), 'package')}"]
    else:
        parts = [f"Installed {plural(len(changes.install), 'package')}"]
    if changes.remove:
        parts.append(f"replaced {len(changes.remove)}")
    if changes.keep:
        parts.append(f"kept {len(changes.keep)} already installed")
    return ", ".join(parts) + f" in {seconds:.2f}s"


def installation_report(outcome: InstallOutcome) -> dict[str, Any]:
    """pip's installation report, schema version 1 (`pip install --report`): the same keys with
    the same meaning, `metadata` in PEP 566 JSON form read from each wheel's METADATA as pip
    reads it, plus safepip's own fields (`installer`, `dry_run`, `target`, `install[].safepip`).

    `pip_version` is the version of pip installed with safepip (whose report this follows);
    packages kept as installed are listed too (`safepip.action` is `keep`), with their
    installed metadata.
    """

    by_spec = {f.artifact.name + "==" + f.artifact.version: f for f in outcome.fetched}
    kept = {p.spec for p in outcome.changes.keep}
    replaced = {d.name for d in outcome.changes.remove}
    items = []
    for pin in outcome.plan.pins:
        fetched = by_spec.get(pin.spec)
        sha = fetched.sha256 if fetched else None
        action = "keep" if pin.spec in kept else ("replace" if pin.name in replaced else "install")
        raw = outcome.metadata.get(pin.name)
        item: dict[str, Any] = {
            "download_info": {
                "url": redact_url(pin.artifact.url),
                # `hash` is the legacy PEP 610 field that pip still writes next to `hashes`
                "archive_info": {"hash": f"sha256={sha}", "hashes": {"sha256": sha}} if sha else {},
            },
            "is_direct": pin.artifact.direct_url,
            "is_yanked": pin.artifact.yanked is not None,
            "requested": pin.requested,
            "metadata": parse_metadata(raw).to_json()
            if raw is not None
            else {"name": pin.display_name, "version": pin.version},
        }
        if pin.requested and pin.extras:
            item["requested_extras"] = sorted(pin.extras)
        item["safepip"] = {
            "action": action,
            "filename": pin.artifact.filename,
            "origin": redact_url(pin.artifact.origin),
            "hash_source": pin.artifact.hash_source,
        }
        items.append(item)
    target = outcome.plan.target
    return {
        "version": REPORT_VERSION,
        "pip_version": _pip_version(),
        "install": items,
        "environment": dict(target.markers),
        "installer": {"name": "safepip", "version": __version__},
        "dry_run": outcome.result is None,
        "target": {"python": str(target.python), "purelib": str(target.paths.purelib)},
    }


def _pip_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pip")
    except PackageNotFoundError:
        return None


def write_json(data: object, path: str) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
