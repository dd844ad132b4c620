"""Pictures: image grids (Pillow) and charts (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``(N, C, H, W)`` floats in [0, 1] into one uint8 ``(H', W', C)`` array.

    ``pad`` pixels of white separate the tiles so neighbouring images never merge.
    """
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[i]
    array = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if c == 1 else array


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None
) -> Path:
    """Write a PNG grid; small images are upscaled (nearest) so a grid is legible."""
    array = grid_array(images, nrow)
    img = Image.fromarray(array)
    h = images.shape[-2]
    scale = scale or max(1, 56 // h)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
