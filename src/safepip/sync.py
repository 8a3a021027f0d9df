"""`safepip sync`: what else must change so that an environment is exactly a lock.

An install adds and replaces what the lock pins; a sync also removes every installed
distribution the lock does not select for the target. The tools that install and manage the
environment are the exception (pip-tools' `pip-sync` rule, plus uv's rule of never removing
itself): `pip`, `setuptools`, `wheel`, `distribute` and `safepip` are never removed; they are
installed or changed only when the lock pins them, and then to the pinned version. (uv's
`pip sync` removes pip and setuptools too; pip-sync keeps them, which is what a developer
virtualenv made with `python -m venv` expects.)
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from packaging.utils import NormalizedName, canonicalize_name

from safepip.errors import UsageError
from safepip.report import plural

if TYPE_CHECKING:
    from collections.abc import Sequence

    from safepip.install import ChangePlan
    from safepip.plan import Pin
    from safepip.target import InstalledDistribution

KEPT: frozenset[NormalizedName] = frozenset(
    canonicalize_name(n) for n in ("pip", "setuptools", "wheel", "distribute", "safepip")
)
"""Never removed by a sync; installed or changed only when the lock pins them."""


class SyncError(UsageError):
    """The input cannot be synced to: only a complete, hash-pinned lock says what belongs."""


def require_lock(*, hash_mode: bool, no_deps: bool, source: str) -> None:
    """A sync removes what the lock does not list, so the lock must be complete and pinned."""
    if not hash_mode:
        raise SyncError(
            f"`safepip sync` needs a hash-pinned lock; {source} is not one",
            hint="write one with `safepip lock requirements.in -o requirements.txt`",
        )
    if no_deps:
        raise SyncError(
            "`--no-deps` cannot be used with `safepip sync`: the lock must be complete",
            hint="leave out `--no-deps`; sync checks that every dependency is in the lock",
        )


def extraneous(
    pins: Sequence[Pin], installed: Sequence[InstalledDistribution]
) -> tuple[InstalledDistribution, ...]:
    """The installed distributions the lock does not select, apart from the `KEPT` tools."""
    wanted = {p.name for p in pins}
    return tuple(
        sorted(
            (d for d in installed if d.name not in wanted and d.name not in KEPT),
            key=lambda d: d.name,
        )
    )


def sync_changes(
    changes: ChangePlan, pins: Sequence[Pin], installed: Sequence[InstalledDistribution]
) -> ChangePlan:
    """`changes` (the install's plan) plus the removal of everything extraneous."""
    return replace(changes, remove=(*changes.remove, *extraneous(pins, installed)))


def plan_lines(changes: ChangePlan) -> list[str]:
    """The plan as `+ name==version` (added), `- name==version` (removed) and
    `~ name old -> new` (replaced) lines, sorted by name (uv's notation)."""
    removed = {d.name: d for d in changes.remove}
    lines: list[tuple[str, str]] = []
    for pin in changes.install:
        old = removed.pop(pin.name, None)
        if old is None:
            lines.append((pin.name, f"+ {pin.display_name}=={pin.version}"))
        elif old.version == pin.version:
            lines.append((pin.name, f"~ {pin.display_name}=={pin.version} (reinstalled)"))
        else:
            lines.append((pin.name, f"~ {pin.display_name} {old.version} -> {pin.version}"))
    lines += [(d.name, f"- {d.display_name}=={d.version}") for d in removed.values()]
    return [text for _, text in sorted(lines)]


def summary(changes: ChangePlan, *, dry_run: bool, seconds: float) -> str:
    """One line: what was (or would be) installed, replaced, removed and kept."""
    replaced = {p.name for p in changes.install} & {d.name for d in changes.remove}
    removed = len(changes.remove) - len(replaced)
    parts = [
        f"{'Would install' if dry_run else 'Installed'} {plural(len(changes.install), 'package')}"
    ]
    if replaced:
        parts.append(f"{'would replace' if dry_run else 'replaced'} {len(replaced)}")
    if removed:
        parts.append(f"{'would remove' if dry_run else 'removed'} {removed}")
    if changes.keep:
        parts.append(f"kept {len(changes.keep)} already installed")
    return ", ".join(parts) + f" in {seconds:.2f}s"
