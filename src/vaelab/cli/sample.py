"""vaelab sample: decode z ~ N(0, T^2 I) into a PNG grid (and .npy on request)."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_out_arguments, add_run_argument, output_path
from vaelab.cli.names import registry_names
from vaelab.config import coerce

HELP = "draw images from the prior and decode them into a PNG grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("-n", type=int, default=64, help="number of images")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="scale of the prior's standard deviation"
    )
    parser.add_argument(
        "--group-temperature", default=None, metavar="T1,T2,...",
        help="deep: one temperature per latent group, top first (replaces --temperature)",
    )  # fmt: skip
    parser.add_argument(
        "--sampler", choices=sorted(registry_names("vaelab.samplers", "SAMPLERS")), default="prior",
        help="z from the prior, or from a Gaussian mixture fitted to the training latents",
    )  # fmt: skip
    parser.add_argument("--components", type=int, default=10, help="GMM sampler components")
    parser.add_argument(
        "--label", default=None, help="cvae/m2: class index or name (e.g. 7, sneaker), or 'all' "
        "for one row per class with the same z in each column",
    )  # fmt: skip
    parser.add_argument("--npy", default=None, help="also save the images as a .npy array")
    add_out_arguments(parser, "sample.png")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from vaelab.api_pictures import sample

    temps = None
    if args.group_temperature is not None:
        temps = coerce(args.group_temperature, tuple[float, ...], "--group-temperature")
    path = output_path(args, "sample.png", mkdir=False)
    images = sample(
        args.run, args.n, temperature=args.temperature, group_temperature=temps,
        sampler=args.sampler, components=args.components, label=args.label, seed=args.seed,
        device=args.device, out=path, overwrite=True,  # output_path checked it
    )  # fmt: skip
    print(f"wrote {path}")
    if args.npy:
        np.save(args.npy, images.numpy())
        print(f"wrote {args.npy}")
    return 0
