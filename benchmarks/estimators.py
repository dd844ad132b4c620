"""Gradient estimators on Fashion-MNIST: convergence vs wall time and gradient variance.

Model: the MLP VAE (784-400-20, Bernoulli likelihood on intensities in [0, 1], Adam 1e-3,
batch 128, K = 1), trained through the objects fit() uses (build_model, make_optimizer,
Stepper), so what is timed is vaelab's real training step with each estimator.

    part "gaussian": Normal q, N(0, I) prior; reparam, score, score-baseline (EMA) and
        score-baseline with a learned b(x), each for --seconds of training wall time; test ELBO
        on a fixed 2,000-image test subset every --eval-every steps (evaluation time is not
        counted), then on the full 10k test set; gradvar (--draws estimates on 128 test images)
        at initialisation and on the reparam-trained model.
    part "gamma": Gamma q, Gamma(1, 1) prior (analytic KL); implicit reparam, G-REP and score,
        same protocol; gradvar of the three on each trained model.

    python benchmarks/estimators.py --part gaussian --seconds 45
    python benchmarks/estimators.py --part gamma --seconds 45

Writes benchmarks/results/estimators_<part>.json and _curves.png / _gradvar*.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.data import load_dataset
from vaelab.data.prepare import epoch_permutation, prepare, to_unit
from vaelab.evaluation.gradient_variance import format_table, gradient_stats, plot_stats
from vaelab.evaluation.nll import test_bound
from vaelab.models import build_model
from vaelab.objectives import build_objective
from vaelab.training.step import LossModule, Stepper, make_optimizer

PARTS = {
    "gaussian": {
        "posterior": "normal",
        "runs": {
            "reparam": {"estimator": "reparam"},
            "score": {"estimator": "score"},
            "score-baseline": {"estimator": "score-baseline"},
            "score-baseline+learned": {"estimator": "score-baseline", "learned_baseline": True},
        },
        "gradvar": ["reparam", "score", "score-baseline"],
    },
    "gamma": {
        "posterior": "gamma",
        "runs": {
            "reparam (implicit)": {"estimator": "reparam"},
            "grep": {"estimator": "grep"},
            "score": {"estimator": "score"},
        },
        "gradvar": ["reparam", "grep", "score"],
    },
}


def train_for(
    config: Config, data, seconds: float, eval_every: int, test_sub, device, steps: int = 0
):
    """Train for ``steps`` steps (or, when 0, ``seconds`` of step time); returns (model,
    curve rows, info)."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.image_shape).to(device)
    # The objective (with the estimator and a learned baseline's network) before the
    # optimizer, which steps both, as fit() does.
    unit = LossModule(model, build_objective(config, model).to(device), config.train.samples)
    optimizer = make_optimizer(unit, config)
    stepper = Stepper(unit, optimizer, config, device)
    train_x, bs = data.train_x.to(device), config.train.batch_size
    curve = [{"step": 0, "seconds": 0.0, "test_elbo": test_bound(model, test_sub)["elbo"]}]
    step, wall, epoch, skipped = 0, 0.0, 0, 0
    done = (lambda: step >= steps) if steps else (lambda: wall >= seconds)
    while not done():
        perm = epoch_permutation(len(train_x), config.train.seed, epoch, device)
        for start in range(0, len(train_x), bs):
            t0 = time.perf_counter()
            ok, _, _ = stepper(prepare(train_x[perm[start : start + bs]], False), 1.0)
            wall += time.perf_counter() - t0
            step += 1
            skipped += not ok
            if step % eval_every == 0 or done():
                row = {
                    "step": step,
                    "seconds": wall,
                    "test_elbo": test_bound(model, test_sub)["elbo"],
                }
                curve.append(row)
            if done():
                break
        epoch += 1
    print(f"  {step} steps ({step * bs / len(train_x):.2f} epochs), {skipped} skipped")
    return model, curve, {"steps": step, "epochs": step * bs / len(train_x), "skipped": skipped}


