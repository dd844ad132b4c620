"""The likelihood contract every observation model p(x|z) follows.

Shapes: images ``x`` are ``(B, C, H, W)`` floats in [0, 1]; decoder parameters are
``(..., B, n_params, C, H, W)`` (leading ``...`` is usually the K samples);
:meth:`Likelihood.log_prob` sums over pixels and returns ``(..., B)`` in nats.
"""

from __future__ import annotations

import torch
from torch import nn


class Likelihood(nn.Module):
    """Base class; subclasses may hold parameters (a learned sigma).

    ``discrete`` marks models of 8-bit values (a probability for each of 0..255): their
    NLL in bits/dim is comparable with published figures; a density of continuous values
    is not (see README, "Colour images").
    """

    n_params: int = 1
    discrete: bool = False

    def __init__(
        self, image_shape: tuple[int, int, int], sigma: float = 1.0, mixtures: int = 10
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape ``(..., C, H, W)``: what a sample grid shows."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def sum_pixels(t: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W) -> (...)``: the sum over one image's sub-pixels."""
    return t.flatten(-3).sum(-1)
