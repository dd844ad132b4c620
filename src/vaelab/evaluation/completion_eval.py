"""How good is a completion: error on the missing pixels against simple baselines.

Errors are mean squared errors per missing pixel, in [0, 1] grey-level units (so RMSE 0.1
is 25 grey levels), averaged over test images, with the standard error across images.
Baselines: the training set's mean image, and the nearest training image (squared
distance on the observed pixels; for super-resolution on the block means) whose pixels
fill the hole. For super-resolution every pixel is unobserved, the baselines are projected
onto the observation like the model's completions, and nearest-neighbour upsampling of
the low-resolution image is a third baseline.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from vaelab.data import ImageData
from vaelab.data.prepare import eval_images, to_unit, train_images
from vaelab.evaluation.completion import complete, downscale, make_mask, project_blocks, upsample
from vaelab.training.record import Run


def _mse(pred: torch.Tensor, truth: torch.Tensor, missing: torch.Tensor) -> dict[str, float]:
    """Per-image MSE over missing pixels, then mean and standard error over images."""
    miss = missing.expand_as(truth).float()
    per = ((pred - truth).square() * miss).flatten(1).sum(1) / miss.flatten(1).sum(1)
    se = per.std().item() / math.sqrt(len(per)) if len(per) > 1 else float("nan")
    return {"mse": per.mean().item(), "mse_se": se, "rmse": per.mean().sqrt().item()}


def nearest_neighbour(
    train: torch.Tensor, x: torch.Tensor, observed: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """For each image ``x`` the training image closest on the ``observed`` pixels (a mask
    shared by all images), ``(B, C, H, W)``."""
    cols = observed.flatten()
    t = train.flatten(1)[:, cols]
    out = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk].flatten(1)[:, cols], t)
        out.append(train[d.argmin(1)])
    return torch.cat(out)


@torch.no_grad()
def evaluate_completion(
    run: Run,
    data: ImageData,
    *,
    mask: str | torch.Tensor | None = None,
    downscale_factor: int | None = None,
    limit: int = 500,
    n: int = 1,
    steps: int = 50,
    method: str = "pseudo-gibbs",
    seed: int = 0,
    fill: str = "mean",
    code_prior: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Missing-pixel MSE of the model's completions of the first ``limit`` test images and of
    the baselines. With ``n`` > 1 it also scores the average of the n completions (an
    estimate of E[x_mis | x_obs], the MSE-optimal fill). The test and training images are
    prepared as ``run`` (a :class:`~vaelab.training.record.Run`) was trained. ``code_prior``:
    a VQ-VAE's PixelCNN, passed to :func:`complete` for inpainting."""
    model, cfg = run.model, run.config
    x = to_unit(eval_images(data.test_x[:limit], cfg.data.binarize, cfg.train.seed))
    train = to_unit(train_images(data.train_x, cfg.data.binarize, cfg.train.seed))
    t0 = time.perf_counter()
    if downscale_factor is None:
        missing = make_mask(mask, data.image_shape, seed) if isinstance(mask, str) else mask
        result = complete(model, x, missing, n=n, steps=steps, method=method, seed=seed,
                          fill=fill, code_prior=code_prior)  # fmt: skip
        baselines = {
            "mean_image": train.mean(0).expand_as(x),
            "nearest_neighbour": nearest_neighbour(train, x, ~missing),
        }
        what = mask if isinstance(mask, str) else "custom"
    else:
        missing = torch.ones(data.image_shape, dtype=torch.bool)
        result = complete(
            model, x, n=n, steps=steps, downscale_factor=downscale_factor, seed=seed, fill=fill
        )
        low, f = downscale(x, downscale_factor), downscale_factor
        nn_full = train[torch.cdist(low.flatten(1), downscale(train, f).flatten(1)).argmin(1)]
        baselines = {
            "upsample_nearest": upsample(low, f),
            "mean_image": project_blocks(train.mean(0).expand_as(x), low, f),
            "nearest_neighbour": project_blocks(nn_full, low, f),
        }
        what = f"downscale-{downscale_factor}"
    seconds = time.perf_counter() - t0
    images = result.images.cpu()
    out: dict[str, Any] = {
        "task": what, "method": method, "fill": fill, "steps": steps, "completions": n,
        "images": len(x), "missing_fraction": missing.float().mean().item(),
        "model": _mse(images[:, 0], x, missing),
        "seconds": seconds,
    }  # fmt: skip
    if n > 1:
        out["model_mean_of_n"] = _mse(images.mean(1), x, missing)
    if result.acceptance is not None:
        out["acceptance"] = result.acceptance
    for name, pred in baselines.items():
        out[name] = _mse(pred, x, missing)
    return out
