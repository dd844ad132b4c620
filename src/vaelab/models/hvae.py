"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov 2016, section 5).

Generative model and inference network, all conditionals diagonal Gaussians except
p(z2) (the configured prior) and p(x|z1) (the configured likelihood):

    p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1)        q(z1, z2 | x) = q(z1|x) q(z2|z1)

so with z1 ~ q(z1|x), z2 ~ q(z2|z1) (reparameterized) the log importance weight is

    log w = log p(x|z1) + [log p(z1|z2) + log p(z2)] - [log q(z1|x) + log q(z2|z1)],

and ``forward`` returns exactly these three groups as :class:`Terms` (no analytic KL:
the ELBO uses the sampled estimate, IWAE the weights). ``--latent-dim`` is the size of
the top layer z2, the one the prior models; ``--z1-dim`` the lower one. The exploring
tools see z2 as "the" latent: ``encode(x)`` is q(z2 | z1 = E[z1|x]) and ``decode(z2)``
decodes z1 = E[z1|z2]; ``sample`` draws z2, then z1, then shows the mean of p(x|z1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError, all_at_least, at_least
from vaelab.latents import NormalFamily, standard_normal_log_prob
from vaelab.latents.priors import Prior, build_prior, resolve_prior
from vaelab.likelihoods import Likelihood
from vaelab.models.base import likelihood_of
from vaelab.models.terms import Terms
from vaelab.models.vae import VAE
from vaelab.nn import build_bodies
from vaelab.nn.mlp import mlp


def _gaussian_draw(params: torch.Tensor, family: NormalFamily) -> tuple[torch.Tensor, torch.Tensor]:
    """z = mu + sigma * eps and log N(z; mu, sigma^2) = log N(eps; 0, I) - sum log sigma
    (as in :meth:`VAE._forward_normal`), summed over the last dimension."""
    mu, logvar = family.split(params)
    eps = torch.randn_like(mu)
    z = mu + torch.exp(0.5 * logvar) * eps
    return z, standard_normal_log_prob(eps) - 0.5 * logvar.sum(-1)


def _gaussian_log_prob(z: torch.Tensor, params: torch.Tensor, family: NormalFamily) -> torch.Tensor:
    """log N(z; mu, sigma^2) summed over the last dimension, the same way as the draw."""
    mu, logvar = family.split(params)
    return standard_normal_log_prob((z - mu) * torch.exp(-0.5 * logvar)) - 0.5 * logvar.sum(-1)


@dataclass(frozen=True)
class HVAEOptions:
    z1_dim: int = 64  # hvae: size of the lower stochastic layer z1 (z2 is --latent-dim)
    z1_hidden: tuple[int, ...] = (128,)  # hvae: widths of the MLPs between z1 and z2


class HVAE(VAE):
    """Two stochastic layers; see the module docstring. Gaussian q with reparameterization."""

    any_estimator = False  # two sample sites, both reparameterized inside forward
    chain = "hvae"
    export_refusal = (
        "decoder: HVAE.decode is not one network from z to the likelihood's parameters (it "
        "passes through the lower stochastic layer z1); nor is its posterior one network's"
    )
    options = HVAEOptions

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        up: nn.Module,
        down: nn.Module,
        prior: Prior,
        likelihood: Likelihood,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__(encoder, decoder, prior, likelihood, image_shape)
        self.up, self.down = up, down  # z1 -> q(z2|z1) parameters; z2 -> p(z1|z2) parameters
        # A VampPrior's components are q(z2 | pseudo-input): the top of the encoder.
        getattr(prior, "bind", lambda *_: None)(self._top_params, self.family)

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if cfg.posterior != "normal":
            raise VaelabError(f"--model hvae: needs --posterior normal (got {cfg.posterior})")
        options = cls.options_of(cfg)
        at_least("--z1-dim", options.z1_dim)
        all_at_least("--z1-hidden", options.z1_hidden)

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> HVAE:
        cls.check_config(cfg)
        likelihood = likelihood_of(cfg, image_shape)
        options = cls.options_of(cfg)
        d1, d2, widths = options.z1_dim, cfg.latent_dim, list(options.z1_hidden)
        encoder, decoder = build_bodies(
            cfg.arch, image_shape, cfg.hidden, d1, 2 * d1, likelihood.n_params, blocks=cfg.blocks
        )
        up = mlp([d1, *widths, 2 * d2])
        down = mlp([d2, *reversed(widths), 2 * d1])
        prior = build_prior(
            resolve_prior("normal", cfg.prior), d2, components=cfg.prior_components,
            image_shape=image_shape,
        )  # fmt: skip
        return cls(encoder, decoder, up, down, prior, likelihood, image_shape)

    def _flat(self, net: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """``net`` over the last dimension of ``z (..., D)``, keeping the leading ones."""
        out = net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*z.shape[:-1], out.shape[-1])

    def _top_params(self, x: torch.Tensor) -> torch.Tensor:
        """q(z2 | z1 = E[z1|x]) parameters, ``(B, 2 * D2)``."""
        return self.up(self.family.mean(self.encoder(x)))

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        q1 = self.encoder(x).expand(samples, -1, -1)  # (K, B, 2*D1): one draw per sample
        z1, log_q1 = _gaussian_draw(q1, self.family)
        z2, log_q2 = _gaussian_draw(self._flat(self.up, z1), self.family)
        log_p1 = _gaussian_log_prob(z1, self._flat(self.down, z2), self.family)
        return Terms(
            log_px_z=self.likelihood.log_prob(x, super().decode(z1)),
            log_pz=log_p1 + self.prior.log_prob(z2),
            log_qz_x=log_q1 + log_q2,
        )

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z2 | z1 = E[z1|x]): the top latent as the exploring tools use it."""
        return self.family.dist(self._top_params(x))

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.family.mean(self._top_params(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for top latents ``z (..., D2)``, through z1 = E[z1|z2]."""
        return super().decode(self.family.mean(self._flat(self.down, z)))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Ancestral: z2 ~ p(z2), z1 ~ p(z1|z2) (both spreads x temperature), mean of p(x|z1)."""
        z2 = self.prior.sample(n, temperature)
        mu, logvar = self.family.split(self.down(z2))
        z1 = mu + temperature * torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.likelihood.mean(super().decode(z1))
