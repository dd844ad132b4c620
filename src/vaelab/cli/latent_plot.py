"""vaelab latent-plot: the test set's latent means coloured by label (+ 2-D manifold)."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    numbered,
    output_path,
    positive,
)
from vaelab.cli.names import registry_names

HELP = "scatter the test set's latent means (PCA/t-SNE above 2-D); 2-D: the decoded manifold"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    embeddings = registry_names("vaelab.explore", "EMBEDDINGS")
    parser.add_argument("--method", default="pca", choices=embeddings,
                        help="projection for latents of more than 2 dimensions")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None,
                        help="use the first N test images (t-SNE is slow on 10,000)")  # fmt: skip
    parser.add_argument("--grid", type=int, default=20, help="manifold tiles per side (2-D)")
    add_out_arguments(parser, "latent.png")


def run(args: argparse.Namespace) -> int:
    from vaelab.api_pictures import latent_plot

    limit = positive("--limit", args.limit) if args.limit is not None else None
    path = output_path(args, "latent.png", mkdir=False)
    mpath = numbered(path.with_name("manifold.png"))
    result = latent_plot(
        args.run, args.method, limit, positive("--grid", args.grid), seed=args.seed,
        device=args.device, out=path, manifold_out=mpath, overwrite=True,
    )  # fmt: skip
    print(f"wrote {path} ({len(result['coords'])} test images)")
    if result["manifold"] is not None:
        print(f"wrote {mpath}")
    return 0
