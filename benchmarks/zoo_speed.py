"""Training speed of every zoo family (benchmarks/zoo_table.py's rows) beside pythae's peer,
in one quiet-window run: images/s of the training step, vaelab / pythae.

The families and their configs are zoo_table's (``zoo_table.families()``,
``zoo_table.config_of``: MLP 784-400-20, ReLU, batch 128, Adam 1e-3, the conv families
``deep`` and ``vqvae`` with their conv bodies). The pythae peers are the ones zoo_table
names (VAE, BetaVAE, VAMP, AE, IWAE, MIWAE, PIWAE, CIWAE, WAE_MMD, INFOVAE_MMD, RAE_L2,
RAE_GP, SVAE) and those of benchmarks/zoo_latents.py (``flow`` -> VAE_IAF, ``planar`` ->
VAE_LinNF), built by benchmarks/zoo_pythae.py with the same layers; the VAMP peer gets as
many pseudo-inputs as vaelab's config (``--prior-components``), so both encode the same
number of pseudo-inputs per step.

Both sides step on the same batches: ``--batches`` batches of 128 training images drawn
once and binarized once (seed 0), cycled. vaelab's step is the CLI's training step,
``vaelab.training.loop.train_step`` on a real session (lr and beta schedules, the
objective, backward, the finite check, Adam; labels for cvae/m2 from the session);
pythae's is its trainer's (benchmarks/zoo_pythae.py ``make_step``: BaseTrainer's, or
CoupledOptimizerTrainer's for PIWAE and RAE_L2). Per family and side: ``--warmup`` steps,
then ``--steps`` timed steps (or fewer, once ``--max-seconds`` have passed, at least 3).

A round is one fresh process per side (vaelab's interpreter, then pythae's in
/work/pythae-venv, or the other way round: rounds alternate which side goes first) that
times every family in turn. Per family: the median images/s over rounds of each side and
the ratio of the medians (vaelab / pythae; > 1: vaelab faster), with every round's figure.
The defaults take about 5-8 minutes on 2 CPU cores; the figures need a quiet machine.

    OMP_NUM_THREADS=1 python benchmarks/zoo_speed.py --json benchmarks/results/zoo_speed.json
    python benchmarks/zoo_speed.py --quick --json /tmp/zoo_speed.json   # a check (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHAE = "/work/pythae-venv/bin/python"
LATENT_PEERS = {"flow": "flow-iaf", "planar": "flow-planar", "svae": "svae"}  # zoo_latents rows
MIN_STEPS = 3


def timed(step, warmup: int, steps: int, max_seconds: float, batch: int) -> dict:
    """``step(i)`` for i < warmup untimed, then up to ``steps`` timed (stopping once
    ``max_seconds`` have passed after at least MIN_STEPS): images/s of the timed ones."""
    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    n = 0
    while n < steps:
        step(warmup + n)
        n += 1
        if n >= MIN_STEPS and time.perf_counter() - t0 > max_seconds:
            break
    seconds = time.perf_counter() - t0
    return {"images_per_s": n * batch / seconds, "steps": n, "seconds": seconds}


def vaelab_worker(spec: dict) -> dict:
    """Every family of ``spec`` timed in this process: vaelab's training step."""
    import numpy as np
    import torch

    from vaelab.data import dataset_for
    from vaelab.training.distributed import World
    from vaelab.training.loop import train_step
    from vaelab.training.session import build_session, check_config
    from zoo_table import config_of  # benchmarks/zoo_table.py

    torch.set_num_threads(spec["threads"])
    with np.load(spec["batches"], allow_pickle=False) as f:
        images, index = torch.from_numpy(f["images"]), torch.from_numpy(f["index"])
    xs = [b.float() for b in images]  # in [0, 1], as the session's batch() gives them
    datasets: dict[str, object] = {}
    out = {}
    for name in spec["families"]:
        try:
            config = check_config(config_of(name, spec["epochs"]))
            key = config.data.dataset
            if key not in datasets:
                datasets[key] = dataset_for(config)
            s = build_session(config, datasets[key], World(device=torch.device("cpu")))
            ys = [s.train_y[i] if s.train_y is not None else None for i in index]

            def step(i: int, s=s, ys=ys) -> None:
                train_step(s, xs[i % len(xs)], ys[i % len(xs)])

            out[name] = timed(step, spec["warmup"], spec["steps"], spec["max_seconds"],
                              len(xs[0]))  # fmt: skip
            del s, step
        except Exception as e:  # one family's failure is recorded, the others go on
            out[name] = {"error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc(limit=4)}  # fmt: skip
    return out


def pythae_worker(spec: dict) -> dict:
    """Every peer of ``spec`` timed in this process (pythae's interpreter)."""
    import numpy as np
    import torch

    from zoo_pythae import build, make_step  # benchmarks/zoo_pythae.py

    torch.set_num_threads(spec["threads"])
    with np.load(spec["batches"], allow_pickle=False) as f:
        xs = [b.float() for b in torch.from_numpy(f["images"])]
    shape = tuple(xs[0].shape[1:])
    out = {}
    for row in spec["peers"]:
        try:
            torch.manual_seed(0)
            model = build(row["peer"], row["options"], shape, spec["hidden"], spec["latent"])
            model.train()
            step_fn = make_step(model, row["peer"], spec["lr"], row["decoder_weight_decay"],
                                spec["dataset_size"])  # fmt: skip

            def step(i: int, step_fn=step_fn) -> None:
                step_fn(xs[i % len(xs)], 1)

            out[row["name"]] = timed(step, spec["warmup"], spec["steps"], spec["max_seconds"],
                                     len(xs[0]))  # fmt: skip
            del model, step_fn, step
        except Exception as e:
            out[row["name"]] = {"error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc(limit=4)}  # fmt: skip
    return out


def peers(names: list[str], epochs: int) -> dict[str, dict]:
    """family -> {peer, options, decoder_weight_decay} for the families pythae has."""
    import zoo_latents
    import zoo_table

    out = {}
    for name in names:
        _, peer, options, extra = zoo_table.FAMILIES.get(name, ({}, None, {}, []))
        if peer is None and name in LATENT_PEERS:
            _, peer, options = zoo_latents.FAMILIES[LATENT_PEERS[name]]
            extra = []
        if peer is None:
            continue
        options = dict(options)
        if peer == "VAMP":  # as many pseudo-inputs as vaelab's run encodes
            options["number_components"] = zoo_table.config_of(name, epochs).model.prior_components
        flags = dict(zip(extra[::2], extra[1::2], strict=True))
        wd = float(flags.pop("--decoder-weight-decay", 0.0))
        if flags:
            raise SystemExit(f"zoo_speed: {name}: unknown pythae flags {flags}")
        out[name] = {"name": name, "peer": peer, "options": options, "decoder_weight_decay": wd}
    return out


def run_side(side: str, spec: dict, folder: Path, threads: int) -> dict:
    """One fresh process of ``side`` timing every family in ``spec``; its results."""
    path = folder / f"{side}-spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    python = sys.executable
    if side == "pythae":  # pythae's interpreter must not see vaelab's packages
        env.pop("PYTHONPATH", None)
        python = PYTHAE
    proc = subprocess.run([python, __file__, "--worker", side, "--spec", str(path)], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"zoo_speed: the {side} process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(name: str, v: list[dict], p: list[dict] | None, peer: dict | None) -> dict:
    def side(rounds: list[dict]) -> dict:
        ok = [r["images_per_s"] for r in rounds if "images_per_s" in r]
        errors = [r["error"] for r in rounds if "error" in r]
        return {"images_per_s": statistics.median(ok) if ok else None,
                "rounds": [r.get("images_per_s") for r in rounds],
                "steps": [r.get("steps") for r in rounds],
                **({"error": errors[0]} if errors else {})}  # fmt: skip

    row: dict = {"vaelab": side(v), "pythae": None, "ratio": None}
    if p is not None and peer is not None:
        what = {k: peer[k] for k in ("options", "decoder_weight_decay")}
        row["pythae"] = {"model": peer["peer"], **what, **side(p)}
        a, b = row["vaelab"]["images_per_s"], row["pythae"]["images_per_s"]
        if a and b:
            row["ratio"] = a / b
            row["ratio_rounds"] = [
                x.get("images_per_s") / y["images_per_s"]
                for x, y in zip(v, p, strict=True)
                if x.get("images_per_s") and y.get("images_per_s")
            ]
    return row


def table(rows: dict[str, dict]) -> str:
    """The printed table: family, vaelab images/s, pythae's peer, its images/s, the ratio."""

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    lines = [f"{'family':<11} {'vaelab img/s':>12}  {'pythae peer':<12} {'img/s':>8} {'ratio':>6}"]
    for name, r in rows.items():
        p = r["pythae"] or {}
        lines.append(f"{name:<11} {num(r['vaelab']['images_per_s'], '.0f'):>12}  "
                     f"{p.get('model', '-'):<12} {num(p.get('images_per_s'), '.0f'):>8} "
                     f"{num(r['ratio'], '.2f'):>6}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=("vaelab", "pythae"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--json", default="benchmarks/results/zoo_speed.json")
    ap.add_argument("--families", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per side")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per family and round")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    ap.add_argument("--max-seconds", type=float, default=1.5,
                    help="stop timing a family after this long (at least 3 steps)")  # fmt: skip
    ap.add_argument("--batches", type=int, default=16, help="distinct batches, cycled")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    ap.add_argument("--epochs", type=int, default=10, help="the configs' epochs (schedules)")
    ap.add_argument("--no-pythae", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 steps: a check it runs")
    a = ap.parse_args(argv)
    if a.worker:
        spec = json.loads(Path(a.spec).read_text())
        fn = vaelab_worker if a.worker == "vaelab" else pythae_worker
        print(json.dumps(fn(spec)))
        return 0
    if a.quick:
        a.rounds, a.steps, a.warmup, a.max_seconds, a.batches = 2, 2, 1, 0.5, 2

    import numpy as np
    import torch

    import zoo_table
    from provenance import provenance, save_json  # benchmarks/provenance.py
    from vaelab.data import dataset_for

    names = [f for f in a.families.split(",") if f] or list(zoo_table.families())
    unknown = sorted(set(names) - set(zoo_table.families()))
    if unknown:
        raise SystemExit(f"--families: unknown {unknown}; expected some of "
                         f"{sorted(zoo_table.families())}")  # fmt: skip
    base = zoo_table.config_of("vae", a.epochs)
    pairs = {} if a.no_pythae else peers(names, a.epochs)
    train = dataset_for(base).train_x
    batch = base.train.batch_size
    g = torch.Generator().manual_seed(0)
    index = torch.randperm(len(train), generator=g)[: a.batches * batch].view(a.batches, batch)
    images = torch.bernoulli(train[index].float() / 255.0, generator=g).to(torch.uint8)
    common = {"threads": a.threads, "steps": a.steps, "warmup": a.warmup,
              "max_seconds": a.max_seconds}  # fmt: skip
    rounds: dict[str, list[dict]] = {"vaelab": [], "pythae": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoo_speed-") as tmp:
        folder = Path(tmp)
        np.savez(folder / "batches.npz", images=images.numpy(), index=index.numpy())
        specs = {
            "vaelab": {**common, "batches": str(folder / "batches.npz"), "families": names,
                       "epochs": a.epochs},
            "pythae": {**common, "batches": str(folder / "batches.npz"),
                       "peers": list(pairs.values()), "hidden": base.model.hidden[0],
                       "latent": base.model.latent_dim, "lr": base.train.lr,
                       "dataset_size": len(train)},
        }  # fmt: skip
        for r in range(a.rounds):
            order = ("vaelab", "pythae") if r % 2 == 0 else ("pythae", "vaelab")
            for side in order:
                if side == "pythae" and not pairs:
                    continue
                rounds[side].append(run_side(side, specs[side], folder, a.threads))
                took = time.perf_counter() - t0
                print(f"zoo_speed: round {r + 1}/{a.rounds} {side} done ({took:.0f} s)",
                      file=sys.stderr, flush=True)  # fmt: skip
    rows = {}
    for name in names:
        v = [got[name] for got in rounds["vaelab"]]
        p = [got[name] for got in rounds["pythae"]] if name in pairs else None
        rows[name] = summarise(name, v, p, pairs.get(name))
        rows[name]["config"] = zoo_table.families()[name]
    result = {
        **provenance(),
        "settings": {"rounds": a.rounds, "steps": a.steps, "warmup": a.warmup,
                     "max_seconds": a.max_seconds, "batches": a.batches, "batch_size": batch,
                     "threads": a.threads, "epochs": a.epochs, "quick": a.quick,
                     "wall_seconds": time.perf_counter() - t0},
        "families": rows,
    }  # fmt: skip
    print(table(rows))
    for name, r in rows.items():  # a family that failed on a side: say so, once
        for side in ("vaelab", "pythae"):
            if r[side] and "error" in r[side]:
                print(f"zoo_speed: {name} ({side}) failed: {r[side]['error']}", file=sys.stderr)
    save_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
