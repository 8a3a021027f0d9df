"""What may be built from sdists: `--allow-build`, the build constraint, the time allowed.

Kept apart from `build` (which builds, and imports the fetch and install stages to do it) so
that `safepip lock` can say what it may build without loading any of that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from packaging.utils import NormalizedName

DEFAULT_TIMEOUT = 900.0


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildPolicy:
    """What may be built, and from which build dependencies."""

    allowed: frozenset[NormalizedName] = frozenset()
    """Projects named with `--allow-build` or `allow-build`."""
    constraint: Path | None = None
    """The build constraint file (`--build-constraint`)."""
    timeout: float = DEFAULT_TIMEOUT
    metadata_only: bool = False
    """Never build (`safepip lock --build`): the dependencies of an sdist without static
    metadata are read from its `PKG-INFO` as they stand, with a warning."""


def timeout_from_environment() -> float:
    """`SAFEPIP_BUILD_TIMEOUT` (seconds, all hooks of one build together), else 900."""
    from safepip.errors import UsageError

    text = os.environ.get("SAFEPIP_BUILD_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"`SAFEPIP_BUILD_TIMEOUT` must be a number of seconds, not `{text}`")
    return value
