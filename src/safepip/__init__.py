"""safepip: a security-first drop-in for `pip install -r requirements.txt`."""

from __future__ import annotations

__version__ = "0.1.0"
