"""Data completion with a trained VAE: inpainting and super-resolution.

Images are floats in [0, 1], ``(B, C, H, W)``; a mask is bool, True where a pixel is
MISSING, broadcastable to the images. Both chains keep the observation fixed:

* pseudo-Gibbs (Rezende et al. 2014): x_mis <- E[x_mis | z], z ~ q(z | x_obs, x_mis),
  repeated; the observed pixels are written back after every step.
* Metropolis-within-Gibbs (Mattei & Frellsen 2018): propose z' ~ q(z|x) and accept with
  probability min(1, w(z') / w(z)), w(z) = p(x|z) p(z) / q(z|x) the importance weight at
  the current x = (x_obs, x_mis); then x_mis ~ p(x_mis|z). Unlike pseudo-Gibbs this is a
  valid MCMC: p(z, x_mis | x_obs) is its stationary distribution.

The picture of a completion is the mean of p(x|z) at the last state (pseudo-Gibbs: at
z = E_q[z|x], so with nothing missing it is the reconstruction), with the observed pixels
copied in.

Super-resolution observes each s x s block's mean (a low-resolution image) instead of
pixels: after each decode the image is projected back onto {x : blockmean(x) = low}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vaelab.errors import VaelabError, unknown_name


def _half(shape: tuple[int, int, int], axis: int) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.bool)
    size = shape[axis]
    m.narrow(axis, 0, size // 2).fill_(True)
    return m


def _centre(shape: tuple[int, int, int]) -> torch.Tensor:
    _, h, w = shape
    m = torch.zeros(shape, dtype=torch.bool)
    m[:, h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = True
    return m


MASK_PRESETS: dict[str, Callable[[tuple[int, int, int]], torch.Tensor]] = {
    "left-half": lambda s: _half(s, 2),
    "top-half": lambda s: _half(s, 1),
    "centre-square": _centre,
}


def make_mask(preset: str, image_shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """A ``(C, H, W)`` bool mask (True = missing) from a preset name, or ``random:P`` (each
    pixel missing with probability P, the same pixels in every channel, seeded)."""
    shape = tuple(image_shape)
    if preset.startswith("random:"):
        try:
            p = float(preset.split(":", 1)[1])
        except ValueError:
            p = -1.0
        if not 0 <= p <= 1:
            raise VaelabError(f"--mask-preset {preset}: expected random:P with P in [0, 1]")
        gen = torch.Generator().manual_seed(seed)
        return (torch.rand(shape[1:], generator=gen) < p).expand(shape).clone()
    if preset not in MASK_PRESETS:
        valid = ", ".join([*MASK_PRESETS, "random:P"])
        raise VaelabError(f"--mask-preset: unknown {preset!r}; valid: {valid}")
    return MASK_PRESETS[preset](shape)


def load_mask(path: str, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """A mask from a PNG: white (grey level > 127) marks missing pixels; resized (nearest)
    to the model's image size and applied to every channel."""
    try:
        img = Image.open(path).convert("L")
    except (OSError, ValueError) as exc:
        raise VaelabError(f"--mask {path}: cannot read an image ({exc})") from None
    c, h, w = image_shape
    img = img.resize((w, h), Image.NEAREST)
    return torch.from_numpy(np.asarray(img) > 127).expand(c, h, w).clone()


def downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Block means: ``(B, C, H, W) -> (B, C, H/f, W/f)``; H and W must divide by f."""
    if factor < 1 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise VaelabError(f"--downscale {factor}: must divide the image size {tuple(x.shape[-2:])}")
    return F.avg_pool2d(x, factor)


def upsample(low: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling: every pixel of a block takes the block's value."""
    return low.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def project_blocks(x: torch.Tensor, low: torch.Tensor, factor: int, iters: int = 20):
    """The image in [0, 1] whose block means equal ``low``, near ``x``: alternately shift each
    block to the right mean and clip (converges; exact when no pixel is clipped)."""
    for _ in range(iters):
        x = (x + upsample(low - downscale(x, factor), factor)).clamp(0, 1)
    return x


