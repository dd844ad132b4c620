"""Pieces shared by the commands: help layout, one-line warnings, explicit output files."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaelab.training.record import new_output


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default once, at the end of its help, and only where it says
    something (not for switches, nor for ``None``); help that already names its default
    keeps its own wording."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "(default" in text
            # identity, not ==: a default of 0 (--seed, --start) is shown; 0 == False
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
            or action.nargs == 0
        ):
            return text
        if isinstance(default, list | tuple):
            default = ",".join(map(str, default))
        return f"{text} (default: {default})"


# Warnings of other libraries that reach the user, in vaelab's words.
_REWORDED = {
    "Palette images with Transparency expressed in bytes": (
        "Pillow dropped a palette image's transparency (transparent pixels keep their "
        "palette colour)"
    ),
}


@contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Show each warning as one line, ``vaelab CMD: warning: ...``, without Python's file
    name and source line (which mean nothing to a user of the command)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).strip()
        text = text.splitlines()[0] if text else category.__name__
        for start, plain in _REWORDED.items():
            if text.startswith(start):
                text = plain
        print(f"vaelab {command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def new_file(flag: str, path: str | Path, overwrite: bool) -> Path:
    """``path`` of an explicit output flag; it must not exist unless --overwrite is given
    (:func:`vaelab.training.record.new_output`, the one guard)."""
    return new_output(path, overwrite, flag)
