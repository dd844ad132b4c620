"""The zoo table: every vaelab family on dynamically binarized Fashion-MNIST at one budget,
beside pythae's implementation of the same family where pythae has one.

Families come from the registries (every ``--model`` in ``vaelab.models.MODELS`` with its
default objective, every ``--objective`` in ``vaelab.objectives.OBJECTIVES`` on the model
:data:`FAMILIES` gives it, plus the variants listed there), so families added by others
appear with default settings; :data:`FAMILIES` holds the per-family settings. The budget:
the same MLP bodies (784-400-20, ReLU), batch 128, Adam 1e-3, ``--epochs`` passes (10 by
default) for every family, vaelab and pythae alike; importance-weighted families draw
K = 5 (x M = 2) samples per image. Per family: test ELBO (or the reason there is none),
importance-sampled NLL (K = ``--nll-samples`` on the first ``--nll-images`` test images),
reconstruction MSE, the classifier-feature Frechet distance, precision and recall of
``--quality-samples`` prior samples and of the best post-hoc sampler (gmm, maf, two-stage;
lowest Frechet distance), and training images/s (median over epochs). pythae's model is
trained by benchmarks/zoo_pythae.py in /work/pythae-venv on the same images, its weights
loaded into the vaelab model of the same layers and scored by the same code: the table
gives the ratio of speed (vaelab / pythae) and the difference of each number (vaelab -
pythae). Resumable: a family whose result is in the JSON is skipped; runs are reused.

    OMP_NUM_THREADS=1 python benchmarks/zoo_table.py --out runs/zoo --epochs 10 \
        --json benchmarks/results/zoo_table.json

Timings (images/s) need a quiet machine; the quality figures do not.
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
from vaelab.config import Config, default_objective, with_overrides
from vaelab.data import dataset_for
from vaelab.models import MODELS
from vaelab.objectives import OBJECTIVES
from vaelab.training.folder import read_metrics

ROOT = Path(__file__).resolve().parent.parent
PYTHAE = "/work/pythae-venv/bin/python"
BASE = {"dataset": "fashion-mnist", "binarize": "dynamic", "arch": "mlp", "hidden": (400,),
        "latent_dim": 20, "batch_size": 128, "lr": 1e-3, "seed": 0, "progress": False,
        "report": False}  # fmt: skip
IW = {"samples": 5}
RAMP = 3517  # 3/4 of 10 epochs x 469 steps of 128 images

# family -> (vaelab overrides, pythae model or None, pythae config, pythae extra flags).
# Families found in the registries but not here train with {"model": name} or
# {"objective": name} alone (and no pythae peer).
FAMILIES: dict[str, tuple[dict, str | None, dict, list[str]]] = {
    "vae": ({}, "VAE", {}, []),
    "beta-vae": ({"beta": 4.0}, "BetaVAE", {"beta": 4.0}, []),
    "vamp": ({"prior": "vamp"}, "VAMP", {"number_components": 10}, []),
    "ae": ({"model": "ae"}, "AE", {}, []),
    "iwae": ({"objective": "iwae", **IW}, "IWAE", {"number_samples": 5}, []),
    "miwae": ({"objective": "miwae", **IW, "miwae_m": 2}, "MIWAE",
              {"number_samples": 5, "number_gradient_estimates": 2}, []),
    "piwae": ({"objective": "piwae", **IW, "piwae_m": 2}, "PIWAE",
              {"number_samples": 5, "number_gradient_estimates": 2}, []),
    "ciwae": ({"objective": "ciwae", **IW, "ciwae_beta": 0.5}, "CIWAE",
              {"number_samples": 5, "beta": 0.5}, []),
    "wae": ({"model": "ae", "objective": "wae", "wae_weight": 10.0}, "WAE_MMD",
            {"kernel_choice": "imq", "reg_weight": 10.0, "kernel_bandwidth": 1.0}, []),
    "infovae": ({"objective": "infovae", "info_alpha": 0.0, "info_lambda": 1000.0},
                "INFOVAE_MMD", {"kernel_choice": "imq", "alpha": 0.0, "lbd": 1000.0}, []),
    "swae": ({"model": "ae", "objective": "swae"}, None, {}, []),
    "rae": ({"model": "ae", "objective": "rae", "rae_regulariser": "l2"}, "RAE_L2",
            {"embedding_weight": 1e-4, "reg_weight": 1e-7}, ["--decoder-weight-decay", "1e-7"]),
    "rae-gp": ({"model": "ae", "objective": "rae", "rae_regulariser": "gp"}, "RAE_GP",
               {"embedding_weight": 1e-4, "reg_weight": 1e-7}, []),
    "hvae": ({"model": "hvae"}, None, {}, []),
    "cvae": ({"model": "cvae"}, None, {}, []),
    "m2": ({"model": "m2"}, None, {}, []),
    "deep": ({"model": "deep", "arch": "conv", "hidden": None}, None, {}, []),
    # the flow/categorical families (their pythae peers: benchmarks/zoo_latents.py,
    # whose encoders give each peer the parameters it needs)
    "flow": ({"model": "flow", "flow": "iaf"}, None, {}, []),
    "planar": ({"model": "flow", "flow": "planar"}, None, {}, []),
    "svae": ({"model": "svae"}, "SVAE", {}, []),  # same layers: D + 1 outputs, softplus + 1
    "gumbel": ({"model": "gumbel"}, None, {}, []),
    # capacity ramps over 3/4 of the 10 epochs' 4,690 steps (the defaults are the papers'
    # 100,000 / 25,000 steps, which a 10-epoch run never reaches: vaelab train says so)
    "capacity": ({"model": "gumbel", "joint": True, "objective": "capacity",
                  "capacity_steps": RAMP}, None, {}, []),
    "annealed": ({"objective": "annealed", "capacity_steps": RAMP}, None, {}, []),
    "vqvae": ({"model": "vqvae", "arch": "conv", "hidden": None}, None, {}, []),
}  # fmt: skip
SCORED_PEERS = {
    "VAE",
    "BetaVAE",
    "AE",
    "IWAE",
    "MIWAE",
    "PIWAE",
    "CIWAE",
    "WAE_MMD",
    "INFOVAE_MMD",
    "RAE_L2",
    "RAE_GP",
    "SVAE",
}  # fmt: skip  (the others' weights differ)
POSTHOC = ("gmm", "maf", "two-stage")
NOT_FAMILIES = {"elbo", "m2", "vq"}  # objectives that are the families' defaults, not rows


def families() -> dict[str, dict]:
    """Every row: the registries' models and objectives, and FAMILIES' variants."""
    out: dict[str, dict] = {}
    for name in MODELS:
        out[name] = FAMILIES.get(name, ({"model": name}, None, {}, []))[0]
    for name in OBJECTIVES:
        if name not in NOT_FAMILIES:
            out[name] = FAMILIES.get(name, ({"objective": name}, None, {}, []))[0]
    for name, (over, *_rest) in FAMILIES.items():
        model = over.get("model", "vae")
        if name not in out and model in MODELS and over.get("objective", "elbo") in OBJECTIVES:
            out[name] = over
    return out


def config_of(name: str, epochs: int) -> Config:
    over = {**BASE, "epochs": epochs, **families()[name]}
    over = {k: v for k, v in over.items() if v is not None or k != "hidden"}
    if over.get("hidden") is None:
        over.pop("hidden", None)
    return with_overrides(Config(), over, f"zoo_table {name}")


def pick(d: dict | None) -> dict | None:
    return {k: d.get(k) for k in ("frechet_distance", "precision", "recall")} if d else None


def score(run, a) -> dict:
    """vaelab's evaluate on a run (or a Run): its numbers for the table."""
    model = vaelab.open_run(run).model
    samplers = (("prior",) if model.has_prior else ()) + POSTHOC
    r = vaelab.evaluate(run, samples=a.nll_samples, limit=a.nll_images, samplers=samplers,
                        quality_samples=a.quality_samples, seed=0, resume=True)  # fmt: skip
    if "bound_uniform_nats" in r:  # a VQ-VAE: bounds from a deterministic encoder, no samples
        return {
            "test_elbo": None, "nll_nats": None, "recon_mse": r["mse_per_pixel"],
            "no_bound": "VQ-VAE: no ELBO; upper bound -log p(x|z_q) - log p(k) with a uniform "
            "code prior (vq_bound_uniform_nats); no code prior trained, so no samples",
            "vq_bound_uniform_nats": r["bound_uniform_nats"], "vq_recon_nats": -r["recon"],
            "codes_used": r["codes_used"], "code_perplexity": r["code_perplexity"],
            "prior": None, "best_posthoc": None, "posthoc": None, "all_samplers": {},
        }  # fmt: skip
    q = r.get("quality", {})
    post = {s: q[s] for s in POSTHOC if s in q and q[s]["frechet_distance"] is not None}
    best = min(post, key=lambda s: post[s]["frechet_distance"]) if post else None
    return {
        "test_elbo": r.get("elbo"), "no_bound": r.get("no_bound"),
        "nll_nats": r.get("nll_nats"), "nll_nats_se": r.get("nll_nats_se"),
        "recon_mse": r["reconstruction"]["mse"],
        "prior": pick(q.get("prior")), "best_posthoc": best, "posthoc": pick(post.get(best)),
        "all_samplers": {s: pick(v) for s, v in q.items()},
    }  # fmt: skip


