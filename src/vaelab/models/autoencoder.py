"""The plain, deterministic autoencoder: the same bodies, a point code z = f(x).

It is trained on reconstruction alone (``log_px_z``; the KL terms are zero), and
has no distribution over z to sample from: that is the point of comparing it with
the VAE, whose prior fills the latent space.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError
from vaelab.latents.priors import build_prior
from vaelab.likelihoods import build_likelihood
from vaelab.models.terms import Terms
from vaelab.models.vae import VAE
from vaelab.nn import build_bodies


class Autoencoder(VAE):
    """x -> z = encoder(x) -> p(x|z); ``forward`` returns K = 1 and zero KL."""

    has_posterior = False  # a point code, no q(z|x)
    has_prior = False  # nothing to sample from; its latent space has holes
    any_estimator = False

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> Autoencoder:
        likelihood = build_likelihood(cfg.likelihood, image_shape, cfg.sigma, cfg.mixtures)
        encoder, decoder = build_bodies(
            cfg.arch, image_shape, cfg.hidden, cfg.latent_dim, cfg.latent_dim, likelihood.n_params,
            blocks=cfg.blocks,
        )  # fmt: skip
        return cls(
            encoder, decoder, build_prior(cfg.prior, cfg.latent_dim), likelihood, image_shape
        )

    def encode(self, x: torch.Tensor) -> Distribution:
        raise VaelabError("a plain autoencoder has no posterior q(z|x); train with --model vae")

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        z = self.encoder(x).unsqueeze(0)
        log_px_z = self.likelihood.log_prob(x, self.decode(z))
        zeros = torch.zeros_like(log_px_z)
        return Terms(log_px_z=log_px_z, log_pz=zeros, log_qz_x=zeros, kl=zeros[0])

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        raise VaelabError(
            "a plain autoencoder has no prior to sample from (its latent space has holes); "
            "train with --model vae"
        )
