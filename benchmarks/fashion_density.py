"""Density benchmark on dynamically binarized Fashion-MNIST: NLL and sample quality per model.

Models (MLP 784-300-300-40-300-300-784, ReLU, Bernoulli likelihood, Adam lr 1e-3, batch
128, dynamic binarization; the test set is binarized once with a fixed seed):

    vae       ELBO, standard normal prior          (published ~228.7 nats)
    iwae5     IWAE bound, K = 5
    iwae50    IWAE bound, K = 50
    mixture   ELBO, learned mixture-of-Gaussians prior (--prior-components)
    vamp      ELBO, VampPrior                     (published ~227.4 nats)
    best      VampPrior + IWAE K = 5 (vaelab's best combination here)
    deep      --model deep (conv hierarchy: widths 32,64,64 at sides 28,14,7; 2 + 4 latent groups
              of 8 channels at 14x14 and 7x7), ELBO with KL warm-up (5 epochs), free bits
              0.25 nats per group, weight average 0.999 (the MLP options above do not apply)

Each model trains for ``--epochs`` (per-model overrides via ``--epochs-for name=E``) and is
evaluated with ``--nll-samples`` importance samples on the first ``--limit`` test images,
plus latent health, reconstruction, and classifier sample metrics with the standard prior
sampler and the GMM sampler. An existing run folder is resumed (trained up to the epoch
budget) rather than retrained. The full protocol on a GPU:

    python benchmarks/fashion_density.py --epochs 1000 --nll-samples 5000 --limit 0 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import vaelab
from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.evaluation.plots import save_grid
from vaelab.evaluation.samplers import sample_with
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit

BASE = {"dataset": "fashion-mnist", "binarize": "dynamic", "hidden": "300,300", "latent_dim": 40,
        "likelihood": "bernoulli", "progress": False, "report": False}  # fmt: skip
MODELS: dict[str, dict] = {
    "vae": {},
    "iwae5": {"objective": "iwae", "samples": 5},
    "iwae50": {"objective": "iwae", "samples": 50},
    "mixture": {"prior": "mixture"},
    "vamp": {"prior": "vamp"},
    "best": {"prior": "vamp", "objective": "iwae", "samples": 5},
    "deep": {
        "model": "deep",
        "deep_widths": "32,64,64",
        "deep_groups": "0,2,4",
        "group_channels": 8,
        "warmup_epochs": 5,
        "free_bits": 0.25,
        "ema": 0.999,
        "skip_threshold": "inf",
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    p.add_argument("--epochs", type=int, default=10, help="training epochs per model")
    p.add_argument("--epochs-for", action="append", default=[], help="NAME=EPOCHS override")
    p.add_argument("--nll-samples", type=int, default=5000, help="importance samples K")
    p.add_argument("--limit", type=int, default=1000, help="first N test images (0: all)")
    p.add_argument("--prior-components", type=int, default=100, help="mixture/Vamp components")
    p.add_argument("--gmm-components", type=int, default=10, help="GMM sampler components")
    p.add_argument("--quality-samples", type=int, default=5000)
    p.add_argument("--schedule", default="none", help="learning rate: none, cosine or step")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--runs", default="benchmarks/runs/fashion_density")
    p.add_argument("--json", default="benchmarks/results/fashion_density.json")
    return p.parse_args(argv)


def train(name: str, epochs: int, args: argparse.Namespace) -> Path:
    overrides = {**BASE, **MODELS[name], "epochs": epochs, "device": args.device,
                 "prior_components": args.prior_components, "schedule": args.schedule,
                 "compile": args.compile}  # fmt: skip
    config = with_overrides(Config(), overrides, f"benchmark {name}")
    out = Path(args.runs) / name
    resume = (out / CHECKPOINT).is_file()
    torch.manual_seed(0)
    return fit(config, out, resume=resume)


def evaluate(name: str, run: Path, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    opened = vaelab.open_run(run, args.device)  # evaluate needs the run, not a bare model
    result = vaelab.evaluate(
        opened, samples=args.nll_samples, limit=args.limit or None,
        samplers=("prior", "gmm"), quality_samples=args.quality_samples,
        components=args.gmm_components, record=False,
    )  # fmt: skip
    result.pop("log_px_per_image")  # 10,000 numbers per model; the fingerprint stays
    for sampler in ("prior", "gmm"):  # grids to look at, next to the JSON
        images = sample_with(opened, 64, sampler, components=args.gmm_components, seed=0)
        grid = Path(args.json).with_name(f"{Path(args.json).stem}_{name}_{sampler}.png")
        save_grid(images.cpu(), grid)  # named after the JSON: other --json runs keep theirs
    rows = read_metrics(run)
    result["epochs"] = rows[-1]["epoch"] if rows else 0
    result["train_seconds"] = sum(r["seconds"] for r in rows)
    # The median epoch is robust to an epoch starved by other jobs on a shared machine.
    result["median_epoch_seconds"] = statistics.median(r["seconds"] for r in rows) if rows else 0
    result["model"] = name
    result["overrides"] = {**MODELS[name], "schedule": args.schedule, "compile": args.compile}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = set(names) - set(MODELS)
    if unknown:
        sys.exit(f"--models: unknown {sorted(unknown)}; valid: {', '.join(MODELS)}")
    epochs = {n: args.epochs for n in names}
    for item in args.epochs_for:
        n, e = item.split("=")
        epochs[n] = int(e)
    path = Path(args.json)
    report = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    for name in names:
        t0 = time.perf_counter()
        run = train(name, epochs[name], args)
        print(f"{name}: trained to {epochs[name]} epochs ({time.perf_counter() - t0:.0f} s)")
        if args.no_eval:
            continue
        t0 = time.perf_counter()
        result = evaluate(name, run, args)
        result["seconds_evaluate"] = time.perf_counter() - t0
        # Rows may come from different invocations (--models subsets): keep each one's own.
        result.update({k: v for k, v in provenance(args.device).items() if k != "machine"})
        report["models"][name] = result
        q = result.get("quality", {})
        print(
            f"{name}: NLL {result['nll_nats']:.2f} +- {result['nll_nats_se']:.2f} nats, "
            f"-ELBO {result['negative_elbo']:.2f}, AU {result['health']['active_units']}, "
            f"FD prior {q['prior']['frechet_distance']:.1f} gmm {q['gmm']['frechet_distance']:.1f}"
            f" ({result['seconds_evaluate']:.0f} s)"
        )
        report.update({
            **provenance(args.device), "device": args.device,
            "nll_samples": args.nll_samples, "limit": args.limit,
            "prior_components": args.prior_components, "gmm_components": args.gmm_components,
        })  # fmt: skip
        save_json(path, report)  # after each model: partial is kept
    print(table(report))
    return 0


def table(report: dict) -> str:
    """The README table: NLL, SE, bound, epochs, time and sample metrics per sampler."""
    lines = ["| model | NLL (nats) | SE | K / images | -ELBO | AU | epochs | train s | eval s "
             "| FD prior | P/R prior | FD gmm | P/R gmm | H(class) prior/gmm/test |",
             "|" + "---|" * 14]  # fmt: skip
    for name, r in report["models"].items():
        q = r["quality"]
        lines.append(
            f"| {name} | {r['nll_nats']:.2f} | {r['nll_nats_se']:.2f} "
            f"| {r['samples']} / {r['images']} | {r['negative_elbo']:.2f} "
            f"| {r['health']['active_units']} | {r['epochs']} | {r['train_seconds']:.0f} "
            f"({r.get('median_epoch_seconds', 0):.1f}/epoch) "
            f"| {r['seconds_evaluate']:.0f} | {q['prior']['frechet_distance']:.1f} "
            f"| {q['prior']['precision']:.2f}/{q['prior']['recall']:.2f} "
            f"| {q['gmm']['frechet_distance']:.1f} "
            f"| {q['gmm']['precision']:.2f}/{q['gmm']['recall']:.2f} "
            f"| {q['prior']['class_entropy_samples']:.2f}/{q['gmm']['class_entropy_samples']:.2f}"
            f"/{q['prior']['class_entropy_test']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
