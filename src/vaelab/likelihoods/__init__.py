"""Observation models p(x|z): the decoder emits ``n_params`` channels per image channel.

Shapes: images ``x`` are ``(B, C, H, W)`` floats in [0, 1]; decoder parameters are
``(..., B, n_params, C, H, W)`` (leading ``...`` is usually the K samples);
:meth:`Likelihood.log_prob` sums over pixels and returns ``(..., B)`` in nats.

Fixed-sigma Gaussian and the MSE loss: with p(x|z) = N(f(z), sigma^2 I) over D pixels,
    -log p(x|z) = ||x - f(z)||^2 / (2 sigma^2) + D log sigma + (D/2) log(2 pi),
so the ELBO is, up to a constant, -(D / (2 sigma^2)) * MSE - KL: a small sigma weights
reconstruction over the KL term (sharper images, a less regular latent space); a
large sigma does the opposite. ``beta`` in the ELBO plays the same role from the
other side: sigma^2 = beta / 2 reproduces "MSE sum + beta * KL".
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.errors import unknown_name
from vaelab.latents import LOG_2PI
from vaelab.likelihoods.base import Likelihood, sum_pixels
from vaelab.likelihoods.discrete import DiscretizedLogistic, DiscretizedLogisticMixture, working


class Bernoulli(Likelihood):
    """p(x|z) = prod Bernoulli(x_i; sigmoid(l_i)); log p = -BCE(logits, x).

    On non-binary intensities in [0, 1] this is the usual "BCE loss", which is not a
    normalised density of continuous x; binarize the data (static or dynamic) for a
    log-likelihood that means something.
    """

    n_params = 1

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # log p = sum_i x_i l_i - softplus(l_i): softplus is one pass, and with many samples
        # per image the x.l term is one batched matrix-vector product per image; together
        # ~1.7x faster than BCE-with-logits + sum, which dominates K=1000 evaluation. With
        # one sample a plain multiply-sum is faster (3x here) than a batch of 1x1 products.
        # float32 whatever the autocast dtype: a bf16 target or einsum (autocast runs its
        # batched product in bf16) cost up to nats per image.
        logits = working(params[..., 0, :, :, :]).flatten(-3)
        target = x.to(logits.dtype).flatten(-3)
        if logits.dim() == 3 and target.dim() == 2 and logits.shape[0] > 1:
            with torch.autocast(logits.device.type, enabled=False):
                dot = torch.einsum("kbd,bd->kb", logits, target)
        else:
            dot = (logits * target).sum(-1)
        return dot - F.softplus(logits).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params[..., 0, :, :, :])

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(self.mean(params))


class GaussianFixed(Likelihood):
    """p(x|z) = N(f(z), sigma^2 I) with a fixed sigma (the tutorials' N(f(z), cI)).

    The mean is the decoder's raw output (no squashing), so this is exactly the
    Gaussian of the maths; pictures clamp it to [0, 1] for display.
    """

    n_params = 1

    def __init__(
        self, image_shape: tuple[int, int, int], sigma: float = 1.0, mixtures: int = 10
    ) -> None:
        super().__init__(image_shape, sigma)
        self.register_buffer("log_sigma", torch.tensor(math.log(sigma)))

    def _log_sigma(self) -> torch.Tensor:
        return self.log_sigma

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mean = working(self.mean(params))  # float32 under autocast
        log_sigma = self._log_sigma().to(mean.dtype)
        z = (x - mean) * torch.exp(-log_sigma)
        per_pixel = -0.5 * z.square() - log_sigma - 0.5 * LOG_2PI
        return sum_pixels(per_pixel.expand_as(mean))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params[..., 0, :, :, :]

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        mean = self.mean(params)
        return mean + torch.exp(self._log_sigma()) * torch.randn_like(mean)


class GaussianLearned(GaussianFixed):
    """As :class:`GaussianFixed`, with one learned log-sigma for all pixels."""

    def __init__(
        self, image_shape: tuple[int, int, int], sigma: float = 1.0, mixtures: int = 10
    ) -> None:
        Likelihood.__init__(self, image_shape, sigma)
        self.log_sigma_param = nn.Parameter(torch.full(self._shape(), math.log(sigma)))

    def _shape(self) -> tuple[int, ...]:
        return ()

    def _log_sigma(self) -> torch.Tensor:
        # Floor sigma at ~1/255: below one grey level the density is meaningless and the
        # bound diverges on near-constant pixels (the background of most image sets).
        return self.log_sigma_param.clamp(min=math.log(1 / 255))


class GaussianPixel(GaussianLearned):
    """As :class:`GaussianLearned`, with a learned log-sigma per pixel and channel."""

    def _shape(self) -> tuple[int, ...]:
        return self.image_shape


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": Bernoulli,
    "gaussian-fixed": GaussianFixed,
    "gaussian-learned": GaussianLearned,
    "gaussian-pixel": GaussianPixel,
    "dlogistic": DiscretizedLogistic,
    "dmol": DiscretizedLogisticMixture,
}


def build_likelihood(
    name: str, image_shape: tuple[int, int, int], sigma: float, mixtures: int = 10
) -> Likelihood:
    """The likelihood ``name`` for images of ``image_shape``; ``sigma`` is read by the
    Gaussians, ``mixtures`` (logistic components per pixel) by ``dmol``."""
    if name not in LIKELIHOODS:
        raise unknown_name("--likelihood", name, LIKELIHOODS)
    return LIKELIHOODS[name](image_shape, sigma, mixtures)


def nll_meaning(likelihood: str, binarize: str) -> dict[str, Any]:
    """What the NLL of ``likelihood`` on data binarized as ``binarize`` is, as
    ``{"bits_per_dim_comparable": bool, "nll_is": str}``. Only -log P(x) of the data as
    stored (the 256 levels of 8-bit values for a ``discrete`` likelihood, or 0/1 pixels
    after binarization under a Bernoulli) compares with published bits/dim; a Bernoulli on
    grey levels gives a cross-entropy, a Gaussian a density of continuous values (README,
    "Which numbers compare")."""
    if LIKELIHOODS[likelihood].discrete:
        return {"bits_per_dim_comparable": True, "nll_is": "-log P(x) of the 8-bit values"}
    if likelihood == "bernoulli" and binarize != "none":
        return {"bits_per_dim_comparable": True, "nll_is": "-log P(x) of the binarized images"}
    if likelihood == "bernoulli":
        return {"bits_per_dim_comparable": False, "nll_is": (
            "a cross-entropy of grey levels under a Bernoulli, not a likelihood")}  # fmt: skip
    return {"bits_per_dim_comparable": False, "nll_is": (
        f"a density of continuous values under {likelihood}, not a probability of the "
        "8-bit data")}  # fmt: skip
