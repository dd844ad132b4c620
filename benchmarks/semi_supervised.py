"""Semi-supervised classification: M2, M1+M2 and the supervised-only baseline.

For each dataset and labels-per-class N: train M1 (a VAE) once, then M2 on the images and
M2 on M1's latent means (M1+M2), each with N labels per class (the rest hidden), and
report test error of q(y|x) beside the same classifier network trained on the N labels
alone. Prints and saves JSON (benchmarks/results/<name>.json); the commands and
figures are in benchmarks/README.md ("Labels and missing pixels").

    python benchmarks/semi_supervised.py --dataset mnist-5k --labels 10 --hidden 256 \
        --m1-epochs 30 --m2-epochs 30 --m1m2-epochs 60 --alpha-n 10 \
        --name semi_supervised-mnist-5k-alpha10N
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.api import open_run
from vaelab.config import Config, with_overrides
from vaelab.data import load_dataset
from vaelab.evaluation.classifier import evaluate_classifier
from vaelab.models.m2 import DEFAULT_ALPHA_PER_IMAGE
from vaelab.training.loop import fit

RESULTS = Path(__file__).parent / "results"


def subset(data, n: int | None):
    """The first ``n`` training images (a seeded shuffle first, so every class appears)."""
    if not n or n >= len(data.train_x):
        return data
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))[:n]
    return replace(data, train_x=data.train_x[idx].contiguous(), train_y=data.train_y[idx])


def train(options: dict, out: Path, data) -> Path:
    cfg = with_overrides(Config(), {"progress": False, "report": False, **options}, "bench")
    return fit(cfg, out, overwrite=True, data=data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--labels", default="10,100", help="labels per class, comma-separated")
    p.add_argument("--train-images", type=int, default=None, help="subsample the training set")
    p.add_argument("--m1-epochs", type=int, default=10)
    p.add_argument("--m2-epochs", type=int, default=5)
    p.add_argument("--m1m2-epochs", type=int, default=20)
    p.add_argument("--alpha", type=float, default=None, help="None: vaelab's default")
    p.add_argument(
        "--alpha-n",
        type=float,
        default=None,
        help="alpha as a multiple of N, the training images (overrides --alpha)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--m1-run", default=None, help="reuse this trained M1 run (else train one)")
    p.add_argument("--hidden", default="500")
    p.add_argument("--baseline-steps", type=int, default=2000)
    p.add_argument("--runs", default="/tmp/vaelab-bench-semi")
    p.add_argument("--name", default=None, help="results/<name>.json")
    args = p.parse_args()
    torch.manual_seed(0)
    data = subset(load_dataset(args.dataset), args.train_images)
    runs = Path(args.runs) / args.dataset
    common = {"dataset": args.dataset, "hidden": args.hidden, "seed": 0, "lr": args.lr}
    alpha = args.alpha if args.alpha_n is None else args.alpha_n * len(data.train_x)
    t0 = time.perf_counter()
    m1 = (
        Path(args.m1_run)
        if args.m1_run
        else train(
            {**common, "model": "vae", "latent_dim": 50, "epochs": args.m1_epochs},
            runs / "m1",
            data,
        )
    )
    rows = []
    for n in (int(v) for v in args.labels.split(",")):
        semi = {**common, "model": "m2", "objective": "m2", "labels_per_class": n,
                "latent_dim": 50, "alpha": alpha}  # fmt: skip
        variants = {
            "m2": {**semi, "epochs": args.m2_epochs},
            "m1+m2": {**semi, "epochs": args.m1m2_epochs, "m1_run": str(m1),
                      "likelihood": "gaussian-pixel", "latent_dim": 10},
        }  # fmt: skip
        for name, opts in variants.items():
            t1 = time.perf_counter()
            run = train(opts, runs / f"{name}-{n}", data)
            seconds = time.perf_counter() - t1
            res = evaluate_classifier(open_run(run), data, baseline=True,
                                      baseline_steps=args.baseline_steps)  # fmt: skip
            row = {"model": name, "labels_per_class": n, "epochs": opts["epochs"],
                   "test_error": res["error"], "baseline_error": res["baseline"]["error"],
                   "train_seconds": seconds, "test_images": res["images"]}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {
        "benchmark": "semi_supervised", "dataset": args.dataset,
        "train_images": len(data.train_x), "m1_epochs": args.m1_epochs,
        "alpha": alpha if alpha is not None else f"{DEFAULT_ALPHA_PER_IMAGE:g} * N",
        "hidden": args.hidden, "lr": args.lr,
        "baseline_steps": args.baseline_steps, "rows": rows,
        "seconds": time.perf_counter() - t0, **provenance(),
    }  # fmt: skip
    save_json(RESULTS / f"{args.name or 'semi_supervised-' + args.dataset}.json", out)


if __name__ == "__main__":
    main()
