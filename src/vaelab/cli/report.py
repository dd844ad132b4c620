"""vaelab report: one self-contained HTML page of a run (config, metrics, pictures)."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_out_arguments, add_run_argument, output_path

HELP = "write a self-contained HTML report of a run (images embedded)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    add_out_arguments(parser, "report.html")  # vaelab.report.REPORT, which imports torch


def run(args: argparse.Namespace) -> int:
    from vaelab.api_pictures import report

    path = report(args.run, output_path(args, "report.html"), seed=args.seed, device=args.device)
    print(f"wrote {path}")
    return 0
