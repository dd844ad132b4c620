"""Bits/dim on the built-in colour set (emoji, 32x32 RGB) at an equal training budget.

Models (latent 32, Adam lr 1e-3, batch 128, no binarization: the 8-bit values):

    conv-gaussian   --arch conv --hidden 32,64,128, --likelihood gaussian-pixel
                    (a density of continuous values: its bits/dim is NOT comparable)
    conv-dlogistic  the same body, discretized logistic per sub-pixel
    resnet-dmol     --arch resnet --hidden 32,64,128 --blocks 2, dmol with 10 mixtures
    deep-dmol       --model deep + dmol (skipped when vaelab has no `deep` model)

Each model trains whole epochs until the CPU time of its training process (all threads,
``time.process_time``, summed over resumed sessions in RUN/cpu_seconds.json) reaches
``--budget-minutes``: an equal CPU budget per model, robust to other jobs sharing the
machine (wall times are in metrics.jsonl), then is evaluated with ``--nll-samples``
importance samples on all test images (``--limit 0``). Bits/dim = NLL / (3*32*32 ln 2)
over the 8-bit values, comparable with published figures for the discrete likelihoods.
A 64-image sample grid per model is written next to the JSON. An existing run folder is
resumed, not retrained.
The full protocol (about 4 x budget + evaluation):

    python benchmarks/colour_bits.py --budget-minutes 60 --nll-samples 1000 --threads 2

``--quick`` checks the script end to end in a couple of minutes (tiny budget, K=10).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import vaelab
from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.evaluation.plots import save_grid
from vaelab.models import MODELS as VAELAB_MODELS
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit

BASE = {"dataset": "emoji", "latent_dim": 32, "batch_size": 128, "lr": 1e-3,
        "progress": False, "report": False}  # fmt: skip
MODELS: dict[str, dict] = {
    "conv-gaussian": {"arch": "conv", "hidden": "32,64,128", "likelihood": "gaussian-pixel",
                      "sigma": 0.1},
    "conv-dlogistic": {"arch": "conv", "hidden": "32,64,128", "likelihood": "dlogistic"},
    "resnet-dmol": {"arch": "resnet", "hidden": "32,64,128", "blocks": 2,
                    "likelihood": "dmol", "mixtures": 10},
    "deep-dmol": {"model": "deep", "likelihood": "dmol", "mixtures": 10},
}  # fmt: skip
# Likelihoods whose NLL is over the 8-bit values (vaelab.likelihoods, `discrete`).
COMPARABLE = {"dlogistic", "dmol"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="training time per model")
    p.add_argument("--nll-samples", type=int, default=1000, help="importance samples K")
    p.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny budget and K: an end-to-end check")
    p.add_argument("--runs", default="benchmarks/runs/colour_bits")
    p.add_argument("--json", default="benchmarks/results/colour_bits.json")
    args = p.parse_args(argv)
    if args.quick:
        args.budget_minutes, args.nll_samples, args.limit = 0.1, 10, 64
        args.runs, args.json = args.runs + "_quick", args.json.replace(".json", "_quick.json")
    return args


def trained(run: Path) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, epochs) spent training ``run`` so far."""
    rows = read_metrics(run) if (run / CHECKPOINT).is_file() else []
    cpu_file = run / "cpu_seconds.json"
    cpu = json.loads(cpu_file.read_text())["cpu_seconds"] if cpu_file.is_file() else 0.0
    return cpu, sum(r["seconds"] for r in rows), (rows[-1]["epoch"] if rows else 0)


