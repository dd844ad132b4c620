"""Training throughput per precision on a GPU: images/s of vaelab's real training step.

For each ``--precisions`` entry (fp32, bf16, fp16) and optionally ``--compile``, builds
the objects fit() uses (build_model, make_optimizer, Stepper: autocast, GradScaler for
fp16, torch.compile) and times ``--steps`` steps on Fashion-MNIST held on the device
(uint8, batches sliced and scaled on the GPU, as fit() does), after ``--warmup`` steps,
with ``torch.cuda.synchronize()`` around the timed region. Reports the median of
``--rounds`` rounds. Without CUDA it says so and exits 0 without writing anything.

    python benchmarks/gpu_throughput.py --device cuda --precisions fp32,bf16,fp16
    python benchmarks/gpu_throughput.py --device cuda --arch conv --hidden 32,64 --compile
    python benchmarks/gpu_throughput.py --device cuda --dataset cifar10 --model deep \
        --likelihood dmol --set mixtures=10 --batch-size 64     # the deep model on CIFAR-10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, validate, with_overrides
from vaelab.data import load_dataset
from vaelab.data.prepare import epoch_permutation, prepare
from vaelab.models import build_model
from vaelab.training.step import Stepper, make_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: Config, x: torch.Tensor, device: torch.device, args) -> dict:
    """Median images/s over rounds of ``args.steps`` training steps."""
    torch.manual_seed(0)
    if device.type == "cuda":  # this precision's own peak, not the largest so far
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(config.model, tuple(x.shape[1:])).to(device)
    optimizer = make_optimizer(model, config)
    stepper = Stepper(model, optimizer, config, device)
    bs = config.train.batch_size
    perm = epoch_permutation(len(x), 0, 0, device)
    batches = len(perm) // bs

    def run(steps: int, offset: int) -> int:
        skipped = 0
        for i in range(steps):
            b = (offset + i) % batches
            ok, _, _ = stepper(prepare(x[perm[b * bs : (b + 1) * bs]], dynamic=False), 1.0)
            skipped += not ok
        return skipped

    run(args.warmup, 0)  # includes compilation and cuDNN autotuning
    rates, skipped = [], 0
    for r in range(args.rounds):
        sync(device)
        t0 = time.perf_counter()
        skipped += run(args.steps, r * args.steps)
        sync(device)
        rates.append(args.steps * bs / (time.perf_counter() - t0))
    return {
        "images_per_s": statistics.median(rates),
        "rounds": rates,
        "skipped_steps": skipped,  # fp16: GradScaler's overflow steps
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--hidden", default=None, help="default: the arch's own widths")
    ap.add_argument("--model", default="vae", help="any vaelab --model, e.g. deep")
    ap.add_argument("--likelihood", default="bernoulli", help="e.g. dmol for 8-bit colour")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other config field, e.g. mixtures=10 (repeatable)",
    )
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/gpu_throughput.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: CUDA is not available on this machine; skipped (nothing written)")
        return 0
    precisions = [p for p in args.precisions.split(",") if p]
    if device.type != "cuda" and precisions != ["fp32"]:
        print("gpu_throughput: bf16/fp16 autocast is CUDA-only here; timing fp32 on CPU")
        precisions = ["fp32"]
    data = load_dataset(args.dataset)
    pin = device.type == "cuda"
    x = (data.train_x.pin_memory() if pin else data.train_x).to(device, non_blocking=pin)
    results = []
    for compiled in [False, True] if args.compile else [False]:
        for precision in precisions:
            overrides = {
                "model": args.model, "likelihood": args.likelihood, "arch": args.arch,
                "batch_size": args.batch_size, "precision": precision, "compile": compiled,
                "device": args.device, "dataset": args.dataset,
                **({"hidden": args.hidden} if args.hidden else {}),
                **dict(kv.split("=", 1) for kv in args.set),
            }  # fmt: skip
            config = with_overrides(Config(), overrides, "gpu_throughput")
            validate(config)
            row = {"precision": precision, "compile": compiled}
            row.update(measure(config, x, device, args))
            results.append(row)
            print(f"{precision:>5} compile={compiled!s:5}  {row['images_per_s']:>12,.0f} images/s")
    base = results[0]["images_per_s"]
    for row in results:
        row["speedup_vs_first"] = row["images_per_s"] / base
    out = {
        "benchmark": "gpu_throughput",
        **provenance(args.device),
        "device": torch.cuda.get_device_name(device) if pin else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "args": vars(args),
        "results": results,
    }
    save_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
