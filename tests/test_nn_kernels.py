"""Faster kernels for the same layers compute the same function: the narrow transposed
convolution against a float64 brute force, and the conv decoder against nn.ConvTranspose2d."""

import pytest
import torch
from torch import nn

from vaelab.nn.conv import NarrowConvTranspose2d, conv_decoder


def transposed_conv_float64(x, w, b, stride, padding, output_padding):
    """The definition, in float64: every input pixel (i, j) adds w[c, o] * x[c, i, j] to the
    3x3 output window at (stride * i - padding, stride * j - padding); then the bias."""
    x, w, b = x.double(), w.double(), b.double()
    n, _, h, wd = x.shape
    k = w.shape[-1]
    full = torch.zeros(n, w.shape[1], stride * (h - 1) + k + output_padding[0],
                       stride * (wd - 1) + k + output_padding[1], dtype=torch.float64)  # fmt: skip
    for ki in range(k):
        for kj in range(k):
            part = torch.einsum("nchw,co->nohw", x, w[:, :, ki, kj])
            full[:, :, ki : ki + stride * h : stride, kj : kj + stride * wd : stride] += part
    out_h = (h - 1) * stride - 2 * padding + k + output_padding[0]
    out_w = (wd - 1) * stride - 2 * padding + k + output_padding[1]
    out = full[:, :, padding : padding + out_h, padding : padding + out_w]
    return out + b[None, :, None, None]


@pytest.mark.parametrize(
    ("c_out", "side", "pad"), [(1, 14, (1, 1)), (2, 7, (0, 0)), (3, 5, (1, 0))]
)
def test_narrow_transposed_conv_matches_the_definition(c_out, side, pad):
    """Values and all three gradients against autograd through the float64 definition. The
    float32 tolerance: each output sums 32 * 9 products of O(1) terms, rounding ~1e-6."""
    torch.manual_seed(0)
    layer = NarrowConvTranspose2d(32, c_out, 3, stride=2, padding=1, output_padding=pad)
    x = torch.randn(4, 32, side, side + 1, requires_grad=True)
    out = layer(x)
    x64 = x.detach().double().requires_grad_()
    w64 = layer.weight.detach().double().requires_grad_()
    b64 = layer.bias.detach().double().requires_grad_()
    ref = transposed_conv_float64(x64, w64, b64, 2, 1, pad)
    assert out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(ref.shape, dtype=torch.float64)
    out.backward(g.float())
    ref.backward(g)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad.double(), b64.grad, rtol=1e-5, atol=1e-4)


def test_conv_decoder_is_the_plain_layers_function_and_loads_their_weights():
    """The decoder with its narrow last layer and the same decoder built of plain
    nn.ConvTranspose2d (oneDNN) share state-dict keys (old checkpoints load) and agree to
    float32 rounding, forward and in every parameter's gradient."""
    torch.manual_seed(0)
    fast = conv_decoder(16, (32, 64), (1, 28, 28), 1)
    assert any(isinstance(m, NarrowConvTranspose2d) for m in fast)
    layers = conv_decoder(16, (32, 64), (1, 28, 28), 1)
    plain = nn.Sequential(*[
        nn.ConvTranspose2d(m.in_channels, m.out_channels, 3, 2, 1, output_padding=m.output_padding)
        if isinstance(m, NarrowConvTranspose2d) else m for m in layers
    ])  # fmt: skip
    plain.load_state_dict(fast.state_dict())
    z = torch.randn(128, 16)
    out_fast, out_plain = fast(z), plain(z)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out_fast)
    out_fast.backward(g)
    out_plain.backward(g)
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=name)
