"""The test-set bound training reports every epoch (and evaluation reuses): ELBO and terms.

It lives in the training layer because the loop (and data parallel training, which
all-reduces it) calls it; :mod:`vaelab.evaluation.nll` builds the importance-sampled NLL on it.
"""

from __future__ import annotations

import torch

from vaelab.data.prepare import to_unit


@torch.inference_mode()
def test_bound(
    model: torch.nn.Module, x: torch.Tensor, samples: int = 1, batch_size: int = 1000
) -> dict[str, float]:
    """Mean ELBO = E_q log p(x|z) - KL(q(z|x) || p(z)), its two terms, over uint8 images ``x``
    ``(N, C, H, W)`` in nats per image; K = ``samples`` draws per image for E_q, the KL
    analytic where the prior has one (``Terms.kl_per_image``)."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    totals = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        terms = model(to_unit(xb.to(param.device), param.dtype), samples)
        recon = terms.log_px_z.mean(0)
        kl = terms.kl_per_image()
        totals += torch.stack([(recon - kl).sum(), recon.sum(), kl.sum()]).double().cpu()
    model.train(was_training)
    elbo, recon, kl = (totals / len(x)).tolist()
    return {"elbo": elbo, "recon": recon, "kl": kl}
