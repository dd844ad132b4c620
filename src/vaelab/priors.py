"""Learned priors: a mixture of Gaussians and the VampPrior (Tomczak & Welling, 2018).

Both are mixtures of N diagonal Gaussians with weights pi_n,

    log p(z) = logsumexp_n [ log pi_n + log N(z; mu_n, diag(sigma_n^2)) ],

so neither has a closed-form KL against q(z|x): ``analytic_kl`` is None and the
objectives use the sampled estimate log q(z|x) - log p(z). The mixture learns
(pi, mu, sigma) directly; the VampPrior's components are the posteriors at N
learned pseudo-inputs u_n, p(z) = (1/N) sum_n q(z|u_n), so it needs the model's
encoder. The encoder is *not* a submodule of the prior (the state dict would hold
its tensors twice, and safetensors refuses shared tensors): the model hands it
over with :meth:`VampPrior.bind`, and it is stored as a plain attribute.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaelab.errors import VaelabError
from vaelab.latents import Prior

# Elements of one (rows, N, D) difference block: 2^24 floats = 64 MiB in float32.
_BLOCK_ELEMENTS = 1 << 24


def diag_normal_mixture_log_prob(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, log_weights: torch.Tensor
) -> torch.Tensor:
    """log sum_n w_n N(z; mu_n, diag(exp(logvar_n))) for ``z (..., D)``, ``mu, logvar (N, D)``,
    ``log_weights (N,)`` (normalised); returns ``(...)`` in float32 or wider.

    The squared distances sum_d (z_d - mu_nd)^2 / v_nd are summed from the differences
    themselves, in blocks of rows of z so that one ``(rows, N, D)`` block stays under
    ``_BLOCK_ELEMENTS``. The expanded square z^2/v - 2 z mu/v + mu^2/v (a matmul, no
    difference tensor) cancels catastrophically wherever a component is narrow, i.e. at
    every z that matters: near a component of variance v the terms are ~mu^2/v while
    their sum is ~1, so float32 loses ~eps mu^2/v per dimension -- 0.4 nats at log v = -9,
    hundreds at -16 with |mu| ~ 2.5 and D = 32, and VampPrior components are posteriors,
    which go that narrow. For the same reason the reduction runs in float32 (or the
    inputs' wider dtype) with autocast off: bf16 keeps 8 bits of mantissa.
    """
    dtype = torch.promote_types(torch.promote_types(z.dtype, mu.dtype), torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        z, mu, logvar = z.to(dtype), mu.to(dtype), logvar.to(dtype)
        inv_std = torch.exp(-0.5 * logvar)
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        rows = max(1, _BLOCK_ELEMENTS // max(1, mu.numel()))
        sq = torch.cat(
            [((b.unsqueeze(-2) - mu) * inv_std).square().sum(-1) for b in flat.split(rows)]
        ) if flat.shape[0] else flat.new_zeros(0, mu.shape[0])  # fmt: skip
        log_norm = -0.5 * (logvar.sum(-1) + z.shape[-1] * math.log(2 * math.pi))
        log_comp = log_weights.to(dtype) + log_norm - 0.5 * sq
        return torch.logsumexp(log_comp, dim=-1).reshape(lead)


class MixturePrior(Prior):
    """p(z) = sum_n pi_n N(mu_n, diag(sigma_n^2)) with ``components`` learned Gaussians.

    Means start as N(0, 1) draws so the initial mixture is spread like the standard
    prior; log-variances start at 0 (unit spread) and weights uniform.
    """

    def __init__(self, latent_dim: int, components: int = 10) -> None:
        super().__init__(latent_dim)
        if components < 1:
            raise VaelabError(f"--prior-components: must be at least 1, got {components}")
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu (N, D), logvar (N, D), log pi (N,))."""
        return self.means, self.logvars.clamp(-10.0, 10.0), torch.log_softmax(self.logits, -1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return diag_normal_mixture_log_prob(z, *self.components())

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        mu, logvar, log_pi = self.components()
        return _sample_mixture(n, mu, logvar, log_pi, temperature)


class VampPrior(Prior):
    """p(z) = (1/N) sum_n q(z | u_n) at ``components`` learned pseudo-inputs u_n.

    u = sigmoid(a) keeps pseudo-inputs in [0, 1] like the data for an unconstrained
    parameter a; a starts as small noise around 0, i.e. grey images 0.5 +- a little
    (the model has no data at construction; the noise breaks the symmetry between
    components). Needs :meth:`bind` before use.
    """

    def __init__(
        self,
        latent_dim: int,
        components: int = 10,
        image_shape: tuple[int, int, int] = (1, 28, 28),
    ) -> None:
        super().__init__(latent_dim)
        if components < 1:
            raise VaelabError(f"--prior-components: must be at least 1, got {components}")
        self.pseudo_logits = nn.Parameter(0.1 * torch.randn(components, *image_shape))
        object.__setattr__(self, "_encode", None)

    def bind(self, encoder: nn.Module, family) -> None:
        """Use ``family.dist(encoder(u))`` as q(z|u); stored outside the module tree."""
        object.__setattr__(self, "_encode", (encoder, family))

    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs u, ``(N, C, H, W)`` in [0, 1]."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._encode is None:
            raise RuntimeError("VampPrior.bind(encoder, family) must be called before use")
        encoder, family = self._encode
        q = family.dist(encoder(self.pseudo_inputs()))
        base = q.base_dist if isinstance(q, Independent) else q
        if not isinstance(base, Normal):
            raise VaelabError("--prior vamp: needs a Gaussian posterior family")
        n = self.pseudo_logits.shape[0]
        log_pi = torch.full((n,), -math.log(n), device=base.loc.device, dtype=base.loc.dtype)
        return base.loc, 2.0 * base.scale.log(), log_pi

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return diag_normal_mixture_log_prob(z, *self.components())

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        mu, logvar, log_pi = self.components()
        return _sample_mixture(n, mu, logvar, log_pi, temperature)


def _sample_mixture(
    n: int, mu: torch.Tensor, logvar: torch.Tensor, log_pi: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``(n, D)`` draws: a component by its weight, then its Gaussian with std x temperature."""
    idx = torch.multinomial(log_pi.exp(), n, replacement=True)
    eps = torch.randn(n, mu.shape[-1], device=mu.device, dtype=mu.dtype)
    return mu[idx] + temperature * torch.exp(0.5 * logvar[idx]) * eps
