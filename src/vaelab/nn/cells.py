"""Residual cells and the bottom-up encoder of a deep hierarchical VAE (VDVAE, Child 2021).

A *bottleneck* is a pre-activation stack act -> 1x1 conv -> act -> 3x3 conv -> act -> 1x1
conv (``c_in -> c_mid -> c_mid -> c_out``); a :class:`ResidualCell` adds one to its input,
h + f(h), at a fixed width. Nothing here knows about distributions. Resolutions: level 0 is
the image's side s_0, level r has side s_r = ceil(s_{r-1} / 2) (2x2 average pooling with
``ceil_mode``; an odd side keeps its last row and column), so any image size works.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Activation = Callable[[], nn.Module]


def bottleneck(c_in: int, c_mid: int, c_out: int, act: Activation = nn.GELU) -> nn.Sequential:
    """``(N, c_in, h, w) -> (N, c_out, h, w)``: act, 1x1, act, 3x3, act, 1x1 convolutions."""
    return nn.Sequential(
        act(), nn.Conv2d(c_in, c_mid, 1),
        act(), nn.Conv2d(c_mid, c_mid, 3, padding=1),
        act(), nn.Conv2d(c_mid, c_out, 1),
    )  # fmt: skip


class ResidualCell(nn.Module):
    """h + f(h), f a :func:`bottleneck` of half the width. The last convolution's initial
    weights are multiplied by ``scale`` (VDVAE uses 1/sqrt(number of cells)) so that the sum
    of many cells starts near the identity and the activations do not grow with depth."""

    def __init__(self, width: int, act: Activation = nn.GELU, scale: float = 1.0) -> None:
        super().__init__()
        self.f = bottleneck(width, max(1, width // 2), width, act)
        with torch.no_grad():
            self.f[-1].weight.mul_(scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.f(h)


def sides(size: int, levels: int) -> list[int]:
    """The side of each resolution level: ``size``, then halved (rounded up) per level."""
    out = [size]
    for _ in range(levels - 1):
        out.append((out[-1] + 1) // 2)
    return out


def project(c_in: int, c_out: int) -> nn.Module:
    """A 1x1 convolution between widths, or the identity when they agree."""
    return nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)


class BottomUp(nn.Module):
    """The encoder: image ``(N, C, H, W)`` -> one activation per resolution level, finest
    first, ``[(N, widths[r], H_r, W_r)]``. Each level runs ``blocks`` residual cells; the
    posterior of every latent group at level r reads level r's activation."""

    def __init__(
        self, channels: int, widths: tuple[int, ...], blocks: int, act: Activation = nn.GELU
    ) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(max(1, blocks * len(widths)))
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList(
            nn.Sequential(*(ResidualCell(w, act, scale) for _ in range(blocks))) for w in widths
        )
        self.down = nn.ModuleList(project(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        acts = []
        for r, level in enumerate(self.levels):
            if r:
                h = self.down[r - 1](F.avg_pool2d(h, 2, ceil_mode=True))
            h = level(h)
            acts.append(h)
        return acts


class Up(nn.Module):
    """Nearest-neighbour upsampling to a side (``side`` x ``side`` or the image's H x W),
    then a 1x1 convolution to the finer level's width."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.proj = project(c_in, c_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(F.interpolate(h, size=self.size, mode="nearest"))
