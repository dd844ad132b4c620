"""vaelab ae-vs-vae: an autoencoder's and a VAE's 2-D latent spaces side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.cli.names import registry_names

HELP = "train (or take) an AE and a VAE with a 2-D latent and compare their latent spaces"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ae", help="an existing autoencoder run (2-D latent)")
    parser.add_argument("--vae", help="an existing VAE run (2-D latent)")
    parser.add_argument("--dataset", default="fashion-mnist", help="data to train both on")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for each model")
    parser.add_argument("--arch", default="mlp", help="mlp | conv (both models)")
    parser.add_argument("--hidden", default="512,256", help="body widths (both models)")
    parser.add_argument("--points", type=int, default=1000,
                        help="uniform points per bounding box to judge")  # fmt: skip
    parser.add_argument("--grid", type=int, default=15, help="decoded tiles per side")
    judges = registry_names("vaelab.aevae", "JUDGES")
    parser.add_argument("--judge", default=None, choices=judges,
                        help="what decides that a decoding is well-formed (default: "
                        "classifier for labelled data, else reconstruction)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and the draws")
    parser.add_argument("--out", help="output folder (default: runs/<time>-ae-vs-vae)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from vaelab.api_studies import ae_vs_vae

    result = ae_vs_vae(
        args.ae, args.vae, out=args.out, dataset=args.dataset, epochs=args.epochs,
        arch=args.arch, hidden=args.hidden, points=args.points, grid=args.grid,
        judge=args.judge, seed=args.seed, device=args.device, overwrite=args.overwrite,
    )  # fmt: skip
    out = Path(result["out"])
    print(f"wrote {out / 'ae-vs-vae.png'} and {out / 'ae-vs-vae.json'}")
    print(f"well-formed decodings of {args.points} uniform points per bounding box "
          f"({result['criterion']}): autoencoder {result['ae']['well_formed']:.1%}, "
          f"VAE {result['vae']['well_formed']:.1%}")  # fmt: skip
    print(f"share of each box inside the test codes' 3-NN balls (the rest are holes): "
          f"autoencoder {result['ae']['box_coverage']:.1%}, "
          f"VAE {result['vae']['box_coverage']:.1%}")  # fmt: skip
    return 0
