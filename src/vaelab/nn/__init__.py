"""Encoder and decoder bodies: plain ``nn.Module`` builders, tensors in, tensors out.

An encoder maps ``(N, C, H, W)`` to ``(N, out_features)``; a decoder maps ``(N, D)`` to
``(N, n_params, C, H, W)``. Builders take ``blocks`` (residual blocks per resolution)
as a keyword; bodies without blocks ignore it. Nothing here knows about distributions or datasets.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vaelab.errors import unknown_name
from vaelab.nn.conv import conv_decoder, conv_encoder
from vaelab.nn.mlp import mlp_decoder, mlp_encoder
from vaelab.nn.resnet import resnet_decoder, resnet_encoder

Builder = Callable[..., nn.Module]

ARCHS: dict[str, tuple[Builder, Builder]] = {
    "mlp": (mlp_encoder, mlp_decoder),
    "conv": (conv_encoder, conv_decoder),
    "resnet": (resnet_encoder, resnet_decoder),
}


def build_bodies(
    arch: str,
    image_shape: tuple[int, int, int],
    hidden: tuple[int, ...],
    in_features: int,
    out_features: int,
    n_params: int,
    blocks: int = 2,
) -> tuple[nn.Module, nn.Module]:
    """Encoder ``image -> (N, out_features)`` and decoder ``(N, in_features) -> params``;
    ``blocks`` residual blocks per resolution where the body has them (resnet)."""
    if arch not in ARCHS:
        raise unknown_name("--arch", arch, ARCHS)
    make_encoder, make_decoder = ARCHS[arch]
    encoder = make_encoder(image_shape, hidden, out_features, blocks=blocks)
    decoder = make_decoder(in_features, hidden, image_shape, n_params, blocks=blocks)
    return encoder, decoder
