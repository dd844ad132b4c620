"""End-to-end speed as the user waits for it: whole ``vaelab train`` processes against
minimal hand-written loops, plus ``vaelab --help`` and every ``vaelab CMD --help``.

Each side runs as a whole process twice, for 1 and for 1+E epochs; its time per epoch is

    (T(1+E epochs) - T(1 epoch)) / E

so that start-up, data loading and the end-of-run pictures cancel (one untimed run of
each process first warms the file cache and torch.compile's on-disk cache) and what is left is
what each further epoch costs the user (training, the test-set ELBO, and for vaelab the
checkpoint, metrics line and curve redraw). Rounds interleave every process of every
case, so a slow spell of the machine hits all of them; the figures are medians over
rounds and the ratio is minimal seconds / vaelab seconds (above 1: vaelab is faster).

Cases (the minimal loops are in this file: plain PyTorch, the same layers, Bernoulli
likelihood with logits, analytic KL, Adam 1e-3, batch 128, shuffled each epoch, and the
test-set ELBO computed after every epoch as vaelab does):

    mlp           vaelab train (defaults: MLP 784-400-20) on Fashion-MNIST
    conv          vaelab train --arch conv --hidden 32,64 --latent-dim 16 on mnist-5k
    conv-compile  the same with --compile true (the minimal loop stays eager)
    btcvae        vaelab train --objective btcvae, conv 32,64, latent 10, batch 64, lr 5e-4,
                  on dsprites-small (issue 21's benchmark body); minimal loop:
                  benchmarks/minimal_disentangle.py
    factorvae     the same with --objective factorvae (its discriminator and second Adam)

For vaelab it also reports, from the run's own metrics.jsonl, the per-epoch overhead
(wall time per epoch minus the epoch's training time: test ELBO + checkpoint + metrics +
curves) and the start-up before epoch 1 (process start to config.yaml written).

Timings are meaningless while other jobs share the CPU: run it on a quiet machine.

    .venv/bin/python benchmarks/cli_epoch.py --rounds 3 --epochs 3
    .venv/bin/python benchmarks/cli_epoch.py --quick     # checks it runs (tiny sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def disentangle_case(objective: str) -> dict:
    """Issue 21's benchmark body: conv 32,64, latent 10, batch 64, lr 5e-4, dsprites-small."""
    return {"dataset": "dsprites-small", "arch": "conv", "latent": 10, "batch": 64,
            "lr": 5e-4, "objective": objective,
            "flags": ["--objective", objective, "--arch", "conv", "--hidden", "32,64",
                      "--latent-dim", "10", "--batch-size", "64", "--lr", "5e-4"]}  # fmt: skip


CASES = {
    "mlp": {"dataset": "fashion-mnist", "arch": "mlp", "flags": []},
    "conv": {
        "dataset": "mnist-5k", "arch": "conv",
        "flags": ["--arch", "conv", "--hidden", "32,64", "--latent-dim", "16"],
    },
    "btcvae": disentangle_case("btcvae"),
    "factorvae": disentangle_case("factorvae"),
    "conv-compile": {
        "dataset": "mnist-5k", "arch": "conv",
        "flags": ["--arch", "conv", "--hidden", "32,64", "--latent-dim", "16", "--compile",
                  "true"],
    },
    # Not run unless named in --cases: vaelab on one thread (OMP_NUM_THREADS=1) against the
    # minimal loop on the default threads. Small convolutions ran several times faster on
    # one thread than on two in the quality classifier (evaluation/quality.py); whether the
    # conv VAE does too can only be told on a quiet machine.
    "conv-1thread": {
        "dataset": "mnist-5k", "arch": "conv", "env": {"OMP_NUM_THREADS": "1"},
        "flags": ["--arch", "conv", "--hidden", "32,64", "--latent-dim", "16"],
    },
}  # fmt: skip
DEFAULT_CASES = "mlp,conv,conv-compile"


# ---------------------------------------------------------------- the minimal loops
def minimal_bodies(arch: str, image_shape: tuple[int, int, int], latent: int | None = None):
    """The minimal loop's encoder and decoder (``nn.Sequential``), vaelab's layers by hand:
    MLP 784-400-20, or conv 32,64 with latent 16 (or ``latent``). Also what
    benchmarks/profile_step.py profiles as the reference step."""
    from torch import nn

    c, h, w = image_shape
    d = latent or (20 if arch == "mlp" else 16)
    if arch == "mlp":
        enc = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, 400), nn.ReLU(), nn.Linear(400, 2 * d)
        )
        dec = nn.Sequential(nn.Linear(d, 400), nn.ReLU(), nn.Linear(400, c * h * w))
    else:
        s1, s2 = (h + 1) // 2, ((h + 1) // 2 + 1) // 2
        enc = nn.Sequential(
            nn.Conv2d(c, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * s2 * s2, 2 * d),
        )  # fmt: skip
        dec = nn.Sequential(
            nn.Linear(d, 64 * s2 * s2), nn.ReLU(), nn.Unflatten(1, (64, s2, s2)),
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=s1 - (2 * s2 - 1)), nn.ReLU(),
            nn.ConvTranspose2d(32, c, 3, 2, 1, output_padding=h - (2 * s1 - 1)),
        )  # fmt: skip
    return enc, dec


