"""The VAE: encoder -> q(z|x), prior p(z), decoder -> p(x|z); no loss inside.

The model declares its distributions and nothing else: the posterior ``encode(x)`` =
q(z|x), the prior ``prior`` = p(z) and the likelihood p(x|z) (``likelihood`` with the
parameters ``decode(z)``). ``terms_at(x, z, q)`` scores the model at given latents, and
``forward(x, K)`` draws K reparameterized samples z ~ q(z|x) per image and scores them: the
log-densities the objectives reduce (:class:`vaelab.models.terms.Terms`). How z is drawn
for a gradient estimator other than reparameterization is the objective's business
(:mod:`vaelab.objectives`): it calls ``encode`` and ``terms_at`` itself. Images ``x`` are
floats in [0, 1], ``(B, C, H, W)``; latents are ``(K, B, D)``.

Its capabilities (class attributes) are those of :mod:`vaelab.models.base`'s contract.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.latents import FAMILIES, NormalFamily, standard_normal_log_prob
from vaelab.latents.priors import Prior, build_prior, resolve_prior
from vaelab.likelihoods import Likelihood
from vaelab.models.base import Model, flat_decode, likelihood_of
from vaelab.models.terms import Terms
from vaelab.nn import build_bodies


class VAE(Model):
    """A latent-variable model p(z) p(x|z) with an amortised posterior q(z|x)."""

    has_posterior = True
    has_prior = True
    any_estimator = True
    chain = "vae"
    codes_in_terms = True  # Terms.extras["z"]: the draws (WAE/SWAE objectives)
    export_refusal = None  # encoder -> q(z|x) parameters, decoder -> p(x|z) parameters

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: Prior,
        likelihood: Likelihood,
        image_shape: tuple[int, int, int],
        family: NormalFamily | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.prior, self.likelihood = prior, likelihood
        self.family = family or NormalFamily()
        getattr(prior, "bind", lambda *_: None)(encoder, self.family)  # VampPrior
        self.image_shape = tuple(image_shape)
        self.latent_dim = prior.latent_dim

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> VAE:
        likelihood = likelihood_of(cfg, image_shape)
        prior_name = resolve_prior(cfg.posterior, cfg.prior)  # also checks cfg.posterior
        family = FAMILIES[cfg.posterior]()
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
        return cls(encoder, decoder, prior, likelihood, image_shape, family)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for a batch ``(B, C, H, W)``; its event shape is ``(D,)``."""
        return self.family.dist(self.encoder(x))

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z], ``(B, D)``: the point a latent plot shows for each image."""
        return self.family.mean(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters ``(..., n_params, C, H, W)`` for latents ``(..., D)``."""
        return flat_decode(self.decoder, z)

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        """Terms at K reparameterized draws z ~ q(z|x): for a Normal q the closed-form path,
        else ``q.rsample`` (implicit reparameterization for Gamma/Beta)."""
        params = self.encoder(x)
        if isinstance(self.family, NormalFamily):
            return self._forward_normal(x, params, samples)
        q = self.family.dist(params)
        return self.terms_at(x, q.rsample((samples,)), q)

    def terms_at(self, x: torch.Tensor, z: torch.Tensor, q: Distribution) -> Terms:
        """The model scored at latents ``z`` ``(K, B, D)`` drawn from ``q`` = q(z|x) (however
        drawn): log p(x|z), log p(z) and log q(z|x) ``(K, B)``, the analytic KL ``(B,)``."""
        return Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=lambda: self.prior.log_prob(z),
            log_qz_x=lambda: q.log_prob(z),
            kl=self.prior.analytic_kl(q),
            extras={"z": z},
        )

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
            extras={"z": z},
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
