"""Posterior family and prior: densities against torch, analytic KL against Monte Carlo."""

import math

import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaelab.latents import NormalFamily
from vaelab.latents.priors import StandardNormalPrior


def test_normal_family_is_diagonal_gaussian_with_logvar():
    params = torch.randn(5, 6, dtype=torch.float64)
    q = NormalFamily().dist(params)
    mu, logvar = params[:, :3], params[:, 3:]
    ref = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    z = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    assert q.event_shape == (3,)


def test_prior_log_prob_and_samples():
    prior = StandardNormalPrior(4).double()
    z = torch.randn(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    s = prior.sample(20000, temperature=0.5)
    assert s.shape == (20000, 4)
    # Sample std of 20k draws has relative SE 1/sqrt(2n) ~ 0.5%; 3% is > 5 SE.
    torch.testing.assert_close(s.std(0), torch.full((4,), 0.5, dtype=s.dtype), rtol=0.03, atol=0)


def test_analytic_kl_matches_torch_and_monte_carlo():
    torch.manual_seed(0)
    params = torch.randn(6, 8, dtype=torch.float64)
    q = NormalFamily().dist(params)
    prior = StandardNormalPrior(4).double()
    kl = prior.analytic_kl(q)
    torch.testing.assert_close(kl, kl_divergence(q, prior.dist()))
    z = q.sample((200_000,))
    mc = q.log_prob(z) - prior.log_prob(z)  # (S, B): unbiased KL samples
    se = mc.std(0) / math.sqrt(len(mc))
    assert ((mc.mean(0) - kl).abs() < 4 * se).all(), (mc.mean(0), kl, se)
