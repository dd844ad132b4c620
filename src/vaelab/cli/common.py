"""Pieces shared by subcommands: run-folder argument, output paths, test images."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vaelab.errors import VaelabError

if TYPE_CHECKING:  # this module runs for every --help, which must not import torch
    import torch


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default once, at the end of its help, and only where it says
    something (not for switches, nor for ``None``); help that already names its default
    keeps its own wording."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "(default" in text
            or default in (None, False, argparse.SUPPRESS)
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


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="run folder written by vaelab train")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")


def add_out_arguments(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument(
        "--out", default=None, help=f"output file (default: RUN_DIR/{OUTPUTS}/{default_name}, "
        "numbered if it exists)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


OUTPUTS = "outputs"  # RUN/outputs/: what commands made, apart from training's own pictures


def output_path(args: argparse.Namespace, default_name: str) -> Path:
    """Where to write: an explicit --out must not exist (unless --overwrite); by default
    RUN/outputs/NAME, numbered (NAME-2, NAME-3...) instead of replacing an earlier result,
    so a command's picture is never mistaken for training's (RUN/samples.png)."""
    if args.out:
        path = new_file("--out", args.out, args.overwrite)
    else:
        path = numbered(Path(args.run) / OUTPUTS / default_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def new_file(flag: str, path: str | Path, overwrite: bool) -> Path:
    """``path`` of an explicit output flag; it must not exist unless --overwrite is given."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise VaelabError(f"{flag} {path}: exists; pass --overwrite to replace it")
    return path


def numbered(path: Path) -> Path:
    """``path``, or ``stem-2.suffix``, ``stem-3.suffix``... : the first that does not exist."""
    stem, suffix, i = path.stem, path.suffix, 2
    while path.exists():
        path = path.with_name(f"{stem}-{i}{suffix}")
        i += 1
    return path


def positive(flag: str, value: int) -> int:
    if value < 1:
        raise VaelabError(f"{flag}: must be at least 1, got {value}")
    return value


def test_images(model: torch.nn.Module) -> torch.Tensor:
    """The run's test images (uint8, as the model is evaluated on them)."""
    from vaelab.api import load_test_images
    from vaelab.data.prepare import eval_images

    data = load_test_images(model)
    return eval_images(data.test_x, model.config.data.binarize, model.config.train.seed)
