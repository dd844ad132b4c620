"""vaelab sample: decode z ~ N(0, T^2 I) into a PNG grid (and .npy on request)."""

from __future__ import annotations

import argparse

import numpy as np

from vaelab.api import load
from vaelab.cli.common import add_out_arguments, add_run_argument, output_path
from vaelab.generate import sample
from vaelab.plots import save_grid

HELP = "draw images from the prior and decode them into a PNG grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("-n", type=int, default=64, help="number of images")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="scale of the prior's standard deviation"
    )
    parser.add_argument("--npy", default=None, help="also save the images as a .npy array")
    add_out_arguments(parser, "sample.png")


def run(args: argparse.Namespace) -> int:
    model = load(args.run, args.device)
    images = sample(model, args.n, args.temperature, seed=args.seed).cpu()
    path = save_grid(images, output_path(args, "sample.png"))
    print(f"wrote {path}")
    if args.npy:
        np.save(args.npy, images.numpy())
        print(f"wrote {args.npy}")
    return 0