def minimal_elbo_terms(enc, dec, x):
    """(log p(x|z), KL) per image, ``(B,)`` each: the tutorials' VAE written out."""
    import torch
    import torch.nn.functional as F

    mu, logvar = enc(x).chunk(2, dim=1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = dec(z).reshape(x.shape)
    recon = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return recon, kl


def minimal_step(enc, dec, opt, x) -> None:
    """One training step of the minimal loop: negative ELBO, backward, Adam."""
    recon, kl = minimal_elbo_terms(enc, dec, x)
    loss = (kl - recon).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def minimal_main(name: str, dataset: str, epochs: int, seed: int = 0) -> None:
    """The hand-written loop of case ``name``, run in its own process (``--minimal NAME``)."""
    import torch

    from minimal_disentangle import stepper  # benchmarks/minimal_disentangle.py
    from vaelab.data import load_dataset  # the same images as vaelab; start-up cancels

    case = CASES[name]
    batch, objective = case.get("batch", 128), case.get("objective", "elbo")
    data = load_dataset(dataset, seed=seed)
    train_x = data.train_x.float().div_(255)
    test_x = data.test_x.float().div_(255)
    torch.manual_seed(seed)
    enc, dec = minimal_bodies(case["arch"], data.image_shape, case.get("latent"))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=case.get("lr", 1e-3))
    if objective == "elbo":
        step = partial(minimal_step, enc, dec, opt)
    else:
        step = stepper(objective, enc, dec, opt, case["latent"], len(train_x))

    def elbo_terms(x):
        return minimal_elbo_terms(enc, dec, x)

    for epoch in range(epochs):
        perm = torch.randperm(len(train_x))
        for i in range(0, len(train_x), batch):
            step(train_x[perm[i : i + batch]])
        with torch.no_grad():
            total = sum(float((r - k).sum()) for r, k in map(elbo_terms, test_x.split(1000)))
        print(f"epoch {epoch + 1}: test ELBO {total / len(test_x):.2f}", flush=True)


