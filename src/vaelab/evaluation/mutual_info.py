"""Information measures of a representation against discrete ground-truth factors.

Two estimators of the mutual information I(z_j; v_k) between latent dimension j and
factor k, both in nats:

* **exact** (Chen et al. 2018, the "MIG" paper, section 5): q(z|x) is the encoder's
  Gaussian N(mu(x), diag sigma(x)^2) and q(z) = (1/N) sum_n q(z|x_n) over the N images.
  H(z_j) = -E_{q(z_j)} log q(z_j) is estimated by drawing z_j ~ q(z_j|x_n) for random n
  and evaluating the N-component mixture exactly; H(z_j | v_k) = sum_v p(v) H(z_j | v_k = v)
  with q(z_j | v) the mixture over the images whose factor k is v. I = H(z_j) - H(z_j|v_k).
  The same draws give the total correlation TC = E_q(z)[log q(z) - sum_j log q(z_j)] and
  each dimension's information about the image, I(z_j; x) = H(z_j) - mean_n H(q(z_j|x_n))
  (at most log N). A dimension near that bound tells apart nearly every image: an image
  index, whose I(z_j; v_k) is near H(v_k) for every factor at once (the information is
  there, but entangled: no factor is read off it smoothly).
* **binned** (the estimator disentanglement_lib uses, labelled as such): each code
  dimension (posterior means) is cut into ``bins`` equal-width bins and I is the discrete
  mutual information of the (bin, class) contingency table. It depends on the bin count and
  is not the paper's estimator (disentanglement_lib issue 33; disentangling-vae 52, 64).

Entropies of the factors are discrete, H(v_k) = -sum_v p(v) log p(v) over the images given.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)


def discrete_entropy(labels: np.ndarray) -> float:
    """H(v) in nats of the empirical distribution of integer ``labels`` ``(N,)``."""
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def discrete_mi(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two integer label arrays ``(N,)``, from their contingency table."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def bin_codes(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column of ``codes`` ``(N, D)`` cut into ``bins`` equal-width bins between its
    min and max (disentanglement_lib's ``_histogram_discretize``); int ``(N, D)``."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def binned_mi_matrix(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> np.ndarray:
    """I(bin(z_j); v_k) in nats, ``(D, F)``, for codes ``(N, D)`` and factor classes ``(N, F)``."""
    binned = bin_codes(codes, bins)
    return np.array(
        [[discrete_mi(binned[:, j], factors[:, k]) for k in range(factors.shape[1])]
         for j in range(codes.shape[1])]
    )  # fmt: skip


def _log_normal(z: torch.Tensor, mu: torch.Tensor, inv: torch.Tensor, const: torch.Tensor):
    # z (S, 1, D) against components (1, M, D): log N(z; mu, std^2) per dimension, (S, M, D),
    # with inv = 1 / std and const = -log std - log(2 pi) / 2 computed once (in place ops:
    # this is the whole cost of the exact MIG)
    t = (z - mu).mul_(inv)
    return t.square_().mul_(-0.5).add_(const)


@torch.no_grad()
def mixture_log_density(
    z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor, chunk_elems: int = 1 << 23
) -> tuple[torch.Tensor, torch.Tensor]:
    """log q(z) and log q(z_j) of the equal-weight Gaussian mixture of ``M`` diagonal
    components ``mu, std (M, D)`` at points ``z (S, D)``: ``(S,)`` and ``(S, D)``, float64.

    log q(z_j) = logsumexp_m log N(z_j; mu_mj, std_mj^2) - log M; log q(z) the same over
    the sum of the per-dimension terms (the components are diagonal)."""
    m, d = mu.shape
    step = max(1, chunk_elems // max(1, m * d))
    joint, marg = [], []
    mu_, inv = mu.unsqueeze(0), std.reciprocal().unsqueeze(0)
    const = -std.log().unsqueeze(0) - 0.5 * LOG_2PI
    for i in range(0, len(z), step):
        lp = _log_normal(z[i : i + step].unsqueeze(1), mu_, inv, const)  # (s, M, D)
        marg.append(torch.logsumexp(lp, dim=1).double() - math.log(m))
        joint.append(torch.logsumexp(lp.sum(2), dim=1).double() - math.log(m))
    return torch.cat(joint), torch.cat(marg)


def _draw(mu: torch.Tensor, std: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(mu), (count,), generator=gen)
    eps = torch.randn(count, mu.shape[1], generator=gen, dtype=mu.dtype)
    return mu[idx] + std[idx] * eps


def exact_mi_matrix(
    mu: np.ndarray, std: np.ndarray, factors: np.ndarray, samples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray | float]:
    """Chen et al.'s estimate of I(z_j; v_k) ``(D, F)`` in nats, H(z_j) and I(z_j; x)
    ``(D,)`` and the total correlation of q(z), from posterior means and standard deviations
    ``(N, D)`` and factor classes ``(N, F)``. ``samples`` draws estimate H(z_j) and TC; each
    factor value v gets ``samples * p(v)`` draws (at least 10) from its own images for
    H(z_j | v_k = v). The cost is ``samples * N * D`` Gaussian log-densities (10 s for 1,000 x
    10,000 x 10 on one busy CPU core); the Monte Carlo error of each entropy is sd(log q) /
    sqrt(samples), about 0.03 nats at 1,000 for a unit-scale code."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.as_tensor(mu, dtype=torch.float32)
    s = torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6)
    z = _draw(m, s, samples, gen)
    log_joint, log_marg = mixture_log_density(z, m, s)
    h_z = -log_marg.mean(0).numpy()  # (D,)
    tc = float((log_joint - log_marg.sum(1)).mean())
    n, d = mu.shape
    h_cond = np.zeros((d, factors.shape[1]))
    for k in range(factors.shape[1]):
        values, counts = np.unique(factors[:, k], return_counts=True)
        for v, c in zip(values, counts, strict=True):
            rows = torch.from_numpy(np.flatnonzero(factors[:, k] == v))
            draws = max(10, math.ceil(samples * c / n))
            zv = _draw(m[rows], s[rows], draws, gen)
            _, lm = mixture_log_density(zv, m[rows], s[rows])
            h_cond[:, k] += (c / n) * -lm.mean(0).numpy()
    h_given_x = (s.double().log() + 0.5 * (LOG_2PI + 1)).mean(0).numpy()  # mean_n H(q(z_j|x_n))
    return {"mi": h_z[:, None] - h_cond, "h_z": h_z, "info_x": h_z - h_given_x,
            "total_correlation": tc}  # fmt: skip


def mig_from_mi(mi: np.ndarray, h_factors: np.ndarray) -> tuple[float, np.ndarray]:
    """MIG = mean_k (I_(1)k - I_(2)k) / H(v_k): the gap between the two dimensions most
    informative about factor k, normalised by its entropy; ``mi`` ``(D, F)``. Returns the
    score and the per-factor gaps ``(F,)``. One dimension only: the gap is I_(1)k / H(v_k)."""
    top = -np.sort(-mi, axis=0)
    second = top[1] if len(top) > 1 else np.zeros(mi.shape[1])
    gaps = (top[0] - second) / h_factors
    return float(gaps.mean()), gaps
