"""Disentanglement of a trained model: encode images with known factors, score them
(:mod:`vaelab.evaluation.disentanglement`) and draw the pictures.

The images are the dataset's train and test images together (the metrics measure the
representation, not generalisation), as the model sees them (binarized if it was trained
so). Factors are the dataset's per-image factors (dSprites, an NPZ with ``factors``); data
with only class labels is scored with the label as its one factor. The two vote-based
scores (beta-VAE, FactorVAE) fix one factor and let the others vary as in the data: they
assume independent factors and are left out (with the reason) unless every combination
of factor values occurs equally often, as on dSprites.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.distributions import Independent, Normal

from vaelab.data import ImageData
from vaelab.data.prepare import eval_images, to_unit
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.disentanglement import METRICS, score, varying
from vaelab.evaluation.explore import dim_scores, traverse
from vaelab.evaluation.plots import traversal_figure

VOTE_METRICS = ("beta_vae", "factor_vae")


def factors_of(data: ImageData) -> tuple[torch.Tensor, np.ndarray, tuple[str, ...]]:
    """All images (train then test) uint8 ``(N, C, H, W)``, their factor classes ``(N, F)``
    and the factor names; the class label as the one factor when there are no factors."""
    x = torch.cat([data.train_x, data.test_x])
    if data.train_factors is not None and data.test_factors is not None:
        f = torch.cat([data.train_factors, data.test_factors]).numpy()
        return x, f, tuple(data.factor_names or ())
    if data.train_y is not None and data.test_y is not None:
        return x, torch.cat([data.train_y, data.test_y]).numpy()[:, None], ("label",)
    raise VaelabError(
        f"disentanglement: dataset {data.name!r} has neither factors nor labels; expected"
        " dsprites, dsprites-small, an .npz with a 'factors' array, or labelled data"
    )


def is_factorial(factors: np.ndarray) -> bool:
    """Whether every combination of the factors' values occurs, each equally often."""
    f = factors[:, varying(factors)]
    if f.shape[1] == 0:
        return False
    _, counts = np.unique(f, axis=0, return_counts=True)
    sizes = [len(np.unique(f[:, k])) for k in range(f.shape[1])]
    return len(counts) == int(np.prod(sizes, dtype=np.float64)) and counts.min() == counts.max()


@torch.inference_mode()
def encode(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray | None]:
    """Posterior means ``(N, D)`` of uint8 images (an autoencoder's codes), and standard
    deviations when q(z|x) is a diagonal Gaussian (else None: the exact MIG and the total
    correlation need them)."""
    param = next(model.parameters())
    means, stds = [], []
    for start in range(0, len(x), batch_size):
        xb = to_unit(x[start : start + batch_size].to(param.device), param.dtype)
        if not model.has_posterior:  # an autoencoder: its point codes
            means.append(model.latent_mean(xb).double().cpu())
            continue
        q = model.encode(xb)
        base = q.base_dist if isinstance(q, Independent) else q
        means.append(q.mean.double().cpu())
        if isinstance(base, Normal):
            stds.append(base.scale.double().cpu())
    mu = torch.cat(means).numpy()
    return mu, (torch.cat(stds).numpy() if len(stds) == len(means) else None)


