"""Latent variables: the posterior family q(z|x) and the prior p(z).

A *family* turns the encoder's output ``(B, params_size(D))`` into a torch
``Distribution`` whose event is one latent vector of size D. How z is drawn from
it (``rsample`` for the reparameterization trick, ``sample`` plus a score term)
is the estimator's business, not the family's. A *prior* is an ``nn.Module`` (so
it may learn parameters) with ``log_prob(z) -> (...)`` and ``sample(n)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from vaelab.errors import VaelabError


class NormalFamily:
    """Diagonal Gaussian q(z|x) = N(mu, diag(exp(logvar))), parameterised by (mu, logvar).

    The encoder predicts log-variance rather than sigma so that any real output is
    valid; the clamp keeps exp() finite when a bad step pushes it far.
    """

    def params_size(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def dist(self, params: torch.Tensor) -> Distribution:
        mu, logvar = params.chunk(2, dim=-1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        return Independent(Normal(mu, std, validate_args=False), 1, validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params.chunk(2, dim=-1)[0]


FAMILIES: dict[str, type] = {"normal": NormalFamily}


class Prior(nn.Module):
    """p(z) over vectors of size ``latent_dim``."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for ``z`` of shape ``(..., D)``; returns ``(...)``."""
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``(n, D)`` draws; ``temperature`` scales the spread (1 is the prior itself)."""
        raise NotImplementedError

    def analytic_kl(self, q: Distribution) -> torch.Tensor | None:
        """KL(q || p) per image, ``(B,)``, when it has a closed form; else None."""
        return None


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_zero", torch.zeros(()))

    def dist(self) -> Distribution:
        zeros = self._zero.expand(self.latent_dim)
        return Independent(Normal(zeros, zeros + 1.0, validate_args=False), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.dist().log_prob(z)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, device=self._zero.device, dtype=self._zero.dtype)
        return temperature * z

    def analytic_kl(self, q: Distribution) -> torch.Tensor | None:
        if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
            # 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2): the closed form kl_divergence
            # also computes, without materialising the prior's expanded parameters.
            mu, std = q.base_dist.loc, q.base_dist.scale
            return 0.5 * (mu.square() + std.square() - 1.0 - 2.0 * std.log()).sum(-1)
        try:
            return kl_divergence(q, self.dist())
        except NotImplementedError:
            return None


PRIORS: dict[str, type[Prior]] = {"normal": StandardNormalPrior}


def build_prior(name: str, latent_dim: int) -> Prior:
    if name not in PRIORS:
        raise VaelabError(f"--prior: unknown {name!r}; valid: {', '.join(PRIORS)}")
    return PRIORS[name](latent_dim)
