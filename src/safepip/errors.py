"""The root of safepip's errors and the stable exit codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes; documented in README and stable across releases."""

    OK = 0
    FAILURE = 1
    """Anything else: network, resolution, install."""
    USAGE = 2
    """A usage error or invalid input (a requirements file that does not parse)."""
    INTEGRITY = 3
    """Hash mismatch, missing hash, unpinned requirement in hash mode, a lying wheel."""
    POLICY = 4
    """Untrusted host, plain HTTP, redirect off the allowed hosts, sdist not allowed."""
    VULNERABLE = 5
    """A known vulnerability was found."""


class SafepipError(Exception):
    """Base of every error safepip reports to the user.

    Subclasses attach the facts as attributes and build the text in `message`; `hint` says what
    the user can do. The CLI catches this type once and renders `error: …` and `hint: …`.
    """

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SafepipError):
    """The command line or the configuration is not usable as given."""

    exit_code = ExitCode.USAGE
