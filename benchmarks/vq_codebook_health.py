"""Codebook health of a VQ-VAE during training, step by step (counts, not timings).

Trains ``vaelab train --model vqvae`` on the emoji set with the settings of vq_bits.py
(conv 64,128, 2 residual blocks, 8x8 grid of 64-dim codes, K = 256, EMA codebook,
dlogistic, batch 128) and records after every training step, by wrapping the quantiser's
update: the codes the batch used, their perplexity, the restarts, and the mean norm of the
encoder vectors and of the codebook. Prints per epoch the run's own metrics.jsonl figures
(codes used in the epoch, perplexity of the epoch's assignments, test log p(x|z_q)) beside
the per-batch means, and writes everything as JSON. The figures are counts: valid on a
busy machine. Run it with another checkout's ``src`` on PYTHONPATH to compare versions:

    OMP_NUM_THREADS=1 python benchmarks/vq_codebook_health.py --epochs 3 --seed 0 \
        --out /tmp/vq_health --json /tmp/vq_health.json
    python benchmarks/vq_codebook_health.py --quick   # checks it runs (2 tiny epochs)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vaelab.cli import main as vaelab_main
from vaelab.nn import quantize


def record_steps(rows: list[dict]) -> None:
    """Wrap VectorQuantizer._update so that each training step appends its figures."""
    update = quantize.VectorQuantizer._update

    def logged(self, flat, idx):
        before = int(self.restarts)
        out = update(self, flat, idx)
        used = torch.bincount(out, minlength=self.codes)
        rows.append({
            "batch_codes_used": int((used > 0).sum()),
            "batch_perplexity": quantize.perplexity(used),
            "restarts": int(self.restarts) - before,
            "encoder_norm": float(flat.norm(dim=1).mean()),
            "codebook_norm": float(self.codebook.detach().norm(dim=1).mean()),
        })  # fmt: skip
        return out

    quantize.VectorQuantizer._update = logged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="/tmp/vq_health", help="the run folder (replaced)")
    p.add_argument("--json", help="write the per-step and per-epoch figures here")
    p.add_argument("--quick", action="store_true", help="2 epochs of a tiny model on digits")
    a = p.parse_args()
    rows: list[dict] = []
    record_steps(rows)
    if a.quick:
        model = ["--dataset", "digits", "--hidden", "8", "--blocks", "1", "--latent-dim", "4",
                 "--codes", "16", "--epochs", "2"]  # fmt: skip
    else:
        model = ["--dataset", "emoji", "--hidden", "64,128", "--blocks", "2", "--latent-dim",
                 "64", "--likelihood", "dlogistic", "--codes", "256",
                 "--epochs", str(a.epochs)]  # fmt: skip
    argv = ["train", "--model", "vqvae", "--arch", "conv", *model, "--batch-size", "128",
            "--lr", str(a.lr), "--seed", str(a.seed), "--progress", "false", "--report",
            "false", "--overwrite", "--out", a.out]  # fmt: skip
    if vaelab_main(argv) != 0:
        raise SystemExit("training failed")
    metrics = [json.loads(r) for r in (Path(a.out) / "metrics.jsonl").read_text().splitlines()]
    epochs, start = [], 0
    for m in metrics:
        steps = rows[start : m["step"]]
        start = m["step"]
        epoch = {
            "epoch": m["epoch"], "codes_used": m["codes_used"],
            "code_perplexity": m["code_perplexity"], "code_restarts": m["code_restarts"],
            "test_recon": m["test_recon"],
            "mean_batch_codes_used": sum(r["batch_codes_used"] for r in steps) / len(steps),
            "mean_batch_perplexity": sum(r["batch_perplexity"] for r in steps) / len(steps),
            "restarts_in_epoch": sum(r["restarts"] for r in steps),
        }  # fmt: skip
        epochs.append(epoch)
        print(" ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in epoch.items()))  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps({"epochs": epochs, "steps": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
