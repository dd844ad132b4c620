"""The VAE: encoder -> q(z|x), prior p(z), decoder -> p(x|z); no loss inside.

``forward(x, K)`` draws K samples z ~ q(z|x) per image through the model's gradient
estimator (:mod:`vaelab.estimators`) and returns the log-densities the objectives need
(:class:`vaelab.models.terms.Terms`; score-function estimators add ``extras``). Images
``x`` are floats in [0, 1], ``(B, C, H, W)``; latents are ``(K, B, D)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.estimators import Reparam, build_estimator
from vaelab.latents import FAMILIES, NormalFamily, standard_normal_log_prob
from vaelab.likelihoods import Likelihood, build_likelihood
from vaelab.models.terms import Terms
from vaelab.nn import build_bodies
from vaelab.priors import Prior, build_prior, resolve_prior


class VAE(nn.Module):
    """A latent-variable model p(z) p(x|z) with an amortised posterior q(z|x)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: Prior,
        likelihood: Likelihood,
        image_shape: tuple[int, int, int],
        family: NormalFamily | None = None,
        estimator: Reparam | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.prior, self.likelihood = prior, likelihood
        self.family = family or NormalFamily()
        self.estimator = estimator or Reparam()
        getattr(prior, "bind", lambda *_: None)(encoder, self.family)  # VampPrior
        self.image_shape = tuple(image_shape)
        self.latent_dim = prior.latent_dim

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> VAE:
        likelihood = build_likelihood(cfg.likelihood, image_shape, cfg.sigma, cfg.mixtures)
        prior_name = resolve_prior(cfg.posterior, cfg.prior)  # also checks cfg.posterior
        family = FAMILIES[cfg.posterior]()
        estimator = build_estimator(
            cfg.estimator, cfg.posterior, cfg.baseline_decay, cfg.learned_baseline,
            in_features=math.prod(image_shape),
        )  # fmt: skip
        encoder, decoder = build_bodies(
            cfg.arch,
            image_shape,
            cfg.hidden,
            cfg.latent_dim,
            family.params_size(cfg.latent_dim),
            likelihood.n_params,
            blocks=cfg.blocks,
        )
        prior = build_prior(
            prior_name, cfg.latent_dim, components=cfg.prior_components, image_shape=image_shape,
            a=cfg.prior_a, b=cfg.prior_b,
        )  # fmt: skip
        return cls(encoder, decoder, prior, likelihood, image_shape, family, estimator)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for a batch ``(B, C, H, W)``; its event shape is ``(D,)``."""
        return self.family.dist(self.encoder(x))

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z], ``(B, D)``: the point a latent plot shows for each image."""
        return self.family.mean(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters ``(..., n_params, C, H, W)`` for latents ``(..., D)``."""
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return params.reshape(*lead, *params.shape[1:])

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        params = self.encoder(x)
        # Normal q with the plain reparameterization trick (the estimator may be swapped,
        # e.g. by vaelab gradvar): the closed-form path.
        if type(self.estimator) is Reparam and isinstance(self.family, NormalFamily):
            return self._forward_normal(x, params, samples)
        q = self.family.dist(params)
        draw = self.estimator.draw(q, samples)
        z = draw.z
        terms = Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=lambda: self.prior.log_prob(z),
            log_qz_x=lambda: q.log_prob(z),
            kl=self.prior.analytic_kl(q),
        )
        if draw.score is not None:
            # The objective builds f with its own beta and fits the baseline to it.
            terms.extras.update(self.estimator.extras(x, draw.score))
        return terms

    def _forward_normal(self, x: torch.Tensor, params: torch.Tensor, samples: int) -> Terms:
        """The reparameterization trick written out, as in the tutorials:
        z = mu + sigma * eps, log q(z|x) = log N(eps; 0, I) - sum log sigma. The same
        values and gradients as ``q.rsample`` + ``q.log_prob``, without building
        Distribution objects every step (a measurable share of a small model's step)."""
        mu, logvar = self.family.split(params)
        eps = torch.randn((samples, *mu.shape), dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        return Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=lambda: self.prior.log_prob(z),
            log_qz_x=lambda: standard_normal_log_prob(eps) - 0.5 * logvar.sum(-1),
            kl=self.prior.normal_kl(mu, logvar),
        )

    def log_weights(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k ~ q(z|x), ``(K, B)``:
        what the importance-sampled log p(x) averages (any model whose forward gives them)."""
        return self(x, samples).log_w()

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)``: the mean of p(x|z) at z ~ p(z) (spread x temperature)."""
        z = self.prior.sample(n, temperature)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) at z = E_q[z|x]."""
        return self.likelihood.mean(self.decode(self.latent_mean(x)))
