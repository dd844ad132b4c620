"""The one exception type users see, and the one way to say a name is unknown.

A :class:`VaelabError` carries a single line naming the file or flag at fault
and what was expected. The CLI prints it as ``vaelab: error: <message>`` and
exits with status 2, without a traceback; anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VaelabError(Exception):
    """A user-facing error: bad input, a missing file, an invalid option."""


class Interrupted(KeyboardInterrupt):
    """A command stopped by Ctrl-C where its work can be continued: ``str()`` says where,
    ``run_dir`` is the run folder, ``resume_with`` the command line that continues (None:
    the message itself says what to do). A KeyboardInterrupt, so code that catches those
    still does."""

    def __init__(self, message: str, run_dir: object, resume_with: str | None = "") -> None:
        super().__init__(message)
        self.run_dir = run_dir
        # "" (the default): training's own resume line, built from run_dir by the CLI
        self.resume_with = resume_with


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def did_you_mean(value: object, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``value``, or None when none is close.

    Case and ``_``/``-`` are ignored first (``fashion_mnist`` -> ``fashion-mnist``); then
    difflib's ratio 2M/T >= 0.5 (M matching characters, T the two lengths together):
    ``cnn`` -> ``conv`` scores 4/7.
    """
    names = list(valid)
    text = _norm(str(value))
    for name in names:
        if _norm(name) == text:
            return name
    close = difflib.get_close_matches(text, [_norm(n) for n in names], n=1, cutoff=0.5)
    return next(n for n in names if _norm(n) == close[0]) if close else None


def unknown_name(what: str, value: object, valid: Iterable[str], kind: str = "") -> VaelabError:
    """``"<what>: unknown <kind> 'y'; valid: a, b, c; did you mean 'b'?"`` as one line.

    ``what`` names the flag or file (``--arch``), ``kind`` what the value is (``option``,
    ``dataset``), if the flag does not say it; the caller raises the result.
    """
    names = list(valid)
    guess = did_you_mean(value, names)
    hint = f"; did you mean {guess!r}?" if guess is not None else ""
    kind = f"{kind} " if kind else ""
    return VaelabError(f"{what}: unknown {kind}{str(value)!r}; valid: {', '.join(names)}{hint}")


def at_least(flag: str, value: float | None, low: float = 1) -> None:
    """Refuse ``value < low`` as ``"--flag: must be at least LOW, got VALUE"`` (None: unset,
    accepted). The one check of "a count of at least 1" for every flag and option."""
    if value is not None and value < low:
        raise VaelabError(f"{flag}: must be at least {low}, got {value}")


def positive(flag: str, value: float | None) -> None:
    """Refuse ``value <= 0`` as ``"--flag: must be > 0, got VALUE"`` (None: unset, accepted)."""
    if value is not None and not value > 0:
        raise VaelabError(f"{flag}: must be > 0, got {value}")


def all_at_least(flag: str, values: Iterable[float] | None, low: float = 1) -> None:
    """Refuse a list of sizes (``--hidden 64,0``) with any entry below ``low``."""
    if values is not None and any(v < low for v in values):
        raise VaelabError(f"{flag}: each value must be at least {low}, got {tuple(values)}")