def vaelab_row(name: str, a) -> dict:
    run = Path(a.out) / name
    cfg = config_of(name, a.epochs)
    done = (run / "metrics.jsonl").is_file() and len(read_metrics(run)) >= a.epochs
    if not done:
        vaelab.train(cfg, run, overwrite=True)
    rows = read_metrics(run)
    return {"run": str(run), "objective": cfg.train.objective or default_objective(cfg.model.model),
            "model": cfg.model.model, "epochs": len(rows),
            "images_per_s": statistics.median(r["images_per_s"] for r in rows),
            **score(run, a)}  # fmt: skip


def as_vaelab(name: str, peer: str, folder: Path, a):
    """A vaelab run of the same layers (trained 0 epochs) with pythae's weights put into it."""
    run = Path(a.out) / f"pythae-{peer}-as-vaelab"
    if not (run / "config.yaml").is_file():
        vaelab.train(config_of(name, 0), run, overwrite=True)
    opened = vaelab.open_run(run)
    with np.load(folder / "weights.npz", allow_pickle=False) as w:
        state = {k: torch.from_numpy(w[k]) for k in w.files}
    missing = opened.model.load_state_dict(state, strict=False)
    if missing.unexpected_keys or any(
        k.startswith(("encoder", "decoder")) for k in missing.missing_keys
    ):
        raise RuntimeError(f"pythae {peer}: weights do not match vaelab's layers: {missing}")
    return opened