def plot_curves(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Wall time on a shared machine includes stalls while other jobs run (flat gaps between
    # points); the step axis beside it is free of that noise.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    lows = [r["test_elbo"] for rows in curves.values() for r in rows[1:]]
    for ax, key, label in zip(
        axes, ("seconds", "step"), ("training wall time (s, evaluation excluded)", "steps"),
        strict=True,
    ):  # fmt: skip
        for name, rows in curves.items():
            ax.plot([r[key] for r in rows], [r["test_elbo"] for r in rows], ".-", label=name)
        ax.set_ylim(max(min(lows) - 5, -700), max(lows) + 10)  # clip collapses below -700
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test ELBO (nats, 2,000-image subset)")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=list(PARTS), required=True)
    ap.add_argument("--seconds", type=float, default=45.0, help="training wall time per run")
    ap.add_argument("--steps", type=int, default=0, help="steps per run (overrides --seconds)")
    ap.add_argument("--eval-every", type=int, default=50, help="steps between test points")
    ap.add_argument("--draws", type=int, default=100, help="gradient estimates per estimator")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--replot", action="store_true", help="redraw the curves from the JSON")
    args = ap.parse_args()
    part = PARTS[args.part]
    if args.replot:
        saved = json.loads((Path(args.out) / f"estimators_{args.part}.json").read_text())
        curves = {name: run["curve"] for name, run in saved["runs"].items()}
        plot_curves(curves, Path(args.out) / f"estimators_{args.part}_curves.png",
                    f"{part['posterior']} q: test ELBO vs training time")  # fmt: skip
        return
    device = torch.device("cpu")
    data = load_dataset("fashion-mnist")
    test_sub = data.test_x[:2000]
    x_var = to_unit(data.test_x[:128])
    base = {"dataset": "fashion-mnist", "progress": False, "posterior": part["posterior"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "part": args.part, **provenance(), "seconds_per_run": args.seconds,
        "steps_per_run": args.steps, "draws": args.draws,
        "model": "MLP 784-400-20, Bernoulli, Adam 1e-3, batch 128, K=1", "runs": {},
    }  # fmt: skip
    curves, trained = {}, {}
    fresh = build_model(with_overrides(Config(), base, "bench").model, data.image_shape)
    torch.manual_seed(0)
    result["gradvar_init"] = gradient_stats(fresh, x_var, part["gradvar"], args.draws)
    print(f"gradvar at initialisation ({args.part}):\n{format_table(result['gradvar_init'])}")
    for name, overrides in part["runs"].items():
        budget = f"{args.steps} steps" if args.steps else f"{args.seconds:.0f}s"
        print(f"training {name} for {budget}")
        config = with_overrides(Config(), {**base, **overrides}, "bench")
        model, curve, info = train_for(
            config, data, args.seconds, args.eval_every, test_sub, device, args.steps
        )
        full = test_bound(model, data.test_x)
        print(
            f"  full test ELBO {full['elbo']:.2f} (recon {full['recon']:.2f}, KL {full['kl']:.2f})"
        )
        curves[name] = curve
        trained[name] = model
        result["runs"][name] = {**info, "final_test": full, "curve": curve}
    plot_curves(curves, out / f"estimators_{args.part}_curves.png",
                f"{part['posterior']} q: test ELBO vs training time")  # fmt: skip
    plot_stats(result["gradvar_init"], out / f"estimators_{args.part}_gradvar_init.png",
               f"{part['posterior']} q, initialisation: {args.draws} estimates")  # fmt: skip
    # After training: the pathwise-trained model (reparam) is the common reference point;
    # for Gamma also each estimator's own model (its final variance on its own parameters).
    targets = {"reparam": trained[next(iter(part["runs"]))]}
    if args.part == "gamma":
        targets = {n: trained[n] for n in part["runs"]}
    result["gradvar_trained"] = {}
    for name, model in targets.items():
        torch.manual_seed(0)
        stats = gradient_stats(model, x_var, part["gradvar"], args.draws)
        result["gradvar_trained"][name] = stats
        print(f"gradvar on the {name}-trained model:\n{format_table(stats)}")
    first = next(iter(targets))
    png = out / f"estimators_{args.part}_gradvar_trained.png"
    plot_stats(result["gradvar_trained"][first], png,
               f"{part['posterior']} q, {first}-trained: {args.draws} estimates")  # fmt: skip
    save_json(out / f"estimators_{args.part}.json", result)


if __name__ == "__main__":
    main()
