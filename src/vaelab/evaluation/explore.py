"""Looking inside a trained model: interpolation, traversals, latent embeddings, manifolds
(the numbers; vaelab.evaluation.pictures draws them).

Every function takes a loaded model (``vaelab.load``) and returns tensors: images are
floats in [0, 1], ``(N, C, H, W)``; latents are ``(N, D)``. The latent point of an image
is its posterior mean E_q[z|x] (the code itself for a plain autoencoder), so the
endpoints of an interpolation decode to the images' reconstructions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError, at_least, unknown_name
from vaelab.latents.gumbel import JointPosterior
from vaelab.latents.priors import StandardNormalPrior


@torch.no_grad()
def latent_means(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z|x] for uint8 images ``x`` ``(N, C, H, W)``; returns ``(N, D)`` on the CPU."""
    model.eval()
    out = [
        model.latent_mean(to_unit(x[i : i + batch_size].to(model.device))).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out)


@torch.inference_mode()
def posterior_stats(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Posterior means ``(N, D)`` of uint8 images ``x``, and the per-image, per-dimension KL
    against a standard normal prior ``(N, D)`` (None when q or p is not of that form). A
    model with a point code (``has_posterior`` False) gives its codes and no KL."""
    param = next(model.parameters())
    if not model.has_posterior:
        return latent_means(model, x, batch_size).double(), None
    means, kls = [], []
    factorised = isinstance(model.prior, StandardNormalPrior)
    for start in range(0, len(x), batch_size):
        xb = to_unit(x[start : start + batch_size].to(param.device), param.dtype)
        q = model.encode(xb)
        base = q.base_dist if isinstance(q, Independent) else q
        means.append(q.mean.double().cpu())
        if factorised and isinstance(base, Normal):
            mu, var = base.loc.double(), base.scale.double().square()
            kls.append((0.5 * (mu.square() + var - 1.0 - var.log())).cpu())
    return torch.cat(means), (torch.cat(kls) if len(kls) == len(means) else None)


@torch.no_grad()
def decode_mean(
    model: torch.nn.Module, z: torch.Tensor, batch_size: int = 1000,
    y: torch.Tensor | int | None = None,
) -> torch.Tensor:  # fmt: skip
    """The mean of p(x|z) for latents ``(N, D)``; images ``(N, C, H, W)`` on the CPU. ``y``:
    the label (an int or ``(N,)``) of a model that ``uses_labels`` (it needs one)."""
    model.eval()
    out = []
    for i in range(0, len(z), batch_size):
        args = ()
        if model.uses_labels:
            if y is None:
                raise VaelabError("--label: a conditional model decodes with a class label")
            yb = torch.as_tensor(y, device=model.device)
            args = (yb[i : i + batch_size] if yb.dim() else yb,)
        params = model.decode(z[i : i + batch_size].to(model.device), *args)
        out.append(model.likelihood.mean(params).cpu())
    return torch.cat(out)


@torch.no_grad()
def image_labels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The labels a conditional model infers for uint8 images ``x`` ``(N, C, H, W)`` (what a
    tool written for a VAE decodes them with), or None for a model without labels."""
    if not model.uses_labels:
        return None
    model.eval()
    return model.infer_labels(to_unit(x.to(model.device))).cpu()


def lerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """z(t) = (1 - t) z0 + t z1 at ``steps`` evenly spaced t in [0, 1]; ``(steps, D)``."""
    t = torch.linspace(0, 1, steps, dtype=z0.dtype).unsqueeze(1)
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation, ``(steps, D)``: the direction follows the great circle
    from z0/|z0| to z1/|z1| (angle omega, u(t) = [sin((1-t) omega) u0 + sin(t omega) u1] /
    sin omega) and the norm goes linearly from |z0| to |z1|.

    Under a standard-normal prior the norm of a draw concentrates near sqrt(D); a linear
    path between two such points cuts through the low-norm interior (|z(1/2)| can be far
    below both ends), which the prior rarely produces. Here |z(t)| always lies between the
    endpoints' norms. Parallel directions fall back to the (normalised) linear path.
    """
    t = torch.linspace(0, 1, steps, dtype=z0.dtype).unsqueeze(1)
    n0, n1 = z0.norm(), z1.norm()
    eps = torch.finfo(z0.dtype).eps
    u0 = z0 / n0 if n0 > eps else z1 / n1.clamp_min(eps)
    u1 = z1 / n1 if n1 > eps else u0
    omega = torch.arccos((u0 @ u1).clamp(-1.0, 1.0))
    if torch.sin(omega) < 1e-6:
        u = (1 - t) * u0 + t * u1
        u = u / u.norm(dim=1, keepdim=True).clamp_min(eps)
    else:
        u = (torch.sin((1 - t) * omega) * u0 + torch.sin(t * omega) * u1) / torch.sin(omega)
    return ((1 - t) * n0 + t * n1) * u


INTERPOLATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "linear": lerp,
    "spherical": slerp,
}


def interpolate(
    model: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor, steps: int = 10,
    method: str = "linear", y: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Decodings along the path between the latent means of uint8 images ``x0``, ``x1``
    ``(C, H, W)``; ``(steps, C, H, W)``. The first and last are their reconstructions. A
    conditional model decodes the path with label ``y`` (default: the one inferred for x0)."""
    if method not in INTERPOLATIONS:
        raise unknown_name("--method", method, INTERPOLATIONS)
    at_least("--steps", steps, 2)
    z = latent_means(model, torch.stack([x0, x1]))
    if y is None and model.uses_labels:
        y = int(image_labels(model, x0[None])[0])
    path = INTERPOLATIONS[method](z[0], z[1], steps)
    if model.latent_space == "sphere":  # on S^{D-1}: both paths follow the great circle
        path = path / path.norm(dim=-1, keepdim=True)  # (linear: the chord's projection)
    return decode_mean(model, path, y=y)


def _prior_marginals(model: torch.nn.Module) -> Distribution | None:
    """The prior's per-dimension distribution (batch shape ``(D,)``) when it factorizes
    into one (standard normal, Gamma, Beta priors); None for mixtures."""
    return model.prior.marginals()


@torch.no_grad()
def kl_per_dim(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Mean over images of KL(q(z_d|x) || p(z_d)) for each latent dimension d, ``(D,)``;
    for the Normal pair 0.5 (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2). Dimensions near 0
    are unused ("collapsed"); the active ones carry the information about x. With a
    factorized prior the values sum to the ELBO's KL term (a categorical posterior: its
    :func:`joint_kl_terms`). Raises VaelabError when the prior does not factorize
    (mixture, VampPrior) or no closed form exists."""
    if not (model.has_posterior and model.has_prior):
        raise VaelabError("KL per dimension needs q(z|x) and p(z); a plain autoencoder has none")
    model.eval()
    marginals = _prior_marginals(model)
    total = None
    for i in range(0, len(x), batch_size):
        q = model.encode(to_unit(x[i : i + batch_size].to(model.device)))
        if isinstance(q, JointPosterior):  # Gaussian dims, then each group's classes
            part = joint_kl_terms(q).sum(0).double().cpu()
            total = part if total is None else total + part
            continue
        if marginals is None or not isinstance(q, Independent):
            raise VaelabError("KL per dimension needs a prior that factorizes over dimensions")
        try:
            kl = kl_divergence(q.base_dist, marginals)
        except NotImplementedError:
            raise VaelabError(
                "KL per dimension: no closed form for this posterior and prior"
            ) from None
        part = kl.sum(0).double().cpu()
        total = part if total is None else total + part
    return (total / len(x)).float()


def joint_kl_terms(q: JointPosterior) -> torch.Tensor:
    """KL(q || p) of a (joint) categorical posterior against its prior N(0, I) x U(C)^V, split
    over the event's coordinates ``(B, D_c + V C)``: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)
    for each Gaussian dimension, pi_k (log pi_k + log C) for class k of a group (so a
    group's coordinates sum to KL(Cat(pi) || U(C)), and all of them to the model's KL)."""
    cont = 0.5 * (q.mu.square() + q.logvar.exp() - 1.0 - q.logvar)
    log_pi = torch.log_softmax(q.logits, -1)
    cat = log_pi.exp() * (log_pi + math.log(q.logits.shape[-1]))
    return torch.cat([cont, cat.flatten(-2)], -1)


def dim_scores(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """How much each latent dimension is used, ``(D,)``, and the measure's name: the KL
    per dimension where it has a closed form, else the *activity* Var_x(E_q[z_d|x])
    (Burda et al., 2016), which also separates used dimensions from collapsed ones."""
    try:
        return kl_per_dim(model, x), "KL"
    except VaelabError:
        if not model.has_posterior:  # a point code: not even an activity
            raise
        return latent_means(model, x).var(0), "activity"


def top_dims(kl: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` dimensions with the largest KL, largest first."""
    return torch.argsort(kl, descending=True)[: min(k, len(kl))].tolist()


def traverse(
    model: torch.nn.Module, x: torch.Tensor, dims: list[int], steps: int = 9, span: float = 3.0
) -> torch.Tensor:
    """For each ``d`` in ``dims``, decode E_q[z|x] with z_d moved by ``linspace(-span, span,
    steps)`` (units of the prior's standard deviation), the other dimensions fixed.
    ``x`` is one uint8 image ``(C, H, W)``; returns ``(len(dims) * steps, C, H, W)``, one row
    per dimension."""
    at_least("--steps", steps, 2)
    if span <= 0:
        raise VaelabError(f"--span: must be > 0, got {span}")
    mu = latent_means(model, x.unsqueeze(0))[0]
    offsets = torch.linspace(-span, span, steps)
    z = mu.repeat(len(dims), steps, 1)
    scale = prior_std(model)
    for row, d in enumerate(dims):
        if model.latent_space == "categorical" and d >= model.continuous_dims:
            z[row] = category_sweep(model, mu, d, steps)  # a group has no axis: its classes
            continue
        z[row, :, d] += offsets * scale[d]
    z = z.reshape(-1, len(mu))
    if model.latent_space == "sphere":  # the moved point, put back on the sphere
        z = z / z.norm(dim=-1, keepdim=True)
    # Gamma/Beta: stay in the support (a point code has no prior)
    bounds = model.prior.bounds if model.has_prior else None
    y = image_labels(model, x[None])  # a conditional model: the image's own label
    return decode_mean(model, z.clamp(*bounds) if bounds else z, y=None if y is None else y[0])


def category_group(model: torch.nn.Module, d: int) -> int | None:
    """The categorical group (0-based) that latent coordinate ``d`` belongs to, None for a
    Gaussian coordinate (every coordinate of a model without categorical latents)."""
    if model.latent_space != "categorical" or d < model.continuous_dims:
        return None
    return (d - model.continuous_dims) // model.categories


def sweep_classes(model: torch.nn.Module, steps: int) -> list[int]:
    """The class a categorical row's column j shows: round(j (C - 1) / (steps - 1))
    (every class once when ``steps`` = C)."""
    return torch.linspace(0, model.categories - 1, steps).round().long().tolist()


def unit_scores(model: torch.nn.Module, values: torch.Tensor) -> torch.Tensor:
    """Per-coordinate scores ``(D,)`` with each categorical group made one unit: its total at
    its first coordinate, -inf at the others (a group is one traversal row, not C rows
    that would all show the same sweep of its classes)."""
    if model.latent_space != "categorical":
        return values
    out = values.clone().float()
    dc, c = model.continuous_dims, model.categories
    for start in range(dc, len(values), c):
        out[start] = values[start : start + c].sum()
        out[start + 1 : start + c] = -math.inf
    return out


def category_sweep(model: torch.nn.Module, mu: torch.Tensor, d: int, steps: int) -> torch.Tensor:
    """``steps`` copies of the code ``mu`` ``(D,)`` with the one-hot group holding coordinate
    ``d`` set to class round(j (C - 1) / (steps - 1)), j = 0..steps-1 (a categorical latent's
    traversal, as JointVAE shows it)."""
    c = model.categories
    start = model.continuous_dims + (d - model.continuous_dims) // c * c
    z = mu.repeat(steps, 1)
    z[:, start : start + c] = 0
    z[torch.arange(steps), start + torch.tensor(sweep_classes(model, steps))] = 1
    return z


def group_slices(model: torch.nn.Module) -> list[slice]:
    """The coordinates of each categorical group of z, group 0 first (none for a model
    without categorical latents): group g is z[D_c + g C : D_c + (g + 1) C]."""
    if model.latent_space != "categorical":
        return []
    dc, c = model.continuous_dims, model.categories
    return [slice(s, s + c) for s in range(dc, model.latent_dim, c)]


def ranked_groups(model: torch.nn.Module, scores: torch.Tensor) -> list[tuple[int, float]]:
    """The categorical groups as ``(g, score)``, ranked by the group's summed per-coordinate
    score (``dim_scores``: a group's KL(Cat(pi) || U(C))), top first; [] without groups."""
    units = unit_scores(model, scores)
    firsts = [s.start for s in group_slices(model)]
    return [(firsts.index(d), float(units[d])) for d in top_dims(units, len(units))
            if d in firsts]  # fmt: skip


def group_classes(model: torch.nn.Module, z: torch.Tensor) -> list[int]:
    """The class of each categorical group of one code ``z`` ``(D,)``: the argmax of its
    coordinates (a one-hot group's class; for E_q[z|x] of ``latent_mean`` the mode of q(c|x))."""
    return [int(z[s].argmax()) for s in group_slices(model)]


def with_classes(model: torch.nn.Module, z: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """A copy of the code ``z`` ``(D,)`` whose group g is the one-hot code of ``classes[g]``
    (one class per group, each in [0, C)); the Gaussian coordinates are kept."""
    slices = group_slices(model)
    if not slices:
        raise VaelabError("classes: this model has no categorical latents (--model gumbel)")
    if len(classes) != len(slices) or not all(0 <= k < model.categories for k in classes):
        got = f"{list(classes)}"[:80]
        raise VaelabError(f"classes: expected {len(slices)} classes (one per categorical group), "
                          f"each in 0..{model.categories - 1}, got {got}")  # fmt: skip
    z = z.clone()
    for s, k in zip(slices, classes, strict=True):
        z[s] = 0
        z[s.start + k] = 1
    return z


@torch.no_grad()
def prior_std(model: torch.nn.Module) -> torch.Tensor:
    """Standard deviation of each latent dimension under p(z), ``(D,)`` (1 for N(0, I);
    estimated from 20,000 draws for a mixture prior); 1 for a point code without a prior."""
    if not model.has_prior:
        return torch.ones(model.latent_dim)
    marginals = _prior_marginals(model)
    if marginals is not None:
        return marginals.stddev.float().cpu().expand(model.latent_dim)
    return model.prior.sample(20000).float().cpu().std(0)


def _pca(z: np.ndarray, seed: int) -> np.ndarray:
    """Projection on the two leading principal axes (SVD of the centred points)."""
    centred = z - z.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    # One point (or one test image) has a single axis: the second coordinate is 0.
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def _tsne(z: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(z) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


EMBEDDINGS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"pca": _pca, "tsne": _tsne}


def embed(z: torch.Tensor, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates for latents ``(N, D)`` and the axis-name prefix. A 2-D latent is
    returned as it is (``z``); larger ones go through ``method`` (pca | tsne)."""
    if method not in EMBEDDINGS:
        raise unknown_name("--method", method, EMBEDDINGS)
    array = z.double().numpy()
    if array.shape[1] == 2:
        return array, "z"
    if array.shape[1] == 1:
        return np.column_stack([array[:, 0], np.zeros(len(array))]), "z"
    return EMBEDDINGS[method](array, seed), {"pca": "PC", "tsne": "t-SNE "}[method]


def prior_quantile_grid(model: torch.nn.Module, n: int = 15) -> tuple[torch.Tensor, np.ndarray]:
    """Decodings of a 2-D latent over an ``n x n`` grid of the prior's quantiles:
    z_i = Phi^-1((i + 1/2) / n) per axis, so each tile stands for an equal share of p(z).
    Rows go from high z_2 (top) to low, columns from low z_1 to high, as in a scatter plot.
    Learned priors use the empirical quantiles of 20,000 draws per axis. Returns images
    ``(n*n, C, H, W)`` and the axis values ``(2, n)`` (z_1's, z_2's, increasing)."""
    if model.latent_dim != 2:
        raise VaelabError(f"manifold grid: needs a 2-D latent, the model has {model.latent_dim}")
    if not model.has_prior:
        raise VaelabError("manifold grid: needs a prior p(z); a plain autoencoder has none")
    levels = (torch.arange(n) + 0.5) / n
    if isinstance(model.prior, StandardNormalPrior):
        qx = qy = Normal(0.0, 1.0).icdf(levels)
    else:  # a learned prior (mixture, VampPrior): quantiles of its marginals, from draws
        with torch.no_grad():
            draws = model.prior.sample(20000).float().cpu()
        qx, qy = (torch.quantile(draws[:, i], levels) for i in range(2))
    z = torch.stack([qx.repeat(n), qy.flip(0).repeat_interleave(n)], dim=1)
    return decode_mean(model, z), torch.stack([qx, qy]).numpy()


def sphere_grid(model: torch.nn.Module, n: int = 15) -> tuple[torch.Tensor, np.ndarray]:
    """Decodings over equal shares of the uniform prior on the sphere S^{D-1}, D = 2 or 3
    (a flat quantile grid would decode points off the sphere). Longitudes phi_i = -pi +
    (i + 1/2) 2 pi / n. D = 2 (the circle): the ``n`` points (cos phi_i, sin phi_i), one
    row. D = 3: an ``n x n`` grid, columns phi_i, rows the heights h_j = z_3 = 1 - (j + 1/2)
    2 / n (top: high), z = (sqrt(1 - h^2) cos phi, sqrt(1 - h^2) sin phi, h); by
    Archimedes' theorem h is uniform under U(S^2) (Lambert's cylindrical equal-area
    projection), so each tile stands for 1/n^2 of p(z). Returns images ``(n or n*n, C, H,
    W)`` and the axis values ``(2, n)`` (longitudes, then heights increasing; D = 2: the
    second row is unused zeros)."""
    d = model.latent_dim
    if model.latent_space != "sphere" or d not in (2, 3):
        raise VaelabError(f"sphere grid: needs a latent on S^1 or S^2, the model has {d} dims")
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    phi = -math.pi + 2 * math.pi * levels
    if d == 2:
        z = torch.stack([phi.cos(), phi.sin()], 1)
        return decode_mean(model, z.float()), np.stack([phi.numpy(), np.zeros(n)])
    h = -1 + 2 * levels
    hh, pp = h.flip(0).repeat_interleave(n), phi.repeat(n)
    r = (1 - hh.square()).sqrt()
    z = torch.stack([r * pp.cos(), r * pp.sin(), hh], 1)
    return decode_mean(model, z.float()), np.stack([phi.numpy(), h.numpy()])


def sphere_map(z: torch.Tensor) -> np.ndarray:
    """Points on S^2 ``(N, 3)`` -> Lambert's cylindrical equal-area coordinates ``(N, 2)``:
    (longitude atan2(z_2, z_1), height z_3), the axes of :func:`sphere_grid`'s tiles."""
    u = z.double() / z.double().norm(dim=-1, keepdim=True)
    return torch.stack([torch.atan2(u[:, 1], u[:, 0]), u[:, 2]], 1).numpy()


def box_grid(lo: np.ndarray, hi: np.ndarray, n: int) -> torch.Tensor:
    """``(n*n, 2)`` evenly spaced points of the box [lo, hi], top row = high z_2."""
    xs = torch.linspace(float(lo[0]), float(hi[0]), n)
    ys = torch.linspace(float(hi[1]), float(lo[1]), n)
    return torch.stack([xs.repeat(n), ys.repeat_interleave(n)], dim=1)


def uniform_box(lo: np.ndarray, hi: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points drawn uniformly from the box [lo, hi], ``(n, D)``."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, len(lo), generator=gen)
    return torch.as_tensor(lo, dtype=torch.float32) + u * torch.as_tensor(hi - lo).float()
