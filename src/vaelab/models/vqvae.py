"""VQ-VAE (van den Oord et al. 2017): an image as a small grid of discrete codes.

    z_e = E(x)  (B, D, h, w)      k = nearest code per position  (B, h, w)
    z_q = e_k   (B, D, h, w)      p(x | z_q) = the decoder's likelihood (any registry one)

The encoder is deterministic: the "posterior" q(k|x) is one-hot, so there is no posterior
distribution to sample (``has_posterior`` False). Training minimises, per image,

    -log p(x|z_q) + commitment * ||z_e - sg(e)||^2 [+ ||sg(z_e) - e||^2 with --codebook loss]

(the ``vq`` objective, :mod:`vaelab.objectives.vq`; the codebook's EMA update, restarts
and usage counts are :class:`vaelab.nn.quantize.VectorQuantizer`'s). ``forward`` returns
:class:`Terms` with K = 1, log q = 0 and log p(z) = -n log K (n = h*w codes, K codebook
entries): the uniform-prior convention of the paper (KL = log K per code), so the ELBO
that training and ``test_bound`` report is the bound under a uniform code prior,
log p(x) >= log p(x|z_q) - n log K. A learned code prior (``vaelab train-prior``,
:mod:`vaelab.training.code_prior`) lives beside the run, not in the model: the class's
``has_prior`` stays False and the tools read the prior from the run folder.

For the tools that work on a continuous latent the model exposes the pre-quantisation
vectors: ``latent_mean(x)`` is z_e flattened ``(B, D*h*w)`` (``latent_dim``), and
``decode(z)`` quantises z then decodes (so an interpolation between two z_e walks in the
continuous space and shows the images of the codes it passes through).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError, at_least, unknown_name
from vaelab.likelihoods import Likelihood
from vaelab.models.base import Model, likelihood_of
from vaelab.models.terms import Terms
from vaelab.nn.quantize import MODES, VectorQuantizer, perplexity
from vaelab.nn.vqnet import grid_decoder, grid_encoder, grid_shape


@dataclass(frozen=True)
class VQOptions:
    codes: int = 128  # vqvae: codebook entries K (--latent-dim is each code's dimension D)
    codebook: str = "ema"  # vqvae: codebook update: ema (moving averages) or loss (its own loss)
    commitment: float = 0.25  # vqvae: weight of the commitment loss ||z_e - sg(e)||^2
    code_decay: float = 0.99  # vqvae: decay of the codebook's moving averages
    restart_below: float = 0.9  # vqvae: restart codes used fewer times per batch (moving avg)
    restart_after: int = 20  # vqvae: also restart codes unassigned for this many steps (0: never)


class VQVAE(Model):
    """See the module docstring."""

    export_refusal = "encoder: a VQ-VAE's codes are a nearest-neighbour lookup, not a posterior"
    discrete_codes = True
    options = VQOptions

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, quantizer: VectorQuantizer,
        likelihood: Likelihood, image_shape: tuple[int, int, int], grid: tuple[int, int],
        commitment: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        self.likelihood, self.image_shape = likelihood, tuple(image_shape)
        self.grid, self.code_dim, self.commitment = tuple(grid), quantizer.dim, commitment
        self.num_codes = quantizer.codes
        self.latent_dim = quantizer.dim * grid[0] * grid[1]

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        o = cls.options_of(cfg)
        at_least("--codes", o.codes, 2)
        if o.codebook not in MODES:
            raise unknown_name("--codebook", o.codebook, MODES)
        if o.commitment < 0:
            raise VaelabError(f"--commitment {o.commitment}: expected a weight >= 0")
        if not 0.0 <= o.code_decay < 1.0:
            raise VaelabError(f"--code-decay {o.code_decay}: expected a value in [0, 1)")
        if o.restart_below < 0:
            raise VaelabError(f"--restart-below {o.restart_below}: expected >= 0 (0: never)")
        at_least("--restart-after", o.restart_after, 0)
        if cfg.arch not in ("conv", "resnet"):
            raise VaelabError(f"--model vqvae: needs --arch conv or resnet (got {cfg.arch})")

    @classmethod
    def describe(cls, cfg: ModelConfig) -> str:
        o = cls.options_of(cfg)
        return f"vqvae {cfg.arch} {o.codes} codes of dim {cfg.latent_dim} ({o.codebook})"

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> VQVAE:
        o = cls.options_of(cfg)
        likelihood = likelihood_of(cfg, image_shape)
        hidden, every = tuple(cfg.hidden), cfg.arch == "resnet"
        enc = grid_encoder(image_shape, hidden, cfg.latent_dim, cfg.blocks, every)
        dec = grid_decoder(cfg.latent_dim, hidden, image_shape, likelihood.n_params,
                           cfg.blocks, every)  # fmt: skip
        vq = VectorQuantizer(o.codes, cfg.latent_dim, o.codebook, o.code_decay,
                             restart_below=o.restart_below,
                             restart_after=o.restart_after)  # fmt: skip
        grid = grid_shape(image_shape, len(hidden))
        return cls(enc, dec, vq, likelihood, image_shape, grid, o.commitment)

    # -- codes -------------------------------------------------------------------------
    def encode_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous encoder output z_e ``(B, D, h, w)``."""
        return self.encoder(x)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code grid of images ``x``: int64 ``(B, h, w)``."""
        z = self.encoder(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        return self.quantizer.nearest(flat).view(len(x), *self.grid)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters ``(B, n_params, C, H, W)`` of code grids ``(B, h, w)``."""
        return self.decoder(self.quantizer.lookup(codes))

    def uniform_kl(self) -> float:
        """n log K nats: the KL of a one-hot q(k|x) from a uniform prior over the grid."""
        return self.grid[0] * self.grid[1] * math.log(self.num_codes)

    def epoch_stats(self) -> dict[str, float]:
        """Codebook health of the training assignments since the last call: codes used,
        their share of K, the perplexity exp(H) of the code frequencies, total restarts."""
        counts = self.quantizer.take_epoch_counts()
        used = int((counts > 0).sum())
        return {"codes_used": used, "code_usage": used / self.num_codes,
                "code_perplexity": perplexity(counts),
                "code_restarts": int(self.quantizer.restarts)}  # fmt: skip

    # -- the contract --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        """K = 1 whatever ``samples`` (the encoder is deterministic). ``extras["vq_loss"]``
        ``(B,)``: commitment * ||z_e - sg(e)||^2 (+ the codebook loss in ``loss`` mode)."""
        z_q, codes, commit, cb_loss = self.quantizer(self.encoder(x))
        log_px_z = self.likelihood.log_prob(x, self.decoder(z_q)[None])
        vq_loss = self.commitment * commit
        if self.quantizer.mode == "loss":
            vq_loss = vq_loss + cb_loss
        kl = torch.full_like(log_px_z[0], self.uniform_kl())
        counts = torch.bincount(codes.flatten(), minlength=self.num_codes)
        p = counts.float() / counts.sum()
        batch_ppl = torch.exp(-(p * p.clamp(min=1e-12).log()).sum())
        extras = {"vq_loss": vq_loss, "perplexity": batch_ppl.detach()}
        return Terms(log_px_z=log_px_z, log_pz=-kl[None], log_qz_x=torch.zeros_like(log_px_z),
                     kl=kl, extras=extras)  # fmt: skip

    def log_weights(self, x: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """log p(x|z_q) - n log K ``(1, B)``: the uniform-prior bound (not importance weights)."""
        return self(x).log_w()

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """z_e flattened ``(B, D*h*w)``: the continuous pre-quantisation vectors."""
        return self.encoder(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise pre-quantisation vectors ``(..., D*h*w)``, then decode:
        ``(..., n_params, C, H, W)``."""
        lead = z.shape[:-1]
        grid = z.reshape(-1, self.code_dim, *self.grid)
        flat = grid.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        codes = self.quantizer.nearest(flat).view(len(grid), *self.grid)
        params = self.decode_codes(codes)
        return params.reshape(*lead, *params.shape[1:])

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z_q) at the image's own codes."""
        return self.likelihood.mean(self.decode_codes(self.codes(x)))
