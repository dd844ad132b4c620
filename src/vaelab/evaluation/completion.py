"""Data completion with a trained VAE: inpainting and super-resolution.

Images are floats in [0, 1], ``(B, C, H, W)``; a mask is bool, True where a pixel is
MISSING, broadcastable to the images. Both chains keep the observation fixed:

* pseudo-Gibbs: z ~ q(z | x_obs, x_mis), then x_mis <- a draw of p(x_mis | z)
  (``fill="sample"``, the imputation sampler of Rezende, Mohamed & Wierstra 2014, that
  Mattei & Frellsen 2018 compare against) or its mean E[x_mis | z] (``fill="mean"``, the
  default, which the README figures used: even with the exact posterior its chain cannot sample
  p(x_mis | x_obs)); repeated, the observed pixels written back after
  every step. With ``sample`` and q(z|x) the exact posterior it is an exact Gibbs sampler
  of p(z, x_mis | x_obs); with an amortised q it is only approximately so.
* Metropolis-within-Gibbs (Mattei & Frellsen 2018): propose z' ~ q(z|x) and accept with
  probability min(1, w(z') / w(z)), w(z) = p(x|z) p(z) / q(z|x) the importance weight at
  the current x = (x_obs, x_mis); then x_mis ~ p(x_mis|z). Unlike pseudo-Gibbs this is a
  valid MCMC: p(z, x_mis | x_obs) is its stationary distribution. :mod:`vaelab.evaluation.chains`
  gives each model its whole latent state (z; z1 and z2; y and z), and the draws of x_mis
  are never clamped, so the chain targets p(x_mis | x_obs) of every model it accepts.

* a VQ-VAE (``--model vqvae``, deterministic encoder, one-hot q(k|x)): with a trained
  code prior, inpainting samples the codes under the missing pixels from it
  (:mod:`vaelab.evaluation.vq_complete`); without one (and for super-resolution)
  pseudo-Gibbs is the iterated projection encode -> nearest codes -> decode -> fill ->
  restore (:func:`code_projection`), which keeps much of its initial mid-grey fill on a
  model that reconstructs well. There is no exact chain (``mwg`` is refused).

The picture of a completion is the mean of p(x|z) at the last state (pseudo-Gibbs: at
z = E_q[z|x], so with nothing missing it is the reconstruction), with the observed pixels
copied in, clamped to [0, 1] for display (a Gaussian's mean may stray outside).

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

from vaelab.errors import VaelabError, at_least, unknown_name
from vaelab.evaluation.chains import chain_for, select
from vaelab.evaluation.generate import no_posterior
from vaelab.evaluation.vq_complete import prior_inpaint


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
        raise unknown_name("--mask-preset", preset, [*MASK_PRESETS, "random:P"])
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


def project_blocks(x: torch.Tensor, low: torch.Tensor, factor: int, iters: int = 32):
    """The image in [0, 1] nearest to ``x`` (Euclidean) whose block means equal ``low``.

    By the KKT conditions it is clamp(x + c, 0, 1) with one shift c per block, and the
    block mean of that is non-decreasing in c, so c is found by bisection between
    low - max(x) and low - min(x) over the block (where the mean is <= and >= low):
    ``iters`` halvings leave |c - c*| <= range(x) 2^-iters (32: below float32 resolution).
    Shifting and clipping repeatedly converges to the same point, but geometrically slowly
    where most of a block is clipped (1e-4 off after 20 rounds on digits)."""
    lo = low - F.max_pool2d(x, factor)
    hi = low + F.max_pool2d(-x, factor)
    for _ in range(iters):
        mid = (lo + hi) / 2
        short = downscale((x + upsample(mid, factor)).clamp(0, 1), factor) < low
        lo, hi = torch.where(short, mid, lo), torch.where(short, hi, mid)
    return (x + upsample((lo + hi) / 2, factor)).clamp(0, 1)


@dataclass
class Completion:
    images: torch.Tensor  # (B, n, C, H, W): decoded means with the observation kept
    decoded: torch.Tensor  # (B, n, C, H, W): the model's mean of p(x|z), every pixel
    acceptance: float | None = None  # Metropolis-within-Gibbs: share of accepted proposals


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
    fill: str = "mean",
    code_prior: torch.nn.Module | None = None,
) -> Completion:
    """``n`` completions of each image ``x`` ``(B, C, H, W)`` in [0, 1] (missing pixels' values
    are ignored). Give ``missing`` (bool mask, True = missing) for inpainting, or
    ``downscale_factor`` to treat ``downscale(x, f)`` as the observation (super-resolution).
    ``fill`` (pseudo-Gibbs) puts back E[x_mis|z] (``mean``) or a draw (``sample``); the
    Metropolis-within-Gibbs chain always draws. ``code_prior``: a VQ-VAE's trained PixelCNN,
    which inpainting then samples the missing codes from (:mod:`vaelab.evaluation.vq_complete`;
    ``steps`` and ``fill`` unused there)."""
    if method not in METHODS:
        raise unknown_name("--method", method, METHODS)
    if fill not in FILLS:
        raise unknown_name("--fill", fill, FILLS)
    at_least("-n", n)
    at_least("--steps", steps, 0)
    if not model.on_images:
        raise VaelabError("complete: an M1+M2 run models M1's latents; complete with the M1 run")
    if (missing is None) == (downscale_factor is None):
        raise VaelabError("complete: give a mask or a --downscale factor (one of them)")
    if method == "mwg":
        chain_for(model)  # refuses a model without an exact chain before any work
    if not (model.has_posterior or model.discrete_codes):
        raise no_posterior(
            model, "complete", "completion alternates q(z|x) and p(x|z); train with --model vae"
        )
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    dev = model.device
    b, shape = len(x), x.shape[1:]
    xs = x.to(dev).float().repeat_interleave(n, 0)  # (B*n, C, H, W): chain i*n + j
    if downscale_factor is None:
        miss = missing.to(dev).expand_as(x.to(dev)).repeat_interleave(n, 0)
        keep = lambda t: torch.where(miss, t, xs)  # noqa: E731  (no clamp: see mwg)
        start = keep(torch.full_like(xs, 0.5))
    else:
        if method != "pseudo-gibbs":
            raise VaelabError("--downscale: super-resolution uses --method pseudo-gibbs")
        low = downscale(xs, downscale_factor)
        miss = None
        keep = lambda t: project_blocks(t, low, downscale_factor)  # noqa: E731
        start = upsample(low, downscale_factor)
    if model.discrete_codes and code_prior is not None and miss is not None:
        codes = prior_inpaint(model, code_prior.to(dev), x.to(dev).float(), miss[::n], n)
        decoded, acc = model.likelihood.mean(model.decode_codes(codes)), None
    else:
        chain = code_projection if model.discrete_codes else METHODS[method]
        decoded, acc = chain(model, start, keep, steps, FILLS[fill])
    images = keep(decoded).clamp(0, 1)  # clamped for display only; observed pixels unchanged
    return Completion(images.reshape(b, n, *shape), decoded.reshape(b, n, *shape), acc)


# What pseudo-Gibbs writes into the missing pixels, from p(x|z)'s parameters.
FILLS: dict[str, Callable] = {
    "mean": lambda likelihood, params: likelihood.mean(params),
    "sample": lambda likelihood, params: likelihood.sample(params),
}


def pseudo_gibbs(model, x_cur, keep, steps, fill):
    """encode -> z ~ q(z|x) -> decode -> ``fill`` (mean or draw) -> restore the observation
    (a conditional model encodes and decodes with the label it infers for x each step)."""
    for _ in range(steps):
        y = model.label_args(x_cur)
        x_cur = keep(fill(model.likelihood, model.decode(model.encode(x_cur, *y).sample(), *y)))
    y = model.label_args(x_cur)
    return model.likelihood.mean(model.decode(model.encode(x_cur, *y).mean, *y)), None


def metropolis_within_gibbs(model, x_cur, keep, steps, fill):
    """Mattei & Frellsen (2018), a Gibbs sampler of p(h, x_mis | x_obs) with h the model's
    latent state (:mod:`vaelab.evaluation.chains`): an independence Metropolis step for h | x
    (proposal g(h|x), target p(x, h) at the current x = (x_obs, x_mis)), then
    x_mis ~ p(x_mis | h), unclamped (``fill`` is ignored: the chain must draw)."""
    chain = chain_for(model)
    h = chain.proposal(x_cur).sample()
    accepted = 0
    for _ in range(steps):
        g = chain.proposal(x_cur)
        proposal = g.sample()
        # log [p(x, h') g(h|x)] - log [p(x, h) g(h'|x)], both under the same proposal g.
        log_rho = (chain.log_joint(proposal, x_cur) - g.log_prob(proposal)) - (
            chain.log_joint(h, x_cur) - g.log_prob(h)
        )
        ok = torch.rand_like(log_rho).log() < log_rho
        h = select(ok, proposal, h)
        accepted += int(ok.sum())
        x_cur = keep(model.likelihood.sample(chain.x_params(h)))
    rate = accepted / max(1, steps * len(x_cur))
    return model.likelihood.mean(chain.x_params(h)), rate


def code_projection(model, x_cur, keep, steps, fill):
    """Pseudo-Gibbs for a VQ-VAE (``discrete_codes``): its q(k|x) is one-hot at the nearest
    codes, so "draw z ~ q(z|x)" is the deterministic encode -> quantise step and the chain is
    the iterated projection  x <- keep(fill(p(x | z_q(k(x)))))  (``decode(latent_mean(x))``
    quantises then decodes). With ``fill="mean"`` every chain of one image is the same; a
    learned code prior (RUN/prior) is not used here: resampling a code from the PixelCNN's
    full conditional p(k_i | k_-i) needs K passes of the prior per position."""
    for _ in range(steps):
        x_cur = keep(fill(model.likelihood, model.decode(model.latent_mean(x_cur))))
    return model.likelihood.mean(model.decode(model.latent_mean(x_cur))), None


METHODS = {"pseudo-gibbs": pseudo_gibbs, "mwg": metropolis_within_gibbs}
