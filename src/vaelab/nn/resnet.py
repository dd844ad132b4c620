"""Residual convolutional bodies: ``blocks`` residual blocks at each resolution.

``hidden`` gives the width of each resolution below the image's: the encoder halves the
sides with a stride-2 3x3 convolution into ``hidden[i]`` channels, then applies
``blocks`` residual blocks at that width (32x32 with ``hidden=(64, 128)``: 16x16x64,
then 8x8x128), and a linear layer maps the last feature map to ``out_features``. The
decoder mirrors it: a linear layer to the smallest map, blocks at each width, a stride-2
transposed convolution up to the next width (``output_padding`` lands exactly on odd
sides, as in :mod:`vaelab.nn.conv`), and at full resolution a 3x3 convolution to
``n_params * C`` channels. Any image size and channel count works.

A block is ``x + W2 silu(W1 silu(x))`` with 3x3 convolutions and no normalisation
(batch statistics would couple the K importance samples of one image).

Initialisation (:func:`he_init`): every convolution and linear layer starts at He scale
(normal, std sqrt(2 / fan_in), zero bias) and the second convolution of each block at a tenth
of it, so each block starts close to the identity (VDVAE's and NVAE's habit) while the signal
keeps its size through the stack. PyTorch's default (uniform, variance 1 / (3 fan_in)) with
SiLU's slope of 1/2 at 0 shrinks it about five-fold per resolution: at that init the decoder's
output moved by 0.001 when z changed (its spread over pixels 0.037), the encoder's gradient
from the reconstruction was a tenth of the KL's, and with dmol the KL won the race, the decoder
learnt each pixel's marginal and the latent stayed unused (posterior collapse; measured in
benchmarks/collapse.py and benchmarks/README.md). With He init z moves the output by ~0.05.
"""

from __future__ import annotations

from torch import Tensor, nn

from vaelab.nn.conv import _sides

BRANCH_INIT_SCALE = 0.1


def he_init(body: nn.Module) -> nn.Module:
    """He-initialise ``body`` in place (module docstring): convolutions, transposed
    convolutions (fan-in = the input channels times the kernel area, a transposed layer's
    weight being ``(C_in, C_out, k, k)``) and linear layers get N(0, 2 / fan_in) weights and
    zero biases; each :class:`ResBlock`'s second convolution is then scaled by
    ``BRANCH_INIT_SCALE``. Returns ``body``."""
    for layer in body.modules():
        if isinstance(layer, nn.ConvTranspose2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        else:
            continue
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    for block in body.modules():
        if isinstance(block, ResBlock):
            block.conv2.weight.data.mul_(BRANCH_INIT_SCALE)
    return body


class ResBlock(nn.Module):
    """``(N, c, h, w) -> (N, c, h, w)``: x + conv(silu(conv(silu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2.weight.data.mul_(BRANCH_INIT_SCALE)  # near the identity (he_init redoes it)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


def _blocks(channels: int, blocks: int) -> list[nn.Module]:
    return [ResBlock(channels) for _ in range(blocks)]


def resnet_encoder(
    image_shape: tuple[int, int, int],
    hidden: tuple[int, ...],
    out_features: int,
    blocks: int = 2,
) -> nn.Module:
    """``(N, C, H, W) -> (N, out_features)``: per width, a stride-2 conv and ``blocks``
    residual blocks; then SiLU, flatten and a linear layer."""
    channels, height, width = image_shape
    layers: list[nn.Module] = []
    c_in = channels
    for c_out in hidden:
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), *_blocks(c_out, blocks)]
        c_in = c_out
    h, w = _sides(height, len(hidden))[-1], _sides(width, len(hidden))[-1]
    body = nn.Sequential(*layers, nn.SiLU(), nn.Flatten(), nn.Linear(c_in * h * w, out_features))
    return he_init(body)


def resnet_decoder(
    latent_dim: int,
    hidden: tuple[int, ...],
    image_shape: tuple[int, int, int],
    n_params: int,
    blocks: int = 2,
) -> nn.Module:
    """``(N, D) -> (N, n_params, C, H, W)``: the encoder mirrored, then a 3x3 convolution
    to the likelihood's parameters at full resolution."""
    channels, height, width = image_shape
    hs, ws = _sides(height, len(hidden)), _sides(width, len(hidden))
    rev = list(reversed(hidden))
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, rev[0] * hs[-1] * ws[-1]),
        nn.Unflatten(1, (rev[0], hs[-1], ws[-1])),
    ]
    for i, c_in in enumerate(rev):
        c_out = rev[i + 1] if i + 1 < len(rev) else rev[-1]
        h_in, w_in = hs[-1 - i], ws[-1 - i]
        pad = (hs[-2 - i] - (2 * h_in - 1), ws[-2 - i] - (2 * w_in - 1))
        layers += [
            *_blocks(c_in, blocks),
            nn.SiLU(),
            nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad),
        ]
    layers += [
        nn.SiLU(),
        nn.Conv2d(rev[-1], n_params * channels, 3, padding=1),
        nn.Unflatten(1, (n_params, channels)),
    ]
    return he_init(nn.Sequential(*layers))
