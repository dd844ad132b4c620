"""The VQ-VAE's training objective (``--objective vq``, the default of ``--model vqvae``).

    loss = mean_b [ -log p(x_b|z_q) + vq_loss_b ]

with ``vq_loss`` = commitment * ||z_e - sg(e)||^2 (+ ||sg(z_e) - e||^2 under --codebook loss)
from ``Terms.extras`` (:class:`vaelab.models.vqvae.VQVAE`). The reported ``bound`` is
log p(x|z_q) - n log K: the bound under a uniform code prior (the paper's convention);
``kl`` is n log K, a constant, so --beta does not enter the loss (it has no gradient).
"""

from __future__ import annotations

import torch

from vaelab.errors import VaelabError
from vaelab.models.terms import Terms


def vq(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative reconstruction plus the quantiser's losses, averaged over the batch."""
    if "vq_loss" not in terms.extras:
        raise VaelabError("--objective vq: needs --model vqvae")
    recon = terms.log_px_z.mean(0)
    kl = terms.kl_per_image()
    vq_loss = terms.extras["vq_loss"]
    loss = (-recon + vq_loss).mean()
    stats = {"bound": (recon - kl).mean(), "recon": recon.mean(), "kl": kl.mean(),
             "vq_loss": vq_loss.mean(), "perplexity": terms.extras["perplexity"]}  # fmt: skip
    return loss, stats
