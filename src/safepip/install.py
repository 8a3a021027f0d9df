"""Installing verified, unpacked wheels into the target, as one transaction that can roll back.

This is the only stage that writes the target environment. It lays out every wheel first (files from
the unpacked cache in the chosen link mode, see `safepip.linking`; launchers from `installer`;
RECORD), then changes the target under the environment lock through a journal (`safepip.journal`):
whatever stops the install (an error, SIGINT, SIGTERM, SIGKILL, a power cut), the environment ends
as it was, as installed, or in a state the next run finishes or undoes before it does anything else.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import re
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safepip import __version__, envlock, seal, signals
from safepip.errors import SafepipError
from safepip.fetch import WheelIntegrityError, paused_gc
from safepip.hashes import split_hash
from safepip.journal import TXN_PREFIX, Journal, complete, environment_roots, rollback
from safepip.linking import DEFAULT_LINK_MODE, Linker, LinkMode
from safepip.plan import recorded_sha256s, same_version
from safepip.urls import redact_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from installer.scripts import LauncherKind, ScriptSection

    from safepip.fetch import FetchedArtifact, ManifestEntry, UnpackedWheel
    from safepip.plan import Pin
    from safepip.target import InstalledDistribution, Target

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

ARTIFACT_RECORD = "safepip.json"
"""The file safepip writes into each `.dist-info`: which artifact was installed, from where."""


class InstallError(SafepipError):
    """Writing to the target failed; what this run changed has been rolled back."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ChangePlan:
    """What an install will do to the target."""

    install: tuple[Pin, ...]
    """New distributions or other versions of installed ones."""
    remove: tuple[InstalledDistribution, ...]
    """Installed distributions that `install` replaces."""
    keep: tuple[Pin, ...]
    """Already installed exactly as pinned."""


def installed_artifact(dist: InstalledDistribution) -> dict[str, Any] | None:
    """The artifact record safepip wrote when it installed `dist`, if its seal holds.

    `safepip.json` on its own proves nothing (a wheel can ship one naming any public hash):
    the record counts only when the folder's seal, made with this user's install key, matches
    the RECORD that lists it (`safepip.seal`), and it names this very distribution.
    """
    if seal.check(dist.dist_info) is not seal.SealState.VALID:
        return None
    text = dist.read_text(ARTIFACT_RECORD)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") != dist.name:
        return None
    if not same_version(str(data.get("version_installed")), dist.version):
        return None
    return data


def recorded_hashes(record: Mapping[str, Any]) -> frozenset[str]:
    """The `alg:hex` digests the install record vouches for: the installed file's (sha256 and
    every other algorithm its pin used) and, for a wheel safepip built, its sdist's sha256."""
    found = {f"sha256:{d}" for d in recorded_sha256s(record)}
    extra = record.get("hashes")
    if isinstance(extra, list):
        found.update(h.lower() for h in extra if isinstance(h, str))
    return frozenset(found)


