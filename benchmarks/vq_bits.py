"""VQ-VAE + gated PixelCNN code prior at an equal CPU budget: bits/dim (bounds from a
deterministic encoder), reconstruction error, codebook usage/perplexity, sample and
reconstruction grids.

The VQ-VAE trains one epoch at a time (resuming) until its process CPU time reaches
``--budget-minutes`` x ``--vq-share``; the code prior then trains until the rest of the
budget is spent, so model + prior together cost the budget the continuous models of
benchmarks/README.md ("Colour images at an equal CPU budget") each had. Results:
benchmarks/results/vq_bits_<dataset>.json and the grids vq_<dataset>_{samples,recon}.png.

    OMP_NUM_THREADS=1 python benchmarks/vq_bits.py --dataset emoji --budget-minutes 5
    python benchmarks/vq_bits.py --quick        # an end-to-end check in about a minute
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import vaelab
from vaelab.training.code_prior import META, PRIOR_DIR

SETTINGS = {
    "emoji": dict(dataset="emoji", arch="conv", hidden=(64, 128), blocks=2, latent_dim=64,
                  likelihood="dlogistic", codes=256),
    "fashion-mnist": dict(dataset="fashion-mnist", arch="conv", hidden=(32, 64), blocks=2,
                          latent_dim=32, likelihood="bernoulli", codes=128),
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=tuple(SETTINGS), default="emoji")
    p.add_argument("--budget-minutes", type=float, default=5.0)
    p.add_argument("--vq-share", type=float, default=0.8, help="share of the budget for the VQ-VAE")
    p.add_argument("--runs", default="benchmarks/runs")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.quick:
        a.budget_minutes, a.runs, a.results = 0.3, "/tmp/vq_bits_quick", "/tmp/vq_bits_quick"
    run = Path(a.runs) / f"vq-{a.dataset}"
    budget = 60 * a.budget_minutes
    cpu_file = run / "cpu_seconds.json"
    cpu = json.loads(cpu_file.read_text()) if cpu_file.is_file() else {"vq": 0.0, "prior": 0.0}
    while cpu["vq"] < budget * a.vq_share:
        torch.manual_seed(0)
        t0 = time.process_time()
        vaelab.train(out=run, resume=(run / "checkpoint.safetensors").is_file(), model="vqvae",
                     epochs=1 + (len((run / "metrics.jsonl").read_text().splitlines())
                                 if (run / "metrics.jsonl").is_file() else 0),
                     batch_size=128, lr=1e-3, progress=False, report=False,
                     **SETTINGS[a.dataset])  # fmt: skip
        cpu["vq"] += time.process_time() - t0
        run.joinpath("cpu_seconds.json").write_text(json.dumps(cpu))
        rows = (run / "metrics.jsonl").read_text().splitlines()
        print(f"vq epoch {len(rows)}: CPU {cpu['vq']:.0f} s  {rows[-1][:200]}", flush=True)
    prior_epochs = 0
    if (run / PRIOR_DIR / META).is_file():
        prior_epochs = json.loads((run / PRIOR_DIR / META).read_text())["epoch"]
    while prior_epochs == 0 or cpu["vq"] + cpu["prior"] < budget:
        t0 = time.process_time()
        prior_epochs += 1
        vaelab.train_prior(run, prior_epochs, resume=prior_epochs > 1, progress=True)
        cpu["prior"] += time.process_time() - t0
        run.joinpath("cpu_seconds.json").write_text(json.dumps(cpu))
    result = vaelab.evaluate(run)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    result.update(budget_minutes=a.budget_minutes, cpu_seconds=cpu, vq_epochs=len(rows),
                  prior_epochs=prior_epochs, settings=SETTINGS[a.dataset],
                  last_epoch=rows[-1])  # fmt: skip
    out = Path(a.results)
    out.mkdir(parents=True, exist_ok=True)
    vaelab.sample(run, 64, out=out / f"vq_{a.dataset}_samples.png", overwrite=True)
    vaelab.reconstruct(run, 32, out=out / f"vq_{a.dataset}_recon.png", overwrite=True)
    (out / f"vq_bits_{a.dataset}.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "last_epoch"}, default=str))


if __name__ == "__main__":
    main()
