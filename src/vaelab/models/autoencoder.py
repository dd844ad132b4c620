"""The plain, deterministic autoencoder: the same bodies, a point code z = f(x).

It is trained on reconstruction alone (``log_px_z``; the KL terms are zero), and has no
distribution over z: no ``encode`` (q(z|x)) and no ``sample`` (p(z)), so it is not a VAE
subclass that refuses them; its capabilities say so (``has_posterior``/``has_prior``
False). That is the point of comparing it with the VAE, whose prior fills the latent space.
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.likelihoods import Likelihood
from vaelab.models.base import Model, flat_decode, likelihood_of
from vaelab.models.terms import Terms
from vaelab.nn import build_bodies


class Autoencoder(Model):
    """x -> z = encoder(x) -> p(x|z); ``forward`` returns K = 1 and zero KL, and the code in
    ``Terms.extras["z"]`` (what --objective wae/swae/rae regularise)."""

    export_refusal = None  # encoder -> the code z, decoder -> p(x|z) parameters
    codes_in_terms = True
    likelihood_bound = (
        "no likelihood bound: a deterministic autoencoder defines no q(z|x) and no p(z), "
        "so there is no ELBO or importance-sampled NLL"
    )

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood,
        image_shape: tuple[int, int, int], latent_dim: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> Autoencoder:
        likelihood = likelihood_of(cfg, image_shape)
        encoder, decoder = build_bodies(
            cfg.arch, image_shape, cfg.hidden, cfg.latent_dim, cfg.latent_dim, likelihood.n_params,
            blocks=cfg.blocks,
        )  # fmt: skip
        return cls(encoder, decoder, likelihood, image_shape, cfg.latent_dim)

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The code z = f(x), ``(B, D)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters ``(..., n_params, C, H, W)`` for codes ``(..., D)``."""
        return flat_decode(self.decoder, z)

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        z = self.encoder(x).unsqueeze(0)
        log_px_z = self.likelihood.log_prob(x, self.decode(z))
        zeros = torch.zeros_like(log_px_z)
        return Terms(log_px_z=log_px_z, log_pz=zeros, log_qz_x=zeros, kl=zeros[0],
                     extras={"z": z})  # fmt: skip

    def log_weights(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """log p(x|z) at the code (no prior, no posterior: not a bound on log p(x))."""
        return self(x, samples).log_w()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) at z = f(x)."""
        return self.likelihood.mean(self.decode(self.latent_mean(x)))
