"""Objectives: pure functions of a model's :class:`~vaelab.models.terms.Terms`.

Every model returns, for K samples z_k ~ q(z|x) per image, the three log-densities
``log_px_z``, ``log_pz`` and ``log_qz_x``, each ``(K, B)``, and the analytic
``kl = KL(q(z|x) || p(z))`` ``(B,)`` where it has a closed form. With
log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x):

    ELBO  = mean_k [log p(x|z_k)] - KL                      (beta-weighted KL in training)
    IWAE  = log mean_k exp(log w_k)    (>= ELBO; equals it for K = 1; rises with K)

Each returns ``(loss, stats)``: ``loss`` is the scalar to minimise (the negative bound
averaged over images), ``stats`` per-image averages as 0-d tensors (no host sync): ``bound`` (the
objective's bound with beta = 1), ``recon`` (E_q log p(x|z)) and ``kl``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vaelab.errors import VaelabError, unknown_name
from vaelab.estimators import surrogate_loss
from vaelab.models.terms import Terms  # what models return: the objectives' input


def logmeanexp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(t, dim=dim) - math.log(t.shape[dim])


def free_bits_kl(terms: Terms, floor: float) -> torch.Tensor:
    """The KL term with free bits (Kingma et al. 2016): sum_g max(floor, mean_b KL_g(x_b))
    over latent groups (``terms.kl_groups``; a model without groups is one group). A group
    whose batch-mean KL is below ``floor`` nats contributes a constant: no gradient pushes
    it further towards its prior, so it stays free to carry information."""
    groups = terms.kl_groups if terms.kl_groups is not None else terms.kl_per_image()[None]
    return groups.mean(1).clamp(min=floor).sum()


def elbo(
    terms: Terms, beta: float = 1.0, free_bits: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative beta-ELBO: -(E_q[log p(x|z)] - beta * KL), averaged over the batch; with
    ``free_bits`` > 0 the KL term is :func:`free_bits_kl` (the reported bound is not)."""
    recon = terms.log_px_z.mean(0)
    kl = terms.kl_per_image()
    if free_bits > 0:
        loss = -recon.mean() + beta * free_bits_kl(terms, free_bits)
    else:
        loss = -(recon - beta * kl).mean()
    if "score" in terms.extras:  # score-function estimators: zero-valued, adds f * grad log q
        f = (
            terms.log_px_z
            if terms.kl is not None
            else terms.log_px_z - beta * (terms.log_qz_x - terms.log_pz)
        )
        loss = loss + surrogate_loss(terms.extras, f)
    bound = recon - kl
    return loss, {"bound": bound.mean(), "recon": recon.mean(), "kl": kl.mean()}


def iwae(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative IWAE bound with K importance samples (``beta`` is ignored: it has no KL)."""
    if "score" in terms.extras:
        raise VaelabError("--objective iwae: needs --estimator reparam (or elbo for the others)")
    bound = logmeanexp(terms.log_w(), 0)
    recon = terms.log_px_z.mean(0)
    stats = {"bound": bound.mean(), "recon": recon.mean(), "kl": terms.kl_per_image().mean()}
    return -bound.mean(), stats


def m2(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """M2's J^alpha / N (Kingma et al. 2014): the negative beta-bound (labelled images: L(x, y),
    unlabelled: U(x); see vaelab.models.m2) plus ``ce_weight`` (alpha / N) times the mean
    classification loss -log q(y|x) over the labelled images, both from ``extras``.

    beta weighs only KL(q(z|x,y) || p(z)) (``extras["kl_z"]``): the label's part of the
    bound, log p(y) and H(q(y|x)), is not a KL to the latent prior and keeps weight 1."""
    recon = terms.log_px_z.mean(0)
    kl = terms.kl_per_image()
    class_loss = terms.extras["class_loss"]
    kl_beta = kl + (beta - 1.0) * terms.extras["kl_z"]  # y part + beta * z part
    loss = -(recon - kl_beta).mean() + terms.extras["ce_weight"] * class_loss
    stats = {"bound": (recon - kl).mean(), "recon": recon.mean(), "kl": kl.mean()}
    return loss, {**stats, "class_loss": class_loss.detach()}


Objective = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

OBJECTIVES: dict[str, Objective] = {"elbo": elbo, "iwae": iwae, "m2": m2}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise unknown_name("--objective", name, OBJECTIVES)
    return OBJECTIVES[name]
