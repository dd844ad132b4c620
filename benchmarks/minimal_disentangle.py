"""Hand-written training steps of beta-TCVAE and FactorVAE: what a user writes from the papers
in plain PyTorch, the reference for ``cli_epoch.py``'s disentanglement cases (whole
``vaelab train --objective btcvae|factorvae`` processes against these loops).

Both take the minimal loop's encoder and decoder (``cli_epoch.minimal_bodies``: vaelab's conv
layers by hand), a Bernoulli likelihood with logits and one reparameterized draw per image:

- beta-TCVAE (Chen et al. 2018, minibatch-weighted sampling): -log p(x|z) + MI + 6 TC +
  dimension-wise KL, log q(z) and log prod_d q(z_d) from the batch's B x B x D Gaussian
  log-densities (vaelab's defaults: alpha 1, beta 6, gamma 1);
- FactorVAE (Kim & Mnih 2018): the ELBO plus 35 times the discriminator's TC estimate on the
  batch's draws (D frozen for it), then D (6 x 1000 LeakyReLU 0.2, Adam 1e-4, betas 0.5, 0.9)
  stepped on (z, z permuted per dimension): vaelab's defaults, its same-batch permutation.
  The discriminator's layers and the permutation are vaelab's own builders
  (``vaelab.objectives.factorvae``: plain ``nn.Sequential`` and ``gather``), so both sides
  train the same network; the steps around them are written out here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaelab.objectives.factorvae import discriminator, permute_dims

TC_BETA, FACTOR_GAMMA = 6.0, 35.0


def _draw(enc, dec, x):
    mu, logvar = enc(x).chunk(2, dim=1)
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn_like(mu)
    logits = dec(z).reshape(x.shape)
    recon = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return mu, std, logvar, z, recon


def _normal_logpdf(z, mu, std):
    return -0.5 * ((z - mu) / std).square() - std.log() - 0.5 * math.log(2 * math.pi)


def btcvae_step(enc, dec, opt, x, n_train: int) -> None:
    """One beta-TCVAE step (module docstring); ``n_train`` is N in the MWS weights."""
    mu, std, _, z, recon = _draw(enc, dec, x)
    b = len(x)
    log_qz_x = _normal_logpdf(z, mu, std).sum(1)
    log_pz = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(1)
    mat = _normal_logpdf(z[:, None], mu[None], std[None])  # (B, B, D): z_i under q(.|x_j)
    w = torch.full((b, b), (n_train - 1) / (n_train * (b - 1)))
    w.fill_diagonal_(1.0 / n_train)
    logw = w.log()
    log_qz = torch.logsumexp(mat.sum(2) + logw, dim=1)
    log_prod = torch.logsumexp(mat + logw[..., None], dim=1).sum(1)
    mi, tc, dim_kl = log_qz_x - log_qz, log_qz - log_prod, log_prod - log_pz
    loss = (-recon + mi + TC_BETA * tc + dim_kl).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def factorvae_step(enc, dec, opt, x, disc, disc_opt) -> None:
    """One FactorVAE step (module docstring): the VAE's, then the discriminator's."""
    mu, _, logvar, z, recon = _draw(enc, dec, x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    disc.requires_grad_(False)
    logits = disc(z)
    tc = (logits[:, 0] - logits[:, 1]).mean()
    loss = (kl - recon).mean() + FACTOR_GAMMA * tc
    opt.zero_grad()
    loss.backward()
    opt.step()
    disc.requires_grad_(True)
    real = z.detach()
    both = disc(torch.cat([real, permute_dims(real)]))
    target = torch.cat([torch.zeros(len(real)), torch.ones(len(real))]).long()
    disc_loss = F.cross_entropy(both, target)
    disc_opt.zero_grad()
    disc_loss.backward()
    disc_opt.step()


def stepper(objective: str, enc, dec, opt, latent: int, n_train: int):
    """``step(x)`` of the named minimal loop (``elbo``: the tutorials' VAE)."""
    if objective == "btcvae":
        return lambda x: btcvae_step(enc, dec, opt, x, n_train)
    if objective == "factorvae":
        disc = discriminator(latent, hidden=1000, layers=6)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
        return lambda x: factorvae_step(enc, dec, opt, x, disc, disc_opt)
    raise ValueError(f"unknown minimal objective {objective!r}")
