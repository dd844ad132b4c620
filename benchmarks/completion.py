"""Completion error on the missing pixels: each mask preset and super-resolution, pseudo-Gibbs
and Metropolis-within-Gibbs, against the mean-image and nearest-neighbour baselines.

Uses the VAE in --run (or trains one: --epochs on the dataset), completes the first --limit
test images, prints and saves JSON (benchmarks/results/completion.json) and writes the
README's pictures (docs/images/completion.png, docs/images/superres.png).

    flock /tmp/vaelab-cpu.lock python benchmarks/completion.py --run RUN
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from provenance import provenance, save_json  # benchmarks/provenance.py
from semi_supervised import subset
from vaelab.api import load_test_images, open_run
from vaelab.config import Config, with_overrides
from vaelab.data.prepare import eval_images, to_unit
from vaelab.evaluation.completion import complete, downscale, make_mask, upsample
from vaelab.evaluation.completion_eval import evaluate_completion
from vaelab.evaluation.plots import save_grid
from vaelab.training.loop import fit

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("left-half", "top-half", "centre-square", "random:0.5")


def pictures(run, data, images: Path, n: int = 6, steps: int = 50) -> None:
    """Rows: original, what the model sees (missing = mid-grey), n completions."""
    model, cfg = run.model, run.config
    x = to_unit(eval_images(data.test_x[:4], cfg.data.binarize, cfg.train.seed))
    rows = []
    for k, preset in enumerate(PRESETS):
        missing = make_mask(preset, model.image_shape, seed=0)
        xi = x[k : k + 1]
        out = complete(model, xi, missing, n=n, steps=steps, seed=0).images[0].cpu()
        rows.append(torch.cat([xi, torch.where(missing, torch.full_like(xi, 0.5), xi), out]))
    save_grid(torch.cat(rows), images / "completion.png", nrow=n + 2)
    rows = []
    for k, f in enumerate((2, 4)):
        xi = x[k : k + 1]
        out = complete(model, xi, n=n, steps=steps, downscale_factor=f, seed=0).images[0].cpu()
        rows.append(torch.cat([xi, upsample(downscale(xi, f), f), out]))
    save_grid(torch.cat(rows), images / "superres.png", nrow=n + 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", default=None, help="a trained VAE run (else one is trained)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-images", type=int, default=None,
                   help="baselines use this seeded subset (as semi_supervised.py)")  # fmt: skip
    p.add_argument("--limit", type=int, default=500, help="test images scored")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("-n", type=int, default=4, help="completions per image")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/completion.json"))
    p.add_argument("--images", default=str(ROOT / "docs/images"))
    args = p.parse_args()
    t0 = time.perf_counter()
    run = args.run
    if run is None:
        cfg = with_overrides(Config(), {"dataset": args.dataset, "epochs": args.epochs,
                                        "progress": False, "report": False}, "bench")  # fmt: skip
        run = fit(cfg, "/tmp/vaelab-bench-completion/vae", overwrite=True)
    opened = open_run(run)
    data = subset(load_test_images(opened), args.train_images)
    rows = []
    tasks = [{"mask": m, "method": meth} for m in PRESETS for meth in ("pseudo-gibbs", "mwg")]
    tasks += [{"downscale_factor": f, "method": "pseudo-gibbs"} for f in (2, 4)]
    for task in tasks:
        res = evaluate_completion(opened, data, limit=args.limit, n=args.n, steps=args.steps,
                                  **task)  # fmt: skip
        print(json.dumps({k: (v["mse"] if isinstance(v, dict) else v) for k, v in res.items()}),
              flush=True)  # fmt: skip
        rows.append(res)
    pictures(opened, data, Path(args.images), steps=args.steps)
    out = {
        "benchmark": "completion", "run": str(run), "dataset": data.name,
        "config": opened.config.to_dict(), "rows": rows, "seconds": time.perf_counter() - t0,
        **provenance(),
    }  # fmt: skip
    save_json(args.out, out)


if __name__ == "__main__":
    main()
