"""Latent variables: the posterior family q(z|x) and the prior p(z).

A *family* turns the encoder's output ``(B, params_size(D))`` into a torch
``Distribution`` whose event is one latent vector of size D. How z is drawn from
it (``rsample`` for the reparameterization trick, ``sample`` plus a score term)
is the estimator's business, not the family's. A *prior* is an ``nn.Module`` (so
it may learn parameters) with ``log_prob(z) -> (...)`` and ``sample(n)``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Beta, Distribution, Gamma, Independent, Normal, kl_divergence

from vaelab.errors import VaelabError, unknown_name


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
        mu, logvar = params.chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def dist(self, params: torch.Tensor) -> Distribution:
        mu, logvar = self.split(params)
        std = torch.exp(0.5 * logvar)
        return Independent(Normal(mu, std, validate_args=False), 1, validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params.chunk(2, dim=-1)[0]


def _positive(raw: torch.Tensor) -> torch.Tensor:
    # exp of a clamped log: a zero encoder output gives 1, and the floor 0.05 keeps Gamma and
    # Beta draws away from float32 underflow (z ~ U^(1/alpha) for small alpha).
    return torch.exp(raw.clamp(-3.0, 7.0))


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


class Prior(nn.Module):
    """p(z) over vectors of size ``latent_dim``."""

    support = "real"  # real | positive | unit: where log_prob is finite

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

    def normal_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor | None:
        """:meth:`analytic_kl` for q = N(mu, diag(exp(logvar))), given its parameters: the
        training step's path. None here; a prior with a closed form against a Gaussian
        overrides both (only :class:`StandardNormalPrior` has one: mixtures and the
        VampPrior do not, and Gamma/Beta priors cannot score a Gaussian draw)."""
        return None


LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) for ``z (..., D)``, summed over the last dimension: ``(...)``."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * LOG_2PI)


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_zero", torch.zeros(()))

    def dist(self) -> Distribution:
        zeros = self._zero.expand(self.latent_dim)
        return Independent(Normal(zeros, zeros + 1.0, validate_args=False), 1)

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


PRIORS: dict[str, type[Prior]] = {
    "normal": StandardNormalPrior, "gamma": GammaPrior, "beta": BetaPrior,
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


# Learned priors live in their own module; they subclass Prior, defined above.
from vaelab.priors import MixturePrior, VampPrior  # noqa: E402

PRIORS["mixture"] = MixturePrior
PRIORS["vamp"] = VampPrior
