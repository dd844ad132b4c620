"""Fully connected bodies (the tutorials' 784-400-20 VAE is ``hidden=(400,)``)."""

from __future__ import annotations

import itertools
import math

from torch import nn


def _stack(widths: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for w_in, w_out in itertools.pairwise(widths):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    return layers


def mlp_encoder(
    image_shape: tuple[int, int, int],
    hidden: tuple[int, ...],
    out_features: int,
    blocks: int = 1,
) -> nn.Module:
    """``(N, C, H, W) -> (N, out_features)`` through ReLU layers of widths ``hidden``."""
    widths = [math.prod(image_shape), *hidden]
    return nn.Sequential(nn.Flatten(), *_stack(widths), nn.Linear(widths[-1], out_features))


def mlp_decoder(
    latent_dim: int,
    hidden: tuple[int, ...],
    image_shape: tuple[int, int, int],
    n_params: int,
    blocks: int = 1,
) -> nn.Module:
    """``(N, D) -> (N, n_params, C, H, W)``, mirroring the encoder's widths."""
    widths = [latent_dim, *reversed(hidden)]
    out = n_params * math.prod(image_shape)
    return nn.Sequential(
        *_stack(widths), nn.Linear(widths[-1], out), nn.Unflatten(1, (n_params, *image_shape))
    )


def mlp(widths: list[int]) -> nn.Sequential:
    """``(N, widths[0]) -> (N, widths[-1])``: ReLU hidden layers, a linear output layer."""
    return nn.Sequential(*_stack(widths[:-1]), nn.Linear(widths[-2], widths[-1]))
