"""Categorical latents relaxed by the Gumbel-softmax (Jang et al. 2017; the Concrete of
Maddison et al. 2017), alone or beside Gaussian ones (JointVAE, Dupont 2018).

A latent code is ``[z_c (D_c real numbers), y_1, ..., y_V (V one-hot groups of C)]``.
Training draws relaxed groups y = softmax((log pi + g) / tau), g ~ Gumbel(0, 1), which tend
to one-hot draws of Categorical(pi) as tau -> 0; tau follows Jang's annealing schedule
tau(step) = max(tau_min, tau_0 exp(-rate * step)). Evaluation draws exact one-hot groups, so
the test bound and the importance-sampled NLL are those of the discrete model:

    KL(q(y|x) || U(C)) = sum_c pi_c log(C pi_c)                 (per group, closed form)
    log w = log p(x|z_c, y) + log N(z_c; 0, I) - V log C - log q(z_c|x) - sum_v log pi_{v, y_v}.

With relaxed draws the log-densities are the Concrete densities of posterior and prior at
the same tau (Maddison et al.), which is what IWAE with the relaxation optimises.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, RelaxedOneHotCategorical, constraints

from vaelab.latents import standard_normal_log_prob
from vaelab.latents.priors import Prior


def temperature_at(step: int | torch.Tensor, tau_start: float, tau_min: float, rate: float):
    """Jang et al.'s schedule: tau = max(tau_min, tau_start * exp(-rate * step))."""
    return max(tau_min, tau_start * math.exp(-rate * float(step)))


def gumbel_softmax(logits: torch.Tensor, tau: float, n: int) -> torch.Tensor:
    """``n`` relaxed one-hot draws ``(n, *logits.shape)``: softmax((logits + g) / tau)."""
    u = torch.rand((n, *logits.shape), dtype=logits.dtype, device=logits.device)
    g = -torch.log((-torch.log(u.clamp(1e-20, 1.0))).clamp_min(1e-20))
    return F.softmax((logits + g) / tau, dim=-1)


def categorical_kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(Cat(softmax(logits)) || U(C)) summed over the groups: logits ``(B, V, C)`` -> ``(B,)``."""
    log_pi = F.log_softmax(logits, -1)
    return (log_pi.exp() * (log_pi + math.log(logits.shape[-1]))).sum((-2, -1))


class JointPosterior(Distribution):
    """q(z_c, y|x) = N(mu, sigma^2) x prod_v Cat(pi_v): relaxed at temperature ``tau`` when
    ``relaxed``, else exact one-hot. ``mu``/``logvar`` ``(B, D_c)`` (D_c may be 0), ``logits``
    ``(B, V, C)``; event ``(D_c + V C,)``."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, mu, logvar, logits, tau: float, relaxed: bool) -> None:
        self.mu, self.logvar, self.logits, self.tau, self.relaxed = mu, logvar, logits, tau, relaxed
        self.dc = mu.shape[-1]
        event = self.dc + logits.shape[-2] * logits.shape[-1]
        super().__init__(mu.shape[:-1], torch.Size([event]), validate_args=False)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        z = self.mu + torch.exp(0.5 * self.logvar) * torch.randn(
            (n, *self.mu.shape), dtype=self.mu.dtype, device=self.mu.device
        )
        if self.relaxed:
            y = gumbel_softmax(self.logits, self.tau, n)
        else:
            idx = torch.distributions.Categorical(logits=self.logits).sample((n,))
            y = F.one_hot(idx, self.logits.shape[-1]).to(self.mu.dtype)
        out = torch.cat([z, y.flatten(-2)], -1)
        return out.reshape(*sample_shape, *out.shape[1:])

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def split(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return value[..., : self.dc], value[..., self.dc :].unflatten(-1, self.logits.shape[-2:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z, y = self.split(value)
        std = torch.exp(0.5 * self.logvar)
        log_q = standard_normal_log_prob((z - self.mu) / std) - 0.5 * self.logvar.sum(-1)
        if self.relaxed:
            cat = RelaxedOneHotCategorical(
                torch.tensor(self.tau, dtype=y.dtype), logits=self.logits, validate_args=False
            )
            return log_q + cat.log_prob(y.clamp_min(1e-30)).sum(-1)
        return log_q + (F.log_softmax(self.logits, -1) * y).sum((-2, -1))

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([self.mu, F.softmax(self.logits, -1).flatten(-2)], -1)

    @property
    def stddev(self) -> torch.Tensor:
        p = F.softmax(self.logits, -1)
        return torch.cat([torch.exp(0.5 * self.logvar), (p * (1 - p)).sqrt().flatten(-2)], -1)


class JointPrior(Prior):
    """p(z_c, y) = N(0, I_{D_c}) x prod_v U(C): ``log_prob`` of one-hot groups; with
    ``tau`` the Concrete prior (uniform logits) at that temperature for relaxed ones."""

    def __init__(self, continuous: int, groups: int, categories: int) -> None:
        super().__init__(continuous + groups * categories)
        self.dc, self.groups, self.categories = continuous, groups, categories
        self.register_buffer("_zero", torch.zeros(()))

    def log_prob(self, z: torch.Tensor, tau: float | None = None) -> torch.Tensor:
        zc, y = z[..., : self.dc], z[..., self.dc :].unflatten(-1, (self.groups, self.categories))
        log_p = standard_normal_log_prob(zc)
        if tau is None:
            return log_p - self.groups * math.log(self.categories)
        cat = RelaxedOneHotCategorical(
            torch.tensor(tau, dtype=z.dtype), logits=torch.zeros_like(y[..., :1, :]).expand_as(y),
            validate_args=False,
        )  # fmt: skip
        return log_p + cat.log_prob(y.clamp_min(1e-30)).sum(-1)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Continuous part ~ N(0, temperature^2 I); each group a uniform one-hot draw."""
        zc = temperature * torch.randn(n, self.dc, device=self._zero.device)
        idx = torch.randint(self.categories, (n, self.groups), device=self._zero.device)
        y = F.one_hot(idx, self.categories).to(zc.dtype).flatten(-2)
        return torch.cat([zc, y], -1).to(self._zero.dtype)
