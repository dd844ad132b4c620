"""Flow posteriors, hyperspherical and categorical latents on dynamically binarized
Fashion-MNIST, beside pythae's VAE_IAF, VAE_LinNF and SVAE (issue 23).

The zoo table's budget (benchmarks/zoo_table.py): MLP bodies 784-400-20 (ReLU), batch 128,
Adam 1e-3, ``--epochs`` passes (10 by default), seed 0, for vaelab and pythae alike. Per
family: test ELBO, importance-sampled NLL (K = ``--nll-samples`` on the first
``--nll-images`` test images, vaelab's fixed binarization of them), reconstruction MSE at
the posterior's point (vaelab's evaluate) and of one posterior draw (the definition the
pythae side can share), and training images/s (median over epochs; needs a quiet machine).
pythae's model is trained and scored by benchmarks/zoo_latents_pythae.py in
/work/pythae-venv on the same training images and the same binarized test images (its own
``get_nll``; its test ELBO is its loss, one draw per image). Resumable: a family already in
the JSON is skipped, finished runs are reused.

    OMP_NUM_THREADS=1 python benchmarks/zoo_latents.py --out runs/zoo-latents --epochs 10 \
        --json benchmarks/results/zoo_latents.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

import vaelab
from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.data import dataset_for
from vaelab.data.prepare import eval_images, to_unit
from vaelab.models import MODELS  # importing the registry registers the families' options
from vaelab.training.folder import read_metrics

ROOT = Path(__file__).resolve().parent.parent
PYTHAE = "/work/pythae-venv/bin/python"
BASE = {"dataset": "fashion-mnist", "binarize": "dynamic", "arch": "mlp", "hidden": (400,),
        "latent_dim": 20, "batch_size": 128, "lr": 1e-3, "seed": 0, "progress": False,
        "report": False}  # fmt: skip
# family -> (vaelab overrides, pythae model or None, pythae config options)
FAMILIES: dict[str, tuple[dict, str | None, dict]] = {
    "flow-iaf": ({"model": "flow", "flow": "iaf", "flow_steps": 2, "flow_hidden": 64},
                 "VAE_IAF", {"n_made_blocks": 2, "n_hidden_in_made": 1, "hidden_size": 64}),
    "flow-planar": ({"model": "flow", "flow": "planar", "flow_steps": 2},
                    "VAE_LinNF", {"flows": ["Planar", "Planar"]}),
    "svae": ({"model": "svae"}, "SVAE", {}),
    "gumbel": ({"model": "gumbel", "cat_vars": 20, "categories": 10}, None, {}),
    "jointvae": ({"model": "gumbel", "joint": True, "latent_dim": 10, "cat_vars": 1,
                  "categories": 10}, None, {}),
    "vae": ({}, None, {}),
}  # fmt: skip


def config_of(name: str, epochs: int) -> Config:
    assert FAMILIES[name][0].get("model", "vae") in MODELS
    return with_overrides(Config(), {**BASE, "epochs": epochs, **FAMILIES[name][0]}, name)


@torch.no_grad()
def draw_mse(run, x: torch.Tensor) -> float:
    """Mean squared error of the decoded mean at one z ~ q(z|x) against binarized ``x``."""
    model = vaelab.open_run(run).model
    torch.manual_seed(0)
    total = 0.0
    for xb in x.split(500):
        xu = to_unit(xb)
        z = model.encode(xu).sample((1,))[0]
        total += float(
            (model.likelihood.mean(model.decode(z)) - xu).square().flatten(1).mean(1).sum()
        )
    return total / len(x)


def vaelab_row(name: str, a, test: torch.Tensor) -> dict:
    run = Path(a.out) / name
    cfg = config_of(name, a.epochs)
    if not ((run / "metrics.jsonl").is_file() and len(read_metrics(run)) >= a.epochs):
        vaelab.train(cfg, run, overwrite=True)
    speed = statistics.median(row["images_per_s"] for row in read_metrics(run))
    r = vaelab.evaluate(run, samples=a.nll_samples, limit=a.nll_images, quality=False, seed=0)
    return {"run": str(run), "overrides": FAMILIES[name][0], "epochs": cfg.train.epochs,
            "images_per_s": speed,
            "test_elbo": r.get("elbo"), "nll_nats": r.get("nll_nats"),
            "nll_nats_se": r.get("nll_nats_se"), "recon_mse": r["reconstruction"]["mse"],
            "recon_mse_posterior_draw": draw_mse(run, test)}  # fmt: skip


def pythae_row(name: str, a, train_npy: Path, test_npy: Path) -> dict | None:
    _, peer, options = FAMILIES[name]
    if peer is None:
        return None
    folder = Path(a.out) / f"pythae-{peer}"
    if not (folder / "pythae.json").is_file():
        subprocess.run([PYTHAE, str(ROOT / "benchmarks/zoo_latents_pythae.py"), "--train",
                        str(train_npy), "--test", str(test_npy), "--model", peer, "--config",
                        json.dumps(options), "--epochs", str(a.epochs), "--batch-size",
                        str(BASE["batch_size"]), "--nll-samples", str(a.nll_samples),
                        "--out", str(folder)], check=True)  # fmt: skip
    return json.loads((folder / "pythae.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/zoo-latents", help="folder of the runs (reused)")
    ap.add_argument("--json", default="benchmarks/results/zoo_latents.json")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--nll-samples", type=int, default=500)
    ap.add_argument("--nll-images", type=int, default=2000)
    ap.add_argument("--families", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--no-pythae", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.json)
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.update(provenance())
    result["budget"] = {**{k: v for k, v in BASE.items() if k not in ("progress", "report")},
                        "epochs": a.epochs, "nll_samples": a.nll_samples,
                        "nll_images": a.nll_images}  # fmt: skip
    rows = result.setdefault("families", {})
    Path(a.out).mkdir(parents=True, exist_ok=True)
    data = dataset_for(config_of("vae", 1))
    test = eval_images(data.test_x, "dynamic", 0)[: a.nll_images]  # what evaluate scores
    train_npy, test_npy = Path(a.out) / "train-uint8.npy", Path(a.out) / "test-binarized.npy"
    if not a.no_pythae:
        np.save(train_npy, data.train_x.numpy())
        np.save(test_npy, test.numpy())
    for name in [f for f in a.families.split(",") if f] or list(FAMILIES):
        if name in rows and "error" not in rows[name]:
            continue
        print(f"zoo_latents: {name}", file=sys.stderr, flush=True)
        try:
            v = vaelab_row(name, a, test)
            p = None if a.no_pythae else pythae_row(name, a, train_npy, test_npy)
            diff = None
            if p is not None:
                diff = {"speed_ratio": v["images_per_s"] / p["images_per_s"]}
                for k in ("test_elbo", "nll_nats", "recon_mse_posterior_draw"):
                    diff[k] = v[k] - p[k]
            rows[name] = {"vaelab": v, "pythae": p, "vaelab_minus_pythae": diff}
        except Exception as e:  # one family's failure is recorded, the others go on
            rows[name] = {"error": f"{type(e).__name__}: {e}",
                          "traceback": traceback.format_exc(limit=3)}  # fmt: skip
        save_json(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
