"""`python -m safepip`."""

from __future__ import annotations

from safepip.fastpath import run

if __name__ == "__main__":
    run()
