"""Objectives: pure functions of a model's :class:`Terms`.

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
from dataclasses import dataclass, field

import torch

from vaelab.errors import VaelabError


@dataclass
class Terms:
    """What a model's forward pass returns; each log-density is ``(K, B)``."""

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz_x: torch.Tensor
    kl: torch.Tensor | None = None  # (B,), analytic KL(q || p) when it exists
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def log_w(self) -> torch.Tensor:
        """Log importance weights ``(K, B)``."""
        return self.log_px_z + self.log_pz - self.log_qz_x

    def kl_per_image(self) -> torch.Tensor:
        """KL per image, ``(B,)``: analytic when available, else the K-sample estimate."""
        if self.kl is not None:
            return self.kl
        return (self.log_qz_x - self.log_pz).mean(0)


def logmeanexp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(t, dim=dim) - math.log(t.shape[dim])


def elbo(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative beta-ELBO: -(E_q[log p(x|z)] - beta * KL), averaged over the batch."""
    recon = terms.log_px_z.mean(0)
    kl = terms.kl_per_image()
    loss = -(recon - beta * kl).mean()
    bound = recon - kl
    return loss, {"bound": bound.mean(), "recon": recon.mean(), "kl": kl.mean()}


def iwae(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative IWAE bound with K importance samples (``beta`` is ignored: it has no KL)."""
    bound = logmeanexp(terms.log_w(), 0)
    recon = terms.log_px_z.mean(0)
    stats = {"bound": bound.mean(), "recon": recon.mean(), "kl": terms.kl_per_image().mean()}
    return -bound.mean(), stats


Objective = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

OBJECTIVES: dict[str, Objective] = {"elbo": elbo, "iwae": iwae}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise VaelabError(f"--objective: unknown {name!r}; valid: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
