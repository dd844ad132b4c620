"""Convolutional bodies that keep a spatial grid: the VQ-VAE's encoder and decoder.

The encoder maps ``(N, C, H, W)`` to a grid of D-dim vectors ``(N, D, h, w)``: per width in
``hidden`` a stride-2 3x3 convolution (each halves the sides, rounding up: 28 -> 14 -> 7,
32 -> 16 -> 8), ``blocks`` residual blocks (:class:`vaelab.nn.resnet.ResBlock`) at the
grid's resolution (with ``every_level`` also after each stride-2 layer: ``--arch resnet``),
then SiLU and a 1x1 convolution to D. The decoder mirrors it: a 3x3 convolution from D,
the blocks, stride-2 transposed convolutions up (``output_padding`` lands exactly on odd
sides), and a 3x3 convolution to ``n_params * C`` channels: ``(N, n_params, C, H, W)``.
"""

from __future__ import annotations

from torch import nn

from vaelab.nn.conv import _sides
from vaelab.nn.resnet import ResBlock


def grid_shape(image_shape: tuple[int, int, int], levels: int) -> tuple[int, int]:
    """(h, w) of the code grid after ``levels`` stride-2 layers."""
    _, height, width = image_shape
    return _sides(height, levels)[-1], _sides(width, levels)[-1]


def grid_encoder(
    image_shape: tuple[int, int, int], hidden: tuple[int, ...], dim: int, blocks: int = 2,
    every_level: bool = False,
) -> nn.Module:  # fmt: skip
    """``(N, C, H, W) -> (N, dim, h, w)``; see the module docstring."""
    c_in = image_shape[0]
    layers: list[nn.Module] = []
    for i, c_out in enumerate(hidden):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        if every_level and i < len(hidden) - 1:
            layers += [ResBlock(c_out) for _ in range(blocks)]
        c_in = c_out
    layers += [ResBlock(c_in) for _ in range(blocks)]
    layers += [nn.SiLU(), nn.Conv2d(c_in, dim, 1)]
    return nn.Sequential(*layers)


def grid_decoder(
    dim: int, hidden: tuple[int, ...], image_shape: tuple[int, int, int], n_params: int,
    blocks: int = 2, every_level: bool = False,
) -> nn.Module:  # fmt: skip
    """``(N, dim, h, w) -> (N, n_params, C, H, W)``; the encoder mirrored."""
    channels, height, width = image_shape
    hs, ws = _sides(height, len(hidden)), _sides(width, len(hidden))
    rev = list(reversed(hidden))
    layers: list[nn.Module] = [nn.Conv2d(dim, rev[0], 3, padding=1)]
    layers += [ResBlock(rev[0]) for _ in range(blocks)]
    for i, c_in in enumerate(rev):
        c_out = rev[i + 1] if i + 1 < len(rev) else rev[-1]
        h_in, w_in = hs[-1 - i], ws[-1 - i]
        pad = (hs[-2 - i] - (2 * h_in - 1), ws[-2 - i] - (2 * w_in - 1))
        layers += [
            nn.ReLU(),
            nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad),
        ]
        if every_level and i + 1 < len(rev):
            layers += [ResBlock(c_out) for _ in range(blocks)]
    layers += [
        nn.ReLU(),
        nn.Conv2d(rev[-1], n_params * channels, 3, padding=1),
        nn.Unflatten(1, (n_params, channels)),
    ]
    return nn.Sequential(*layers)
