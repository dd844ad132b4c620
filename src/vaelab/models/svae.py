"""The hyperspherical VAE (Davidson et al. 2018): ``--model svae``.

z lives on the unit sphere S^{D-1} (D = ``--latent-dim``): q(z|x) = vMF(mu(x), kappa(x))
and p(z) = U(S^{D-1}) (:mod:`vaelab.latents.vmf`). The encoder emits D + 1 numbers: the
direction mu = raw / |raw| and kappa = softplus(raw_kappa) + 1 (the paper's +1 keeps the
posterior from collapsing onto the uniform prior early in training). The KL is the closed
form kappa A_D(kappa) + log C_D(kappa) + log |S^{D-1}|; the draw is Wood's sampler with the
implicit gradient for kappa, so ELBO and IWAE train it, and log q(z|x) is exact, so the
importance-sampled NLL is valid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError, at_least
from vaelab.latents import full_precision
from vaelab.latents.vmf import SphereUniform, VonMisesFisher
from vaelab.models.base import likelihood_of
from vaelab.models.terms import Terms
from vaelab.models.vae import VAE
from vaelab.nn import build_bodies


class SVAE(VAE):
    """A VAE on the sphere: vMF posterior, uniform prior."""

    any_estimator = False  # Wood's draw + the implicit kappa gradient are its estimator
    latent_space = "sphere"
    chain = None
    export_refusal = "encoder: the vMF parameters are (direction, concentration), not (mu, logvar)"

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        at_least("--latent-dim", cfg.latent_dim, 2)
        if cfg.posterior != "normal" or cfg.prior != "normal":
            raise VaelabError("--model svae: its posterior (vMF) and prior (uniform on the "
                              "sphere) are fixed; leave --posterior and --prior unset")  # fmt: skip

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> SVAE:
        cls.check_config(cfg)
        likelihood = likelihood_of(cfg, image_shape)
        encoder, decoder = build_bodies(
            cfg.arch, image_shape, cfg.hidden, cfg.latent_dim, cfg.latent_dim + 1,
            likelihood.n_params, blocks=cfg.blocks,
        )  # fmt: skip
        return cls(encoder, decoder, SphereUniform(cfg.latent_dim), likelihood, image_shape)

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = full_precision(self.encoder(x))
        mu = raw[..., :-1]
        mu = mu / mu.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return mu, F.softplus(raw[..., -1:]) + 1.0

    def encode(self, x: torch.Tensor) -> VonMisesFisher:
        return VonMisesFisher(*self._params(x))

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean direction mu (the mode, on the sphere) ``(B, D)``."""
        return self._params(x)[0]

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        q = self.encode(x)
        return self.terms_at(x, q.rsample((samples,)), q)

    def terms_at(self, x: torch.Tensor, z: torch.Tensor, q: Distribution) -> Terms:
        return Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=lambda: self.prior.log_prob(z),
            log_qz_x=lambda: q.log_prob(z),
            kl=self.prior.analytic_kl(q),
        )
