"""`safepip audit --fix`: re-lock a hash-pinned lock with its vulnerable pins moved to fixed
versions (fresh hashes, the other pins kept). Nothing is written here; the caller writes."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from safepip.audit import AuditError
from safepip.audit.report import plan_fixes
from safepip.audit.sources import is_pylock
from safepip.errors import SafepipError, UsageError
from safepip.lock import (
    LockFormat,
    LockOptions,
    is_annotated,
    lock_format,
    read_existing_pins,
    read_header,
    run_lock,
    via_entries,
)
from safepip.plan import ResolutionError
from safepip.requirements import IndexDirective, parse_requirements
from safepip.settings import read_toml

if TYPE_CHECKING:
    from collections.abc import Sequence

    from packaging.utils import NormalizedName

    from safepip.audit import AuditReport
    from safepip.pipeline import Reporter
    from safepip.sources import SourceOptions


class FixUsageError(UsageError):
    """`--fix` was asked of inputs it cannot rewrite."""


class FixError(AuditError):
    """`--fix` could not re-lock a file; every file was left as it was."""

    def __init__(self, path: str, reason: str, *, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"Cannot fix `{path}`, no file was changed: {reason}",
            hint=hint or "re-lock by hand with `safepip lock`, then run `safepip audit` again",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LockToFix:
    """A lock file read for what re-locking it needs."""

    path: str
    pins: dict[NormalizedName, str]
    roots: tuple[str, ...]
    """Requirement lines (no version) for the packages the lock was made for: those whose `# via`
    names an input, or every package when the lock does not say."""
    sources: tuple[str, ...] = ()
    """Input files named by `# via -r FILE` that still exist; they stand for their roots."""
    index: SourceOptions
    """The indexes the lock names, else those of the command line."""
    command: str | None
    """The command in the file's header, or None when it has no header."""
    annotate: bool
    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    pre: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class FixedLock:
    """A lock re-locked with the vulnerable pins moved."""

    path: str
    text: str
    changes: tuple[str, ...]
    """`name old -> new`, `name new (added)`, `name old (removed)`."""


def fix_paths(
    *, requirements: Sequence[str] = (), targets: Sequence[str] = (), python: str | None = None
) -> list[str]:
    """The lock files `--fix` rewrites; anything else among the inputs is a usage error."""
    if python:
        raise FixUsageError(
            "`--fix` rewrites lock files; it cannot change the environment of `--python`",
            hint="fix the lock the environment was installed from (`safepip audit --fix -r "
            "requirements.txt`), then install it again",
        )
    paths = list(requirements)
    specs = []
    for target in targets:
        if is_pylock(target) or Path(target).is_file():
            paths.append(target)
        else:
            specs.append(target)
    if specs:
        shown = ", ".join(f"`{s}`" for s in specs)
        raise FixUsageError(
            f"`--fix` rewrites lock files; it cannot change {shown}",
            hint="pin the fixed versions the report names yourself, or audit a lock "
            "(`-r requirements.txt` or a `pylock.toml`) with `--fix`",
        )
    if not paths:
        raise FixUsageError(
            "`--fix` needs a lock file to rewrite",
            hint="pass `-r requirements.txt` (hash-pinned, as `safepip lock` writes it) or a "
            "`pylock.toml`",
        )
    remote = [p for p in paths if "://" in p]
    if remote:
        raise FixUsageError(f"`--fix` cannot rewrite the remote file `{remote[0]}`")
    return paths


def fix_targets(report: AuditReport) -> dict[tuple[NormalizedName, str], str | None]:
    """`(name, vulnerable version) -> fixed version`; None when no release fixes every finding."""
    return {(p.name, p.old_version): p.new_version for p in plan_fixes(report)}


def _given_sources(options: SourceOptions) -> bool:
    return bool(
        options.index_url or options.extra_index_urls or options.no_index or options.find_links
    )


def read_lock(path: str, pins: dict[NormalizedName, str], given: SourceOptions) -> LockToFix:
    """What re-locking `path` needs: its roots, inputs, indexes and how it was made.

    `given` are the sources of the command line; the lock's own are used when none is given.
    """
    if lock_format(path) is LockFormat.PYLOCK:
        return _read_pylock(path, pins, given)
    return _read_requirements_lock(path, pins, given)