# ---------------------------------------------------------------- timing processes
def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, start time as time.time()) of one whole process."""
    start_wall, t0 = time.time(), time.perf_counter()
    env = {**os.environ, **env} if env else None
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds, start_wall


def vaelab_cmd(case: dict, dataset: str, epochs: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "vaelab", "train", "--dataset", dataset, "--epochs",
            str(epochs), "--out", str(out), *case["flags"]]  # fmt: skip


def minimal_cmd(name: str, dataset: str, epochs: int) -> list[str]:
    return [sys.executable, __file__, "--minimal", name, "--dataset", dataset,
            "--epochs", str(epochs)]  # fmt: skip


def run_vaelab(case: dict, dataset: str, epochs: int, tmp: Path) -> dict:
    """Wall time of one ``vaelab train`` process, and what its run folder says."""
    out = tmp / f"run-{time.monotonic_ns()}"
    seconds, started = _timed(vaelab_cmd(case, dataset, epochs, out), case.get("env"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    startup = (out / "config.yaml").stat().st_mtime - started
    shutil.rmtree(out)
    return {"seconds": seconds, "train_seconds": [r["seconds"] for r in rows], "startup": startup}


def shown_command(name: str, dataset: str | None, epochs: int) -> str:
    """The vaelab command of case ``name`` as a user would type it."""
    case = CASES[name]
    cmd = vaelab_cmd(case, dataset or case["dataset"], epochs, Path("RUN"))[3:]
    env = [f"{k}={v}" for k, v in case.get("env", {}).items()]
    return " ".join([*env, "vaelab", *cmd])


def measure_cases(names: list[str], dataset: str | None, epochs: int, rounds: int) -> dict:
    per = {n: {"vaelab": [], "minimal": [], "overhead": [], "train": [], "startup": [],
               "fixed": []} for n in names}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cli_epoch-") as tmp:
        for name in names:  # untimed: warm the file cache and torch.compile's disk cache
            ds = dataset or CASES[name]["dataset"]
            _timed(minimal_cmd(name, ds, 1))
            run_vaelab(CASES[name], ds, 1, Path(tmp))
        for r in range(rounds):
            for name in names:
                case = CASES[name]
                ds = dataset or case["dataset"]
                short, _ = _timed(minimal_cmd(name, ds, 1))
                long, _ = _timed(minimal_cmd(name, ds, 1 + epochs))
                per[name]["minimal"].append((long - short) / epochs)
                v1 = run_vaelab(case, ds, 1, Path(tmp))
                vn = run_vaelab(case, ds, 1 + epochs, Path(tmp))
                epoch_s = (vn["seconds"] - v1["seconds"]) / epochs
                train_s = statistics.mean(vn["train_seconds"][1:])  # epoch 1 may compile
                per[name]["vaelab"].append(epoch_s)
                per[name]["train"].append(train_s)
                per[name]["overhead"].append(epoch_s - train_s)
                per[name]["startup"].append(v1["startup"])
                per[name]["fixed"].append(v1["seconds"] - epoch_s)
                ratio = per[name]["minimal"][-1] / epoch_s
                print(f"round {r + 1} {name}: minimal {per[name]['minimal'][-1]:.2f} s/epoch, "
                      f"vaelab {epoch_s:.2f} s/epoch (ratio {ratio:.2f}), overhead "
                      f"{epoch_s - train_s:.3f} s, start-up {v1['startup']:.2f} s",
                      flush=True)  # fmt: skip
    result = {}
    for name, p in per.items():
        ratios = [m / v for m, v in zip(p["minimal"], p["vaelab"], strict=True)]
        med = {k: statistics.median(v) for k, v in p.items()}
        result[name] = {
            "vaelab_command": shown_command(name, dataset, 1 + epochs),
            "minimal_loop": f"benchmarks/cli_epoch.py --minimal {name}",
            "seconds_per_epoch": {"vaelab": p["vaelab"], "minimal": p["minimal"]},
            "median_seconds_per_epoch": {"vaelab": med["vaelab"], "minimal": med["minimal"]},
            "ratio_per_round": ratios,
            "ratio_median": statistics.median(ratios),
            "vaelab_train_seconds_per_epoch": med["train"],
            "vaelab_overhead_seconds_per_epoch": med["overhead"],
            "vaelab_overhead_share": med["overhead"] / med["vaelab"],
            "vaelab_startup_seconds": med["startup"],
            "vaelab_fixed_seconds": med["fixed"],
        }  # fmt: skip
    return result


def measure_help(repeats: int) -> dict[str, float]:
    """Median wall seconds of ``vaelab --help`` and of each ``vaelab CMD --help``."""
    from vaelab.cli import COMMANDS

    runs = {"vaelab --help": [sys.executable, "-m", "vaelab", "--help"]}
    runs |= {f"vaelab {c} --help": [sys.executable, "-m", "vaelab", c, "--help"] for c in COMMANDS}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved, like the epochs
        for name, cmd in runs.items():
            times[name].append(_timed(cmd)[0])
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--epochs", type=int, default=3, help="E: runs of 1 and 1+E epochs")
    parser.add_argument(
        "--cases", default=DEFAULT_CASES, help=f"comma-separated, of: {', '.join(CASES)}"
    )
    parser.add_argument("--help-repeats", type=int, default=5, help="runs of each --help")
    parser.add_argument(
        "--quick", action="store_true", help="check that it runs: digits, 1 round, E=1"
    )
    parser.add_argument(
        "--out", help="JSON path (default: results/cli_epoch.json; --quick: a temporary file)"
    )
    parser.add_argument("--minimal", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal:  # a child process: one minimal loop
        minimal_main(args.minimal, args.dataset, args.epochs)
        return

    from provenance import provenance, save_json  # benchmarks/provenance.py

    if args.quick:
        args.rounds, args.epochs, args.help_repeats = 1, 1, 1
    dataset = "digits" if args.quick else None
    names = [n for n in args.cases.split(",") if n]
    cases = measure_cases(names, dataset, args.epochs, args.rounds)
    helps = measure_help(args.help_repeats)
    print(f"\n{'case':<14}{'minimal s/ep':>13}{'vaelab s/ep':>13}{'ratio':>7}"
          f"{'overhead':>10}{'share':>7}{'start-up':>10}")  # fmt: skip
    for name, c in cases.items():
        m = c["median_seconds_per_epoch"]
        print(f"{name:<14}{m['minimal']:>13.3f}{m['vaelab']:>13.3f}{c['ratio_median']:>7.2f}"
              f"{c['vaelab_overhead_seconds_per_epoch']:>10.3f}"
              f"{c['vaelab_overhead_share']:>7.1%}"
              f"{c['vaelab_startup_seconds']:>10.2f}")  # fmt: skip
    print()
    for name, seconds in helps.items():
        print(f"{name:<32}{seconds:>7.2f} s")
    result = {
        **provenance(),
        "epochs": args.epochs, "rounds": args.rounds, "quick": args.quick,
        "ratio": "minimal seconds per epoch / vaelab seconds per epoch (above 1: vaelab faster)",
        "cases": cases, "help_seconds": helps,
    }  # fmt: skip
    if args.out:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.gettempdir()) / "cli_epoch_quick.json"
    else:
        out = ROOT / "benchmarks" / "results" / "cli_epoch.json"
    save_json(out, result)


if __name__ == "__main__":
    main()
