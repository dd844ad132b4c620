"""vaelab reconstruct: test images (odd rows) above their reconstructions (even rows)."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    output_path,
    positive,
)

HELP = "show test images beside their reconstructions as a PNG grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("-n", type=int, default=16, help="number of test images")
    parser.add_argument("--start", type=int, default=0, help="index of the first test image")
    add_out_arguments(parser, "reconstruct.png")


def run(args: argparse.Namespace) -> int:
    from vaelab.api_pictures import reconstruct

    positive("-n", args.n)
    path = output_path(args, "reconstruct.png", mkdir=False)
    reconstruct(args.run, args.n, args.start, device=args.device, out=path, overwrite=True)
    print(f"wrote {path}")
    return 0
