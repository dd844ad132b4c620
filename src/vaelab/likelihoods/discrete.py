"""Discrete likelihoods of 8-bit images: a probability for each of the 256 values.

A sub-pixel value v in 0..255 is placed at y = 2v/255 - 1 in [-1, 1] (bins of width 2/255,
PixelCNN++'s convention). A logistic L(mu, s) with CDF sigma((t - mu)/s) gives bin v

    P(v) = sigma(a) - sigma(b),  a = (y - mu + 1/255)/s,  b = (y - mu - 1/255)/s,

and the edge bins take the tails: P(0) = sigma(a), P(255) = 1 - sigma(b), so the 256
probabilities sum to exactly 1. In log space, without the cancellation of sigma(a) - sigma(b)
in float32 (both near 0 or near 1 when mu is far from y or s is small),

    log P(v) = log sigma(a) + log sigma(-b) + log(-expm1(b - a)),

which is exact wherever the terms are finite (log sigma is ``F.logsigmoid``, exact in float64
too; ``-softplus(-t)`` is not: softplus returns its input above t = 20, dropping log1p(e^-t),
up to e^-20). PixelCNN++ guards the same cancellation by falling back to the density at the
bin centre times the bin width when the difference is below 1e-5; the identity above needs no
fallback and is exact in that regime too (the tests compare it with a float64 brute force at
far-off means).

Images reach a likelihood as floats x in [0, 1] (the uint8 values / 255); ``round(255 x)``
recovers the 8-bit value, so the NLL is over the 8-bit data, neither dequantized nor
binarized. Log scales are clamped to [-7, 7]. The floor is PixelCNN++'s: at log s = -7 a
logistic centred on a bin puts sigma(e^7/255) - sigma(-e^7/255) = 0.97 of its mass in that
bin (not all of it), so an interior bin's probability stays below 0.97 (an edge bin, which
takes a tail, can come close to 1). The
ceiling keeps 1/s = e^-log s a normal float32 (it underflows near log s = 87, where the
interior bins' log(-expm1(b - a)) turns -inf and the gradient NaN while an image of edge
values still has a finite loss); at s = e^7 the logistic is flat over [-1, 1] to better than
1e-3, so no model needs more.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaelab.errors import VaelabError
from vaelab.likelihoods.base import Likelihood, sum_pixels

HALF_BIN = 1.0 / 255.0  # half a bin in the [-1, 1] scale
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0


def clamp_log_scale(log_s: torch.Tensor) -> torch.Tensor:
    """Log scales clamped to [LOG_SCALE_MIN, LOG_SCALE_MAX] (module docstring)."""
    return log_s.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)


def working(t: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; anything narrower is computed in float32 (the tails need it,
    also under autocast)."""
    return t if t.dtype == torch.float64 else t.float()


