"""Building wheels from the sdists the user allowed: pinned bytes, pinned build dependencies,
an isolated environment and no network for the backend (issue 13)."""

from __future__ import annotations

BUILD_HINT = (
    "safepip builds only the sdists you name: `--allow-build NAME` (or `allow-build` in "
    "`[tool.safepip]`), with its build dependencies pinned in `--build-constraint FILE`; "
    "or ask the maintainers for a wheel"
)
