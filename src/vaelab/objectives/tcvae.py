"""beta-TCVAE (Chen et al. 2018): the KL term split into index-code mutual information, total
correlation and dimension-wise KL, each with its own weight.

With q(z) = (1/N) sum_n q(z|x_n) the aggregate posterior over the N training images, the
average KL decomposes exactly (Chen et al. 2018, Eq. 2):

    E_x KL(q(z|x) || p(z)) = E_q(z,x)[log q(z|x) - log q(z)]               MI(x; z)
                           + E_q(z)[log q(z) - log prod_d q(z_d)]           TC(z)
                           + E_q(z)[log prod_d q(z_d) - log p(z)]           dim-wise KL

and the loss is -E_q log p(x|z) + beta_t (alpha MI + tc_beta TC + gamma dimKL), beta_t being
vaelab's ``--beta`` (1 by default; with ``--beta-warmup`` it ramps the whole KL part).

log q(z_i) is estimated from the minibatch x_1..x_B that z_i (drawn from q(z|x_i)) came from:
log q(z_i) ~ log sum_j W_ij q(z_i|x_j), with weights summing to 1 in each row:

- ``mws`` (minibatch-weighted sampling): W_ii = 1/N, W_ij = (N-1) / (N (B-1)): the
  sample's own image has its share 1/N of q(z_i), the other B-1 images stand for the other
  N-1. exp of it is an unbiased estimate of q(z_i) over uniformly drawn batches, and with
  B = N it is the full-dataset q(z_i). (Chen et al.'s code writes the weight as 1/(NB) for
  every j, which offsets each log q by -log N: the TC and MI it reports are shifted by
  constants; the gradients are the same.)
- ``mss`` (minibatch-stratified sampling, their Appendix): with M = B-1, W_ii = 1/N, one
  other image (the next in the batch) (N-M)/(NM), the remaining M-1 images 1/M.

log prod_d q(z_d) uses the same weights per dimension. Shapes: z ``(K, B, D)``, the Gaussian
q(z|x_j)'s mean and std ``(B, D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelab.errors import VaelabError
from vaelab.models.terms import Terms
from vaelab.objectives.latent_terms import LatentTerm

SAMPLINGS = ("mws", "mss")


@dataclass(frozen=True)
class BTCVAEOptions:
    tc_alpha: float = 1.0  # btcvae: weight of the index-code mutual information
    tc_beta: float = 6.0  # btcvae: weight of the total correlation
    tc_gamma: float = 1.0  # btcvae: weight of the dimension-wise KL
    tc_sampling: str = "mws"  # btcvae: log q(z) from mws (minibatch-weighted) or mss


def log_weights(batch: int, n: int, sampling: str, dtype=torch.float32, device=None):
    """log W ``(B, B)`` of the module docstring (row i: the weights of q(z_i|x_j))."""
    if batch == 1:  # one image: its own posterior is the only estimate
        return torch.zeros(1, 1, dtype=dtype, device=device)
    if sampling == "mws":
        w = torch.full((batch, batch), (n - 1) / (n * (batch - 1)), dtype=dtype, device=device)
    else:
        m = batch - 1
        w = torch.full((batch, batch), 1.0 / m, dtype=dtype, device=device)
        rows = torch.arange(batch, device=device)
        w[rows, (rows + 1) % batch] = (n - m) / (n * m)
    w.fill_diagonal_(1.0 / n)
    return w.log()


def log_density_matrix(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(z_{k,i,d}; mean_{j,d}, std_{j,d}^2), ``(K, B, B, D)`` for z ``(K, B, D)`` and
    mean, std ``(B, D)``: every sample under every image's posterior, per dimension."""
    diff = (z[:, :, None, :] - mean[None, None]) / std[None, None]
    return -0.5 * diff.square() - std.log()[None, None] - 0.5 * math.log(2 * math.pi)


def log_qz(
    z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, n: int, sampling: str = "mws"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(z), log prod_d q(z_d)), each ``(K, B)``, estimated from the batch (docstring)."""
    mat = log_density_matrix(z, mean, std)
    logw = log_weights(z.shape[1], n, sampling, mat.dtype, mat.device)
    joint = torch.logsumexp(mat.sum(-1) + logw, dim=2)
    marginals = torch.logsumexp(mat + logw[..., None], dim=2).sum(-1)
    return joint, marginals


def decomposition(
    terms: Terms, n: int, sampling: str = "mws"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(MI, TC, dimension-wise KL), batch means of the module docstring's three terms; their
    sum is the K-sample estimate of the batch's mean KL(q(z|x) || p(z))."""
    e = terms.extras
    joint, marginals = log_qz(e["z"], e["q_mean"], e["q_std"], n, sampling)
    mi = (terms.log_qz_x - joint).mean()
    tc = (joint - marginals).mean()
    dim_kl = (marginals - terms.log_pz).mean()
    return mi, tc, dim_kl


class TCTerm(LatentTerm):
    """beta_t (alpha MI + tc_beta TC + gamma dimKL): added to the reconstruction-only
    ``btcvae`` reduction, it gives Chen et al.'s loss (module docstring)."""

    def __init__(self, options: BTCVAEOptions, n: int) -> None:
        super().__init__()
        if options.tc_sampling not in SAMPLINGS:
            raise VaelabError(f"--tc-sampling: expected mws or mss, got {options.tc_sampling!r}")
        self.options, self.n = options, n

    def forward(self, terms: Terms, beta: torch.Tensor) -> tuple[torch.Tensor, dict]:
        o = self.options
        mi, tc, dim_kl = decomposition(terms, self.n, o.tc_sampling)
        value = beta * (o.tc_alpha * mi + o.tc_beta * tc + o.tc_gamma * dim_kl)
        return value, {"mi": mi, "tc": tc, "dim_kl": dim_kl}
