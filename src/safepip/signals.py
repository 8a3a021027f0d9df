"""SIGINT and SIGTERM as an exception that an install can roll back on, and sections they do not
cut short (a rollback, a commit).

Without this, SIGTERM (`docker stop`, a cancelled CI job) kills the interpreter on the spot and
skips every `finally`; with it, both signals raise `Interrupted` in the main thread, which unwinds
like Ctrl-C, and the CLI exits 130 or 143 after saying what happened.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM arrived. `outcome` says what became of the environment, when known."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.outcome: str | None = None

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it (130, 143)."""
        return 128 + self.signum


# While a section defers signals, the handler records them here instead of raising.
_deferring: list[list[int]] = []

COMMITTED = "the install had already completed and was kept"
"""What a SIGINT or SIGTERM that arrives after an install committed leaves of it."""
_committed: list[bool] = []


def install_committed() -> None:
    """An install of this process has committed its transaction: an interruption from now on
    (in the install's last steps, the pipeline's or the command's output) is reported as
    coming after it (`report_interrupt`), whichever code it interrupts."""
    _committed.append(True)


def command_started() -> None:
    """A command starts (`safepip.cli.main`): no install of it has committed yet."""
    _committed.clear()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _deferring:
        _deferring[-1].append(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def deferred() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM back for the duration; yields the list of those that arrived, for
    the caller to act on afterwards."""
    arrived: list[int] = []
    with handled():
        _deferring.append(arrived)
        try:
            yield arrived
        finally:
            _deferring.pop()


def report_interrupt(exc: KeyboardInterrupt) -> int:
    """Say what a SIGINT or SIGTERM interrupted (on stderr) and return the exit code."""
    import sys

    if isinstance(exc, Interrupted):
        text = f"interrupted by {signal.Signals(exc.signum).name}"
        outcome = exc.outcome or (COMMITTED if _committed else None)
        if outcome:
            text += f"; {outcome}"
        code = exc.exit_code
    elif _committed:  # Python's own SIGINT handler, back after the install's sections
        text, code = f"interrupted by SIGINT; {COMMITTED}", 128 + signal.SIGINT
    else:
        text, code = "interrupted", 128 + signal.SIGINT
    sys.stderr.write(f"error: {text}\n")
    return code
