"""Image preparation: uint8 images -> the [0, 1] floats (binarized or not) a model sees.

The data layer's half of training and evaluation: the binarization policy (static, dynamic,
the test set's fixed draw) and each epoch's order live here so that every tool (training,
evaluation, pictures, samplers) prepares images the same way without importing the loop.
Batches come straight from one in-memory uint8 tensor: no per-item Dataset in the hot path.
Images stay ``uint8`` on the device (Fashion-MNIST's 60k images are 47 MB); a batch
is an index into them, scaled to [0, 1] (and binarized) inside the step.
"""

from __future__ import annotations

import torch


def to_unit(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> floats in [0, 1]."""
    return x.to(dtype).div_(255.0)


def binarize_fixed(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One seeded Bernoulli draw per pixel, as uint8 {0, 255}: static binarization.

    Used for training data with ``--binarize static`` and for the test set whenever
    the data is binarized, so test bounds are comparable across epochs and runs.
    """
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty_like(x)
    for start in range(0, len(x), 8192):  # chunks keep the float copy small
        chunk = to_unit(x[start : start + 8192].cpu())
        out[start : start + 8192] = (torch.rand(chunk.shape, generator=gen) < chunk).to(x.dtype)
    return out.mul_(255)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The order of epoch ``epoch``, a pure function of (seed, epoch): resume needs no state."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def prepare(x: torch.Tensor, dynamic: bool) -> torch.Tensor:
    """Scale a uint8 batch to [0, 1]; with ``dynamic`` draw fresh binary pixels (global RNG)."""
    x = to_unit(x)
    return torch.bernoulli(x) if dynamic else x


def eval_images(x: torch.Tensor, binarize: str, seed: int) -> torch.Tensor:
    """The uint8 test images as the model is evaluated on them (fixed binarization if any)."""
    return binarize_fixed(x, seed + 1) if binarize != "none" else x


def train_images(
    x: torch.Tensor, binarize: str, seed: int, limit: int | None = None
) -> torch.Tensor:
    """The first ``limit`` uint8 training images as the model was trained on them (for a
    post-hoc sampler's fit or a completion baseline). ``static``: the training loop's own draw,
    ``binarize_fixed(all, seed)``, sliced after the draw (an image's draw depends on its
    place in the stream), not the test set's ``seed + 1``; ``dynamic`` drew afresh every
    epoch, so any fixed draw stands for it: the ``seed + 1`` one used before (unchanged
    figures)."""
    if binarize == "static":
        return binarize_fixed(x, seed)[:limit]
    return binarize_fixed(x[:limit], seed + 1) if binarize == "dynamic" else x[:limit]
