"""vaelab latent-plot: the test set's latent means coloured by label (+ 2-D manifold)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vaelab.cli.common import (
    add_out_arguments,
    add_run_argument,
    numbered,
    output_path,
    positive,
)
from vaelab.cli.names import registry_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def manifold_figure(model, n: int) -> Figure:
    """Decodings over an n x n grid of the prior's quantiles, on labelled z axes."""
    from matplotlib.figure import Figure

    from vaelab.explore import prior_quantile_grid
    from vaelab.plots import image_panel

    tiles, q = prior_quantile_grid(model, n)
    fig = Figure(figsize=(8, 8), layout="constrained")
    dx, dy = (q[0][1] - q[0][0]) / 2, (q[1][1] - q[1][0]) / 2
    extent = (q[0][0] - dx, q[0][-1] + dx, q[1][0] - dy, q[1][-1] + dy)
    title = f"Decoded manifold: {n} x {n} quantiles of the prior (each tile 1/{n * n} of p(z))"
    image_panel(fig.add_subplot(), tiles, n, extent, title)
    return fig


def run(args: argparse.Namespace) -> int:
    from vaelab.api import load, load_test_images
    from vaelab.explore import latent_plot
    from vaelab.plots import save_figure

    model = load(args.run, args.device)
    data = load_test_images(model)
    limit = positive("--limit", args.limit) if args.limit is not None else None
    fig, coords, _ = latent_plot(model, data, args.method, limit, args.seed)
    path = save_figure(fig, output_path(args, "latent.png"))
    print(f"wrote {path} ({len(coords)} test images)")
    if model.latent_dim == 2 and model.config.model.model != "ae":  # an AE has no p(z)
        mpath = numbered(path.with_name("manifold.png"))
        save_figure(manifold_figure(model, positive("--grid", args.grid)), mpath)
        print(f"wrote {mpath}")
    return 0
