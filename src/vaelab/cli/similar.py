"""vaelab similar: images that resemble an input, z = mu(x) + spread * sigma(x) * eps."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    output_path,
    positive,
    test_images,
)
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    import torch

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


def read_image(path: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """An image file as uint8 ``(C, H, W)`` in the model's channels and size."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise VaelabError(f"--image {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise VaelabError(f"--image {path}: not a readable image ({exc})") from None
    return torch.from_numpy(array.copy()).reshape(h, w, c).permute(2, 0, 1).contiguous()


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import load
    from vaelab.data.prepare import binarize_fixed, to_unit
    from vaelab.generate import similar
    from vaelab.plots import save_grid

    model = load(args.run, args.device)
    if args.image:
        x = read_image(args.image, model.run_info["image_shape"])
        if model.config.data.binarize != "none":
            x = binarize_fixed(x.unsqueeze(0), args.seed)[0]
    else:
        images = test_images(model)
        if not 0 <= args.index < len(images):
            raise VaelabError(f"--index: must be in [0, {len(images) - 1}], got {args.index}")
        x = images[args.index]
    out = similar(model, x, positive("-n", args.n), args.spread, seed=args.seed).cpu()
    path = save_grid(torch.cat([to_unit(x.unsqueeze(0)), out]), output_path(args, "similar.png"))
    print(f"wrote {path}")
    return 0