def pythae_row(name: str, a, train_npy: Path) -> dict | None:
    _, peer, options, extra = FAMILIES.get(name, ({}, None, {}, []))
    if peer is None:
        return None
    folder = Path(a.out) / f"pythae-{peer}"
    if not (folder / "pythae.json").is_file():
        cmd = [PYTHAE, str(ROOT / "benchmarks/zoo_pythae.py"), "--data", str(train_npy),
               "--model", peer, "--config", json.dumps(options), "--epochs", str(a.epochs),
               "--batch-size", str(BASE["batch_size"]), "--out", str(folder), *extra]  # fmt: skip
        subprocess.run(cmd, check=True)
    info = json.loads((folder / "pythae.json").read_text())
    out = {"model": peer, "config": options, "images_per_s": info["images_per_s"],
           "train_loss_per_epoch": info["train_loss_per_epoch"]}  # fmt: skip
    if peer not in SCORED_PEERS:
        out["not_scored"] = "its parameters have no vaelab counterpart of the same layers"
        return out
    opened = as_vaelab(name, peer, folder, a)
    return {**out, **score(opened, a)}


def rescore(row: dict, run, names: tuple[str, ...], a) -> None:
    """Re-measure the sample quality of the post-hoc samplers ``names`` on a scored row (its
    fits are cached in the run; a sampler changed after the row was scored) and pick the
    best again. Draws come from seed 0 as in :func:`score`, after a different RNG history."""
    r = vaelab.evaluate(run, samples=1, limit=1, samplers=names,
                        quality_samples=a.quality_samples, seed=0)  # fmt: skip
    row["all_samplers"].update({s: pick(r["quality"][s]) for s in names})
    post = {s: v for s, v in row["all_samplers"].items()
            if s in POSTHOC and v and v["frechet_distance"] is not None}  # fmt: skip
    row["best_posthoc"] = min(post, key=lambda s: post[s]["frechet_distance"])
    row["posthoc"] = post[row["best_posthoc"]]
    row.setdefault("rescored", []).extend(names)


