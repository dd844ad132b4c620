"""Latent variables: the posterior family q(z|x); the priors p(z) are :mod:`vaelab.latents.priors`.

A *family* turns the encoder's output ``(B, params_size(D))`` into a torch
``Distribution`` whose event is one latent vector of size D. How z is drawn from
it (``rsample`` for the reparameterization trick, ``sample`` plus a score term)
is the estimator's business, not the family's.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Beta, Distribution, Gamma, Independent, Normal


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or float64 if it is: a network's output under fp16/bf16 autocast
    becomes a distribution's parameters here, so the draw's noise, z and every log-density
    are float32 whatever the autocast dtype (the rounding stays inside the networks)."""
    return t if t.dtype == torch.float64 else t.float()


class NormalFamily:
    """Diagonal Gaussian q(z|x) = N(mu, diag(exp(logvar))), parameterised by (mu, logvar).

    The encoder predicts log-variance rather than sigma so that any real output is
    valid; the clamp keeps exp() finite when a bad step pushes it far.
    """

    support = "real"

    def params_size(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each ``(..., D)``, the log-variance clamped."""
        mu, logvar = full_precision(params).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def dist(self, params: torch.Tensor) -> Distribution:
        mu, logvar = self.split(params)
        std = torch.exp(0.5 * logvar)
        return Independent(Normal(mu, std, validate_args=False), 1, validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return full_precision(params).chunk(2, dim=-1)[0]


def _positive(raw: torch.Tensor) -> torch.Tensor:
    # exp of a clamped log: a zero encoder output gives 1, and the floor 0.05 keeps Gamma and
    # Beta draws away from float32 underflow (z ~ U^(1/alpha) for small alpha).
    return torch.exp(full_precision(raw).clamp(-3.0, 7.0))


class GammaFamily:
    """q(z|x) = prod_d Gamma(z_d; alpha_d, beta_d) (shape alpha, rate beta), z > 0.

    The encoder emits (log alpha, log beta); torch's ``rsample`` differentiates the
    draw implicitly (Figurnov et al. 2018), and the G-REP estimator its own way.
    """

    support = "positive"

    def params_size(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def dist(self, params: torch.Tensor) -> Distribution:
        alpha, beta = _positive(params).chunk(2, dim=-1)
        return Independent(Gamma(alpha, beta, validate_args=False), 1, validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        alpha, beta = _positive(params).chunk(2, dim=-1)
        return alpha / beta


class BetaFamily:
    """q(z|x) = prod_d Beta(z_d; a_d, b_d), 0 < z < 1; the encoder emits (log a, log b)."""

    support = "unit"

    def params_size(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def dist(self, params: torch.Tensor) -> Distribution:
        a, b = _positive(params).chunk(2, dim=-1)
        return Independent(Beta(a, b, validate_args=False), 1, validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        a, b = _positive(params).chunk(2, dim=-1)
        return a / (a + b)


FAMILIES: dict[str, type] = {"normal": NormalFamily, "gamma": GammaFamily, "beta": BetaFamily}


LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) for ``z (..., D)``, summed over the last dimension: ``(...)``."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * LOG_2PI)
