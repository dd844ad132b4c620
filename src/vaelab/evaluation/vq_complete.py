"""Inpainting with a VQ-VAE and its learned code prior: sampling-importance-resampling of
the codes under the missing pixels.

A VQ-VAE's encoder is deterministic and its decoder close to the identity on the images it
reconstructs well, so re-encoding an image whose missing pixels hold a guess mostly gives
the guess back (the iterated projection of :func:`vaelab.evaluation.completion.code_projection`
keeps a mid-grey fill mid-grey). What the missing region should hold is a question for the
code prior p(k) (a gated PixelCNN, :mod:`vaelab.training.code_prior`):

1. encode the observation with the missing pixels at 0.5: codes k0 ``(h, w)``;
2. a code cell is *resampled* when at least half of the pixel block it sits on (the
   image cut into h x w blocks) is missing; the others keep k0 (they are fixed by pixels
   the model sees);
3. proposals: the resampled cells drawn in raster order from p(k_i | k_<i) with the kept
   cells clamped, so q(k) = prod_{resampled i} p(k_i | k_<i);
4. the target is p(k | x_obs) ∝ p(k) p(x_obs | z_q(k)) over grids agreeing with the kept
   cells, so the importance weight is
       w(k) = p(x_obs | k) * prod_{kept i} p(k_i | k_<i)
   (the resampled factors of p(k) cancel against q). p(x_obs | k) sums the likelihood
   over observed pixels only: the missing pixels are set to 0 with parameters 0 in every
   proposal, a term that is the same for every proposal and cancels in the normalised
   weights (every registry likelihood factorises over pixels, and a mask covers all of a
   pixel's channels);
5. each of the ``n`` completions picks one of ``proposals`` draws with probability
   proportional to w (self-normalised; exact as proposals -> infinity).

The picture is the decoder's mean at the chosen codes with the observed pixels restored.
The logits at a cell depend only on earlier rows, so each draw passes only rows 0..i
through the PixelCNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cells_to_resample(missing: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` bool: code cells whose pixel block is at least half missing, from a
    mask ``(B, C, H, W)`` (True = missing; channel 0 is read: masks cover whole pixels)."""
    share = F.adaptive_avg_pool2d(missing[:, :1].float(), grid)[:, 0]
    return share >= 0.5


@torch.no_grad()
def draw_clamped(prior: torch.nn.Module, start: torch.Tensor, resample: torch.Tensor):
    """Codes ``(M, h, w)``: ``start`` with the ``resample`` cells drawn in raster order
    from the prior's conditionals given everything before them (global torch RNG)."""
    codes = start.clone()
    h, w = codes.shape[1:]
    for i in range(h):
        for j in range(w):
            rows = resample[:, i, j].nonzero()[:, 0]
            if len(rows):
                logits = prior(codes[rows, : i + 1])[:, :, i, j]
                codes[rows, i, j] = torch.multinomial(F.softmax(logits, 1), 1)[:, 0]
    return codes


@torch.no_grad()
def prior_inpaint(
    model: torch.nn.Module, prior: torch.nn.Module, x: torch.Tensor, missing: torch.Tensor,
    n: int, proposals: int = 8,
) -> torch.Tensor:  # fmt: skip
    """Code grids ``(B*n, h, w)`` (chain ``b*n + j``) of ``n`` completions of each image
    ``x`` ``(B, C, H, W)`` in [0, 1], ``missing`` its mask ``(B, C, H, W)``; each completion
    is one of ``proposals`` draws resampled by weight (see the module docstring)."""
    b = len(x)
    seen = torch.where(missing, torch.full_like(x, 0.5), x)
    k0 = model.codes(seen)  # (B, h, w)
    resample = cells_to_resample(missing, model.grid)
    m = n * proposals
    start, cells = k0.repeat_interleave(m, 0), resample.repeat_interleave(m, 0)
    codes = draw_clamped(prior, start, cells)  # (B*m, h, w)
    params = model.decode_codes(codes)
    miss = missing.repeat_interleave(m, 0)
    x_ref = torch.where(miss, torch.zeros_like(miss, dtype=x.dtype), x.repeat_interleave(m, 0))
    p_ref = torch.where(miss[:, None], torch.zeros_like(params), params)
    log_obs = model.likelihood.log_prob(x_ref, p_ref[None])[0]  # (B*m,)
    logp = F.log_softmax(prior(codes), 1).gather(1, codes[:, None])[:, 0]
    log_kept = (logp * (~cells)).flatten(1).sum(1)
    log_w = (log_obs + log_kept).view(b * n, proposals)
    pick = torch.distributions.Categorical(logits=log_w).sample()  # (B*n,)
    return codes.view(b * n, proposals, *codes.shape[1:])[
        torch.arange(b * n, device=pick.device), pick
    ]
