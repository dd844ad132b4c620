"""vaelab sample: decode z ~ N(0, T^2 I) into a PNG grid (and .npy on request)."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_out_arguments, add_run_argument, output_path
from vaelab.cli.names import registry_names
from vaelab.config import coerce
from vaelab.errors import VaelabError

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

    from vaelab.api import load
    from vaelab.generate import sample
    from vaelab.labels import label_samples
    from vaelab.plots import save_grid
    from vaelab.samplers import sample_with

    model = load(args.run, args.device)
    nrow = None
    if args.group_temperature is not None:
        if args.sampler != "prior" or args.label is not None:
            raise VaelabError("--group-temperature: draws every group from the prior; drop "
                              "--sampler and --label")  # fmt: skip
        temps = coerce(args.group_temperature, tuple[float, ...], "--group-temperature")
        images = sample(model, args.n, temps, seed=args.seed).cpu()
    elif args.label is not None:
        if args.sampler != "prior":
            raise VaelabError("--label: draws z from the prior; drop --sampler")
        images, nrow = label_samples(model, args.n, args.label, args.temperature, args.seed)
    else:
        images = sample_with(
            model, args.n, args.sampler, args.temperature, args.components, seed=args.seed
        ).cpu()
    path = save_grid(images, output_path(args, "sample.png"), nrow=nrow)
    print(f"wrote {path}")
    if args.npy:
        np.save(args.npy, images.numpy())
        print(f"wrote {args.npy}")
    return 0
