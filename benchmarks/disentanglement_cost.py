"""Cost of the disentanglement metrics (issue 21: all of them on 10,000 images in under a
minute on this CPU), and optionally of rendering dSprites.

The representation is a stand-in with a trained model's shape: 10 latent dimensions, the
5 varying dSprites factors (standardised) in 5 of them plus noise, the other 5 noise,
posterior std 0.1; what the metrics cost does not depend on what the codes mean. Each
metric is timed alone, one seed, at the command's default settings.

    .venv/bin/python benchmarks/disentanglement_cost.py --images 10000
    .venv/bin/python benchmarks/disentanglement_cost.py --images 1000 --votes 500 --render small
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from vaelab.data.dsprites import DSPRITES, DSPRITES_SMALL, all_classes, render
from vaelab.evaluation.disentanglement import METRICS, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--votes", type=int, default=5000, help="training votes (as the CLI)")
    parser.add_argument("--mig-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render", choices=("none", "small", "full"), default="none",
                        help="also time rendering dsprites-small or the full dSprites")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results/disentanglement_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    factors = all_classes(DSPRITES.factor_sizes)
    factors = factors[rng.choice(len(factors), args.images, replace=False)]
    values = factors[:, 1:].astype(np.float64)
    z = (values - values.mean(0)) / values.std(0)
    codes = np.c_[z + 0.1 * rng.normal(size=z.shape), rng.normal(size=(len(z), 5))]
    std = np.full_like(codes, 0.1)

    import sklearn.ensemble
    import sklearn.linear_model  # noqa: F401  imported before timing: seconds on a cold disk

    seconds = {}
    for metric in METRICS:
        t0 = time.perf_counter()
        score(codes, factors, std, metrics=(metric,), seeds=(0,),
              votes=(args.votes, args.votes * 2 // 5), mig_samples=args.mig_samples)  # fmt: skip
        seconds[metric] = time.perf_counter() - t0
        print(f"{metric:<12}{seconds[metric]:8.2f} s")
    total = sum(seconds.values())
    print(f"{'all':<12}{total:8.2f} s on {args.images} images")
    result = {"images": args.images, "votes": args.votes, "mig_samples": args.mig_samples,
              "threads": args.threads, "seconds": seconds, "total_seconds": total,
              "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__}  # fmt: skip
    if args.render != "none":
        spec = DSPRITES if args.render == "full" else DSPRITES_SMALL
        t0 = time.perf_counter()
        images = render(spec)
        result["render_seconds"] = time.perf_counter() - t0
        result["render_images"] = len(images)
        print(f"rendered {len(images)} images in {result['render_seconds']:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
