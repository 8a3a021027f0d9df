"""Whether the objects the cyclic garbage collector leaves alone were frozen by safepip's own
command line (which gives them back when the command ends) or by a library caller."""

from __future__ import annotations


class _State:
    frozen_by_command = False


_STATE = _State()


def set_frozen_by_command(frozen: bool) -> None:
    """Set by the command line around a command, after its own `gc.freeze` and before its
    `gc.unfreeze`."""
    _STATE.frozen_by_command = frozen


def frozen_by_command() -> bool:
    """True while the command line holds the frozen objects: more may join them, since all
    of them are given back when the command ends. Otherwise they are a caller's own, and
    nothing should be frozen with them for good."""
    return _STATE.frozen_by_command
