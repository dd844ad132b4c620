"""Schedules as pure functions of the training step: the learning rate and the KL weight.

Both read only the config and the global step s (0-based: the step about to run) with
E = steps per epoch, so nothing about them is stored: a resumed run recomputes them from its
step, and a resume with a new ``--lr``/``--epochs``/``--schedule`` trains on as if the run
had been started with those values. With e = s // E the epoch that step s belongs to,

    none     lr_s = lr
    cosine   lr_s = lr (1 + cos(pi e / T)) / 2,   T = max(1, epochs)    (torch CosineAnnealingLR)
    step     lr_s = lr 0.5^(e // P),              P = max(1, epochs // 3) (torch StepLR, gamma 0.5)
    beta_s = beta min(1, s / (warmup_epochs E))    (beta itself without a warm-up)

The learning rate changes once per epoch, as torch's epoch-stepped schedulers do (tests check
the values against them step by step); the KL weight rises every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from vaelab.config import Config

# --schedule name -> (lr, epoch e, epochs) -> the learning rate of epoch e
LR_SCHEDULES: dict[str, Callable[[float, int, int], float]] = {
    "none": lambda lr, e, epochs: lr,
    "cosine": lambda lr, e, epochs: lr * (1 + math.cos(math.pi * e / max(1, epochs))) / 2,
    "step": lambda lr, e, epochs: lr * 0.5 ** (e // max(1, epochs // 3)),
}


def lr_at(config: Config, step: int, steps_per_epoch: int) -> float:
    """The learning rate of global step ``step`` (see the module docstring)."""
    t = config.train
    return LR_SCHEDULES[t.schedule](t.lr, step // steps_per_epoch, t.epochs)


def beta_at(config: Config, step: int, steps_per_epoch: int) -> float:
    """KL weight: rises linearly from 0 to ``beta`` over ``warmup_epochs``."""
    t = config.train
    if t.warmup_epochs <= 0:
        return t.beta
    return t.beta * min(1.0, step / (t.warmup_epochs * steps_per_epoch))
