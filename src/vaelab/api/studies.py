"""The study commands as Python functions: ``vaelab.gradvar``, ``vaelab.ae_vs_vae``,
``vaelab.compare`` and ``vaelab.disentanglement``. Each returns the dict the command writes
as JSON; with ``out`` it also writes the command's files. ``vaelab CMD`` calls these
(vaelab/cli)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from vaelab.api import as_run, load_test_images, refuse_codes
from vaelab.data.prepare import eval_images, to_unit
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.aevae import compare_latent_spaces, train_pair
from vaelab.evaluation.compare import compare_evaluations
from vaelab.evaluation.disentangle_run import (
    disentanglement_of,
    factors_of,
    mi_figure,
    traversal_by_factor,
)
from vaelab.evaluation.disentanglement import METRICS
from vaelab.evaluation.gradient_variance import during_training as over_training
from vaelab.evaluation.gradient_variance import gradient_stats, plot_over_training, plot_stats
from vaelab.evaluation.plots import save_figure
from vaelab.training.folder import prepare_run_dir
from vaelab.training.load import build_run_model, read_estimator
from vaelab.training.record import Run, target


def gradvar(
    run: str | Path | Run, estimators: Sequence[str] | None = None, draws: int = 100,
    batch_size: int = 128, samples: int = 1, *, init: bool = False, during_training: int = 0,
    seed: int = 0, device: str = "cpu", out: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Per latent-gradient estimator, the variance and SNR of ``draws`` gradient estimates
    on the first ``batch_size`` test images (vaelab.gradvar): of the trained model, of a
    fresh one (``init``), or after each of ``during_training`` epochs of a fresh one.
    With ``out`` (a .png) the chart goes there and the returned dict next to it (.json)."""
    for flag, value in (("--draws", draws), ("--batch-size", batch_size), ("--samples", samples)):
        at_least(flag, value)
    at_least("--during-training", during_training, 0)
    names = list(estimators) if estimators else None
    run = as_run(run, device)
    refuse_codes(
        run.model,
        "gradvar",
        "has no latent draw: its codes are a deterministic "
        "nearest-neighbour lookup (straight-through gradient, no estimator to compare)",
    )
    path = target(out, overwrite) if out is not None else None
    data = load_test_images(run)
    if during_training:
        rows = over_training(run.config, data, during_training, names, draws, batch_size, samples)
        if path is not None:
            plot_over_training(rows, path)
        result: dict[str, Any] = {"mode": "during-training", "rows": rows}
    else:
        model, trained = run.model, None
        if init:
            torch.manual_seed(seed)
            model = build_run_model(run.config.model, run.image_shape).to(run.device)
        elif run.folder is not None:  # the run's own estimator, as trained (its baseline)
            trained = read_estimator(run.folder, run.config, run.image_shape).to(run.device)
        x = eval_images(data.test_x[:batch_size], run.config.data.binarize,
                        run.config.train.seed)  # fmt: skip
        x = to_unit(x).to(run.device)
        stats = gradient_stats(model, x, names, draws, samples, seed=seed, trained=trained)
        if path is not None:
            state = "at initialisation" if init else "trained"
            plot_stats(stats, path, f"{draws} gradient estimates on {len(x)} images ({state})")
        result = {"mode": "init" if init else "trained", "stats": stats}
    result.update(run=str(run.folder), draws=draws, batch_size=batch_size, samples=samples)
    if path is not None:
        path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def ae_vs_vae(
    ae: str | Path | None = None, vae: str | Path | None = None, *,
    out: str | Path | None = None, dataset: str = "fashion-mnist", epochs: int = 5,
    arch: str = "mlp", hidden: str = "512,256", points: int = 1000, grid: int = 15,
    judge: str | None = None, seed: int = 0, device: str = "cpu", overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Compare the 2-D latent spaces of an autoencoder and a VAE
    (vaelab.evaluation.aevae): the share
    of ``points`` uniform draws per bounding box decoded well-formed, and how much of each
    box the test codes cover. Without ``ae``/``vae`` trains both into ``out`` first
    (default runs/<time>-ae-vs-vae); writes out/ae-vs-vae.png and .json."""
    if (ae is None) != (vae is None):
        raise VaelabError("--ae and --vae: give both existing runs, or neither to train them")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = prepare_run_dir(Path(out or f"runs/{stamp}-ae-vs-vae"), resume=False,
                             overwrite=overwrite)  # fmt: skip
    if ae is None:
        train_pair(folder, dataset=dataset, epochs=epochs, arch=arch, hidden=hidden,
                   seed=seed, device=device)  # fmt: skip
        ae, vae = folder / "ae", folder / "vae"
    ae_run, vae_run = as_run(ae, device), as_run(vae, device)
    if ae_run.model.has_posterior or not vae_run.model.has_posterior:
        raise VaelabError("--ae must be an autoencoder run and --vae a VAE run")
    data = load_test_images(vae_run)
    fig, result = compare_latent_spaces(ae_run, vae_run, data, points, grid, seed, judge)
    result.update(ae_run=str(ae), vae_run=str(vae))
    save_figure(fig, folder / "ae-vs-vae.png")
    (folder / "ae-vs-vae.json").write_text(json.dumps(result, indent=2) + "\n")
    result["out"] = str(folder)
    return result


def compare(
    runs: Sequence[str | Path], out: str | Path | None = None, *, overwrite: bool = False
) -> dict[str, Any]:
    """The evaluations of several runs side by side: ``{header, rows, markdown}``; with
    ``out`` (a .png) the bar chart there and the table next to it (.md, .json)."""
    if out is not None:
        if Path(out).suffix.lower() != ".png":
            raise VaelabError(f"--out {out}: expected a .png path")
        out = target(out, overwrite)
    return compare_evaluations(list(runs), out)


def disentanglement(
    run: str | Path | Run, pool: int = 10000, seeds: int = 3,
    metrics: Sequence[str] | None = None, votes: int = 5000, mig_samples: int = 1000,
    bins: int = 20, importance: str = "forest", index: int = 0, *, seed: int = 0,
    device: str = "cpu", out: str | Path | None = None, matrix_out: str | Path | None = None,
    record_out: str | Path | None = None, json_out: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The disentanglement metrics of a run on its dataset's ground-truth factors (see
    vaelab.evaluation.disentanglement): ``seeds`` repetitions (seeds ``seed``,
    ``seed + 1``, ...), each on ``pool`` images, with ``votes`` training votes (and 2/5 as
    many held out) for the vote scores and ``mig_samples`` draws for the exact MIG; mean,
    std and standard error over seeds in ``result["summary"]``. ``out``: a traversal per
    latent dimension around image ``index`` of 2,000 drawn with ``seed`` (the KL ranking
    uses all 2,000), each row labelled with the factor it captures best;
    ``matrix_out``: the MI matrix picture; ``record_out``/``json_out``: the JSON."""
    at_least("--seeds", seeds)
    at_least("--votes", votes, 10)
    at_least("--mig-samples", mig_samples, 10)
    at_least("--bins", bins, 2)
    paths = {k: target(p, overwrite, k) for k, p in
             (("out", out), ("matrix_out", matrix_out), ("record_out", record_out),
              ("json_out", json_out)) if p is not None}  # fmt: skip
    run = as_run(run, device)
    refuse_codes(
        run.model,
        "disentanglement",
        "has no per-dimension latent code to score (its latent is a grid of discrete codes)",
    )
    data = load_test_images(run)
    result = disentanglement_of(
        run.model, data, binarize=run.config.data.binarize, data_seed=run.config.train.seed,
        pool=pool, seeds=tuple(range(seed, seed + seeds)),
        metrics=tuple(metrics) if metrics else METRICS, votes=(votes, max(10, votes * 2 // 5)),
        mig_samples=mig_samples, bins=bins, importance=importance,
    )  # fmt: skip
    if "out" in paths or "matrix_out" in paths:
        if "mig" not in result["runs"][0]:
            raise VaelabError("disentanglement: the pictures need --metrics to include mig")
        if "matrix_out" in paths:
            save_figure(mi_figure(result), paths["matrix_out"])
        if "out" in paths and not (run.model.has_posterior and run.model.has_prior):
            del paths["out"]  # an autoencoder: no prior scale to traverse in
            result["omitted"]["traversal"] = "a plain autoencoder has no p(z) to traverse"
        if "out" in paths:
            x, _, _ = factors_of(data)
            picks = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
            x = eval_images(x[picks[:2000]], run.config.data.binarize, run.config.train.seed)
            if not 0 <= index < len(x):
                raise VaelabError(f"--index: expected 0..{len(x) - 1}, got {index}")
            fig, shown = traversal_by_factor(run.model, x, result, index=index)
            save_figure(fig, paths["out"])
            result["traversal"] = shown
    result["files"] = {k: str(p) for k, p in paths.items()}
    text = json.dumps(result, indent=1) + "\n"
    for key in ("record_out", "json_out"):
        if key in paths:
            paths[key].write_text(text)
    return result
