"""vaelab traverse: vary the most informative latent dimensions one at a time."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    output_path,
    positive,
    test_images,
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
    import torch

    from vaelab.api import load
    from vaelab.explore import dim_scores, top_dims, traverse
    from vaelab.plots import save_figure, traversal_figure

    if args.out and len(args.index) > 1:
        raise VaelabError("--out: names one file; give one --index or leave --out unset")
    model = load(args.run, args.device)
    images = test_images(model)
    scores, kind = dim_scores(model, images)
    dims = top_dims(scores, positive("--dims", args.dims))
    names = [f"z{d} ({kind} {scores[d]:.2f})" for d in dims]
    offsets = torch.linspace(-args.span, args.span, max(args.steps, 2)).tolist()
    print(f"dimensions by {kind}: " + ", ".join(names))
    for i in args.index:
        if not 0 <= i < len(images):
            raise VaelabError(f"--index: must be in [0, {len(images) - 1}], got {i}")
        grid = traverse(model, images[i], dims, args.steps, args.span)
        fig = traversal_figure(grid, names, offsets, f"Traversals around test image {i}")
        path = save_figure(fig, output_path(args, f"traverse-{i}.png"))
        print(f"wrote {path}")
    return 0
