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
(batch statistics would couple the K importance samples of one image). The second
convolution starts at a tenth of PyTorch's default scale, so each block starts close to
the identity and a deep stack trains from the first step (the habit of VDVAE and NVAE,
whose residual branches start small).
"""

from __future__ import annotations

from torch import Tensor, nn

from vaelab.nn.conv import _sides

BRANCH_INIT_SCALE = 0.1


class ResBlock(nn.Module):
    """``(N, c, h, w) -> (N, c, h, w)``: x + conv(silu(conv(silu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2.weight.data.mul_(BRANCH_INIT_SCALE)
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
    return nn.Sequential(*layers, nn.SiLU(), nn.Flatten(), nn.Linear(c_in * h * w, out_features))


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
    return nn.Sequential(*layers)
