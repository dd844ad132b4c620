"""Command line: ``vaelab SUBCOMMAND ...``; one module per subcommand.

Each module provides ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
A module imports only what its arguments need (no torch, numpy, matplotlib) at the top,
and the rest inside ``run``: ``--help`` must answer at once (tests/test_cli_help.py).
A :class:`VaelabError` becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from vaelab import __version__
from vaelab.cli import (
    ae_vs_vae,
    compare,
    evaluate,
    gradvar,
    interpolate,
    latent_plot,
    reconstruct,
    sample,
    similar,
    train,
    traverse,
)
from vaelab.cli import classify as classify_cmd
from vaelab.cli import complete as complete_cmd
from vaelab.cli import report as report_cmd
from vaelab.cli import serve as serve_cmd
from vaelab.cli.common import HelpFormatter, one_line_warnings
from vaelab.errors import VaelabError

COMMANDS: dict[str, ModuleType] = {
    "train": train,
    "sample": sample,
    "reconstruct": reconstruct,
    "similar": similar,
    "evaluate": evaluate,
    "gradvar": gradvar,
    "interpolate": interpolate,
    "traverse": traverse,
    "latent-plot": latent_plot,
    "ae-vs-vae": ae_vs_vae,
    "report": report_cmd,
    "compare": compare,
    "classify": classify_cmd,
    "complete": complete_cmd,
    "serve": serve_cmd,
}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (no usage block), exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", description="Train, evaluate and explore VAEs on images.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS.items():
        p = sub.add_parser(
            name, help=module.HELP, description=module.HELP,
            formatter_class=HelpFormatter,
        )  # fmt: skip
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with one_line_warnings(args.command):
            return args._run(args)
    except VaelabError as exc:
        print(f"vaelab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaelab {args.command}: interrupted", file=sys.stderr)
        return 130
