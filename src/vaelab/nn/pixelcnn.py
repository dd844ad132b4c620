"""A gated PixelCNN over grids of discrete codes (van den Oord et al. 2016, "Conditional
Image Generation with PixelCNN Decoders"): the VQ-VAE's learned prior.

    p(k) = prod_{i in raster order} p(k_i | k_<i),   k a grid (h, w) of codes in [0, K)

Why a PixelCNN and not a small causal transformer: the code grids are small (7x7, 8x8), a
convolution's inductive bias (neighbouring codes matter most) fits them, it trains in one
pass per batch on a CPU, and it is what the VQ-VAE paper used; a transformer would need
positional embeddings and more data to learn the same locality.

Each code is embedded, then a vertical and a horizontal stack of gated masked convolutions
(tanh(a) * sigmoid(b)) run side by side: the vertical stack at (i, j) sees rows < i (its
first layer masks the centre row, later ones keep it), the horizontal stack sees
(i, < j) (first layer masks the centre) plus the vertical stack's rows < i, so there is no
blind spot and no output depends on its own or a later position (tests/test_vq.py checks
it by gradients). ``forward(codes)`` returns logits ``(B, K, h, w)``;
``log_prob(codes)`` ``(B,)`` sums log p(k_i | k_<i) over the grid (nats);
``sample(n, temperature)`` draws grids in raster order from softmax(logits / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed 0/1 ``mask`` (same shape)."""

    def __init__(self, c_in: int, c_out: int, mask: torch.Tensor) -> None:
        kh, kw = mask.shape
        super().__init__(c_in, c_out, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask[None, None].clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def vertical_mask(k: int, centre: bool) -> torch.Tensor:
    """k x k: rows above the centre (and the centre row where ``centre``)."""
    mask = torch.ones(k, k)
    mask[k // 2 + 1 :] = 0
    if not centre:
        mask[k // 2] = 0
    return mask


def horizontal_mask(k: int, centre: bool) -> torch.Tensor:
    """1 x k: columns left of the centre (and the centre where ``centre``)."""
    mask = torch.ones(1, k)
    mask[0, k // 2 + 1 :] = 0
    if not centre:
        mask[0, k // 2] = 0
    return mask


class GatedLayer(nn.Module):
    """One gated layer of both stacks; ``first`` masks the centre (mask A)."""

    def __init__(self, c_in: int, width: int, k: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.v = MaskedConv2d(c_in, 2 * width, vertical_mask(k, not first))
        self.h = MaskedConv2d(c_in, 2 * width, horizontal_mask(k, not first))
        self.v_to_h = nn.Conv2d(2 * width, 2 * width, 1)
        self.h_out = nn.Conv2d(width, width, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vf = self.v(v)
        a, b = vf.chunk(2, 1)
        v_out = torch.tanh(a) * torch.sigmoid(b)
        hf = self.h(h) + self.v_to_h(vf)
        a, b = hf.chunk(2, 1)
        h_out = self.h_out(torch.tanh(a) * torch.sigmoid(b))
        return v_out, (h_out if self.first else h + h_out)


class GatedPixelCNN(nn.Module):
    """Autoregressive model of code grids ``(B, h, w)`` over ``codes`` values; see the
    module docstring. ``width`` channels, ``layers`` gated layers, kernel ``kernel``."""

    def __init__(
        self, codes: int, grid: tuple[int, int], width: int = 64, layers: int = 6, kernel: int = 3
    ) -> None:
        super().__init__()
        self.codes, self.grid = codes, tuple(grid)
        self.embed = nn.Embedding(codes, width)
        self.layers = nn.ModuleList(
            GatedLayer(width, width, kernel, first=i == 0) for i in range(layers)
        )
        self.out = nn.Sequential(nn.ELU(), nn.Conv2d(width, width, 1), nn.ELU(),
                                 nn.Conv2d(width, codes, 1))  # fmt: skip

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, h, w)``; position i's depend only on the codes before it."""
        x = self.embed(codes).permute(0, 3, 1, 2)
        return self.logits_of(x)

    def logits_of(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from embedded codes ``(B, width, h, w)`` (the gradient test's entry)."""
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.out(h)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(codes) ``(B,)`` in nats: the sum over positions of log p(k_i | k_<i)."""
        logp = F.log_softmax(self(codes), 1)
        return logp.gather(1, codes[:, None]).flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` code grids ``(n, h, w)`` drawn in raster order from softmax(logits / T)."""
        h, w = self.grid
        device = self.embed.weight.device
        codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
        for i in range(h):
            for j in range(w):
                probs = F.softmax(self(codes)[:, :, i, j] / temperature, 1)
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes
