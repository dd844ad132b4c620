"""vaelab interpolate: decode along the path between the latents of two images."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vaelab.cli.common import add_out_arguments, add_run_argument, output_path, test_images
from vaelab.cli.names import registry_names
from vaelab.cli.similar import read_image
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    import torch

HELP = "decode the path between two images' latents (rows: methods; ends: the inputs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("--from", dest="source", required=True,
                        help="a test-set index or an image file")  # fmt: skip
    parser.add_argument("--to", dest="target", required=True,
                        help="a test-set index or an image file")  # fmt: skip
    parser.add_argument("--steps", type=int, default=10, help="decodings along the path")
    parser.add_argument(
        "--method", default="both",
        choices=[*registry_names("vaelab.explore", "INTERPOLATIONS"), "both"],
        help="linear, spherical (norm goes linearly, direction along the great circle) or both",
    )  # fmt: skip
    add_out_arguments(parser, "interpolate.png")


def resolve_image(model: torch.nn.Module, spec: str, flag: str, seed: int) -> torch.Tensor:
    """``spec`` as uint8 ``(C, H, W)``: a test-set index if it is an integer, else a file."""
    from vaelab.data.prepare import binarize_fixed

    try:
        index = int(spec)
    except ValueError:
        x = read_image(spec, model.run_info["image_shape"])
        if model.config.data.binarize != "none":
            x = binarize_fixed(x.unsqueeze(0), seed)[0]
        return x
    images = test_images(model)
    if not 0 <= index < len(images):
        raise VaelabError(f"{flag}: test index must be in [0, {len(images) - 1}], got {index}")
    return images[index]


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import load
    from vaelab.data.prepare import to_unit
    from vaelab.explore import INTERPOLATIONS, interpolate
    from vaelab.plots import save_grid

    model = load(args.run, args.device)
    x0 = resolve_image(model, args.source, "--from", args.seed)
    x1 = resolve_image(model, args.target, "--to", args.seed)
    methods = list(INTERPOLATIONS) if args.method == "both" else [args.method]
    rows = [
        torch.cat([to_unit(x0[None]), interpolate(model, x0, x1, args.steps, m),
                   to_unit(x1[None])])
        for m in methods
    ]  # fmt: skip
    path = save_grid(torch.cat(rows), output_path(args, "interpolate.png"), nrow=args.steps + 2)
    print(f"wrote {path} (rows: {', '.join(methods)}; first/last column: the inputs)")
    return 0
