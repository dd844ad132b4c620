"""vaelab serve: the interactive latent-space explorer of a run, in the browser."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_run_argument, positive
from vaelab.cli.names import registry_names

HELP = "explore a run's latent space in the browser (map, sliders, similar, completion)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; the default is reachable "
        "from this machine only. WARNING: --host 0.0.0.0 lets anyone who can reach this "
        "machine use the page (and its CPU) without a password",
    )  # fmt: skip
    parser.add_argument(
        "--method", default="pca", choices=registry_names("vaelab.explore", "EMBEDDINGS"),
        help="map of latents above 2-D (t-SNE is slower to start)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=2000, help="test images on the map")


def run(args: argparse.Namespace) -> int:
    from vaelab.web import serve

    serve(
        args.run, args.port, args.host, method=args.method,
        limit=positive("--limit", args.limit), device=args.device, seed=args.seed,
    )  # fmt: skip
    return 0