def to_levels(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] -> (8-bit values v, bin centres y = 2v/255 - 1), both ``dtype``."""
    v = (x.to(dtype) * 255.0).round().clamp(0.0, 255.0)
    return v, v * (2.0 / 255.0) - 1.0


def log_bin_prob(
    v: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor
) -> torch.Tensor:
    """log P(v) of the discretized logistic (module docstring), broadcast elementwise."""
    inv_s = torch.exp(-log_s)
    a = (y - mu + HALF_BIN) * inv_s
    b = (y - mu - HALF_BIN) * inv_s
    log_cdf_a = F.logsigmoid(a)  # log sigma(a): bin 0 takes all of (-inf, upper edge]
    log_sf_b = F.logsigmoid(-b)  # log (1 - sigma(b)): bin 255 takes [lower edge, inf)
    interior = log_cdf_a + log_sf_b + torch.log(-torch.expm1(b - a))
    return torch.where(v == 0, log_cdf_a, torch.where(v == 255, log_sf_b, interior))


def clamped_mean(mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """E[clamp(L, -1, 1)] for L ~ Logistic(mu, s): -1 + s (softplus((mu+1)/s) -
    softplus((mu-1)/s)), the integral of P(L > t) over [-1, 1]. The discretized value's
    mean is within half a bin of it."""
    s = torch.exp(log_s)
    return -1.0 + s * (F.softplus((mu + 1.0) / s) - F.softplus((mu - 1.0) / s))


def sample_levels(mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """One 8-bit value per element, as a float 0..255, exactly from the discretized logistic:
    a continuous logistic draw falls in bin v with probability P(v) (the edges catch the
    tails through the clamp)."""
    u = torch.rand_like(mu).clamp_(1e-6, 1.0 - 1e-6)
    t = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
    return ((t + 1.0) * 127.5).round().clamp(0.0, 255.0)


def _on_grid(y: torch.Tensor) -> torch.Tensor:
    """[-1, 1] values -> images in [0, 1] on the 256-level grid."""
    return ((y + 1.0) * 127.5).round().clamp(0.0, 255.0) / 255.0


class DiscretizedLogistic(Likelihood):
    """p(x|z) = prod over sub-pixels of a discretized logistic (mu, log s): ``n_params = 2``."""

    n_params = 2
    discrete = True

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = working(params)
        return params[..., 0, :, :, :], clamp_log_scale(params[..., 1, :, :, :])

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mu, log_s = self._split(params)
        v, y = to_levels(x, mu.dtype)
        return sum_pixels(log_bin_prob(v, y, mu, log_s))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return _on_grid(clamped_mean(*self._split(params)))

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return sample_levels(*self._split(params)) / 255.0


class DiscretizedLogisticMixture(Likelihood):
    """PixelCNN++'s discretized mixture of logistics (Salimans et al. 2017), any C.

    Per pixel, M components share one weight pi_k across the channels; in component k
    channel c is a discretized logistic whose location depends linearly on the pixel's
    earlier channels: mu'_kc = mu_kc + sum_{j<c} tanh(g_kcj) y_j (for RGB: G on R, B on R
    and G, PixelCNN++'s three coefficients). The pixel's probability is

        p(x_ij) = sum_k pi_k prod_c P(v_c | mu'_kc, s_kc),

    computed as a logsumexp of log pi_k + sum_c log P. Decoder channels per image channel
    (layout ``(..., n_params, C, H, W)``): M mixture logits (summed over the C channels:
    one logit per component and pixel), M locations, M log scales, then the C(C-1)/2
    coupling coefficients per component in ceil((C-1)/2) * M slots (slots beyond
    C(C-1)/2 are unused; none for C = 1 or 3).
    """

    discrete = True

    def __init__(
        self, image_shape: tuple[int, int, int], sigma: float = 1.0, mixtures: int = 10
    ) -> None:
        super().__init__(image_shape, sigma)
        if isinstance(mixtures, bool) or not isinstance(mixtures, int) or mixtures < 1:
            raise VaelabError(f"--mixtures: expected a positive integer, got {mixtures!r}")
        channels = self.image_shape[0]
        self.mixtures = mixtures
        self.pairs = [(c, j) for c in range(channels) for j in range(c)]
        self.coef_groups = math.ceil((channels - 1) / 2)
        self.n_params = mixtures * (3 + self.coef_groups)

    def _split(self, params: torch.Tensor):
        """-> log pi ``(..., M, H, W)``; mu, log s ``(..., M, C, H, W)``; coefficients
        ``(..., M, P, H, W)`` with P = C(C-1)/2 in the order of ``self.pairs``."""
        params = working(params)
        m = self.mixtures
        log_pi = torch.log_softmax(params[..., :m, :, :, :].sum(-3), dim=-3)
        mu = params[..., m : 2 * m, :, :, :]
        log_s = clamp_log_scale(params[..., 2 * m : 3 * m, :, :, :])
        slots = params[..., 3 * m :, :, :, :]  # (..., G*M, C, H, W)
        lead, (h, w) = slots.shape[:-4], slots.shape[-2:]
        c = slots.shape[-3]
        slots = slots.reshape(*lead, self.coef_groups, m, c, h, w).transpose(-5, -4)
        coef = torch.tanh(slots.reshape(*lead, m, self.coef_groups * c, h, w))
        coef = coef[..., : len(self.pairs), :, :]
        return log_pi, mu, log_s, coef

    def _coupled(self, mu: torch.Tensor, coef: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """mu'_c = mu_c + sum_{j<c} coef_cj y_j; ``y`` broadcasts against ``mu``."""
        channels = [mu[..., c, :, :] for c in range(mu.shape[-3])]
        for p, (c, j) in enumerate(self.pairs):
            channels[c] = channels[c] + coef[..., p, :, :] * y[..., j, :, :]
        return torch.stack(torch.broadcast_tensors(*channels), dim=-3)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        log_pi, mu, log_s, coef = self._split(params)
        v, y = to_levels(x, mu.dtype)
        v, y = v.unsqueeze(-4), y.unsqueeze(-4)  # against the component axis
        log_p = log_bin_prob(v, y, self._coupled(mu, coef, y), log_s).sum(-3)
        return torch.logsumexp(log_pi + log_p, dim=-3).flatten(-2).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """sum_k pi_k E_k[x], E_k as :func:`clamped_mean`, with the coupling evaluated at
        the component's mean of the earlier channels (exact for the first channel), on the
        256-level grid."""
        log_pi, mu, log_s, coef = self._split(params)
        means: list[torch.Tensor] = []
        for c in range(mu.shape[-3]):
            loc = mu[..., c, :, :]
            for p, (cc, j) in enumerate(self.pairs):
                if cc == c:
                    loc = loc + coef[..., p, :, :] * means[j]
            means.append(clamped_mean(loc, log_s[..., c, :, :]))
        per_component = torch.stack(torch.broadcast_tensors(*means), dim=-3)  # (..., M, C, H, W)
        mixed = (log_pi.exp().unsqueeze(-3) * per_component).sum(-4)
        return _on_grid(mixed)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """An exact draw: a component per pixel (Gumbel-max on log pi), then the channels in
        order, each coupled to the earlier channels' drawn 8-bit values."""
        log_pi, mu, log_s, coef = self._split(params)
        gumbel = -torch.log(-torch.log(torch.rand_like(log_pi).clamp_(1e-10, 1.0 - 1e-7)))
        k = (log_pi + gumbel).argmax(dim=-3, keepdim=True)  # (..., 1, H, W)

        def pick(t: torch.Tensor) -> torch.Tensor:  # (..., M, X, H, W) -> (..., X, H, W)
            index = k.unsqueeze(-3).expand(*t.shape[:-4], 1, *t.shape[-3:])
            return t.gather(-4, index).squeeze(-4)

        mu, log_s, coef = pick(mu), pick(log_s), pick(coef)
        levels: list[torch.Tensor] = []
        for c in range(mu.shape[-3]):
            loc = mu[..., c, :, :]
            for p, (cc, j) in enumerate(self.pairs):
                if cc == c:
                    loc = loc + coef[..., p, :, :] * (levels[j] * (2.0 / 255.0) - 1.0)
            levels.append(sample_levels(loc, log_s[..., c, :, :]))
        return torch.stack(levels, dim=-3) / 255.0
