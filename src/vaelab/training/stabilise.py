"""Training stabilisers shared by every model: gradient-norm skipping and free bits.

* ``--skip-threshold T`` (VDVAE's skip_threshold): a step whose global gradient norm
  ||g||_2 (before any ``--clip-grad``) exceeds T is not applied. Such spikes come from rare
  batches where a deep hierarchy's KL or likelihood explodes; one applied spike can undo
  hours of training. Skipped steps are counted in metrics.jsonl (``skipped_grad_norm``; the
  total with non-finite ones in ``skipped_steps``), and ``grad_norm_mean``/``grad_norm_max``
  over the epoch show what a good T is (``--skip-threshold inf`` records them, skips nothing).
* ``--free-bits F``: the ELBO's KL term becomes sum_g max(F, mean_batch KL_g) over latent
  groups (:func:`vaelab.objectives.free_bits_kl`), so no group is pushed below F nats; the
  training :class:`vaelab.objectives.Objective` holds F.
"""

from __future__ import annotations

import torch

from vaelab.config import Config
from vaelab.errors import VaelabError, at_least, positive
from vaelab.models import MODELS
from vaelab.objectives import check_objective
from vaelab.training.ema import ema_decay


def check_stabilisers(config: Config) -> None:
    """Values a type cannot check (before anything is created); also the model's own
    option checks (``Model.check_config``, e.g. ``--deep-groups``)."""
    t = config.train
    ema_decay(config)
    positive("--skip-threshold", t.skip_threshold)
    at_least("--free-bits", t.free_bits, 0)
    if t.free_bits > 0 and t.objective != "elbo":
        raise VaelabError(
            f"--free-bits: floors the KL term of --objective elbo; {t.objective} has none"
        )
    family = MODELS[config.model.model]  # the name is checked already
    if t.objective == "capacity" and not family.capacity_terms:
        raise VaelabError(
            f"--objective capacity: needs a model whose KL has a Gaussian and a "
            f"categorical part (--model gumbel), not --model {config.model.model}"
        )
    family.check_config(config.model)
    if family.discrete_codes and t.objective != "vq":
        raise VaelabError(f"--objective {t.objective}: --model vqvae trains with --objective vq")
    if t.objective == "vq" and not family.discrete_codes:
        raise VaelabError("--objective vq: needs --model vqvae")
    check_objective(config)  # the objective's own options (--wae-kernel, --miwae-m, ...)


def grad_norm(params: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """The global L2 norm of the gradients before clipping (0-d); clips to ``clip`` if set."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if clip is not None:
        torch.nn.utils.clip_grads_with_norm_(params, clip, norm, foreach=True)
    return norm
