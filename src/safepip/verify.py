"""Verifying an installed environment: every file against its RECORD, every package against
the artifact safepip recorded (and sealed, see `safepip.seal`) and, optionally, against a
lock."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safepip import seal
from safepip.errors import ExitCode, SafepipError
from safepip.hashes import split_hash
from safepip.install import installed_artifact, recorded_hashes

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from packaging.utils import NormalizedName

    from safepip.target import InstalledDistribution, Target


@dataclass(frozen=True, kw_only=True, slots=True)
class FileProblem:
    package: str
    path: str
    problem: str
    """`modified`, `missing`, `empty`, `unreadable`, `outside the environment` or, for the
    install seal, `forged or modified …`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PackageNote:
    package: str
    note: str


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    packages: int
    files: int
    file_problems: tuple[FileProblem, ...]
    lock_problems: tuple[PackageNote, ...]
    unverifiable: tuple[PackageNote, ...]
    """Packages whose origin safepip cannot vouch for (installed by another tool)."""

    @property
    def ok(self) -> bool:
        return not self.file_problems and not self.lock_problems


class VerificationFailed(SafepipError):
    exit_code = ExitCode.INTEGRITY

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        count = len(report.file_problems) + len(report.lock_problems)
        lines = [f"{count} problem{'' if count == 1 else 's'} in the environment"]
        for p in report.file_problems[:50]:
            lines.append(f"    `{p.package}`: {p.path} is {p.problem}")
        if len(report.file_problems) > 50:
            lines.append(f"    … and {len(report.file_problems) - 50} more files")
        for n in report.lock_problems:
            lines.append(f"    `{n.package}`: {n.note}")
        super().__init__(
            "\n".join(lines),
            hint="reinstall the affected packages with `safepip install --force-reinstall`",
        )


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _check_file(path: str, algorithm: str, expected: str, size: str) -> str | None:
    try:
        h = hashlib.new(algorithm)
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError):
        return "unreadable"
    if _b64(h.digest()) != expected:
        return "modified"
    if size and size.isdigit() and os.path.getsize(path) != int(size):
        return "modified"
    return None


def verify_environment(
    target: Target,
    dists: Sequence[InstalledDistribution],
    *,
    lock: Mapping[NormalizedName, tuple[str, frozenset[str]]] | None = None,
) -> VerifyReport:
    """Hash every file listed in each distribution's RECORD and compare.

    With `lock` ({name: (version, accepted `alg:hex` digests)}), also check that exactly the
    locked packages are installed, at the locked versions, from files with a locked digest in
    any algorithm the lock uses (according to safepip's sealed install record). A seal that does
    not match its `.dist-info` is a problem; a distribution without one is not verifiable. Files
    not listed in RECORD are not inspected.
    """

    roots = [os.path.abspath(p) for p in target.paths.as_dict().values()]
    roots.append(os.path.abspath(target.prefix))
    jobs: list[tuple[str, str, str, str, str]] = []
    problems: list[FileProblem] = []
    unverifiable: list[PackageNote] = []
    lock_problems: list[PackageNote] = []
    for dist in dists:
        label = f"{dist.display_name}=={dist.version}"
        site = str(dist.dist_info.parent)
        if dist.damage is not None:
            # A torn `.dist-info` (a crash inside another installer, a power cut): its RECORD
            # proves nothing, or there is no METADATA to say what is installed (issue 10).
            file, _, problem = dist.damage.partition(" is ")
            problems.append(
                FileProblem(
                    package=label,
                    path=f"{dist.dist_info.name}/{file}",
                    problem=problem or "damaged",
                )
            )
            if not dist.has_metadata:
                continue
        text = dist.read_text("RECORD")
        if text is None:
            if dist.damage is None:
                problems.append(FileProblem(package=label, path="RECORD", problem="missing"))
            continue
        for row in csv.reader(io.StringIO(text)):
            if len(row) < 2 or not row[0] or not row[1]:
                continue
            path = os.path.abspath(os.path.join(site, row[0]))
            if not any(path == r or path.startswith(r + os.sep) for r in roots):
                problems.append(
                    FileProblem(package=label, path=row[0], problem="outside the environment")
                )
                continue
            alg, _, value = row[1].partition("=")
            jobs.append((label, path, alg, value, row[2] if len(row) > 2 else ""))
        state = seal.check(dist.dist_info)
        if state is seal.SealState.INVALID:
            problems.append(
                FileProblem(
                    package=label,
                    path=str(dist.dist_info / seal.SEAL_FILE),
                    problem="forged or modified (the install seal does not match the "
                    "`.dist-info` folder)",
                )
            )
        elif dist.installer != "safepip" or state is seal.SealState.MISSING:
            unverifiable.append(
                PackageNote(
                    package=label,
                    note=f"installed by `{dist.installer or 'an unknown tool'}`"
                    + (" without an install seal" if dist.installer == "safepip" else "")
                    + ", not from a file safepip verified",
                )
            )
        elif state is seal.SealState.NO_KEY:
            unverifiable.append(
                PackageNote(
                    package=label,
                    note=f"sealed with an install key this user does not have "
                    f"(`{seal.key_path()}`)",
                )
            )
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        outcomes = pool.map(lambda j: _check_file(j[1], j[2], j[3], j[4]), jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome is not None:
                problems.append(FileProblem(package=job[0], path=job[1], problem=outcome))
    if lock is not None:
        by_name = {d.name: d for d in dists if d.has_metadata}
        for name, (version, digests) in sorted(lock.items()):
            found = by_name.get(name)
            if found is None:
                lock_problems.append(PackageNote(package=name, note="locked but not installed"))
                continue
            dist = found
            if dist.version != version:
                lock_problems.append(
                    PackageNote(
                        package=name, note=f"installed {dist.version}, the lock pins {version}"
                    )
                )
                continue
            record = installed_artifact(dist)
            # a wheel safepip built counts as installed from the sdist it was built from
            accepted = {":".join(split_hash(d)) for d in digests}
            if accepted and (record is None or not recorded_hashes(record) & accepted):
                lock_problems.append(
                    PackageNote(
                        package=name,
                        note="not installed from a file whose hash the lock pins"
                        + (" (no valid install seal)" if record is None else ""),
                    )
                )
        for name in sorted(set(by_name) - set(lock)):
            lock_problems.append(
                PackageNote(
                    package=f"{by_name[name].display_name}=={by_name[name].version}",
                    note="installed but not in the lock",
                )
            )
    return VerifyReport(
        packages=len(dists),
        files=len(jobs),
        file_problems=tuple(problems),
        lock_problems=tuple(lock_problems),
        unverifiable=tuple(unverifiable),
    )