def disentanglement_of(
    model: torch.nn.Module, data: ImageData, *, binarize: str = "none", data_seed: int = 0,
    pool: int = 10000, seeds: tuple[int, ...] = (0, 1, 2),
    metrics: tuple[str, ...] = METRICS, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """Score ``model``'s posterior means on ``data``'s factors: each seed draws its own pool
    of ``pool`` images from ``pool * len(seeds)`` encoded ones (fewer when the data is
    smaller). ``options`` go to :func:`~vaelab.evaluation.disentanglement.score` (batch,
    votes, mig_samples, bins, importance). Returns its output plus the dataset, factor
    names, which metrics were left out and why, and the codes' posterior statistics."""
    if not model.on_images:
        raise VaelabError("disentanglement: an M1+M2 run encodes M1's features; score the M1 run")
    at_least("--pool", pool, 100)
    if not seeds:
        raise VaelabError("--seeds: expected at least one seed")
    x, factors, names = factors_of(data)
    omitted: dict[str, str] = {}
    chosen = tuple(metrics)
    if any(m in chosen for m in VOTE_METRICS) and not is_factorial(factors):
        for m in VOTE_METRICS:
            if m in chosen:
                omitted[m] = ("needs independent factors (every combination equally often); "
                              "this data's factors are not a full grid")  # fmt: skip
        chosen = tuple(m for m in chosen if m not in VOTE_METRICS)
    rng = np.random.default_rng(data_seed)
    take = min(len(x), pool * len(seeds))
    rows = np.sort(rng.choice(len(x), take, replace=False))
    images = eval_images(x[torch.from_numpy(rows)], binarize, data_seed)
    mu, std = encode(model, images)
    if std is None and "mig" in chosen:
        omitted["mig_exact"] = "needs a Gaussian q(z|x); the binned MIG is reported alone"
        omitted["total_correlation"] = "needs a Gaussian q(z|x)"
    result = score(mu, factors[rows], std, metrics=chosen, seeds=tuple(seeds),
                   pool=min(pool, take), **options)  # fmt: skip
    kept = result["factor_columns"]
    result.update(
        dataset=data.name, factor_names=[names[k] for k in kept], encoded=take,
        omitted=omitted, latent_dim=int(mu.shape[1]), warnings=index_warnings(result),
    )  # fmt: skip
    return result


def index_dims_of(result: dict[str, Any]) -> list[int]:
    """The latent dimensions that index the pooled images in any seed (see
    :func:`~vaelab.evaluation.disentanglement.index_dims`)."""
    found = {j for run in result["runs"]
             for j in run.get("mig", {}).get("exact", {}).get("index_dims", [])}  # fmt: skip
    return sorted(found)


def index_warnings(result: dict[str, Any]) -> list[str]:
    """One line when some dimension tells apart most of the pooled images (an image index):
    its MI with every factor is near the factor's entropy, which MIG's exact estimator and
    the MI picture count as information about each factor."""
    dims = index_dims_of(result)
    if not dims:
        return []
    pool = result["runs"][0]["pool"]
    info = result["runs"][0]["mig"]["exact"]["info_x"]
    said = ", ".join(f"z{j} ({info[j]:.1f} nats)" for j in dims)
    return [f"{said}: I(z_j; x) near log {pool} = {math.log(pool):.1f} nats, so each "
            f"tells apart most of the {pool} pooled images (an image index): its MI with every "
            "factor is near the factor's entropy though no factor is read off it smoothly; "
            "read mig_exact and the MI picture with that in mind (mig_binned mostly misses "
            "such codes)"]  # fmt: skip


def mi_matrix(result: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The (D, F) mutual information of the first seed, normalised by H(v_k): the exact
    estimate when present, else the binned one; and which it is."""
    m = result["runs"][0].get("mig")
    if m is None:
        raise VaelabError("disentanglement: the MI pictures need the 'mig' metric")
    kind = "exact" if "exact" in m else "binned"
    mi = np.asarray(m[kind]["mi"]) / np.asarray(m["factor_entropy"])[None, :]
    return mi, kind


def mi_figure(result: dict[str, Any]) -> Figure:
    """Heat map of I(z_j; v_k) / H(v_k) between latent dimensions (rows) and factors."""
    mi, kind = mi_matrix(result)
    names = result["factor_names"]
    fig = Figure(figsize=(1.6 + 0.9 * len(names), 1.2 + 0.35 * len(mi)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(mi, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (j, k), v in np.ndenumerate(mi):
        ax.text(k, j, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="black" if v > 0.6 else "white")  # fmt: skip
    ax.set_xticks(range(len(names)), names)
    index = set(index_dims_of(result)) if kind == "exact" else set()
    rows = [f"z{j} (index)" if j in index else f"z{j}" for j in range(len(mi))]
    ax.set_yticks(range(len(mi)), rows)
    mig = result["summary"].get(f"mig_{kind}", {}).get("mean", float("nan"))
    ax.set(title=f"I(z_j; v_k) / H(v_k), {kind} estimator ({result['dataset']}; MIG {mig:.3f})",
           xlabel="factor", ylabel="latent dimension")  # fmt: skip
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def traversal_by_factor(
    model: torch.nn.Module, x: torch.Tensor, result: dict[str, Any], *, index: int = 0,
    steps: int = 9, span: float = 2.5, dims: int | None = None,
) -> tuple[Figure, dict[str, Any]]:  # fmt: skip
    """One traversal row per latent dimension (most KL first; all by default), around image
    ``x[index]``'s posterior mean, each labelled with the factor it tells most about and
    I(z_j; v_k) / H(v_k) (of :func:`mi_matrix`)."""
    mi, kind = mi_matrix(result)
    values, what = dim_scores(model, x[:2000])
    order = torch.argsort(values, descending=True).tolist()[: dims or len(values)]
    names = result["factor_names"]
    labels = []
    for d in order:
        k = int(np.argmax(mi[d]))
        labels.append(f"z{d} ({what} {values[d]:.2f}): {names[k]} {mi[d, k]:.2f}")
    grid = traverse(model, x[index], order, steps, span)
    offsets = torch.linspace(-span, span, steps).tolist()
    title = f"Each latent dimension, the factor it captures best and I/H ({kind} MI)"
    return traversal_figure(grid, labels, offsets, title), {"dims": order, "labels": labels}
