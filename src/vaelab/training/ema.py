"""An exponential moving average of the weights (``--ema DECAY``), used to evaluate and sample.

After each applied optimizer step t = 1, 2, ... (skipped steps do not count)

    avg_t = d_t * avg_{t-1} + (1 - d_t) * theta_t,    d_t = min(DECAY, (1 + t) / (10 + t)),
    avg_0 = theta_0 (the initial weights),

so avg_T = (prod_t d_t) theta_0 + sum_t (1 - d_t) prod_{s>t} d_s theta_t. The ramp (1+t)/(10+t)
(TensorFlow's ``num_updates``) keeps a short run's average from being dominated by the random
initial weights; after ~10/(1-DECAY) steps d_t = DECAY. Buffers (running statistics, fixed
tensors) are copied, not averaged. VDVAE and NVAE evaluate and sample with such an average: it
smooths the noise of the last steps, which matters most for deep hierarchies.

The average lives in a copy of the model (``module``), so the evaluation code takes it as it
takes any model; the checkpoint stores it as ``ema/<name>`` tensors beside ``model/<name>``
(safetensors) and its step count in the training state; ``vaelab.load`` uses it when present.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vaelab.config import Config
from vaelab.errors import VaelabError
from vaelab.models import MODELS
from vaelab.training.checkpoint import drop_legacy

PREFIX = "ema/"


def ema_decay(config: Config) -> float:
    """The decay ``--ema`` asks for (None: the model class's ``default_ema``, 0 = off)."""
    decay = config.train.ema
    if decay is None:
        model = MODELS.get(config.model.model)  # an unknown name is check_names' to report
        return model.default_ema if model is not None else 0.0
    if not 0.0 <= decay < 1.0:
        raise VaelabError(f"--ema: a decay in [0, 1) (0: off), got {decay}")
    return decay


class WeightAverage:
    """The running average of a model's weights; see the module docstring."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0) -> None:
        self.decay, self.updates = decay, updates
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self._avg = [p for p in self.module.parameters()]
        self._src = [p for p in model.parameters()]
        self._avg_buffers = list(self.module.buffers())
        self._src_buffers = list(model.buffers())

    def rate(self) -> float:
        """1 - d_t for the current update count t."""
        t = self.updates
        return 1.0 - min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the source model's current weights in (after an applied optimizer step)."""
        self.updates += 1
        torch._foreach_lerp_(self._avg, self._src, self.rate())
        for avg, src in zip(self._avg_buffers, self._src_buffers, strict=True):
            avg.copy_(src)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averaged state dict as checkpoint tensors ``ema/<name>``."""
        return {PREFIX + k: v.detach() for k, v in self.module.state_dict().items()}

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        """Restore from checkpoint tensors (resume)."""
        self.module.load_state_dict(averaged_state(tensors) or {})
        self.updates = updates


def make_average(
    model: nn.Module, config: Config, tensors: dict[str, torch.Tensor] | None, extra: dict
) -> WeightAverage | None:
    """The run's weight average (None with ``--ema 0``): restored from a checkpoint's ``ema/``
    tensors when it has them, else started from ``model``'s current weights."""
    decay = ema_decay(config)
    if decay == 0:
        return None
    average = WeightAverage(model, decay)
    if tensors is not None and any(k.startswith(PREFIX) for k in tensors):
        average.load(tensors, int(extra.get("ema_updates", 0)))
    return average


def averaged_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The ``ema/`` weights of a checkpoint's tensors as a state dict, or None."""
    state = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    return drop_legacy(state) or None