def plan_changes(
    pins: Sequence[Pin],
    installed: Sequence[InstalledDistribution],
    *,
    reinstall: bool = False,
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> ChangePlan:
    """Decide, per pin, whether to install, replace or keep.

    A pin is kept only when the installed distribution has the same version *and* safepip's own
    sealed artifact record (`installed_artifact`) shows it came from a file with a digest the pin
    accepts, in any algorithm the pin uses (sha256, sha384, sha512). A distribution that another
    installer put there (pip trusts those blindly), or whose record is not sealed, is reinstalled
    from the verified file. `records` holds `installed_artifact`'s answers already found in
    this run (by name); a distribution without one there is checked here.
    So is a torn one (`InstalledDistribution.damage`: an empty RECORD, no METADATA); every
    `.dist-info` of the pin's name goes, so no torn folder stays beside the new one.
    """
    by_name: dict[str, list[InstalledDistribution]] = {}
    for dist in installed:
        by_name.setdefault(dist.name, []).append(dist)
    install: list[Pin] = []
    remove: list[InstalledDistribution] = []
    keep: list[Pin] = []
    for pin in pins:
        found = by_name.get(pin.name, [])
        if not found:
            install.append(pin)
            continue
        current = found[0]
        if (
            not reinstall
            and len(found) == 1
            and current.damage is None
            and same_version(current.version, pin.version)
        ):
            record = records.get(current.name) if records is not None else None
            if record is None:
                record = installed_artifact(current)
            accepted = {":".join(split_hash(h)) for h in pin.artifact.expected_hashes}
            if record and (not accepted or recorded_hashes(record) & accepted):
                keep.append(pin)
                continue
        install.append(pin)
        remove.extend(found)
    return ChangePlan(install=tuple(install), remove=tuple(remove), keep=tuple(keep))


# --- the transaction ------------------------------------------------------------------------


class Transaction:
    """Carries out one install on the target through a `Journal`, so that it can be undone (or
    finished) from any point, also by a later run after SIGKILL or a power cut.

    Phase 1 sets aside everything that is removed or in the way; phase 2 only creates. Paths
    are plain strings: an install touches tens of thousands of files, and this is the hot loop.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.roots = environment_roots(target)
        self.journal: Journal | None = None
        self.current = ""
        """The path being worked on, for error messages."""
        self.displaced: dict[str, str] = {}
        """Files that were in the way of new ones (another distribution's, or strays): path ->
        sha256 of what was there."""
        self.delay = _test_delay()
        self._prune: set[tuple[int, str]] = set()
        self._existing_dirs: set[str] = set()
        self._env_root = os.path.abspath(target.prefix) if target.kind == "env" else None

    def begin(self, site: str, creates: Sequence[tuple[int, str]], summary: str) -> None:
        self.current = site
        # A signal between creating the journal folder and keeping a reference to it would
        # leave a journal that this run's rollback cannot see: hold signals until it is known.
        with signals.deferred() as arrived:
            self.journal = Journal.begin(site, self.roots, creates, summary=summary)
        if arrived:
            raise signals.Interrupted(arrived[0])

    def set_aside(self, path: str) -> None:
        """Phase 1: move a file out of the way into the journal's backup."""
        assert self.journal is not None
        self.current = path
        if self.delay:
            time.sleep(self.delay)
        if self.journal.set_aside(path):
            self._prune.add(self.journal.locate(os.path.dirname(path)))

    def prepare(self, dests: Sequence[str]) -> list[tuple[int, str]]:
        """End of phase 1: set aside files where new ones go, work out the folders to create,
        and record that creating starts. Returns the folders to create, parents first."""
        assert self.journal is not None
        new_dirs: list[str] = []
        known = self._existing_dirs
        planned: set[str] = set()
        if os.altsep is None:
            # Absolute paths of files: the part before the last separator is the folder, as
            # os.path.dirname would say, at a fraction of its cost (tens of thousands of files).
            parents = [d[: d.rfind(os.sep)] for d in dests]
        else:
            parents = [os.path.dirname(d) for d in dests]
        for parent in sorted(set(parents), key=len):
            if parent in known or parent in planned:
                continue
            chain: list[str] = []
            current = parent
            while current not in known and current not in planned:
                self.current = current
                up = os.path.dirname(current)
                # Inside a folder this install makes, nothing exists yet: no need to look.
                if up not in planned:
                    if os.path.isdir(current):
                        known.add(current)
                        break
                    if os.path.lexists(current):
                        raise InstallError(f"Cannot create folder `{parent}`: a file is in the way")
                    if current == self._env_root:
                        raise _environment_gone(self.target)
                chain.append(current)
                if up == current:
                    break
                current = up
            for folder in reversed(chain):
                planned.add(folder)
                new_dirs.append(folder)
        for dest, parent in zip(dests, parents, strict=True):
            # A file can only be in the way where its folder exists already.
            if parent in planned:
                continue
            self.current = dest
            try:
                mode = os.lstat(dest).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(mode):
                raise InstallError(f"Cannot install file `{dest}`: a folder is in the way")
            self.displaced[dest] = _sha256_of(dest) if stat.S_ISREG(mode) else ""
            self.set_aside(dest)
        located = [self.journal.locate(d) for d in new_dirs]
        self.journal.creating(located, sorted(self._prune))
        for folder in new_dirs:
            self.current = folder
            os.mkdir(folder)
        return located

    def place(self, source: str, dest: str, linker: Linker) -> None:
        """Phase 2: put `source` at `dest` in the linker's mode (reflink, copy or hard link).

        Anything at `dest` was put there by this install (phase 1 set aside the rest): a file
        that two wheels both ship is overwritten by the later one, as pip does.
        """
        self.current = dest
        if self.delay:
            time.sleep(self.delay)
        try:
            linker.place(source, dest)  # never writes through: O_EXCL, or a new link
        except FileExistsError:
            os.unlink(dest)
            linker.place(source, dest)

    def place_many(
        self,
        pairs: Sequence[tuple[str, str]],
        sizes: Sequence[int],
        executable: Sequence[bool],
        linker: Linker,
    ) -> None:
        """Phase 2: `place` for many files at once (`sizes` and `executable`: the sources',
        from the cache's manifests), large copies in a few threads (see `Linker.place_many`,
        which has stopped them all before it raises)."""
        if self.delay:
            for source, dest in pairs:
                self.place(source, dest, linker)
            return
        try:
            linker.place_many(pairs, sizes, executable)
        except BaseException:
            self.current = linker.failed or self.current
            raise

    def place_shared(
        self,
        pairs: Sequence[tuple[str, str]],
        sizes: Sequence[int],
        executable: Sequence[bool],
        writes: Sequence[tuple[str, bytes, bool]],
        linker: Linker,
    ) -> None:
        """Phase 2 of a large install at once: `pairs` placed by this process and a helper
        process (see `Linker.place_shared`, whose helper has exited before it returns or
        raises) while this one also `write`s `writes`. Every destination must be distinct."""

        def write_all() -> None:
            for dest, data, mode_x in writes:
                self.write(dest, data, executable=mode_x)

        try:
            linker.place_shared(pairs, sizes, write_all, executable=executable, delay=self.delay)
        except BaseException:
            self.current = linker.failed or self.current
            raise

    def write(self, dest: str, data: bytes, *, executable: bool = False) -> None:
        """Phase 2: write a file safepip generates (RECORD, launchers, `safepip.json`)."""
        self.current = dest
        if self.delay:
            time.sleep(self.delay)
        # Never write through an existing file: it may be a hard link into the cache (O_EXCL;
        # what is there was set aside or written by this install, and is replaced).
        try:
            fd = os.open(dest, _CREATE, 0o666)
        except FileExistsError:
            os.unlink(dest)
            fd = os.open(dest, _CREATE, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        if executable:
            os.chmod(dest, 0o755)

    def check_environment(self) -> None:
        """Before the commit: the environment must still be there (not deleted meanwhile)."""
        if _gone(self.target):
            raise _environment_gone(self.target)

    def commit(self) -> None:
        """Write the commit record, then delete the backups (the new state is final)."""
        assert self.journal is not None
        self.journal.commit()
        complete(self.journal.state)

    def rollback(self) -> None:
        if self.journal is not None:
            rollback(self.journal.state)


def _test_delay() -> float:
    """Seconds to sleep before each file operation of the install step, only from the test
    hook `SAFEPIP_TEST_SLOW_COMMIT`: the fault tests use it to land signals inside the install
    window. It only slows an install down; it changes nothing about what is written."""
    value = os.environ.get("SAFEPIP_TEST_SLOW_COMMIT")
    if not value:
        return 0.0
    try:
        return min(max(float(value), 0.0), 1.0)
    except ValueError:
        return 0.0


def _gone(target: Target) -> bool:
    """Whether a virtual environment was deleted (its interpreter or site folder is missing)."""
    return target.kind == "env" and not (
        os.path.exists(target.python) and os.path.isdir(target.paths.purelib)
    )


def _environment_gone(target: Target) -> InstallError:
    return InstallError(
        f"The environment `{target.prefix}` no longer exists (it was deleted during the install)",
        hint="create it again and re-run the install",
    )


# --- laying out wheels ----------------------------------------------------------------------

SCHEMES = ("purelib", "platlib", "headers", "scripts", "data")


@dataclass(slots=True)
class _Layout:
    """Where one wheel's files go: links from the unpacked cache, then generated files (RECORD
    last). Computed in full before the target is touched."""

    filename: str
    links: list[tuple[str, str]] = field(default_factory=list)
    """(source in the cache, destination)."""
    sizes: list[int] = field(default_factory=list)
    """The size of each source in `links`, as the cache's manifest records it."""
    executable: list[bool] = field(default_factory=list)
    """Whether each source in `links` is executable, as the cache's manifest records it."""
    writes: list[tuple[str, bytes, bool]] = field(default_factory=list)
    """(destination, contents, executable)."""
    creates: list[tuple[int, str]] = field(default_factory=list)
    """(root index, path below that root) of every destination (see `Journal.begin`)."""


def _script_name_ok(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


class _Site:
    """What laying out a wheel needs of the target, worked out once for all the wheels of an
    install (`_layout_wheel`)."""

    def __init__(self, target: Target, roots: Mapping[str, int]) -> None:
        self.target = target
        self.roots = roots
        """The index of each scheme folder among the journal's roots."""
        self.schemes = {k: os.path.abspath(v) for k, v in target.paths.as_dict().items()}
        self.sites = {self.schemes["purelib"], self.schemes["platlib"]}
        # Paths in other schemes are written relative to the root scheme folder (installer's
        # rule), for either root scheme.
        self.prefixes = {
            root: {
                k: "" if k == root else os.path.relpath(v, start=self.schemes[root]) + "/"
                for k, v in self.schemes.items()
            }
            for root in ("purelib", "platlib")
        }
        self.python = str(target.python)
        self.guard = _Guard("", self.sites, target)


def _layout_wheel(
    wheel: UnpackedWheel, site: _Site, extra: dict[str, bytes], dist_name: str, key: bytes
) -> _Layout:
    """Lay out one unpacked, verified wheel (PEP 427 install steps), without writing anything.

    Files are linked from the cache; `.data/scripts` files starting with `#!python` get the
    target's interpreter in their shebang, and entry-point launchers are generated with
    `installer`. RECORD comes last but for the seal (`safepip.seal`, made with `key`), with every
    path relative to the root scheme folder. Member paths were checked when the wheel was
    unpacked (no absolute paths, no `..`); here the wheel is refused (exit 3) when a member
    would land in a `.dist-info` or `.egg-info` folder of a site folder through `.data`, in
    safepip's own data folder, or in an unknown `.data` scheme, when an entry point's name is
    not a plain file name, and when a path is longer than the file system allows.
    """
    target = site.target
    schemes = site.schemes
    roots = site.roots
    root_scheme = "purelib" if wheel.root_is_purelib else "platlib"
    root = str(wheel.root)
    record_name = f"{wheel.dist_info}/RECORD"
    # Files safepip writes itself; a wheel's own copy (also through `.data/purelib`) is skipped.
    generated = {
        os.path.join(folder, wheel.dist_info, name)
        for folder in site.sites
        for name in (*extra, seal.SEAL_FILE, "RECORD")
    }
    guard = site.guard.of(wheel.filename)
    layout = _Layout(filename=wheel.filename)
    prefixes = site.prefixes[root_scheme]
    # RECORD rows as (path relative to the root scheme folder, "alg=digest", size).
    records: list[tuple[str, str, str | int]] = []
    python = site.python

    root_prefix = root if root.endswith(os.sep) else root + os.sep
    root_dir = schemes[root_scheme]
    root_dest = root_dir if root_dir.endswith(os.sep) else root_dir + os.sep
    root_index = roots[root_dir]

    def add_write(scheme: str, rel: str, data: bytes, *, executable: bool = False) -> None:
        layout.writes.append((os.path.join(schemes[scheme], rel), data, executable))
        layout.creates.append((roots[schemes[scheme]], rel))
        records.append((prefixes[scheme] + rel, _digest(data), str(len(data))))

    plain = _plain_members(wheel, root_dest, guard.name_max, generated)
    if plain is not None:
        # Every member is a plain file of the root scheme (most wheels): laid out a list at a
        # time, not a member at a time (the large lock has 18,000 of them).
        layout.links = [(root_prefix + e.path, root_dest + e.path) for e in plain]
        layout.sizes = [e.size for e in plain]
        layout.executable = [e.executable for e in plain]
        layout.creates = [(root_index, e.path) for e in plain]
        records = [e[:3] for e in plain]
    else:
        _layout_members(
            wheel,
            layout,
            records,
            guard,
            schemes=schemes,
            prefixes=prefixes,
            roots=roots,
            generated=generated,
            add_write=add_write,
            python=python,
            dist_name=dist_name,
        )
    entry_points = wheel.root / wheel.dist_info / "entry_points.txt"
    if entry_points.is_file():
        from installer.scripts import Script
        from installer.utils import parse_entrypoints

        kind: LauncherKind = "posix" if os.name != "nt" else "win-amd64"
        entries = _versioned_launchers(
            parse_entrypoints(entry_points.read_text("utf-8")), target.version
        )
        for name, module, attr, section in entries:
            if not _script_name_ok(name):
                raise WheelIntegrityError(
                    wheel.filename,
                    f"entry point name `{name}` is not a plain file name (it would leave "
                    "the scripts folder)",
                    member=f"{wheel.dist_info}/entry_points.txt",
                )
            script_name, data = Script(name, module, attr, section).generate(python, kind)
            guard.check(os.path.join(schemes["scripts"], script_name), name, via_data=True)
            add_write("scripts", script_name, data, executable=True)
    for filename, data in extra.items():
        add_write(root_scheme, f"{wheel.dist_info}/{filename}", data)
    seal_name = f"{wheel.dist_info}/{seal.SEAL_FILE}"
    records.append((seal_name, "", ""))
    records.append((record_name, "", ""))
    record = _record_text(records).encode("utf-8")
    # (RECORD and the seal are not rows of their own digest: written without `add_write`)
    for rel, data in ((record_name, record), (seal_name, seal.make(key, wheel.dist_info, record))):
        layout.writes.append((os.path.join(root_dir, rel), data, False))
        layout.creates.append((root_index, rel))
    return layout


def _plain_members(
    wheel: UnpackedWheel, root_dest: str, name_max: int, generated: set[str]
) -> list[ManifestEntry] | None:
    """The wheel's members but its RECORD and the files safepip generates, when every one is a
    plain file of the root scheme (no `.data` member, no `__pycache__`, nothing named like a
    journal, no path long enough to need `_Guard.check`); else None (`_layout_members` then
    looks at each member). Decided on the members' paths joined with NUL (which no path
    holds), as `fetch._all_safe` does, not a member at a time."""
    entries = wheel.entries
    paths = [e.path for e in entries]
    if not paths:
        return []
    joined = "\0" + "\0".join(paths) + "\0"
    if (
        "\0" + wheel.data_dir + "/" in joined
        or "__pycache__/" in joined
        or TXN_PREFIX in joined
        or len(root_dest) + max(map(len, paths)) > name_max
    ):
        return None
    # (`generated` holds the RECORD too)
    skipped = {f"{wheel.dist_info}/RECORD"}
    skipped.update(g[len(root_dest) :] for g in generated if g.startswith(root_dest))
    drop: list[int] = []
    for path in skipped:
        found = joined.count("\0" + path + "\0")
        if found > 1:
            return None  # (a manifest never lists a path twice)
        if found:
            drop.append(paths.index(path))
    kept = list(entries)
    for i in sorted(drop, reverse=True):
        del kept[i]
    return kept


def _layout_members(
    wheel: UnpackedWheel,
    layout: _Layout,
    records: list[tuple[str, str, str | int]],
    guard: _Guard,
    *,
    schemes: Mapping[str, str],
    prefixes: Mapping[str, str],
    roots: Mapping[str, int],
    generated: set[str],
    add_write: Callable[..., None],
    python: str,
    dist_name: str,
) -> None:
    """`_layout_wheel`'s members one at a time: `.data` schemes, `__pycache__` (never
    installed), `#!python` scripts, long paths and the checks of each."""
    root_scheme = "purelib" if wheel.root_is_purelib else "platlib"
    root = str(wheel.root)
    data_prefix = wheel.data_dir + "/"
    record_name = f"{wheel.dist_info}/RECORD"
    # This loop runs once per installed file (tens of thousands): no per-file lookups.
    root_prefix = root if root.endswith(os.sep) else root + os.sep
    links_append = layout.links.append
    sizes_append = layout.sizes.append
    executable_append = layout.executable.append
    creates_append = layout.creates.append
    records_append = records.append
    root_dir = schemes[root_scheme]
    root_dest = root_dir if root_dir.endswith(os.sep) else root_dir + os.sep
    root_index = roots[root_dir]
    name_max = guard.name_max
    for entry in wheel.entries:
        path = entry.path
        if not (
            path.startswith(data_prefix)
            or path == record_name
            or "__pycache__/" in path
            or TXN_PREFIX in path
        ):
            # Most files: a plain member of the root scheme (the branch below, made short).
            dest = root_dest + path
            if dest in generated:
                continue
            if len(dest) > name_max:
                guard.check(dest, path, via_data=False)
            links_append((root_prefix + path, dest))
            sizes_append(entry.size)
            executable_append(entry.executable)
            creates_append((root_index, path))
            records_append((path, entry.hash, entry.size))
            continue
        if path == record_name:
            continue
        if path.startswith(data_prefix):
            scheme, _, rel = path[len(data_prefix) :].partition("/")
            if scheme not in SCHEMES or not rel:
                raise WheelIntegrityError(
                    wheel.filename,
                    f"`.data` scheme `{scheme}` is not one of {', '.join(SCHEMES)}",
                    member=path,
                )
            if scheme == "headers":
                rel = f"{dist_name}/{rel}"  # one folder per distribution (pip's layout)
        else:
            scheme, rel = root_scheme, path
        if rel.startswith("__pycache__/") or "/__pycache__/" in rel:
            continue  # bytecode from the wheel is never installed (installer's rule too)
        if TXN_PREFIX in path:
            # A wheel may not plant something that looks like an interrupted install's journal.
            raise WheelIntegrityError(wheel.filename, f"it contains `{path}`")
        dest = os.path.join(schemes[scheme], rel)
        if dest in generated:
            continue
        guard.check(dest, path, via_data=scheme not in ("purelib", "platlib"))
        source = root_prefix + path  # a member path, checked when the wheel was unpacked
        if scheme == "scripts":
            with open(source, "rb") as fh:
                data = fh.read()
            if data.startswith(b"#!python"):
                _, _, rest = data.partition(b"\n")
                add_write(scheme, rel, f"#!{python}\n".encode() + rest, executable=True)
                continue
        links_append((source, dest))
        sizes_append(entry.size)
        executable_append(entry.executable)
        creates_append((roots[schemes[scheme]], rel))
        records_append((prefixes[scheme] + rel, entry.hash, entry.size))


def _record_text(rows: Sequence[tuple[str, str, str | int]]) -> str:
    """RECORD's text for `(path, digest, size)` rows, as `csv.writer` writes it (`,` between
    fields, `\\n` after each row, a field quoted only when it holds `,`, `"`, `\\r` or `\\n`).
    Digests and sizes never hold one and paths seldom do: the rows are joined as they are
    (thousands of rows a wheel), and written by `csv` only when the text shows such a field."""
    text = "".join([f"{path},{digest},{size}\n" for path, digest, size in rows])
    if (
        '"' not in text
        and "\r" not in text
        and text.count(",") == 2 * len(rows)
        and text.count("\n") == len(rows)
    ):
        return text
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, delimiter=",", quotechar='"', lineterminator="\n").writerows(rows)
    return out.getvalue()


class _Guard:
    """Where a wheel's files may not go, checked for every destination before anything is
    written."""

    def __init__(self, filename: str, sites: set[str], target: Target) -> None:
        self.filename = filename
        self.sites = tuple(s + os.sep for s in sites)
        self.own = os.path.abspath(seal.key_path().parent) + os.sep
        try:
            self.name_max = os.pathconf(min(sites), "PC_NAME_MAX")
            self.path_max = os.pathconf(min(sites), "PC_PATH_MAX")
        except (OSError, ValueError, AttributeError):  # pragma: no cover - no pathconf
            self.name_max, self.path_max = 255, 4096

    def of(self, filename: str) -> _Guard:
        """The same guard, for the wheel `filename` (its errors name it)."""
        guard = copy.copy(self)
        guard.filename = filename
        return guard

    def check(self, dest: str, member: str, *, via_data: bool) -> None:
        if len(dest) > self.name_max:
            encoded = os.fsencode(dest)
            if len(encoded) >= self.path_max or any(
                len(part) > self.name_max for part in encoded.split(os.fsencode(os.sep))
            ):
                raise WheelIntegrityError(
                    self.filename,
                    f"a path is longer than the file system allows ({self.name_max} bytes a "
                    f"name, {self.path_max} a path)",
                    member=member,
                )
        if not via_data:
            return  # purelib/platlib members: checked when the wheel was unpacked
        if dest.startswith(self.own):
            raise WheelIntegrityError(
                self.filename, "it would write into safepip's own data folder", member=member
            )
        for site in self.sites:
            if dest.startswith(site):
                top = dest[len(site) :].split(os.sep, 1)[0]
                if top.endswith((".dist-info", ".egg-info")) or top.startswith(TXN_PREFIX):
                    raise WheelIntegrityError(
                        self.filename,
                        f"it would write into the metadata folder `{top}` through its `.data` "
                        "folder",
                        member=member,
                    )


def _versioned_launchers(
    entries: Iterable[tuple[str, str, str, ScriptSection]], version: tuple[int, int, int]
) -> list[tuple[str, str, str, ScriptSection]]:
    """pip's own launchers as pip and uv install them: `pip` also as `pip3` and `pip3.X` for the
    target's Python (and `easy_install` as `easy_install-3.X`); versioned names that the wheel
    lists for the Python that built it are dropped."""
    entries = list(entries)
    console = {name for name, _, _, section in entries if section == "console"}
    result: list[tuple[str, str, str, ScriptSection]] = []
    for name, module, attr, section in entries:
        if section == "console" and "pip" in console and _PIP_SCRIPT.fullmatch(name):
            if name == "pip":
                result += [
                    (alias, module, attr, section)
                    for alias in ("pip", f"pip{version[0]}", f"pip{version[0]}.{version[1]}")
                ]
            continue
        if section == "console" and "easy_install" in console and _EASY_SCRIPT.fullmatch(name):
            if name == "easy_install":
                alias = f"easy_install-{version[0]}.{version[1]}"
                result += [(name, module, attr, section), (alias, module, attr, section)]
            continue
        result.append((name, module, attr, section))
    return result


_PIP_SCRIPT = re.compile(r"pip(\d+(\.\d+)?)?")
_EASY_SCRIPT = re.compile(r"easy_install(-\d+\.\d+)?")


def _digest(data: bytes) -> str:
    return "sha256=" + _b64(hashlib.sha256(data).digest())


def _b64(digest: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- uninstall ------------------------------------------------------------------------------


def _record_paths(dist: InstalledDistribution, target: Target) -> list[Path]:
    """Absolute paths listed in a distribution's RECORD that lie inside the target's folders."""
    import csv
    import io

    site = dist.dist_info.parent
    allowed = [Path(os.path.abspath(p)) for p in target.paths.as_dict().values()]
    allowed.append(Path(os.path.abspath(target.prefix)))
    text = dist.read_text("RECORD") or ""
    paths: list[Path] = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0]:
            continue
        path = Path(os.path.abspath(site / row[0]))
        # A RECORD is data from the package: never delete outside the environment's folders.
        if any(path == root or path.is_relative_to(root) for root in allowed):
            paths.append(path)
    return paths


def _remove_distribution(dist: InstalledDistribution, target: Target, txn: Transaction) -> None:
    for path in _record_paths(dist, target):
        if path.is_symlink() or path.is_file():
            txn.set_aside(str(path))
            if path.suffix == ".py":
                cache_dir = path.parent / "__pycache__"
                if cache_dir.is_dir():
                    for pyc in cache_dir.glob(f"{path.stem}.*.pyc"):
                        txn.set_aside(str(pyc))
    if dist.dist_info.is_dir():
        for leftover in sorted(dist.dist_info.rglob("*"), reverse=True):
            if leftover.is_file() or leftover.is_symlink():
                txn.set_aside(str(leftover))


# --- the install ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallResult:
    installed: tuple[Pin, ...]
    removed: tuple[InstalledDistribution, ...]
    kept: tuple[Pin, ...]
    linked: bool
    """Whether files were hard-linked from the cache (`--link-mode hardlink`)."""
    overwritten: tuple[str, ...] = ()
    """One line per installed distribution, left in place, whose files this install replaced
    with other contents (`_unseal_overwritten`)."""


def _direct_url_json(pin: Pin) -> bytes | None:
    if not pin.artifact.direct_url:
        return None

    url = redact_url(pin.artifact.url)
    sha = next(
        (f"sha256={d}" for a, d in map(split_hash, pin.artifact.expected_hashes) if a == "sha256"),
        None,
    )
    info: dict[str, object] = {"url": url, "archive_info": {}}
    if sha:
        info["archive_info"] = {"hash": sha, "hashes": {"sha256": sha.split("=", 1)[1]}}
    return json.dumps(info, sort_keys=True).encode()


def _artifact_record(pin: Pin, fetched: FetchedArtifact) -> bytes:

    return (
        json.dumps(
            {
                "version": 1,
                "installer": f"safepip {__version__}",
                "name": pin.name,
                "version_installed": pin.version,
                "filename": fetched.artifact.filename,
                "sha256": fetched.sha256,
                "hashes": sorted(fetched.hashes - {f"sha256:{fetched.sha256}"}),
                "url": redact_url(pin.artifact.url),
                "origin": redact_url(pin.artifact.origin),
                "hash_source": pin.artifact.hash_source,
                "requested": pin.requested,
                **({"built_from": fetched.built_from} if fetched.built_from else {}),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    ).encode()


def apply(
    plan: ChangePlan,
    fetched: dict[str, FetchedArtifact],
    unpacked: dict[str, UnpackedWheel],
    target: Target,
    *,
    link_mode: LinkMode = DEFAULT_LINK_MODE,
) -> InstallResult:
    """Carry out `plan` on the target as one transaction (see `safepip.journal`).

    `fetched` and `unpacked` are keyed by `Pin.spec` and by sha256. Every file of a removed
    distribution is set aside first; each new wheel is laid out with files placed from the unpacked
    cache in `link_mode`. On any error, SIGINT or SIGTERM everything is rolled back: `InstallError`
    (or `signals.Interrupted`, with its `outcome`) is raised. After SIGKILL or a power cut, the next
    run's `journal.recover` does the same from the journal.
    """
    with paused_gc():  # (the layouts of tens of thousands of files, see `paused_gc`)
        return _apply(plan, fetched, unpacked, target, link_mode)


def _apply(
    plan: ChangePlan,
    fetched: dict[str, FetchedArtifact],
    unpacked: dict[str, UnpackedWheel],
    target: Target,
    link_mode: LinkMode,
) -> InstallResult:
    site = str(target.paths.purelib)
    if _gone(target):
        raise _environment_gone(target)
    if target.kind != "env":
        _makedirs(target, site)
    layouts: list[_Layout] = []
    overwritten: tuple[str, ...] = ()
    key = seal.load_key(create=bool(plan.install))
    roots = environment_roots(target)  # (as the transaction's journal will list them)
    index = {
        d: roots.index(d) for d in {os.path.abspath(v) for v in target.paths.as_dict().values()}
    }
    laying = _Site(target, index)
    for pin in plan.install:
        item = fetched[pin.spec]
        extra: dict[str, bytes] = {
            "INSTALLER": b"safepip\n",
            ARTIFACT_RECORD: _artifact_record(pin, item),
        }
        if pin.requested:
            extra["REQUESTED"] = b""
        direct = _direct_url_json(pin)
        if direct is not None:
            extra["direct_url.json"] = direct
        assert key is not None
        layouts.append(_layout_wheel(unpacked[item.sha256], laying, extra, pin.display_name, key))
    with envlock.hold(target), signals.handled():
        txn = Transaction(target)
        linker = Linker(link_mode)
        current = "starting the install"
        try:
            assert txn.roots == roots
            creates = [item for lay in layouts for item in lay.creates]
            txn.begin(site, creates, _summary(plan))
            for dist in plan.remove:
                current = f"removing `{dist.display_name}=={dist.version}`"
                _remove_distribution(dist, target, txn)
            current = "preparing the install"
            dests: list[str] = []
            for lay in layouts:
                dests += [dest for _, dest in lay.links]
                dests += [dest for dest, _, _ in lay.writes]
            txn.prepare(dests)
            if txn.displaced:
                current = "checking the files this install replaces"
                overwritten = _unseal_overwritten(txn, plan, layouts, target)
            links = [pair for lay in layouts for pair in lay.links]
            writes = [item for lay in layouts for item in lay.writes]
            # (when two files go to one destination, the later wheel's wins: placed in order)
            if linker.can_share(len(links)) and len(set(dests)) == len(dests):
                # Many files, each written once: placed by two processes in any order.
                current = "installing"
                try:
                    txn.place_shared(
                        links,
                        [n for lay in layouts for n in lay.sizes],
                        [x for lay in layouts for x in lay.executable],
                        writes,
                        linker,
                    )
                except BaseException:
                    current = _installing(plan, layouts, txn.current)
                    raise
            else:
                for pin, lay in zip(plan.install, layouts, strict=True):
                    current = f"installing `{pin.spec}`"
                    txn.place_many(lay.links, lay.sizes, lay.executable, linker)
                    for dest, data, executable in lay.writes:
                        txn.write(dest, data, executable=executable)
            current = "committing"
            txn.check_environment()
            with signals.deferred() as arrived:
                txn.commit()
                signals.install_committed()
        except BaseException as exc:
            with signals.deferred():  # its threads are idle: `place_many` waited for them
                linker.close()
            journal_gone = txn.journal is not None and not os.path.isdir(txn.journal.state.folder)
            if not isinstance(exc, signals.Interrupted) and (_gone(target) or journal_gone):
                # Deleted under us (the journal goes first when the whole folder is removed):
                # there is nothing to restore, and moving files home would recreate a bare copy
                # of its folders.
                raise _environment_gone(target) from exc
            with signals.deferred():  # a second Ctrl-C must not cut the rollback short
                try:
                    txn.rollback()
                except SafepipError as failed:
                    if isinstance(exc, signals.Interrupted):
                        exc.outcome = f"the rollback did not finish: {failed}"
                    raise failed from exc
            if isinstance(exc, signals.Interrupted):
                exc.outcome = "the install was rolled back; the environment is as it was"
                raise
            if isinstance(exc, SafepipError):
                raise
            if isinstance(exc, OSError):
                raise _disk_error(exc, txn.current, current, target) from exc
            if isinstance(exc, Exception):
                raise InstallError(
                    f"Install failed while {current}: {exc}; the environment was restored",
                ) from exc
            raise
    linker.close()
    if arrived:
        interrupted = signals.Interrupted(arrived[0])
        interrupted.outcome = signals.COMMITTED
        raise interrupted
    return InstallResult(
        installed=plan.install,
        removed=plan.remove,
        kept=plan.keep,
        linked=linker.linked,
        overwritten=overwritten,
    )


def _installing(plan: ChangePlan, layouts: Sequence[_Layout], path: str) -> str:
    """What an install was doing when it failed at `path`, for the error message."""
    for pin, lay in zip(plan.install, layouts, strict=True):
        if any(dest == path for _, dest in lay.links) or any(w[0] == path for w in lay.writes):
            return f"installing `{pin.spec}`"
    return "installing"


def _sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _unseal_overwritten(
    txn: Transaction, plan: ChangePlan, layouts: Sequence[_Layout], target: Target
) -> tuple[str, ...]:
    """Installed distributions that stay but whose files this install replaces with other
    contents (pip lets a wheel do that) lose their install seal, in the transaction: they are
    no longer what safepip installed, so the next install reinstalls them instead of keeping
    them. Identical contents (a namespace package's shared `__init__.py`) change nothing."""
    from safepip.target import installed_distributions

    new: dict[str, tuple[str, str]] = {}  # dest -> (sha256 of the new contents, wheel)
    for pin, lay in zip(plan.install, layouts, strict=True):
        for source, dest in lay.links:
            if dest in txn.displaced:
                new[dest] = (_sha256_of(source), pin.spec)
        for dest, data, _ in lay.writes:
            if dest in txn.displaced:
                new[dest] = (hashlib.sha256(data).hexdigest(), pin.spec)
    changed = {d: by for d, (sha, by) in new.items() if txn.displaced[d] != sha}
    if not changed:
        return ()
    leaving = {p.name for p in plan.install} | {d.name for d in plan.remove}
    notes: list[str] = []
    for dist in installed_distributions(target):
        if dist.name in leaving:
            continue
        hit = sorted(str(p) for p in _record_paths(dist, target) if str(p) in changed)
        if not hit:
            continue
        sealed = str(dist.dist_info / seal.SEAL_FILE)
        if os.path.lexists(sealed):
            txn.set_aside(sealed)
        more = f" and {len(hit) - 1} more" if len(hit) > 1 else ""
        notes.append(
            f"`{dist.display_name}=={dist.version}`: `{hit[0]}`{more} replaced by a file of "
            f"`{changed[hit[0]]}`; its install seal was removed, so the next install "
            "reinstalls it"
        )
    return tuple(notes)


def _summary(plan: ChangePlan) -> str:
    parts = [f"remove {d.display_name}=={d.version}" for d in plan.remove]
    parts += [f"install {p.display_name}=={p.version}" for p in plan.install]
    text = ", ".join(parts)
    return text if len(text) <= 300 else text[:297] + "..."


def _makedirs(target: Target, path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, path, "creating the target folder", target) from exc


def _disk_error(exc: OSError, path: str, doing: str, target: Target) -> InstallError:
    """One clear line for a failed write: what, where, and that it was the environment."""
    where = exc.filename or path
    reason = exc.strerror or str(exc)
    env = target.prefix if target.kind == "env" else target.paths.purelib
    return InstallError(
        f"Install failed while {doing}: {reason}: `{where}` (in the environment `{env}`); "
        "the environment was restored",
        hint=(
            "free some space on that file system and try again"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check that the environment is writable by this user"
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
            else None
        ),
    )


def compile_bytecode(target: Target, pins: Sequence[Pin]) -> None:
    """Compile the installed `.py` files with the *target* interpreter, on every core.

    Bytecode is specific to the interpreter's version, so safepip never compiles with its own.
    `compileall -j` parallelises folders only, not a list of files, so the list is split across
    one `compileall` process per core. Failures (a file with a syntax error for this Python)
    are ignored, as pip does.
    """
    files = _installed_py_files(target, pins)
    if not files:
        return
    workers = max(1, min(os.cpu_count() or 1, len(files) // 50 or 1))
    # Interleave by size so every process gets a similar amount of work.
    files.sort(key=lambda f: f.stat().st_size if f.exists() else 0, reverse=True)
    chunks = [files[i::workers] for i in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # A signal while the compilers start is held until each started one is in `procs`, so
        # none can escape the clean-up below.
        with signals.deferred() as arrived:
            for _ in chunks:
                procs.append(
                    subprocess.Popen(
                        [str(target.python), "-I", "-m", "compileall", "-q", "-i", "-"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        if arrived:
            raise signals.Interrupted(arrived[0])
        for proc, chunk in zip(procs, chunks, strict=True):
            assert proc.stdin is not None
            proc.stdin.write("\n".join(str(f) for f in chunk).encode())
            proc.stdin.close()
        for proc in procs:
            proc.wait()
    except BaseException as exc:
        # SIGINT, SIGTERM or an error: the compilers never outlive safepip (issue 10).
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        if isinstance(exc, signals.Interrupted):
            exc.outcome = (
                "the install had already completed and was kept; not every file was compiled "
                "to bytecode"
            )
        raise


def _installed_py_files(target: Target, pins: Sequence[Pin]) -> list[Path]:
    import csv
    import io

    from packaging.utils import canonicalize_name

    wanted = {p.name for p in pins}
    roots: set[Path] = set()
    for site in target.site_dirs():
        for dist_info in site.glob("*.dist-info"):
            stem = dist_info.name[: -len(".dist-info")]
            if canonicalize_name(stem.rpartition("-")[0]) not in wanted:
                continue
            try:
                text = (dist_info / "RECORD").read_text("utf-8")
            except OSError:
                continue
            for row in csv.reader(io.StringIO(text)):
                if row and row[0].endswith(".py"):
                    path = Path(os.path.abspath(site / row[0]))
                    if path.is_relative_to(site):
                        roots.add(path)
    return sorted(roots)
