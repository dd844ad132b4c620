"""Quality of the core VAE on Fashion-MNIST, through vaelab's own API.

1. ``reference``: the tutorials' MLP VAE (784-400-20, Bernoulli on [0, 1] intensities,
   Adam 1e-3, batch 128) for 10 epochs: test negative ELBO after each epoch, then the
   time of ``vaelab.evaluate`` with K=1000 importance samples on the 10k test images.
2. ``binarized``: the 300-300-40 MLP VAE on dynamically binarized Fashion-MNIST
   (configs/fashion_binarized_300x300.yaml), trained until the test bound has not
   improved for ``--patience`` epochs (or ``--max-epochs``), then the importance-sampled
   NLL with K=5000 (published for this setting: ~228.7 nats, VampPrior paper).

    python benchmarks/core_quality.py --parts reference,binarized --max-epochs 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import vaelab
from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import load_config, with_overrides
from vaelab.training.folder import read_metrics

ROOT = Path(__file__).resolve().parent.parent


def reference(out: Path, eval_samples: int) -> dict:
    cfg = with_overrides(load_config(ROOT / "configs/fashion_mlp.yaml"), {"progress": False}, "b")
    t0 = time.perf_counter()
    run = vaelab.train(cfg, out / "reference", overwrite=True)
    seconds = time.perf_counter() - t0
    rows = read_metrics(run)
    t0 = time.perf_counter()
    result = vaelab.evaluate(run, samples=eval_samples)
    result.pop("log_px_per_image")  # per-image values: for vaelab compare, not this summary
    return {
        "run": str(run),
        "train_seconds": seconds,
        "test_negative_elbo_per_epoch": [-r["test_elbo"] for r in rows],
        "train_images_per_s_per_epoch": [r["images_per_s"] for r in rows],
        "evaluate_samples": eval_samples,
        "evaluate_seconds": time.perf_counter() - t0,
        "evaluate": result,
    }


def binarized(out: Path, max_epochs: int, patience: int, chunk: int, k: int, limit) -> dict:
    cfg = with_overrides(
        load_config(ROOT / "configs/fashion_binarized_300x300.yaml"),
        {"progress": False, "report": True, "epochs": chunk},
        "b",
    )
    run = out / "binarized"
    t0 = time.perf_counter()
    vaelab.train(cfg, run, overwrite=True)
    while True:  # extend the run `chunk` epochs at a time while the test bound improves
        rows = read_metrics(run)
        best = max(range(len(rows)), key=lambda i: rows[i]["test_elbo"])
        if len(rows) >= max_epochs or len(rows) - 1 - best >= patience:
            break
        vaelab.train(cfg, run, resume=True, epochs=min(max_epochs, len(rows) + chunk))
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = vaelab.evaluate(run, samples=k, limit=limit)
    result.pop("log_px_per_image")
    return {
        "run": str(run),
        "epochs": len(rows),
        "best_epoch": best + 1,
        "stopped_because": "patience" if len(rows) - 1 - best >= patience else "max-epochs",
        "train_seconds": seconds,
        "test_negative_elbo_per_epoch": [-r["test_elbo"] for r in rows],
        "nll_samples": k,
        "nll_images": result["images"],
        "nll_seconds": time.perf_counter() - t0,
        "evaluate": result,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="reference,binarized")
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=5, help="epochs per training extension")
    ap.add_argument("--nll-samples", type=int, default=5000)
    ap.add_argument("--nll-limit", type=int, default=None, help="first N test images only")
    ap.add_argument("--runs", default="runs/bench-core")
    ap.add_argument("--out", default="benchmarks/results/core_quality.json")
    args = ap.parse_args(argv)
    out = Path(args.runs)
    result = {
        **provenance(),
    }
    parts = args.parts.split(",")
    if "reference" in parts:
        result["reference"] = reference(out, args.eval_samples)
        print(json.dumps({k: v for k, v in result["reference"].items() if k != "evaluate"}))
    if "binarized" in parts:
        result["binarized"] = binarized(
            out, args.max_epochs, args.patience, args.chunk, args.nll_samples, args.nll_limit
        )
        b = result["binarized"]
        print(f"binarized: {b['epochs']} epochs, NLL {b['evaluate']['nll_nats']:.2f} "
              f"+- {b['evaluate']['nll_nats_se']:.2f} nats (K={args.nll_samples})")  # fmt: skip
    save_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
