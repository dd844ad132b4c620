"""vaelab ae-vs-vae: an autoencoder's and a VAE's 2-D latent spaces side by side."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from vaelab.cli.names import registry_names
from vaelab.errors import VaelabError

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
    from vaelab.aevae import compare, train_pair
    from vaelab.api import load, load_test_images
    from vaelab.plots import save_figure
    from vaelab.train.run import prepare_run_dir

    if (args.ae is None) != (args.vae is None):
        raise VaelabError("--ae and --vae: give both existing runs, or neither to train them")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = prepare_run_dir(Path(args.out or f"runs/{stamp}-ae-vs-vae"), resume=False,
                          overwrite=args.overwrite)  # fmt: skip
    if args.ae is None:
        train_pair(out, dataset=args.dataset, epochs=args.epochs, arch=args.arch,
                   hidden=args.hidden, seed=args.seed, device=args.device)  # fmt: skip
        args.ae, args.vae = out / "ae", out / "vae"
    ae, vae = load(args.ae, args.device), load(args.vae, args.device)
    if ae.config.model.model != "ae" or vae.config.model.model == "ae":
        raise VaelabError("--ae must be an autoencoder run and --vae a VAE run")
    data = load_test_images(vae)
    fig, result = compare(ae, vae, data, args.points, args.grid, args.seed, args.judge)
    result.update(ae_run=str(args.ae), vae_run=str(args.vae))
    png = save_figure(fig, out / "ae-vs-vae.png")
    (out / "ae-vs-vae.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {png} and {out / 'ae-vs-vae.json'}")
    print(f"well-formed decodings of {args.points} uniform points per bounding box "
          f"({result['criterion']}): autoencoder {result['ae']['well_formed']:.1%}, "
          f"VAE {result['vae']['well_formed']:.1%}")  # fmt: skip
    print(f"share of each box inside the test codes' 3-NN balls (the rest are holes): "
          f"autoencoder {result['ae']['box_coverage']:.1%}, "
          f"VAE {result['vae']['box_coverage']:.1%}")  # fmt: skip
    return 0