@dataclass
class Completion:
    images: torch.Tensor  # (B, n, C, H, W): decoded means with the observation kept
    decoded: torch.Tensor  # (B, n, C, H, W): the model's mean of p(x|z), every pixel
    acceptance: float | None = None  # Metropolis-within-Gibbs: share of accepted proposals


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _mean(model: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    return model.likelihood.mean(model.decode(z))


@torch.no_grad()
def complete(
    model: torch.nn.Module,
    x: torch.Tensor,
    missing: torch.Tensor | None = None,
    *,
    n: int = 8,
    steps: int = 50,
    method: str = "pseudo-gibbs",
    downscale_factor: int | None = None,
    seed: int | None = None,
) -> Completion:
    """``n`` completions of each image ``x`` ``(B, C, H, W)`` in [0, 1] (missing pixels' values
    are ignored). Give ``missing`` (bool mask, True = missing) for inpainting, or
    ``downscale_factor`` to treat ``downscale(x, f)`` as the observation (super-resolution)."""
    if method not in METHODS:
        raise unknown_name("--method", method, METHODS)
    if n < 1 or steps < 0:
        raise VaelabError(f"-n must be >= 1 and --steps >= 0, got {n} and {steps}")
    if getattr(getattr(model, "features", None), "m1", None) is not None:
        raise VaelabError("complete: an M1+M2 run models M1's latents; complete with the M1 run")
    if (missing is None) == (downscale_factor is None):
        raise VaelabError("complete: give a mask or a --downscale factor (one of them)")
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    dev = _device(model)
    b, shape = len(x), x.shape[1:]
    xs = x.to(dev).float().repeat_interleave(n, 0)  # (B*n, C, H, W): chain i*n + j
    if downscale_factor is None:
        miss = missing.to(dev).expand_as(x.to(dev)).repeat_interleave(n, 0)
        keep = lambda t: torch.where(miss, t.clamp(0, 1), xs)  # noqa: E731
        start = keep(torch.full_like(xs, 0.5))
    else:
        if method != "pseudo-gibbs":
            raise VaelabError("--downscale: super-resolution uses --method pseudo-gibbs")
        low = downscale(xs, downscale_factor)
        miss = None
        keep = lambda t: project_blocks(t, low, downscale_factor)  # noqa: E731
        start = upsample(low, downscale_factor)
    decoded, acc = METHODS[method](model, start, keep, miss, steps)
    return Completion(keep(decoded).reshape(b, n, *shape), decoded.reshape(b, n, *shape), acc)


def pseudo_gibbs(model, x_cur, keep, missing, steps):
    """Rezende et al. (2014): encode -> sample z -> decode the mean -> restore the observation."""
    for _ in range(steps):
        x_cur = keep(_mean(model, model.encode(x_cur).sample()))
    return _mean(model, model.encode(x_cur).mean), None


def metropolis_within_gibbs(model, x_cur, keep, missing, steps):
    """Mattei & Frellsen (2018), a Gibbs sampler of p(z, x_mis | x_obs): an independence
    Metropolis step for z | x (proposal q(z|x), target p(x|z) p(z) with x = (x_obs, x_mis)
    at the current x_mis), then x_mis ~ p(x_mis | z)."""

    def log_weight(z: torch.Tensor, q) -> torch.Tensor:  # log p(x|z) + log p(z) - log q(z|x)
        return (
            model.likelihood.log_prob(x_cur, model.decode(z))
            + model.prior.log_prob(z)
            - (q.log_prob(z))
        )

    z = model.encode(x_cur).sample()
    accepted = 0
    for _ in range(steps):
        q = model.encode(x_cur)
        proposal = q.sample()
        log_rho = log_weight(proposal, q) - log_weight(z, q)
        ok = torch.rand_like(log_rho).log() < log_rho
        z = torch.where(ok[:, None], proposal, z)
        accepted += int(ok.sum())
        x_cur = keep(model.likelihood.sample(model.decode(z)))
    rate = accepted / max(1, steps * len(z))
    return _mean(model, z), rate


METHODS = {"pseudo-gibbs": pseudo_gibbs, "mwg": metropolis_within_gibbs}
