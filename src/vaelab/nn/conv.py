"""Convolutional bodies: stride-2 convolutions down, transposed convolutions up.

``hidden`` gives the channels of each stride-2 layer. Any image size works: each
3x3 stride-2 convolution maps a side h to ceil(h / 2), and the decoder's matching
transposed convolution uses ``output_padding`` to land exactly on h again (28 -> 14
-> 7 -> 14 -> 28; 8 -> 4 -> 2 -> 4 -> 8; odd sides too).
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.nn.cells import sides

# Below this many output channels PyTorch's own transposed convolution (a GEMM and a col2im)
# beats oneDNN's on CPU. Measured at 1 thread, batch 128, 32 channels 14x14 -> 28x28, forward
# + backward (CPU ms): 1 output channel 3.2 vs 6.4, 2: 4.2 vs 7.3, 3: 4.9 vs 7.6, 6: 8.4 vs
# 9.8, 16: 19.6 vs 15.5 (oneDNN ahead from there on). With one output channel the weight
# (C_in, 1, 3, 3) also reads as channels-last, so oneDNN reorders the whole input first.
NARROW_OUT = 8


class NarrowConvTranspose2d(nn.ConvTranspose2d):
    """:class:`torch.nn.ConvTranspose2d` (the same parameters, state-dict keys and function)
    whose forward on CPU runs PyTorch's native kernel instead of oneDNN's: for the few
    output channels of a decoder's last layer (``n_params * C``) it is about twice as fast
    (see ``NARROW_OUT``). The backward is the plain layer's (``convolution_backward``, which
    picks oneDNN). The native forward goes one image at a time on one thread, and still wins
    on two: 0.84 vs 4.2 ms for oneDNN's on one thread (batch 128, 32 -> 1 channel, 28x28).
    Off the CPU: the plain layer."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if x.device.type != "cpu" or output_size is not None or x.dim() != 4:
            return super().forward(x, output_size)
        if torch.is_autocast_enabled("cpu"):  # the native kernel takes no mixed dtypes
            return super().forward(x, output_size)
        return torch.ops.aten.slow_conv_transpose2d(
            x, self.weight, self.kernel_size, self.bias, self.stride, self.padding,
            self.output_padding, self.dilation,
        )  # fmt: skip


def transposed_conv(c_in: int, c_out: int, output_padding: tuple[int, int]) -> nn.ConvTranspose2d:
    """A 3x3 stride-2 transposed convolution; :class:`NarrowConvTranspose2d` for few outputs."""
    cls = NarrowConvTranspose2d if c_out < NARROW_OUT else nn.ConvTranspose2d
    return cls(c_in, c_out, 3, stride=2, padding=1, output_padding=output_padding)


def _sides(size: int, layers: int) -> list[int]:
    """The side before and after each of ``layers`` stride-2 layers (:func:`cells.sides`)."""
    return sides(size, layers + 1)


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
        layers.append(transposed_conv(c_in, c_out, pad))
        if not last:
            layers.append(nn.ReLU())
    layers.append(nn.Unflatten(1, (n_params, channels)))
    return nn.Sequential(*layers)
