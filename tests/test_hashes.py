"""Tests for streaming hashes and the grouped hash-checking error."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safepip.errors import ExitCode
from safepip.hashes import (
    HashCheckError,
    HashProblem,
    ProblemKind,
    StreamHasher,
    hash_file,
    split_hash,
)

if TYPE_CHECKING:
    from pathlib import Path

DATA = b"some wheel bytes\n" * 1000
SHA256 = hashlib.sha256(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()


class TestStreamHasher:
    def test_split_hash(self) -> None:
        assert split_hash("SHA256:ABCdef") == ("sha256", "abcdef")
        assert split_hash("sha256") == ("sha256", "")

    def test_sha256_always_computed(self) -> None:
        hasher = StreamHasher(["sha512", "md5", "sha1"])
        hasher.update(DATA)
        assert hasher.digests() == {"sha256": SHA256, "sha512": SHA512}
        assert hasher.sha256 == SHA256
        assert hasher.size == len(DATA)

    @given(chunks=st.lists(st.binary(max_size=64), max_size=20))
    def test_chunking_does_not_matter(self, chunks: list[bytes]) -> None:
        hasher = StreamHasher(["sha384"])
        for chunk in chunks:
            hasher.update(chunk)
        whole = b"".join(chunks)
        assert hasher.sha256 == hashlib.sha256(whole).hexdigest()
        assert hasher.digests()["sha384"] == hashlib.sha384(whole).hexdigest()
        assert hasher.size == len(whole)

    def test_matches_any_expected_digest(self) -> None:
        hasher = StreamHasher(["sha512"])
        hasher.update(DATA)
        assert hasher.matches([f"sha256:{SHA256}"])
        assert hasher.matches([f"SHA256:{SHA256.upper()}"])
        assert hasher.matches([f"sha256:{'0' * 64}", f"sha512:{SHA512}"])
        assert not hasher.matches([f"sha256:{'0' * 64}"])
        assert not hasher.matches([])

    def test_unsupported_algorithm_never_matches(self) -> None:
        hasher = StreamHasher(["md5"])
        hasher.update(DATA)
        assert not hasher.matches([f"md5:{hashlib.md5(DATA).hexdigest()}"])
        # an algorithm the hasher was not told about cannot match either
        assert not StreamHasher().matches([f"sha512:{SHA512}"])

    def test_hash_file(self, tmp_path: Path) -> None:
        path = tmp_path / "x.whl"
        path.write_bytes(DATA)
        hasher = hash_file(str(path), ["sha512"])
        assert (hasher.sha256, hasher.digests()["sha512"], hasher.size) == (
            SHA256,
            SHA512,
            len(DATA),
        )


MISMATCH_B = HashProblem(
    kind=ProblemKind.MISMATCH,
    package="Beta==2.0",
    where="requirements.txt:3",
    expected=("sha256:" + "1" * 64, "sha256:" + "2" * 64),
    got="sha256:" + "f" * 64,
    url="https://files.example/beta-2.0-py3-none-any.whl",
)
MISMATCH_A = HashProblem(
    kind=ProblemKind.MISMATCH,
    package="alpha==1.0",
    expected=("sha256:" + "3" * 64,),
    got="sha256:" + "e" * 64,
)
MISSING = HashProblem(
    kind=ProblemKind.MISSING_HASH,
    package="gamma==3.0",
    where="requirements.txt:7",
    suggestion="gamma==3.0 --hash=sha256:" + "a" * 64,
)
MISSING_DEP = HashProblem(
    kind=ProblemKind.MISSING_DEPENDENCY,
    package="delta==4.0",
    where="alpha==1.0 -> delta",
    suggestion="delta==4.0 --hash=sha256:" + "b" * 64,
)
UNPINNED = HashProblem(kind=ProblemKind.UNPINNED, package="eps>=1", where="requirements.txt:1")
UNHASHABLE = HashProblem(
    kind=ProblemKind.UNHASHABLE, package="zeta", url="git+https://git.example/zeta"
)
NO_FILE = HashProblem(
    kind=ProblemKind.NO_PINNED_FILE,
    package="eta==1.0",
    expected=("sha256:" + "4" * 64,),
    got="sha256:" + "5" * 64,
)
UNHASHED = HashProblem(kind=ProblemKind.UNHASHED_INDEX_FILE, package="theta==1.0")
ALL = [MISMATCH_B, UNHASHED, MISSING, NO_FILE, MISMATCH_A, UNPINNED, MISSING_DEP, UNHASHABLE]


class TestHashCheckError:
    def test_error_hash_check_rendering(self) -> None:
        err = HashCheckError(ALL)
        assert str(err) == "\n".join(
            [
                "8 hash-checking problems",
                "",
                "In hash-checking mode every requirement must be pinned with `==` "
                "(or be a URL to a file); these are not:",
                "    `eps>=1` (from requirements.txt:1)",
                "",
                "These requirements cannot be hash-checked (editable installs, VCS URLs and "
                "local folders have no file to hash):",
                "    `zeta` (git+https://git.example/zeta)",
                "",
                "Hashes are required in hash-checking mode, but these requirements have none; "
                "the lines below carry the hash of the file safepip would install, check it "
                "before use:",
                "    gamma==3.0 --hash=sha256:" + "a" * 64 + "  # requirements.txt:7",
                "",
                "In hash-checking mode every dependency must be pinned and hashed in the "
                "requirements files; these are missing (add the lines below after checking them):",
                "    delta==4.0 --hash=sha256:" + "b" * 64 + "  # alpha==1.0 -> delta",
                "",
                "Hash mismatch: these files do not match any hash in the requirements; someone "
                "may have tampered with them:",
                "    `alpha==1.0`",
                "        file:     ?",
                "        expected: sha256:" + "3" * 64,
                "        got:      sha256:" + "e" * 64,
                "    `Beta==2.0` (from requirements.txt:3)",
                "        file:     https://files.example/beta-2.0-py3-none-any.whl",
                "        expected: sha256:" + "1" * 64,
                "        expected: sha256:" + "2" * 64,
                "        got:      sha256:" + "f" * 64,
                "",
                "No file on the index matches a pinned hash for these requirements:",
                "    `eta==1.0`",
                "        expected: sha256:" + "4" * 64,
                "        the index offers: sha256:" + "5" * 64,
                "",
                "The index publishes no hash for these files, so they cannot be checked:",
                "    `theta==1.0`",
            ]
        )
        assert err.exit_code is ExitCode.INTEGRITY
        assert err.problems == tuple(ALL)

    @given(order=st.permutations(ALL))
    def test_rendering_does_not_depend_on_input_order(self, order: list[HashProblem]) -> None:
        assert str(HashCheckError(order)) == str(HashCheckError(ALL))

    def test_one_problem_is_singular(self) -> None:
        assert str(HashCheckError([UNHASHED])).splitlines()[0] == "1 hash-checking problem"

    def test_missing_hash_without_suggestion_shows_the_package(self) -> None:
        problem = HashProblem(kind=ProblemKind.MISSING_HASH, package="gamma==3.0")
        assert str(HashCheckError([problem])).splitlines()[-1] == "    gamma==3.0"

    @pytest.mark.parametrize(
        ("problems", "hint_start"),
        [
            ([MISSING, MISMATCH_A], "if the requirements file is right"),
            ([MISSING, UNPINNED], "regenerate the lock with `safepip lock`"),
            ([MISSING_DEP], "regenerate the lock with `safepip lock`"),
            ([UNPINNED, UNHASHED], "pin each requirement with `==`"),
            ([UNHASHED], "pin hashes in the requirements, or accept the risk"),
        ],
    )
    def test_default_hint_follows_the_most_serious_kind(
        self, problems: list[HashProblem], hint_start: str
    ) -> None:
        hint = HashCheckError(problems).hint
        assert hint is not None
        assert hint.startswith(hint_start)

    def test_explicit_hint_wins(self) -> None:
        assert HashCheckError([MISMATCH_A], hint="do this").hint == "do this"
