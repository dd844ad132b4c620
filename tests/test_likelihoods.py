"""Each likelihood's log_prob against torch.distributions, over the whole registry."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from vaelab.errors import VaelabError
from vaelab.likelihoods import LIKELIHOODS, build_likelihood

SHAPE = (2, 5, 4)  # C, H, W


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_contract_shapes(name):
    lik = build_likelihood(name, SHAPE, 0.3)
    params = torch.randn(3, 7, lik.n_params, *SHAPE)  # K=3, B=7
    x = torch.rand(7, *SHAPE)
    assert lik.log_prob(x, params).shape == (3, 7)
    assert lik.mean(params).shape == (3, 7, *SHAPE)
    assert lik.sample(params).shape == (3, 7, *SHAPE)


def test_bernoulli_matches_torch():
    lik = build_likelihood("bernoulli", SHAPE, 1.0)
    logits = torch.randn(3, 7, 1, *SHAPE, dtype=torch.float64)
    x = torch.bernoulli(torch.rand(7, *SHAPE, dtype=torch.float64))
    ref = Bernoulli(logits=logits[:, :, 0]).log_prob(x.expand(3, *x.shape)).flatten(2).sum(-1)
    torch.testing.assert_close(lik.log_prob(x, logits), ref)


@pytest.mark.parametrize("name", ["gaussian-fixed", "gaussian-learned", "gaussian-pixel"])
def test_gaussian_matches_torch(name):
    sigma = 0.2
    lik = build_likelihood(name, SHAPE, sigma).double()
    mean = torch.randn(3, 7, 1, *SHAPE, dtype=torch.float64)
    x = torch.rand(7, *SHAPE, dtype=torch.float64)
    ref = Normal(mean[:, :, 0], sigma).log_prob(x).flatten(2).sum(-1)
    torch.testing.assert_close(lik.log_prob(x, mean), ref)


def test_fixed_sigma_is_weighted_mse():
    """-log p = ||x - m||^2 / (2 sigma^2) + D log sigma + D/2 log 2 pi (README's claim)."""
    sigma, d = 0.5, math.prod(SHAPE)
    lik = build_likelihood("gaussian-fixed", SHAPE, sigma).double()
    mean = torch.rand(1, 4, 1, *SHAPE, dtype=torch.float64)
    x = torch.rand(4, *SHAPE, dtype=torch.float64)
    sse = (x - mean[0, :, 0]).square().flatten(1).sum(1)
    expected = sse / (2 * sigma**2) + d * math.log(sigma) + 0.5 * d * math.log(2 * math.pi)
    torch.testing.assert_close(-lik.log_prob(x, mean)[0], expected)


def test_learned_sigma_gets_gradient_and_per_pixel_shape():
    lik = build_likelihood("gaussian-pixel", SHAPE, 0.5)
    assert lik.log_sigma_param.shape == SHAPE
    lik.log_prob(torch.rand(2, *SHAPE), torch.rand(1, 2, 1, *SHAPE)).sum().backward()
    assert lik.log_sigma_param.grad.abs().sum() > 0


def test_unknown_likelihood_lists_valid_names():
    with pytest.raises(VaelabError, match=r"bernoulli.*gaussian-fixed"):
        build_likelihood("poisson", SHAPE, 1.0)


def test_bernoulli_accepts_batched_targets_and_unbatched_params():
    lik = build_likelihood("bernoulli", SHAPE, 1.0)
    logits = torch.randn(3, 7, 1, *SHAPE, dtype=torch.float64)
    x = torch.bernoulli(torch.rand(3, 7, *SHAPE, dtype=torch.float64))  # one x per sample
    ref = Bernoulli(logits=logits[:, :, 0]).log_prob(x).flatten(2).sum(-1)
    torch.testing.assert_close(lik.log_prob(x, logits), ref)
    torch.testing.assert_close(lik.log_prob(x[0], logits[0]), ref[0])  # no K dimension


def test_per_pixel_sigma_uses_each_pixels_value_and_the_one_grey_level_floor():
    """gaussian-pixel with a different sigma at every pixel and channel (some below 1/255):
    log p must be torch's Normal with sigma_i = max(exp(log_sigma_i), 1/255) pixel by pixel
    (float64: 1e-10), and the floored pixels must get no gradient (the clamp is flat there)."""
    lik = build_likelihood("gaussian-pixel", SHAPE, 0.3).double()
    g = torch.Generator().manual_seed(0)
    log_sigma = torch.empty(SHAPE, dtype=torch.float64).uniform_(-9.0, 0.5, generator=g)
    with torch.no_grad():
        lik.log_sigma_param.copy_(log_sigma)
    below = log_sigma < math.log(1 / 255)
    assert below.any() and (~below).any() and len(log_sigma.unique()) == log_sigma.numel()
    params = torch.randn(3, 7, 1, *SHAPE, dtype=torch.float64, generator=g)
    x = torch.rand(7, *SHAPE, dtype=torch.float64, generator=g)
    sigma = log_sigma.exp().clamp(min=1 / 255)
    want = Normal(params[:, :, 0], sigma).log_prob(x).flatten(-3).sum(-1)
    got = lik.log_prob(x, params)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    got.sum().backward()
    grad = lik.log_sigma_param.grad
    assert (grad[below] == 0).all() and (grad[~below] != 0).all()
