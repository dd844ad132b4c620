"""Priors p(z): the :class:`Prior` base, N(0, I), Gamma, Beta, and the learned priors, a
mixture of Gaussians and the VampPrior (Tomczak & Welling, 2018); ``PRIORS`` is the registry.

A prior is an ``nn.Module`` (so it may learn parameters) with ``log_prob(z) -> (...)`` and
``sample(n)``. This module sits above :mod:`vaelab.latents` (the posterior families), which
it imports for ``resolve_prior``'s support check; latents imports nothing from here.

The two learned priors are mixtures of N diagonal Gaussians with weights pi_n,

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

import inspect
import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Beta, Distribution, Gamma, Independent, Normal, kl_divergence

from vaelab.errors import VaelabError, at_least, unknown_name
from vaelab.latents import FAMILIES, standard_normal_log_prob


class Prior(nn.Module):
    """p(z) over vectors of size ``latent_dim``."""

    support = "real"  # real | positive | unit: where log_prob is finite
    # (low, high) a point must be clamped into to stay in the support (None: all of R^D)
    bounds: tuple[float | None, float | None] | None = None

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def marginals(self) -> Distribution | None:
        """The per-dimension distribution (batch shape ``(D,)``) when p(z) factorizes into
        one (standard normal, Gamma, Beta); None for mixtures and learned priors."""
        return None

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for ``z`` of shape ``(..., D)``; returns ``(...)``."""
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``(n, D)`` draws; ``temperature`` scales the spread (1 is the prior itself)."""
        raise NotImplementedError

    def analytic_kl(self, q: Distribution) -> torch.Tensor | None:
        """KL(q || p) per image, ``(B,)``, when it has a closed form; else None."""
        return None

    def normal_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor | None:
        """:meth:`analytic_kl` for q = N(mu, diag(exp(logvar))), given its parameters: the
        training step's path. None here; a prior with a closed form against a Gaussian
        overrides both (only :class:`StandardNormalPrior` has one: mixtures and the
        VampPrior do not, and Gamma/Beta priors cannot score a Gaussian draw)."""
        return None


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_zero", torch.zeros(()))

    def dist(self) -> Distribution:
        zeros = self._zero.expand(self.latent_dim)
        return Independent(Normal(zeros, zeros + 1.0, validate_args=False), 1)

    def marginals(self) -> Distribution:
        return self.dist().base_dist

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, device=self._zero.device, dtype=self._zero.dtype)
        return temperature * z

    def normal_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        # The tutorials' closed form, 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2).
        return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)

    def analytic_kl(self, q: Distribution) -> torch.Tensor | None:
        if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
            # The same closed form kl_divergence computes, without materialising the
            # prior's expanded parameters.
            return self.normal_kl(q.base_dist.loc, 2.0 * q.base_dist.scale.log())
        try:
            return kl_divergence(q, self.dist())
        except NotImplementedError:
            return None


class _FixedPrior(Prior):
    """A prior with fixed parameters (a, b) per dimension: Gamma(a, b) (shape, rate) or
    Beta(a, b). KL(q || p) is analytic when q is of the same family (torch registers
    Gamma-Gamma and Beta-Beta), else None and the objectives use the sampled estimate."""

    base: type = Gamma

    def __init__(self, latent_dim: int, a: float = 1.0, b: float = 1.0) -> None:
        super().__init__(latent_dim)
        if a <= 0 or b <= 0:
            raise VaelabError(f"--prior-a/--prior-b: must be > 0, got {a}, {b}")
        self.register_buffer("a", torch.full((latent_dim,), float(a)))
        self.register_buffer("b", torch.full((latent_dim,), float(b)))

    def dist(self) -> Distribution:
        return Independent(self.base(self.a, self.b, validate_args=False), 1, validate_args=False)

    def marginals(self) -> Distribution:
        return self.dist().base_dist

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.dist().log_prob(z)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        # Temperature is a Normal-prior notion (a scale about the mean); here it scales the
        # spread about the prior mean, clamped back into the support.
        z = self.dist().sample((n,))
        mean = self.dist().mean
        return (mean + temperature * (z - mean)).clamp(*self.bounds)

    def analytic_kl(self, q: Distribution) -> torch.Tensor | None:
        try:
            return kl_divergence(q, self.dist())
        except NotImplementedError:
            return None


class GammaPrior(_FixedPrior):
    """p(z) = prod_d Gamma(z_d; a, b), shape a and rate b (``--prior-a``, ``--prior-b``)."""

    base, support, bounds = Gamma, "positive", (1e-30, None)


class BetaPrior(_FixedPrior):
    """p(z) = prod_d Beta(z_d; a, b) (``--prior-a``, ``--prior-b``); Beta(1, 1) is uniform."""

    base, support, bounds = Beta, "unit", (1e-6, 1 - 1e-6)


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
        at_least("--prior-components", components)
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
        at_least("--prior-components", components)
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
        u = self.pseudo_inputs()
        # The components' log-variances reach -9 and below: rounded to bf16 they cost up to
        # 10 nats of log p(z). N pseudo-inputs through the encoder in float32 cost little.
        with torch.autocast(u.device.type, enabled=False):
            q = family.dist(encoder(u))
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


PRIORS: dict[str, type[Prior]] = {
    "normal": StandardNormalPrior, "gamma": GammaPrior, "beta": BetaPrior,
    "mixture": MixturePrior, "vamp": VampPrior,
}  # fmt: skip


_SUPPORT_RANK = {"unit": 0, "positive": 1, "real": 2}  # (0, 1) in (0, inf) in R


def resolve_prior(posterior: str, prior: str) -> str:
    """The prior name for ``--posterior``/``--prior``: the default prior ``normal`` follows
    a Gamma or Beta posterior (Gamma(a, b), Beta(a, b)); any other choice must cover the
    posterior's support (a Gamma prior cannot score a Normal draw z < 0)."""
    if posterior not in FAMILIES:
        raise unknown_name("--posterior", posterior, FAMILIES)
    name = posterior if prior == "normal" and posterior in PRIORS else prior
    if name in PRIORS:
        need, have = FAMILIES[posterior].support, PRIORS[name].support
        if _SUPPORT_RANK[have] < _SUPPORT_RANK[need]:
            raise VaelabError(
                f"--prior {name}: its support ({have}) does not cover --posterior "
                f"{posterior}'s ({need}); use --prior {posterior} or normal"
            )
    return name


def build_prior(name: str, latent_dim: int, **options: Any) -> Prior:
    """The prior ``name``; ``options`` (e.g. ``components``, ``image_shape``) go to the
    priors whose constructor takes them and are ignored by the others."""
    if name not in PRIORS:
        raise unknown_name("--prior", name, PRIORS)
    accepted = inspect.signature(PRIORS[name]).parameters
    return PRIORS[name](latent_dim, **{k: v for k, v in options.items() if k in accepted})