def compare(v: dict, p: dict | None) -> dict | None:
    """vaelab / pythae speed, vaelab - pythae for each number both have."""
    if p is None:
        return None
    out = {"speed_ratio": v["images_per_s"] / p["images_per_s"]}
    for key in ("test_elbo", "nll_nats", "recon_mse"):
        if v.get(key) is not None and p.get(key) is not None:
            out[key] = v[key] - p[key]
    for part in ("prior", "posthoc"):
        if v.get(part) and p.get(part):
            for k, val in v[part].items():
                if val is not None and p[part].get(k) is not None:
                    out[f"{part}_{k}"] = val - p[part][k]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/zoo", help="folder of the runs (reused)")
    ap.add_argument("--json", default="benchmarks/results/zoo_table.json")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--nll-samples", type=int, default=500)
    ap.add_argument("--nll-images", type=int, default=2000)
    ap.add_argument("--quality-samples", type=int, default=5000)
    ap.add_argument("--families", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--no-pythae", action="store_true")
    ap.add_argument(
        "--rescore",
        default="",
        help="comma-separated post-hoc samplers to re-measure on the scored rows",
    )
    a = ap.parse_args(argv)
    out = Path(a.json)
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.update(provenance())
    budget = {k: v for k, v in BASE.items() if k not in ("progress", "report")}
    budget.update(epochs=a.epochs, nll_samples=a.nll_samples, nll_images=a.nll_images,
                  quality_samples=a.quality_samples)  # fmt: skip
    result["budget"] = budget
    rows = result.setdefault("families", {})
    Path(a.out).mkdir(parents=True, exist_ok=True)
    train_npy = Path(a.out) / "fashion-train-uint8.npy"
    if not train_npy.is_file() and not a.no_pythae:
        np.save(train_npy, dataset_for(config_of("vae", 1)).train_x.numpy())
    # pythae's families first (the side-by-side rows), then the others
    wanted = [f for f in a.families.split(",") if f] or sorted(
        families(), key=lambda f: FAMILIES.get(f, ({}, None))[1] is None
    )
    again = tuple(s for s in a.rescore.split(",") if s)
    for name in wanted if again else ():
        row = rows.get(name)
        if row is None or "error" in row:
            continue
        sides = [(row["vaelab"], Path(row["vaelab"]["run"]))]
        if row.get("pythae") and "all_samplers" in row["pythae"]:
            peer = row["pythae"]["model"]
            sides.append((row["pythae"], as_vaelab(name, peer, Path(a.out) / f"pythae-{peer}", a)))
        for side, run in sides:
            if not set(again) <= set(side.get("rescored", [])):
                print(f"zoo_table: rescoring {name}", file=sys.stderr, flush=True)
                rescore(side, run, again, a)
        row["vaelab_minus_pythae"] = compare(row["vaelab"], row.get("pythae"))
        save_json(out, result)
    for name in wanted if not again else ():
        if name in rows and "error" not in rows[name]:
            continue
        print(f"zoo_table: {name}", file=sys.stderr, flush=True)
        try:
            v = vaelab_row(name, a)
            p = None if a.no_pythae else pythae_row(name, a, train_npy)
            rows[name] = {"vaelab": v, "pythae": p, "vaelab_minus_pythae": compare(v, p)}
        except Exception as e:  # one family's failure is recorded, the others go on
            rows[name] = {"error": f"{type(e).__name__}: {e}",
                          "traceback": traceback.format_exc(limit=3)}  # fmt: skip
        save_json(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
