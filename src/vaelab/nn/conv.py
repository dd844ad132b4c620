"""Convolutional bodies: stride-2 convolutions down, transposed convolutions up.

``hidden`` gives the channels of each stride-2 layer. Any image size works: each
3x3 stride-2 convolution maps a side h to ceil(h / 2), and the decoder's matching
transposed convolution uses ``output_padding`` to land exactly on h again (28 -> 14
-> 7 -> 14 -> 28; 8 -> 4 -> 2 -> 4 -> 8; odd sides too).
"""

from __future__ import annotations

from torch import nn


def _sides(size: int, layers: int) -> list[int]:
    sides = [size]
    for _ in range(layers):
        sides.append((sides[-1] + 1) // 2)
    return sides


def conv_encoder(
    image_shape: tuple[int, int, int],
    hidden: tuple[int, ...],
    out_features: int,
    blocks: int = 1,
) -> nn.Module:
    """``(N, C, H, W) -> (N, out_features)``: stride-2 3x3 convs, then a linear layer."""
    channels, height, width = image_shape
    layers: list[nn.Module] = []
    c_in = channels
    for c_out in hidden:
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        c_in = c_out
    h, w = _sides(height, len(hidden))[-1], _sides(width, len(hidden))[-1]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * h * w, out_features))


def conv_decoder(
    latent_dim: int,
    hidden: tuple[int, ...],
    image_shape: tuple[int, int, int],
    n_params: int,
    blocks: int = 1,
) -> nn.Module:
    """``(N, D) -> (N, n_params, C, H, W)``: a linear layer, then stride-2 transposed convs."""
    channels, height, width = image_shape
    hs, ws = _sides(height, len(hidden)), _sides(width, len(hidden))
    rev = list(reversed(hidden))
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, rev[0] * hs[-1] * ws[-1]),
        nn.ReLU(),
        nn.Unflatten(1, (rev[0], hs[-1], ws[-1])),
    ]
    for i, c_in in enumerate(rev):
        last = i == len(rev) - 1
        c_out = n_params * channels if last else rev[i + 1]
        h_in, w_in = hs[-1 - i], ws[-1 - i]
        h_out, w_out = hs[-2 - i], ws[-2 - i]
        pad = (h_out - (2 * h_in - 1), w_out - (2 * w_in - 1))
        layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad))
        if not last:
            layers.append(nn.ReLU())
    layers.append(nn.Unflatten(1, (n_params, channels)))
    return nn.Sequential(*layers)
