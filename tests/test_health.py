"""Latent health: active units and per-dimension KL on a model with known dead dimensions."""

import pytest
import torch
from torch import nn

from vaelab.data import load_dataset
from vaelab.evaluation.health import latent_health
from vaelab.latents.priors import MixturePrior, StandardNormalPrior
from vaelab.likelihoods import build_likelihood
from vaelab.models.vae import VAE

D = 6


def model_with_dead_dims(live: int, prior=None) -> VAE:
    """A VAE whose encoder's means and log-variances for dimensions >= ``live`` are exactly
    0: q(z_d|x) = N(0, 1) = p(z_d) for every x, the textbook collapsed unit."""
    torch.manual_seed(0)
    enc = nn.Linear(64, 2 * D)
    with torch.no_grad():
        enc.weight[live:D] = 0.0
        enc.bias[live:D] = 0.0
        enc.weight[D + live :] = 0.0
        enc.bias[D + live :] = 0.0
        enc.weight[:live] *= 5.0  # live means vary clearly across images
    dec = nn.Sequential(nn.Linear(D, 64), nn.Unflatten(1, (1, 1, 8, 8)))
    return VAE(nn.Sequential(nn.Flatten(), enc), dec, prior or StandardNormalPrior(D),
               build_likelihood("bernoulli", (1, 8, 8), 1.0), (1, 8, 8))  # fmt: skip


@pytest.fixture(scope="module")
def digits_x():
    return load_dataset("digits").test_x


@pytest.mark.parametrize("live", [0, 2, 6])
def test_active_units_count_the_live_dimensions(digits_x, live):
    health = latent_health(model_with_dead_dims(live), digits_x)
    assert health["active_units"] == live
    act = torch.tensor(health["activity_per_dim"])
    assert (act[live:] == 0).all() and (act[:live] > 0.01).all()
    # A dead dimension's KL(N(0,1) || N(0,1)) is exactly 0; a live one's is positive.
    kl = torch.tensor(health["kl_per_dim"])
    assert (kl[live:].abs() < 1e-12).all() and (kl[:live] > 0).all()
    assert health["collapsed"] == (live == 0)
    assert bool(health["warnings"]) == (live < D)
    if live == 0:
        assert "posterior collapse" in health["warnings"][0]


def test_per_dimension_kl_is_undefined_for_a_mixture_prior(digits_x):
    health = latent_health(model_with_dead_dims(3, MixturePrior(D, 4)), digits_x)
    assert health["kl_per_dim"] is None and health["active_units"] == 3
