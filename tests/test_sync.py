"""`sync.py`: what a sync removes, and how its plan is shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from safepip.errors import ExitCode
from safepip.install import ChangePlan
from safepip.plan import Artifact, Pin
from safepip.sync import SyncError, extraneous, plan_lines, require_lock, sync_changes
from safepip.target import InstalledDistribution


def pin(name: str, version: str) -> Pin:
    n = canonicalize_name(name)
    return Pin(
        name=n,
        display_name=name,
        version=version,
        artifact=Artifact(
            name=n,
            version=version,
            filename=f"{name}-{version}-py3-none-any.whl",
            url="file:///x",
            origin="test",
            expected_hashes=frozenset({"sha256:" + "0" * 64}),
            hash_source="pinned",
        ),
        requested=True,
    )


def dist(name: str, version: str) -> InstalledDistribution:
    return InstalledDistribution(
        name=canonicalize_name(name),
        display_name=name,
        version=version,
        dist_info=Path(f"/nowhere/{name}-{version}.dist-info"),
        installer="pip",
    )


class TestExtraneous:
    def test_tools_are_kept_unless_pinned(self) -> None:
        installed = [
            dist("pip", "24.0"),
            dist("setuptools", "70.0"),
            dist("wheel", "0.43"),
            dist("safepip", "0.1"),
            dist("Old_Thing", "1.0"),
            dist("base", "1.0"),
        ]
        assert [d.name for d in extraneous([pin("base", "1.0")], installed)] == ["old-thing"]

    def test_pinned_tool_follows_the_lock(self) -> None:
        changes = ChangePlan(install=(pin("pip", "25.0"),), remove=(dist("pip", "24.0"),), keep=())
        synced = sync_changes(changes, [pin("pip", "25.0")], [dist("pip", "24.0")])
        assert plan_lines(synced) == ["~ pip 24.0 -> 25.0"]


def test_plan_lines() -> None:
    changes = ChangePlan(
        install=(pin("new", "1.0"), pin("base", "2.0"), pin("same", "1.0")),
        remove=(dist("base", "1.0"), dist("same", "1.0")),
        keep=(pin("kept", "1.0"),),
    )
    synced = sync_changes(
        changes,
        [pin("new", "1.0"), pin("base", "2.0"), pin("same", "1.0"), pin("kept", "1.0")],
        [dist("base", "1.0"), dist("same", "1.0"), dist("kept", "1.0"), dist("extra", "3.0")],
    )
    assert plan_lines(synced) == [
        "~ base 1.0 -> 2.0",
        "- extra==3.0",
        "+ new==1.0",
        "~ same==1.0 (reinstalled)",
    ]


def test_error_not_a_lock() -> None:
    with pytest.raises(SyncError) as info:
        require_lock(hash_mode=False, no_deps=False, source="`requirements.in`")
    assert info.value.exit_code == ExitCode.USAGE
    assert str(info.value) == (
        "`safepip sync` needs a hash-pinned lock; `requirements.in` is not one"
    )
    with pytest.raises(SyncError, match="`--no-deps` cannot be used"):
        require_lock(hash_mode=True, no_deps=True, source="x")
