"""Gradient variance: many independent gradient estimates on one batch, per estimator.

For a fixed batch x and model parameters, each estimator e gives a random gradient g of the
training loss (the negative ELBO averaged over the batch). Drawing ``draws`` independent g
(fresh z each time) gives, per parameter group G (encoder, decoder, ...; the model's direct
children with parameters), with m = mean of g and v_i the per-coordinate sample variance:

    variance  = sum_{i in G} v_i          (= E ||g - E g||^2: the total variance of one estimate)
    mean_norm = sqrt(||m||^2 - variance/n) (||E g||, debiased: ||m||^2 alone overstates it by
                                            variance/n, the noise left in a mean of n draws)
    snr       = mean_norm / sqrt(variance) (norm ratio; > 1: one estimate points roughly right)
    snr_coord = mean_i sqrt(m_i^2 - v_i/n) / sqrt(v_i)  (per-coordinate SNR, Rainforth et al.
                                            2018, debiased likewise, averaged over coordinates)
    seconds   = forward + backward time per estimate

Decoder gradients are pathwise for every estimator, so only the encoder (and a learned
baseline) separate them. Sums use float64 running moments, so memory is O(parameters).
Each estimator is measured through its own ELBO :class:`~vaelab.objectives.Objective`
(with a copy of the run's trained estimator where it is the one asked for): the model is
never changed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from vaelab.data.prepare import epoch_permutation, to_unit
from vaelab.errors import VaelabError
from vaelab.evaluation.generate import no_posterior
from vaelab.evaluation.plots import save_figure
from vaelab.latents import FAMILIES
from vaelab.objectives import Objective
from vaelab.objectives.estimators import ESTIMATORS, Estimator, ScoreBaseline, build_estimator
from vaelab.training.bound import test_bound
from vaelab.training.distributed import World
from vaelab.training.folder import resolve_device
from vaelab.training.loop import train_step
from vaelab.training.session import build_session


def posterior_name(model: torch.nn.Module) -> str:
    if not model.has_posterior:
        raise no_posterior(
            model,
            "gradvar",
            "its encoder's gradient has no sampling noise to measure; train with --model vae",
        )
    return next(n for n, cls in FAMILIES.items() if isinstance(model.family, cls))


def valid_estimators(model: torch.nn.Module) -> list[str]:
    """The estimators that apply to the model (its posterior family; only the pathwise one
    where the model draws its latents itself), in registry order."""
    post = posterior_name(model)
    fits = {n: c.families is None or post in c.families for n, c in ESTIMATORS.items()}
    return [n for n, c in ESTIMATORS.items() if fits[n] and (c.pathwise or model.any_estimator)]


def parameter_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    groups = {}
    for name, child in model.named_children():
        params = [p for p in child.parameters() if p.requires_grad]
        if params:
            groups[name] = params
    return groups


def _estimator_for(
    model: torch.nn.Module, trained: Estimator | None, name: str, x: torch.Tensor, samples: int
) -> Estimator:
    """A copy of the trained estimator when it is the one asked for (measuring must not
    change the run's state), else a fresh one, in eval mode (no running-mean updates); a
    score-baseline that has no running mean yet starts at this batch's mean learning signal
    (a constant with respect to the later draws, so they stay unbiased)."""
    if trained is not None and type(trained) is ESTIMATORS[name]:
        est = copy.deepcopy(trained)
    else:
        est = build_estimator(name, posterior_name(model)).to(x.device)
    if isinstance(est, ScoreBaseline) and int(est.count) == 0:  # never updated: no mean yet
        with torch.no_grad():
            terms = model(x, samples)
        est.warm_up(terms.log_px_z if terms.kl is not None else terms.log_w())
    return est.eval()


def gradient_stats(
    model: torch.nn.Module,
    x: torch.Tensor,
    estimators: list[str] | None = None,
    draws: int = 100,
    samples: int = 1,
    seed: int = 0,
    trained: Estimator | None = None,
) -> dict[str, dict[str, Any]]:
    """``{estimator: {"seconds": s, "groups": {group: {mean_norm, variance, snr, snr_coord}}}}``
    from ``draws`` independent estimates of grad(-ELBO) on the float batch ``x`` (B, C, H, W).
    ``trained``: the run's own estimator (its baseline state), used for its name. The model
    is left as it was (mode, gradients); a learned baseline's parameters are the group
    ``estimator``."""
    estimators = estimators or valid_estimators(model)
    allowed = valid_estimators(model)
    for name in estimators:
        if name not in allowed:
            raise VaelabError(
                f"--estimators: {name!r} does not apply to this model (--posterior "
                f"{posterior_name(model)}); valid: {', '.join(allowed)}"
            )
    if draws < 2:
        raise VaelabError(f"--draws: need at least 2 to measure a variance, got {draws}")
    was_training = model.training
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in estimators:
            torch.manual_seed(seed)
            model.eval()
            objective = Objective("elbo", _estimator_for(model, trained, name, x, samples))
            groups = parameter_groups(model)
            baseline = [p for p in objective.parameters() if p.requires_grad]
            if baseline:  # a learned baseline b(x): its own group
                groups["estimator"] = baseline
            s1, s2, elapsed = _gradient_moments(model, objective, groups, x, draws, samples)
            results[name] = {
                "seconds": elapsed / draws,
                "groups": {g: _group_stats(s1[g], s2[g], draws) for g in groups},
            }
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return results


def _gradient_moments(
    model: torch.nn.Module, objective: Objective, groups: dict[str, list[torch.Tensor]],
    x: torch.Tensor, draws: int, samples: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:  # fmt: skip
    """Sums of ``draws`` gradient estimates and of their squares per parameter group
    (float64), and the seconds the estimates took (forward + backward only)."""
    s1: dict[str, Any] = {g: 0.0 for g in groups}
    s2: dict[str, Any] = {g: 0.0 for g in groups}
    elapsed = 0.0
    objective(model, x, samples=samples)[0].backward()  # untimed: first-call allocations
    for _ in range(draws):
        model.zero_grad(set_to_none=True)
        objective.zero_grad(set_to_none=True)
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = objective(model, x, samples=samples)
        loss.backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - t0
        for g, params in groups.items():
            vec = torch.cat(
                [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                 for p in params]
            ).double()  # fmt: skip
            s1[g] = s1[g] + vec
            s2[g] = s2[g] + vec * vec
    return s1, s2, elapsed


def _group_stats(s1: torch.Tensor, s2: torch.Tensor, draws: int) -> dict[str, float]:
    """Mean norm, total variance and SNRs of one group from the sums of ``draws`` estimates."""
    m = s1 / draws
    var = ((s2 / draws - m * m) * draws / (draws - 1)).clamp_min(0.0)
    total = float(var.sum())
    # E||m_hat||^2 = ||m||^2 + variance / draws: without the correction a noisy
    # estimator's |mean| (and SNR) would sit at the noise floor 1/sqrt(draws).
    norm = math.sqrt(max(float(m.square().sum()) - total / draws, 0.0))
    m2 = (m.square() - var / draws).clamp_min(0.0)
    live = var > 0
    coord = (m2[live] / var[live]).sqrt().mean() if live.any() else torch.nan
    return {
        "mean_norm": norm,
        "variance": total,
        "snr": norm / math.sqrt(total) if total > 0 else math.inf,
        "snr_coord": float(coord),
    }


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One line per (estimator, group): mean norm, variance, SNRs, ms per estimate."""
    head = f"{'estimator':<15} {'group':<10} {'|mean|':>10} {'variance':>11} {'SNR':>9} "
    head += f"{'SNR/coord':>9} {'ms/est':>8}"
    lines = [head]
    for name, res in results.items():
        for g, s in res["groups"].items():
            lines.append(
                f"{name:<15} {g:<10} {s['mean_norm']:>10.4g} {s['variance']:>11.4g} "
                f"{s['snr']:>9.3g} {s['snr_coord']:>9.3g} {1000 * res['seconds']:>8.2f}"
            )
    return "\n".join(lines)


def plot_stats(results: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Log-scale grouped bars: variance and SNR per parameter group, one colour per estimator."""

    names = list(results)
    # A learned baseline adds an "estimator" group to one estimator only: plot shared groups.
    groups = [
        g for g in results[names[0]]["groups"] if all(g in r["groups"] for r in results.values())
    ]
    width = 0.8 / len(names)
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    panels = (("variance", "total variance"), ("snr", "SNR = |mean|/std"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, name in enumerate(names):
            vals = [results[name]["groups"][g][key] for g in groups]
            pos = [j + (i - (len(names) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(pos, vals, width, label=name)
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(f"{label} (log scale)")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(title="estimator")
    fig.suptitle(title or "gradient estimates on one batch")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_over_training(
    rows: list[dict[str, Any]], path: str | Path, group: str = "encoder"
) -> Path:
    """Variance and SNR of ``group`` after each epoch, one line per estimator (log y)."""

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    names = list(rows[0]["stats"])
    epochs = [r["epoch"] for r in rows]
    for ax, key in zip(axes, ("variance", "snr"), strict=True):
        for name in names:
            ax.plot(epochs, [r["stats"][name]["groups"][group][key] for r in rows], "o-",
                    label=name)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{group} {key} (log scale)")
        ax.grid(which="both", alpha=0.3)
    axes[0].legend(title="estimator")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def during_training(
    config: Any,
    data: Any,
    epochs: int,
    estimators: list[str] | None = None,
    draws: int = 50,
    batch_size: int = 128,
    samples: int = 1,
) -> list[dict[str, Any]]:
    """Train a fresh model of ``config`` (with its objective and estimator) for ``epochs``
    epochs on ``data`` and measure :func:`gradient_stats` (with the estimator as trained so
    far) on the first ``batch_size`` test images at initialisation and after each epoch;
    rows ``{"epoch", "test_elbo", "stats"}``.

    The training is ``fit``'s own (:func:`vaelab.training.loop.train_step` on the batches
    ``fit`` takes, its schedules spanning ``epochs``), in memory: no run folder."""
    t = replace(config.train, epochs=epochs)
    config = replace(config, train=t)
    s = build_session(config, data, World(device=resolve_device(t.device)))
    x = to_unit(s.test_x[:batch_size])

    def row(epoch: int) -> dict[str, Any]:
        stats = gradient_stats(s.model, x, estimators, draws, samples, seed=t.seed + epoch,
                               trained=s.objective.estimator)  # fmt: skip
        return {"epoch": epoch, "test_elbo": test_bound(s.eval_model, s.test_x)["elbo"],
                "stats": stats}  # fmt: skip

    rows = [row(0)]
    for epoch in range(epochs):
        perm = epoch_permutation(len(s.train_x), t.seed, epoch, s.world.device)
        for b in range(s.steps_per_epoch):
            train_step(s, *s.batch(perm, b))
        rows.append(row(epoch + 1))
    return rows
