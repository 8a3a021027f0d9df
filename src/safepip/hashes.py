"""Hash-checking: pinned digests, streaming verification, and errors the user can paste from."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safepip.errors import ExitCode, SafepipError

if TYPE_CHECKING:
    from collections.abc import Iterable

HEX_LENGTHS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
"""The digests pip accepts in `--hash`, with the length of their hex form."""
ALLOWED_ALGORITHMS = tuple(HEX_LENGTHS)
"""The only digests safepip checks, carries into locks or accepts in a wheel's RECORD."""


def split_hash(value: str) -> tuple[str, str]:
    """`"sha256:ABC"` → `("sha256", "abc")`."""
    alg, _, digest = value.partition(":")
    return alg.lower(), digest.lower()


class StreamHasher:
    """Hashes a stream with sha256 plus any other algorithm the expected digests use."""

    def __init__(self, algorithms: Iterable[str] = ()) -> None:
        algs = {"sha256", *(a for a in algorithms if a in ALLOWED_ALGORITHMS)}
        self._hashers = {alg: hashlib.new(alg) for alg in sorted(algs)}
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        for h in self._hashers.values():
            h.update(chunk)

    def digests(self) -> dict[str, str]:
        return {alg: h.hexdigest() for alg, h in self._hashers.items()}

    @property
    def sha256(self) -> str:
        return self._hashers["sha256"].hexdigest()

    def matches(self, expected: Iterable[str]) -> bool:
        """True when any expected `alg:hex` digest equals the computed one (pip's OR rule)."""
        got = self.digests()
        return any(got.get(alg) == digest for alg, digest in map(split_hash, expected))


def hash_file(path: str, algorithms: Iterable[str] = ()) -> StreamHasher:
    hasher = StreamHasher(algorithms)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)
    return hasher


class ProblemKind(enum.Enum):
    """Kinds of hash-mode problems, in the order they are reported."""

    UNPINNED = "unpinned"
    UNHASHABLE = "unhashable"
    MISSING_HASH = "missing-hash"
    MISSING_DEPENDENCY = "missing-dependency"
    MISMATCH = "mismatch"
    NO_PINNED_FILE = "no-pinned-file"
    UNHASHED_INDEX_FILE = "unhashed-index-file"


_HEADINGS = {
    ProblemKind.UNPINNED: (
        "In hash-checking mode every requirement must be pinned with `==` "
        "(or be a URL to a file); these are not"
    ),
    ProblemKind.UNHASHABLE: (
        "These requirements cannot be hash-checked (editable installs, VCS URLs and local "
        "folders have no file to hash)"
    ),
    ProblemKind.MISSING_HASH: (
        "Hashes are required in hash-checking mode, but these requirements have none; "
        "the lines below carry the hash of the file safepip would install, check it before use"
    ),
    ProblemKind.MISSING_DEPENDENCY: (
        "In hash-checking mode every dependency must be pinned and hashed in the requirements "
        "files; these are missing (add the lines below after checking them)"
    ),
    ProblemKind.MISMATCH: (
        "Hash mismatch: these files do not match any hash in the requirements; someone may have "
        "tampered with them"
    ),
    ProblemKind.NO_PINNED_FILE: (
        "No file on the index matches a pinned hash for these requirements"
    ),
    ProblemKind.UNHASHED_INDEX_FILE: (
        "The index publishes no hash for these files, so they cannot be checked"
    ),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class HashProblem:
    """One hash-mode problem: what, for which package, and what the user can paste."""

    kind: ProblemKind
    package: str
    """`name==version` or the requirement text."""
    where: str | None = None
    """`file:line` of the requirement, or the chain that needs a dependency."""
    expected: tuple[str, ...] = ()
    got: str | None = None
    """The computed `sha256:<hex>` of the file, where one was downloaded."""
    url: str | None = None
    suggestion: str | None = None
    """A line to paste into the requirements file."""


class HashCheckError(SafepipError):
    """Every hash-mode problem of a run, grouped by kind in a stable order."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, problems: Iterable[HashProblem], *, hint: str | None = None) -> None:
        self.problems = tuple(problems)
        super().__init__(self._render(), hint=hint or self._default_hint())

    def _default_hint(self) -> str | None:
        kinds = {p.kind for p in self.problems}
        if ProblemKind.MISMATCH in kinds:
            return (
                "if the requirements file is right, the index served other bytes than were locked; "
                "do not install them, and regenerate the lock only if you trust the new files"
            )
        if kinds & {ProblemKind.MISSING_HASH, ProblemKind.MISSING_DEPENDENCY}:
            return "regenerate the lock with `safepip lock` (or `pip-compile --generate-hashes`)"
        if ProblemKind.UNPINNED in kinds:
            return "pin each requirement with `==` and add `--hash`, or drop `--require-hashes`"
        if ProblemKind.UNHASHED_INDEX_FILE in kinds:
            return "pin hashes in the requirements, or accept the risk with `--allow-unhashed`"
        return None

    def _render(self) -> str:
        count = len(self.problems)
        lines = [f"{count} hash-checking problem{'s' if count != 1 else ''}"]
        for kind in ProblemKind:
            group = [p for p in self.problems if p.kind is kind]
            if not group:
                continue
            lines.append("")
            lines.append(_HEADINGS[kind] + ":")
            for p in sorted(group, key=lambda p: p.package.lower()):
                lines.extend(_render_problem(p))
        return "\n".join(lines)


def _render_problem(p: HashProblem) -> list[str]:
    where = f" (from {p.where})" if p.where else ""
    match p.kind:
        case ProblemKind.MISSING_HASH | ProblemKind.MISSING_DEPENDENCY:
            return [f"    {p.suggestion or p.package}{'  # ' + p.where if p.where else ''}"]
        case ProblemKind.MISMATCH:
            out = [f"    `{p.package}`{where}", f"        file:     {p.url or '?'}"]
            out += [f"        expected: {e}" for e in p.expected]
            out.append(f"        got:      {p.got}")
            return out
        case ProblemKind.NO_PINNED_FILE:
            out = [f"    `{p.package}`{where}"]
            out += [f"        expected: {e}" for e in p.expected]
            if p.got:
                out.append(f"        the index offers: {p.got}")
            return out
        case ProblemKind.UNPINNED | ProblemKind.UNHASHABLE | ProblemKind.UNHASHED_INDEX_FILE:
            detail = f" ({p.url})" if p.url else ""
            return [f"    `{p.package}`{where}{detail}"]
    raise AssertionError(p.kind)  # pragma: no cover
