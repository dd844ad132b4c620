"""The disentanglement objectives side by side on dSprites (issue 21): VAE, beta-VAE,
capacity-annealed beta-VAE, beta-TCVAE, FactorVAE and DIP-VAE, the same conv body, the same
number of training steps each, several seeds; every metric of ``vaelab disentanglement``
with its spread over the training seeds, and the reconstruction term of the test ELBO.

Resumable: each (model, seed) is a run folder under ``--runs``; a finished run (its
checkpoint at the last epoch) is not retrained, its scores are read back from its
``zoo_scores.json``. Seeds run in the outer loop, so a stopped job leaves whole seeds. The
JSON is rewritten after every run.

    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/disentangle_zoo.py \\
        --dataset dsprites-small --epochs 2 --seeds 3 > zoo.log 2>&1 &
    # or the seeds in parallel processes (each trains its seeds; the JSON gathers all):
    #   ... --only-seeds 1 &   ... --only-seeds 2 &
    .venv/bin/python benchmarks/disentangle_zoo.py --epochs 1 --tiny     # a check: seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

import vaelab
from vaelab.training.folder import read_metrics

# name -> the options of its run (beside the shared body); the papers' settings where they
# transfer: beta-VAE beta 4 (Higgins 2017 used 4 on dSprites), annealed C_max 25 nats with
# gamma 1000 (Burgess 2018), beta-TCVAE tc_beta 6 (Chen 2018), FactorVAE gamma 35 (Kim &
# Mnih 2018's range 10..100), DIP-VAE-II lambda_od = lambda_d = 10 (Kumar 2018).
MODELS = {
    "vae": {},
    "beta_vae": {"beta": 4.0},
    "annealed_vae": {"objective": "annealed", "capacity_max": 25.0, "capacity_gamma": 1000.0},
    "beta_tcvae": {"objective": "btcvae", "tc_beta": 6.0},
    "factor_vae": {"objective": "factorvae", "factor_gamma": 35.0},
    "dip_vae": {"objective": "dip", "dip_kind": "ii", "lambda_od": 10.0},
}
SCORES = "zoo_scores.json"
INTERIM = "zoo_interim.json"  # --interim: scores of a run short of its budget
BUDGET = "zoo_budget.json"  # CPU seconds spent on a run, summed over sessions


def train_budget(name: str, seed: int, args: argparse.Namespace, folder: Path, opts: dict) -> float:
    """Train until ``--cpu-minutes`` of process CPU time (this run's, summed over sessions)
    are spent, one epoch at a time (each a resume); returns the CPU seconds spent."""
    ledger = folder / BUDGET
    spent = json.loads(ledger.read_text())["cpu_seconds"] if ledger.is_file() else 0.0
    epochs = len(read_metrics(folder)) if (folder / "metrics.jsonl").is_file() else 0
    while spent < 60 * args.cpu_minutes:
        t0 = time.process_time()
        vaelab.train(
            None, folder, resume=epochs > 0, dataset=args.dataset, arch="conv",
            latent_dim=10, epochs=epochs + 1, batch_size=args.batch_size, lr=args.lr,
            seed=seed, device=args.device, progress=False, report=False, **opts,
        )  # fmt: skip
        spent += time.process_time() - t0
        epochs += 1
        ledger.write_text(json.dumps({"cpu_seconds": spent, "epochs": epochs}))
        print(f"  {name} s{seed}: epoch {epochs}, {spent / 60:.1f} CPU-min", flush=True)
    return spent


def run_one(name: str, seed: int, args: argparse.Namespace, folder: Path) -> dict | None:
    """Train (or resume) one run and score it; returns its record (``--interim``: None for
    a run not started)."""
    done = folder / SCORES
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("cpu_minutes", 0) >= (args.cpu_minutes or 0):
            return record
    opts = dict(MODELS[name])
    if name == "annealed_vae":  # C reaches C_max at 3/4 of the budget
        opts["capacity_steps"] = max(1, int(0.75 * args.steps_hint))
    if args.tiny and name == "factor_vae":
        opts.update(disc_hidden=64, disc_layers=2)
    if args.tiny:
        opts["hidden"] = "8,8"
    t0 = time.perf_counter()
    cpu = None
    if args.interim:  # score the run as far as it got, train nothing
        ledger = folder / BUDGET
        if not ledger.is_file():
            return None
        cpu = json.loads(ledger.read_text())["cpu_seconds"]
        done = folder / INTERIM
    elif args.cpu_minutes:
        cpu = train_budget(name, seed, args, folder, opts)
    else:
        resume = folder.is_dir() and any(folder.iterdir())  # killed early: starts over
        cpu0 = time.process_time()  # this session's share (a resumed run's earlier part: not)
        vaelab.train(
            None, folder, resume=resume, dataset=args.dataset, arch="conv", latent_dim=10,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
            device=args.device, progress=False, report=False, **opts,
        )  # fmt: skip
        cpu = time.process_time() - cpu0
    train_s = time.perf_counter() - t0
    rows = read_metrics(folder)
    last = rows[-1]
    t0 = time.perf_counter()
    result = vaelab.disentanglement(
        folder, pool=args.pool, seeds=1, votes=args.votes, mig_samples=args.mig_samples,
        seed=seed, device=args.device,
    )  # fmt: skip
    record = {
        "model": name, "seed": seed, "options": opts, "steps": last["step"],
        "interim": bool(args.interim),
        "epochs": len(rows), "cpu_minutes": args.cpu_minutes or None,
        "cpu_seconds": cpu, "test_elbo": last["test_elbo"], "test_recon": last["test_recon"],
        "test_kl": last["test_kl"], "train_seconds": train_s,
        "score_seconds": time.perf_counter() - t0,
        "train_terms": {k: v for k, v in last.items() if k.startswith("train_")},
        "metrics": {k: v["mean"] for k, v in result["summary"].items()},
        "warnings": result.get("warnings", []),  # image-index dimensions (README)
    }  # fmt: skip
    done.write_text(json.dumps(record, indent=1))
    return record


def summarise(records: list[dict]) -> dict:
    """model -> metric -> mean, std (ddof 1) and standard error over its seeds."""
    out: dict = {}
    for name in MODELS:
        mine = [r for r in records if r["model"] == name]
        if not mine:
            continue
        values: dict[str, list[float]] = {}
        for r in mine:
            for k, v in {**r["metrics"], "test_recon": r["test_recon"],
                         "test_elbo": r["test_elbo"]}.items():  # fmt: skip
                values.setdefault(k, []).append(v)
        out[name] = {"seeds": len(mine)}
        for k, v in values.items():
            a = np.asarray(v, dtype=float)
            std = float(a.std(ddof=1)) if len(a) > 1 else math.nan
            out[name][k] = {"mean": float(a.mean()), "std": std,
                            "se": std / math.sqrt(len(a)) if len(a) > 1 else math.nan}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="dsprites-small")
    parser.add_argument("--epochs", type=int, default=2, help="the equal budget (x steps/epoch)")
    parser.add_argument(
        "--cpu-minutes",
        type=float,
        default=None,
        help="the equal budget as process CPU minutes per run (instead of"
        " --epochs): whole epochs until spent; resumable across sessions",
    )
    parser.add_argument(
        "--interim",
        action="store_true",
        help="with --cpu-minutes: score every run as far as it has trained "
        "(stopped short of the budget), train nothing; write to --out",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seeds", default=None,
                        help="train just these seeds (comma list), e.g. two processes 1 and 2;"
                        " the JSON always gathers every scored run of the --seeds")  # fmt: skip
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--pool", type=int, default=5000, help="images per metric evaluation")
    parser.add_argument("--votes", type=int, default=2000)
    parser.add_argument("--mig-samples", type=int, default=500)
    parser.add_argument("--runs", default="runs/disentangle_zoo")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU plan")
    parser.add_argument("--tiny", action="store_true", help="a tiny body: checks the script")
    parser.add_argument("--out", default="benchmarks/results/disentangle_zoo.json")
    args = parser.parse_args()
    from vaelab.data import load_dataset

    if args.cpu_minutes and "annealed_vae" in args.models.split(","):
        parser.error(
            "--cpu-minutes: the annealed model needs its step count up front; run it with --epochs"
        )
    n_train = len(load_dataset(args.dataset).train_x)
    args.steps_hint = args.epochs * math.ceil(n_train / args.batch_size)
    runs = Path(args.runs)
    seeds = [int(v) for v in args.only_seeds.split(",")] if args.only_seeds else range(args.seeds)
    for seed in seeds:
        for name in args.models.split(","):
            folder = runs / f"{name}-s{seed}"
            print(f"{name} seed {seed} ...", flush=True)
            record = run_one(name, seed, args, folder)
            if record is None:
                continue
            m = record["metrics"]
            print(f"  MIG {m.get('mig_exact', math.nan):.3f}  FactorVAE score "
                  f"{m.get('factor_vae_score', math.nan):.3f}  recon "
                  f"{record['test_recon']:.1f}", flush=True)  # fmt: skip
            # Every scored run of the grid (another process may be training other seeds).
            kind = INTERIM if args.interim else SCORES
            records = [json.loads(f.read_text()) for seed_ in range(args.seeds)
                       for name_ in args.models.split(",")
                       if (f := runs / f"{name_}-s{seed_}" / kind).is_file()]  # fmt: skip
            result = {
                "dataset": args.dataset, "epochs": None if args.cpu_minutes else args.epochs,
                "steps": None if args.cpu_minutes else args.steps_hint,
                "cpu_minutes_per_run": args.cpu_minutes,
                "batch_size": args.batch_size, "lr": args.lr, "pool": args.pool,
                "votes": args.votes, "mig_samples": args.mig_samples,
                "machine": platform.processor() or platform.machine(),
                "summary": summarise(records), "runs": records,
            }  # fmt: skip
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{args.out}.tmp-{os.getpid()}")  # whole files only: two writers
            tmp.write_text(json.dumps(result, indent=1))
            tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
