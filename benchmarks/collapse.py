"""Does any recommended body x likelihood pair end collapsed on small colour sets?

Trains every pair the README recommends for colour images, at a stated equal budget in epochs
per data set, and records per run the test-set KL (nats per image), the active latent units
(vaelab.evaluation.health: Cov_x E[z|x] > 0.01, of the exploring latent; the deep model's top
group), the test -ELBO in bits/dim (an upper bound on the NLL over the 8-bit values) and
whether it collapsed (KL < 1 nat or no active unit), with sample and reconstruction grids
(OUT/DATA-PAIR-samples.png, OUT/DATA-PAIR-reconstructions.png):

    resnet-dmol       --arch resnet --hidden 32,64,128 --blocks 1 --likelihood dmol --mixtures 5
                      (the README's worked example)
    resnet-dlogistic  the same body, --likelihood dlogistic
    conv-dlogistic    --arch conv --hidden 32,64,128 --likelihood dlogistic
    deep-dmol         --model deep (its defaults) --likelihood dmol --mixtures 5

all with --latent-dim 32 (the deep model has its own groups), Adam 1e-3, batch 128, on

    emoji   --dataset emoji (4,929 train / 490 test, 32x32 RGB)
    icons   a user-like folder (benchmarks/icon_folder.py: 400 RGBA icons of 40..96 px in 4
            class folders, --resize 32x32, 10% held out)

    OMP_NUM_THREADS=1 python benchmarks/collapse.py --data emoji --epochs 4
    OMP_NUM_THREADS=1 python benchmarks/collapse.py --data icons --epochs 60
    python benchmarks/collapse.py --quick          # 1 epoch of each on 16x16: checks the script

Resumable: a finished run folder is read, not retrained; an interrupted one resumes (with a
new --epochs it trains on to that many). Each run writes OUT/collapse-DATA-PAIR.json, and
OUT/collapse-DATA.json gathers every such file present, so processes with different --pairs can
run side by side and a partial table survives. Exit status 1 if any run ended collapsed.
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
from icon_folder import make_folder  # benchmarks/icon_folder.py
from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.data import dataset_for
from vaelab.data.prepare import eval_images
from vaelab.evaluation.health import latent_health
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit

BASE = {"latent_dim": 32, "batch_size": 128, "lr": 1e-3, "progress": False, "report": False}
PAIRS: dict[str, dict] = {
    "resnet-dmol": {"arch": "resnet", "hidden": "32,64,128", "blocks": 1,
                    "likelihood": "dmol", "mixtures": 5},
    "resnet-dlogistic": {"arch": "resnet", "hidden": "32,64,128", "blocks": 1,
                         "likelihood": "dlogistic"},
    "conv-dlogistic": {"arch": "conv", "hidden": "32,64,128", "likelihood": "dlogistic"},
    "deep-dmol": {"model": "deep", "likelihood": "dmol", "mixtures": 5},
}  # fmt: skip
KL_COLLAPSED = 1.0  # nats per image: vaelab.training.collapse.KL_NEAR_ZERO


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["emoji", "icons"], default="emoji")
    p.add_argument("--epochs", type=int, default=None, help="default: emoji 4, icons 60")
    p.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated names")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/collapse"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="16x16, 1 epoch, 2 pairs")
    return p.parse_args(argv)


def dataset_options(data: str, out: Path, quick: bool) -> dict:
    if data == "emoji":
        return {"dataset": "emoji", **({"resize": "16x16"} if quick else {})}
    folder = out / "icons"
    if not folder.is_dir():
        make_folder(folder)
    return {"dataset": str(folder), "resize": "16x16" if quick else "32x32"}


def run_one(name: str, options: dict, epochs: int, folder: Path) -> dict:
    config = with_overrides(Config(), {**BASE, **options, **PAIRS[name], "epochs": epochs}, name)
    started = time.time()
    fit(config, folder, resume=(folder / CHECKPOINT).is_file())
    rows = read_metrics(folder)
    last = rows[-1]
    run = vaelab.open_run(folder)
    test = eval_images(dataset_for(run.config).test_x, run.config.data.binarize, 0)
    health = latent_health(run.model, test)
    dims = math.prod(run.info["image_shape"])
    kl = float(last["test_kl"])
    grids = {kind: folder.parent.parent / f"{folder.name}-{kind}.png"
             for kind in ("samples", "reconstructions")}  # fmt: skip
    vaelab.sample(run, 64, out=grids["samples"], overwrite=True)
    vaelab.reconstruct(run, 32, out=grids["reconstructions"], overwrite=True)
    return {
        "pair": name, "options": {**options, **PAIRS[name]}, "epochs": last["epoch"],
        "steps": last["step"], "test_kl_nats": kl, "active_units": health["active_units"],
        "latent_units": health["latent_dim"],
        "test_neg_elbo_bits_per_dim": -float(last["test_elbo"]) / (dims * math.log(2)),
        "kl_per_epoch": [round(float(r["test_kl"]), 3) for r in rows],
        "collapsed": kl < KL_COLLAPSED or health["active_units"] == 0,
        "wall_seconds_this_call": time.time() - started,
        "samples": grids["samples"].name,
        "reconstructions": grids["reconstructions"].name,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (1 if args.quick else {"emoji": 4, "icons": 60}[args.data])
    names = ["conv-dlogistic", "resnet-dmol"] if args.quick else args.pairs.split(",")
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        sys.exit(f"--pairs: unknown {unknown}; expected some of {list(PAIRS)}")
    out = args.out / "quick" if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)
    options = dataset_options(args.data, out, args.quick)
    results: list[dict] = []
    for name in names:
        print(f"{args.data} {name}: {epochs} epochs", flush=True)
        row = run_one(name, options, epochs, out / "runs" / f"{args.data}-{name}")
        print(json.dumps({k: row[k] for k in ("pair", "test_kl_nats", "active_units",
                          "test_neg_elbo_bits_per_dim", "collapsed")}), flush=True)  # fmt: skip
        results.append(row)
        save_json(out / f"collapse-{args.data}-{name}.json", {**row, "provenance": provenance()})
        files = [out / f"collapse-{args.data}-{n}.json" for n in PAIRS]
        gathered = [json.loads(f.read_text()) for f in files if f.is_file()]
        save_json(out / f"collapse-{args.data}.json", {"data": args.data, "results": gathered})
    return 1 if any(r["collapsed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
