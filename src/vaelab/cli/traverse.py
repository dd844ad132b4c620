"""vaelab traverse: vary the most informative latent dimensions one at a time."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    output_path,
    positive,
)
from vaelab.errors import VaelabError

HELP = "vary the most-used (top-KL) latent dimensions around test images' means"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("--index", type=int, nargs="+", default=[0],
                        help="test-set image(s); one grid each")  # fmt: skip
    parser.add_argument("--dims", type=int, default=8,
                        help="how many dimensions (those with the most KL)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=9, help="values per dimension")
    parser.add_argument("--span", type=float, default=3.0,
                        help="largest offset, in prior standard deviations")  # fmt: skip
    add_out_arguments(parser, "traverse.png")


def run(args: argparse.Namespace) -> int:
    from vaelab.api import open_run
    from vaelab.api_pictures import traverse

    if args.out and len(args.index) > 1:
        raise VaelabError("--out: names one file; give one --index or leave --out unset")
    positive("--dims", args.dims)
    run = open_run(args.run, args.device)
    for n, i in enumerate(args.index):
        path = output_path(args, f"traverse-{i}.png", mkdir=False)
        result = traverse(run, i, args.dims, args.steps, args.span, out=path, overwrite=True)
        if n == 0:
            print(f"dimensions by {result['kind']}: " + ", ".join(result["names"]))
        print(f"wrote {path}")
    return 0
