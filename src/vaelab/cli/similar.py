"""vaelab similar: images that resemble an input, z = mu(x) + spread * sigma(x) * eps."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    output_path,
    positive,
)

HELP = "decode several images that resemble a given one (first tile: the input)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="index of a test-set image")
    which.add_argument("--image", help="an image file (resized to the model's size)")
    parser.add_argument("-n", type=int, default=15, help="number of images to generate")
    parser.add_argument(
        "--spread", type=float, default=1.0, help="noise scale in units of the posterior's std"
    )
    add_out_arguments(parser, "similar.png")


def run(args: argparse.Namespace) -> int:
    from vaelab.api_pictures import similar

    positive("-n", args.n)
    path = output_path(args, "similar.png", mkdir=False)
    image = args.image if args.image else args.index
    similar(args.run, image, args.n, args.spread, seed=args.seed, device=args.device, out=path,
            overwrite=True)  # fmt: skip
    print(f"wrote {path}")
    return 0
