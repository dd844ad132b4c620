"""vaelab gradvar: compare gradient estimators' mean, variance and SNR on one batch."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_out_arguments, add_run_argument, output_path, positive
from vaelab.errors import VaelabError

HELP = "gradient variance and SNR of each latent-gradient estimator (table + log-scale PNG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument(
        "--estimators", default=None,
        help="comma-separated (default: all that apply to the run's posterior)",
    )  # fmt: skip
    parser.add_argument("--draws", type=int, default=100, help="independent estimates each")
    parser.add_argument("--batch-size", type=int, default=128, help="test images in the batch")
    parser.add_argument("--samples", type=int, default=1, help="K samples per image")
    parser.add_argument(
        "--init", action="store_true", help="a freshly initialised model of the run's config"
    )
    parser.add_argument(
        "--during-training", type=int, default=0, metavar="EPOCHS",
        help="train a fresh model of the run's config this many epochs, measuring after each",
    )  # fmt: skip
    add_out_arguments(parser, "gradvar.png")


def run(args: argparse.Namespace) -> int:
    from vaelab.api_studies import gradvar
    from vaelab.gradvar import format_table

    for flag in ("draws", "batch_size", "samples"):
        positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
    if args.during_training < 0:
        raise VaelabError(f"--during-training: must be >= 0, got {args.during_training}")
    names = [n for n in args.estimators.split(",") if n] if args.estimators else None
    path = output_path(args, "gradvar.png", mkdir=False)
    result = gradvar(
        args.run, names, args.draws, args.batch_size, args.samples, init=args.init,
        during_training=args.during_training, seed=args.seed, device=args.device, out=path,
        overwrite=True,
    )  # fmt: skip
    for r in result.get("rows", []):
        print(f"after epoch {r['epoch']} (test ELBO {r['test_elbo']:.2f}):")
        print(format_table(r["stats"]))
    if "stats" in result:
        print(format_table(result["stats"]))
    print(f"wrote {path}\nwrote {path.with_suffix('.json')}")
    return 0
