"""JointVAE's capacity objective (Dupont 2018, eq. 7; Burgess et al. 2018's controlled
capacity increase), ``--objective capacity``:

    loss = -E_q[log p(x|z)] + gamma |KL_z - C_z(t)| + gamma |KL_c - C_c(t)|,

with KL_z the Gaussian part's and KL_c the categorical part's KL (batch means), and C_z, C_c
rising linearly from 0 over training. The model hands the two KLs and the targets at its
step in ``Terms.extras`` (``kl_cont``, ``kl_disc``, ``capacity`` = (C_z, C_c, gamma)); only
``--model gumbel`` does. The reported bound is the plain ELBO.
"""

from __future__ import annotations

import torch

from vaelab.errors import VaelabError
from vaelab.models.terms import Terms


def capacity(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The negative capacity objective averaged over the batch (``beta`` is unused)."""
    if "capacity" not in terms.extras:
        raise VaelabError("--objective capacity: needs --model gumbel (its KL parts and "
                          "capacity targets)")  # fmt: skip
    c_z, c_c, gamma = terms.extras["capacity"].to(terms.log_px_z)
    recon = terms.log_px_z.mean(0)
    kl_z, kl_c = terms.extras["kl_cont"].mean(), terms.extras["kl_disc"].mean()
    loss = -recon.mean() + gamma * ((kl_z - c_z).abs() + (kl_c - c_c).abs())
    kl = terms.kl_per_image()
    return loss, {"bound": (recon - kl).mean(), "recon": recon.mean(), "kl": kl.mean(),
                  "kl_cont": kl_z, "kl_disc": kl_c}  # fmt: skip
