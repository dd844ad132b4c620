"""Evaluating and sampling a VQ-VAE run (``--model vqvae``), with its code prior if trained.

The encoder is deterministic, so q(k|x) is one-hot at the image's code grid k(x), and
the ELBO with any code prior p(k) is

    log p(x) >= log p(x | z_q(k(x))) + log p(k(x))        (the entropy of a one-hot q is 0)

so  -log p(x) <= -log p(x|z_q) - log p_prior(k(x))  nats per image, and bits/dim =
nats / (C*H*W ln 2) (over 8-bit values with dlogistic/dmol; over binary pixels with
Bernoulli on binarized images). With a uniform prior -log p(k) = n log K for n = h*w codes:
the convention of the VQ-VAE paper's 4.67 bits/dim on CIFAR-10 (KL = log K per code); both
are reported. Either is an upper bound on the NLL from a deterministic encoder, comparable
with the continuous models' importance-sampled NLL only as a bound (it is looser).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError
from vaelab.nn.pixelcnn import GatedPixelCNN
from vaelab.nn.quantize import perplexity


@torch.no_grad()
def per_image(
    model: torch.nn.Module, x: torch.Tensor, prior: GatedPixelCNN | None, batch_size: int = 500
) -> dict[str, torch.Tensor]:
    """Per test image (uint8 ``x``): ``recon`` log p(x|z_q), ``prior`` log p_prior(k(x))
    (absent without a prior), ``sq_error`` the summed squared error of the mean, and the
    code grids ``codes`` ``(N, h, w)``."""
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {"recon": [], "prior": [], "sq_error": [], "codes": []}
    for i in range(0, len(x), batch_size):
        xb = to_unit(x[i : i + batch_size].to(device))
        codes = model.codes(xb)
        params = model.decode_codes(codes)
        out["recon"].append(model.likelihood.log_prob(xb, params[None])[0].double().cpu())
        mean = model.likelihood.mean(params)
        out["sq_error"].append((mean - xb).square().flatten(1).sum(1).double().cpu())
        out["codes"].append(codes.cpu())
        if prior is not None:
            out["prior"].append(prior.log_prob(codes.to(device)).double().cpu())
    return {k: torch.cat(v) for k, v in out.items() if v}


def _mean_se(t: torch.Tensor) -> tuple[float, float]:
    se = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else 0.0
    return float(t.mean()), se


def evaluate_vq(
    model: torch.nn.Module, x: torch.Tensor, prior: GatedPixelCNN | None
) -> dict[str, Any]:
    """The numbers ``vaelab evaluate`` reports for a VQ-VAE on uint8 test images ``x``; see
    the module docstring. Means over images, standard errors across images."""
    parts = per_image(model, x, prior)
    dims = math.prod(model.image_shape)
    to_bits = 1.0 / (dims * math.log(2))
    n = model.grid[0] * model.grid[1]
    recon, recon_se = _mean_se(parts["recon"])
    counts = torch.bincount(parts["codes"].flatten(), minlength=model.num_codes)
    uniform = model.uniform_kl()
    result: dict[str, Any] = {
        "model": "vqvae", "images": len(x), "code_grid": list(model.grid),
        "codebook_size": model.num_codes,
        "recon": recon, "recon_se": recon_se,
        "recon_bits_per_dim": -recon * to_bits,
        "mse_per_pixel": float(parts["sq_error"].mean()) / dims,
        "codes_used": int((counts > 0).sum()), "code_usage": float((counts > 0).float().mean()),
        "code_perplexity": perplexity(counts),
        "uniform_prior_nats": uniform,
        "bound_uniform_nats": -recon + uniform,
        "bound_uniform_bits_per_dim": (-recon + uniform) * to_bits,
        "bound_note": ("upper bounds on -log p(x) from a deterministic encoder (one-hot "
                       "q(k|x)): -log p(x|z_q) - log p(k); 'uniform': p(k) uniform, "
                       "KL = log K per code (the VQ-VAE paper's convention); 'prior': the "
                       "learned code prior"),
    }  # fmt: skip
    if prior is not None:
        nll = -(parts["recon"] + parts["prior"])
        mean, se = _mean_se(nll)
        prior_nll, _ = _mean_se(-parts["prior"])
        result.update(
            prior_nll_nats=prior_nll, prior_nll_per_code=prior_nll / n,
            prior_nll_per_code_bits=prior_nll / n / math.log(2),
            uniform_per_code_bits=math.log2(model.num_codes),
            bound_prior_nats=mean, bound_prior_nats_se=se,
            bound_prior_bits_per_dim=mean * to_bits, bound_prior_bits_per_dim_se=se * to_bits,
        )  # fmt: skip
    return result


@torch.no_grad()
def sample_images(
    model: torch.nn.Module, prior: GatedPixelCNN, n: int, temperature: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:  # fmt: skip
    """``n`` images ``(n, C, H, W)`` in [0, 1] on the CPU: code grids drawn from the prior at
    ``temperature`` (softmax(logits / T)), decoded to the means of p(x|z_q)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    codes = prior.sample(n, temperature, generator=gen)
    return model.likelihood.mean(model.decode_codes(codes)).clamp(0, 1).float().cpu()


@torch.no_grad()
def nearby_codes(
    model: torch.nn.Module, x: torch.Tensor, n: int = 15, spread: float = 1.0, seed: int = 0
) -> torch.Tensor:
    """``vaelab similar`` for a VQ-VAE: ``n`` decodings ``(n, C, H, W)`` of uint8 image ``x``
    ``(C, H, W)``'s code grid with some codes moved to nearby ones: each position, with
    probability min(1, spread / 4), takes one of its code's 3 nearest other codebook
    entries (Euclidean, uniformly), draws from ``seed``; ``spread`` = 0 changes none (the
    reconstruction n times, as for a continuous model)."""
    if n < 1 or not spread >= 0:
        raise VaelabError(f"similar: -n must be >= 1 and --spread >= 0, got {n}, {spread}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    codes = model.codes(to_unit(x[None].to(device))).cpu()[0]
    book = model.quantizer.codebook.detach().cpu()
    order = torch.cdist(book, book).argsort(1)[:, 1:4]  # (K, 3): nearest others, nearest first
    grids = codes.expand(n, *codes.shape).clone()
    change = torch.rand(grids.shape, generator=gen) < min(1.0, spread / 4)
    pick = torch.randint(0, order.shape[1], grids.shape, generator=gen)
    grids[change] = order[grids[change], pick[change]]
    return model.likelihood.mean(model.decode_codes(grids.to(device))).clamp(0, 1).float().cpu()
