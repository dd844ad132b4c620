"""vaelab reconstruct: test images (odd rows) above their reconstructions (even rows)."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    output_path,
    positive,
    test_images,
)

HELP = "show test images beside their reconstructions as a PNG grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("-n", type=int, default=16, help="number of test images")
    parser.add_argument("--start", type=int, default=0, help="index of the first test image")
    add_out_arguments(parser, "reconstruct.png")


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import load
    from vaelab.data.prepare import to_unit
    from vaelab.generate import reconstruct
    from vaelab.plots import save_grid

    model = load(args.run, args.device)
    x = test_images(model)[args.start : args.start + positive("-n", args.n)]
    recon = reconstruct(model, x).cpu()
    row = min(len(x), 16)
    chunks = [
        t for i in range(0, len(x), row) for t in (to_unit(x[i : i + row]), recon[i : i + row])
    ]
    path = save_grid(torch.cat(chunks), output_path(args, "reconstruct.png"), nrow=row)
    print(f"wrote {path}")
    return 0