def train(name: str, args: argparse.Namespace) -> Path:
    """Train one more epoch at a time (resuming) until the CPU budget is spent."""
    out = Path(args.runs) / name
    budget = 60 * args.budget_minutes
    cpu, _, epoch = trained(out)
    while cpu < budget:
        overrides = {**BASE, **MODELS[name], "epochs": epoch + 1, "device": args.device}
        config = with_overrides(Config(), overrides, f"benchmark {name}")
        torch.manual_seed(0)
        t0 = time.process_time()
        fit(config, out, resume=(out / CHECKPOINT).is_file())
        cpu += time.process_time() - t0
        (out / "cpu_seconds.json").write_text(json.dumps({"cpu_seconds": cpu}) + "\n")
        _, wall, epoch = trained(out)
        print(f"{name}: epoch {epoch}, CPU {cpu:.0f} s of {budget:.0f} s (wall {wall:.0f} s)",
              flush=True)  # fmt: skip
    return out


def evaluate(name: str, run: Path, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    opened = vaelab.open_run(run, args.device)
    model = opened.model
    result = vaelab.evaluate(opened, samples=args.nll_samples, limit=args.limit or None,
                             extras=False)  # fmt: skip
    result.pop("log_px_per_image")
    torch.manual_seed(0)
    grid = Path(args.json).with_name(f"{Path(args.json).stem}_{name}.png")
    save_grid(model.sample(64).cpu().clamp(0, 1), grid)
    cpu, wall, epochs = trained(run)
    likelihood = MODELS[name]["likelihood"]
    result.update({
        "model": name, "overrides": MODELS[name], "epochs": epochs, "train_cpu_seconds": cpu,
        "train_seconds": wall,
        "comparable_bits_per_dim": likelihood in COMPARABLE, "grid": grid.name,
    })  # fmt: skip
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    unknown = set(names) - set(MODELS)
    if unknown:
        sys.exit(f"--models: unknown {sorted(unknown)}; valid: {', '.join(MODELS)}")
    path = Path(args.json)  # rows of earlier invocations (--models subsets) are kept
    report = json.loads(path.read_text()) if path.is_file() else {}
    report.setdefault("models", {})
    report.setdefault("skipped", {})
    for name in names:
        model_name = MODELS[name].get("model", "vae")
        if model_name not in VAELAB_MODELS:
            report["skipped"][name] = f"vaelab has no --model {model_name} yet"
            print(f"{name}: skipped ({report['skipped'][name]})")
            save_json(path, report)
            continue
        report["skipped"].pop(name, None)
        run = train(name, args)
        t0 = time.perf_counter()
        result = evaluate(name, run, args)
        result["seconds_evaluate"] = time.perf_counter() - t0
        print(f"{name}: {result['bits_per_dim']:.3f} +- {result['bits_per_dim_se']:.3f} bits/dim"
              f" (-ELBO {result['negative_elbo'] / (result['dims'] * math.log(2)):.3f}),"
              f" {result['epochs']} epochs")  # fmt: skip
        # Each row carries how it was measured: rows may come from different invocations.
        result.update({**provenance(args.device), "device": args.device,
                       "budget_minutes": args.budget_minutes, "nll_samples": args.nll_samples,
                       "limit": args.limit, "threads": torch.get_num_threads()})  # fmt: skip
        report["models"][name] = result
        report.update(provenance(args.device))
        save_json(path, report)  # after each model: partial results are kept
    print(table(report))
    return 0


def table(report: dict) -> str:
    """The README table: bits/dim (with SE), -ELBO in bits/dim, epochs in the budget."""
    lines = ["| model | bits/dim | SE | -ELBO bits/dim | comparable | K / images | epochs "
             "| train CPU s (wall s) |", "|" + "---|" * 8]  # fmt: skip
    for name, r in report["models"].items():
        scale = 1 / (r["dims"] * math.log(2))
        lines.append(
            f"| {name} | {r['bits_per_dim']:.3f} | {r['bits_per_dim_se']:.3f} "
            f"| {r['negative_elbo'] * scale:.3f} "
            f"| {'yes' if r['comparable_bits_per_dim'] else 'no'}"
            f" | {r['samples']} / {r['images']} | {r['epochs']} "
            f"| {r['train_cpu_seconds']:.0f} ({r['train_seconds']:.0f}) |"
        )
    for name, why in report.get("skipped", {}).items():
        lines.append(f"| {name} | skipped: {why} | | | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
