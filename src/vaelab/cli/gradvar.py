"""vaelab gradvar: compare gradient estimators' mean, variance and SNR on one batch."""

from __future__ import annotations

import argparse
import json

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
    import torch

    from vaelab.api import load, load_test_images
    from vaelab.data.prepare import eval_images, to_unit
    from vaelab.gradvar import (
        during_training,
        format_table,
        gradient_stats,
        plot_over_training,
        plot_stats,
    )
    from vaelab.train.load import build_run_model

    for flag in ("draws", "batch_size", "samples"):
        positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
    if args.during_training < 0:
        raise VaelabError(f"--during-training: must be >= 0, got {args.during_training}")
    names = [n for n in args.estimators.split(",") if n] if args.estimators else None
    model = load(args.run, args.device)
    path = output_path(args, "gradvar.png")
    data = load_test_images(model)
    if args.during_training:
        config = model.config
        rows = during_training(
            config, data, args.during_training, names, args.draws, args.batch_size, args.samples
        )
        for r in rows:
            print(f"after epoch {r['epoch']} (test ELBO {r['test_elbo']:.2f}):")
            print(format_table(r["stats"]))
        plot_over_training(rows, path)
        result = {"mode": "during-training", "rows": rows}
    else:
        if args.init:
            torch.manual_seed(args.seed)
            fresh = build_run_model(model.config.model, model.image_shape).to(model.device)
            fresh.config, fresh.run_info = model.config, model.run_info
            model = fresh
        x = eval_images(data.test_x[: args.batch_size], model.config.data.binarize,
                        model.config.train.seed)  # fmt: skip
        x = to_unit(x).to(model.device)
        stats = gradient_stats(model, x, names, args.draws, args.samples, seed=args.seed)
        print(format_table(stats))
        state = "at initialisation" if args.init else "trained"
        plot_stats(stats, path, f"{args.draws} gradient estimates on {len(x)} images ({state})")
        result = {"mode": "init" if args.init else "trained", "stats": stats}
    result.update(run=str(args.run), draws=args.draws, batch_size=args.batch_size,
                  samples=args.samples)  # fmt: skip
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}\nwrote {json_path}")
    return 0