def _read_requirements_lock(
    path: str, pins: dict[NormalizedName, str], given: SourceOptions
) -> LockToFix:
    parsed = parse_requirements(files=[path])
    unhashed = [
        str(item.requirement or item.name) for item in parsed.requirements if not item.hashes
    ]
    if unhashed:
        raise FixUsageError(
            f"`--fix` rewrites hash-pinned locks, and `{path}` has requirements without "
            f"`--hash`: {', '.join(f'`{u}`' for u in unhashed)}",
            hint="change the pins by hand, or lock the file with `safepip lock` first",
        )
    for item in parsed.requirements:
        if item.url is not None or item.requirement is None:
            raise FixError(
                path,
                f"`{item.requirement or item.url}` ({item.location}) is a direct reference, "
                "which a re-lock cannot resolve from an index",
            )
    text = Path(path).read_text("utf-8", errors="replace")
    lines = text.splitlines()
    starts = sorted((item.location.line or 1) - 1 for item in parsed.requirements)
    annotate = is_annotated(lines)
    roots = []
    sources: list[str] = []
    for item in sorted(parsed.requirements, key=lambda i: i.location.line or 0):
        requirement = item.requirement
        assert requirement is not None
        start = (item.location.line or 1) - 1
        later = [s for s in starts if s > start]
        via = via_entries(lines, start, later[0] if later else len(lines))
        if annotate and via and all(canonicalize_name(v) in pins for v in via):
            continue
        # `# via -r requirements.in`: re-reading that input keeps its label (and its specifiers).
        files = [v[3:].strip() for v in via if v.startswith("-r ")]
        if files and all(Path(f).is_file() for f in files):
            sources += [f for f in files if f not in sources]
            if all(v.startswith("-r ") or canonicalize_name(v) in pins for v in via):
                continue
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        marker = f" ; {requirement.marker}" if requirement.marker else ""
        roots.append(f"{item.name}{extras}{marker}")
    index = given
    if not _given_sources(given):
        urls, no_index = parsed.apply_index_options([])
        has_index = any(o.kind is IndexDirective.INDEX_URL for o in parsed.index_options)
        index = replace(
            given,
            index_url=urls[0] if has_index and urls else None,
            extra_index_urls=tuple(urls[1:] if has_index else urls),
            no_index=no_index,
            find_links=parsed.find_links,
            trusted_hosts=(*given.trusted_hosts, *parsed.trusted_hosts),
        )
    header = read_header(text)
    return LockToFix(
        path=path,
        pins=pins,
        roots=tuple(roots),
        sources=tuple(sources),
        index=index,
        command=header.command if header else None,
        annotate=annotate,
        python_version=header.python_version if header else None,
        platforms=header.platforms if header else (),
        pre=(header.pre if header else False) or parsed.pre,
    )


def _read_pylock(path: str, pins: dict[NormalizedName, str], given: SourceOptions) -> LockToFix:
    packages = [p for p in read_toml(Path(path)).get("packages", []) if isinstance(p, dict)]
    unversioned = [str(p.get("name")) for p in packages if not p.get("version")]
    if unversioned:
        raise FixError(
            path,
            f"`{unversioned[0]}` is locked without a version (a direct reference), which a "
            "re-lock cannot resolve from an index",
        )
    needed = {
        canonicalize_name(str(d["name"]))
        for p in packages
        for d in p.get("dependencies") or ()
        if isinstance(d, dict) and d.get("name")
    }
    roots = []
    for package in packages:
        name = canonicalize_name(str(package["name"]))
        if name in needed:
            continue
        marker = f" ; {package['marker']}" if package.get("marker") else ""
        roots.append(f"{name}{marker}")
    index = given
    if not _given_sources(given):
        urls = list(dict.fromkeys(str(p["index"]) for p in packages if p.get("index")))
        if urls:
            index = replace(given, index_url=urls[0], extra_index_urls=tuple(urls[1:]))
    return LockToFix(
        path=path, pins=pins, roots=tuple(roots), index=index, command=None, annotate=True
    )


def relock(
    lock: LockToFix,
    moves: dict[NormalizedName, str],
    reporter: Reporter,
    *,
    cache_dir: Path | None = None,
    no_cache: bool = False,
) -> FixedLock:
    """Resolve the lock again: the other pins preferred, each moved package constrained to its
    fixed version (`==`, or `>=` when exactly that version does not resolve)."""
    with tempfile.TemporaryDirectory(prefix="safepip-fix-") as tmp:
        constraints = Path(tmp) / "fixed-versions.txt"
        outcome = None
        for operator in ("==", ">="):
            constraints.write_text(
                "".join(f"{name}{operator}{version}\n" for name, version in moves.items()),
                "utf-8",
            )
            options = LockOptions(
                sources=lock.sources,
                requirements=lock.roots,
                constraint_files=(str(constraints),),
                output=lock.path,
                upgrade_packages=tuple(moves),
                pre=lock.pre,
                python_version=lock.python_version,
                platforms=lock.platforms,
                index=lock.index,
                cache_dir=cache_dir,
                no_cache=no_cache,
                header=lock.command is not None,
                annotate=lock.annotate,
                command=lock.command or "",
            )
            try:
                outcome = run_lock(options, reporter)
                break
            except ResolutionError as exc:
                if operator == ">=":
                    raise FixError(lock.path, f"the re-lock failed: {exc}", hint=exc.hint) from exc
            except SafepipError as exc:
                raise FixError(lock.path, f"the re-lock failed: {exc}", hint=exc.hint) from exc
    assert outcome is not None
    new = {pin.name: pin.version for pin in outcome.resolution.pins}
    return FixedLock(path=lock.path, text=outcome.text, changes=changes(lock.pins, new))


def changes(old: dict[NormalizedName, str], new: dict[NormalizedName, str]) -> tuple[str, ...]:
    changes = []
    for name in sorted({*old, *new}):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            changes.append(f"{name} {after} (added)")
        elif after is None:
            changes.append(f"{name} {before} (removed)")
        else:
            changes.append(f"{name} {before} -> {after}")
    return tuple(changes)


def relock_vulnerable(
    paths: Sequence[str],
    targets: dict[tuple[NormalizedName, str], str | None],
    reporter: Reporter,
    *,
    given: SourceOptions,
    cache_dir: Path | None = None,
    no_cache: bool = False,
) -> list[FixedLock]:
    """Re-lock every file in `paths` that pins a version `targets` can move; the others are left
    out. Any failure raises before a file is written (the caller writes them all after)."""
    fixed: list[FixedLock] = []
    for path in paths:
        pins = read_existing_pins(Path(path))
        moves = {
            name: target
            for name, version in pins.items()
            if (target := targets.get((name, version))) is not None
        }
        if moves:
            lock = read_lock(path, pins, given)
            fixed.append(relock(lock, moves, reporter, cache_dir=cache_dir, no_cache=no_cache))
    return fixed
