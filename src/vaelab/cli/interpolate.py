"""vaelab interpolate: decode along the path between the latents of two images."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_out_arguments, add_run_argument, output_path
from vaelab.cli.names import registry_names

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


def run(args: argparse.Namespace) -> int:
    from vaelab.api_pictures import interpolate

    path = output_path(args, "interpolate.png", mkdir=False)
    rows = interpolate(args.run, args.source, args.target, args.steps, args.method,
                       seed=args.seed, device=args.device, out=path, overwrite=True)  # fmt: skip
    print(f"wrote {path} (rows: {', '.join(rows)}; first/last column: the inputs)")
    return 0
