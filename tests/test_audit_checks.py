"""Checks the audit found missing: bits/dim on 3-channel images, the bound that free bits
reports, and per-group temperatures of the deep model. Each was checked to fail on a mutated
formula (dims = H*W; the reported bound with the floored KL; T^0.5 and the groups reversed).
"""

import math

import pytest
import torch

from test_likelihoods_discrete import brute_bin_prob
from vaelab.config import Config, resolve, with_overrides
from vaelab.evaluation.nll import evaluate_model
from vaelab.models import build_model
from vaelab.models.terms import Terms
from vaelab.objectives import elbo


def _constant_dlogistic_vae(shape, mu, log_s):
    """An MLP VAE whose decoder emits the same dlogistic parameters (mu, log s per
    sub-pixel) whatever z is, and whose q(z|x) is N(0, I) = p(z): every importance weight
    is exactly p(x)."""
    cfg = with_overrides(Config(), {"likelihood": "dlogistic", "hidden": "8", "latent_dim": 2},
                         "t").model  # fmt: skip
    model = build_model(cfg, shape).double()
    last_enc, last_dec = model.encoder[-1], model.decoder[-2]  # decoder ends with Unflatten
    with torch.no_grad():
        for layer in (last_enc, last_dec):
            layer.weight.zero_()
            layer.bias.zero_()
        last_dec.bias.copy_(torch.stack([mu, log_s]).flatten())
    return model


def test_bits_per_dim_of_rgb_images_divides_by_every_sub_pixel():
    """C = 3: bits/dim = NLL / (3 H W ln 2), NLL from a scalar brute force of the 60
    sub-pixels' bin probabilities (Python floats). With dims = H W it would be 3x larger."""
    torch.manual_seed(0)
    shape = (3, 4, 5)
    mu = torch.rand(shape, dtype=torch.float64) * 1.6 - 0.8
    log_s = torch.rand(shape, dtype=torch.float64) * 2 - 3.5
    x = torch.randint(0, 256, (5, *shape), dtype=torch.uint8)
    model = _constant_dlogistic_vae(shape, mu, log_s)
    result = evaluate_model(model, x, samples=4)
    nll = [
        -sum(
            math.log(brute_bin_prob(int(v), m, math.exp(s)))
            for v, m, s in zip(
                img.flatten().tolist(), mu.flatten().tolist(), log_s.flatten().tolist(), strict=True
            )
        )
        for img in x
    ]
    expected_nats = sum(nll) / len(nll)
    assert result["nll_nats"] == pytest.approx(expected_nats, rel=1e-9)
    assert result["bits_per_dim"] == pytest.approx(expected_nats / (60 * math.log(2)), rel=1e-9)
    assert result["dims"] == 60


def test_free_bits_report_the_true_bound_not_the_floored_loss():
    """The loss floors each group's batch-mean KL; the reported bound and KL are the ELBO's
    own, recon - KL per image averaged: here recon -10 and KL per group (0.2, 1.0, 0.4) ->
    bound -11.6, while the floored loss is 10 + (0.5 + 1.0 + 0.5) = 12."""
    kl_groups = torch.tensor([[0.1, 0.3, 0.2, 0.2], [1.0, 2.0, 0.5, 0.5], [0.4, 0.4, 0.4, 0.4]])
    recon = torch.full((1, 4), -10.0)
    terms = Terms(recon, recon, recon, kl=kl_groups.sum(0), kl_groups=kl_groups)
    loss, stats = elbo(terms, beta=1.0, free_bits=0.5)
    assert loss.item() == pytest.approx(12.0)
    assert stats["bound"].item() == pytest.approx(-11.6)
    assert stats["recon"].item() == pytest.approx(-10.0)
    assert stats["kl"].item() == pytest.approx(1.6)


def test_each_group_is_drawn_at_its_own_temperature_top_first():
    """Ancestral sampling with temperatures (1.0, 0.5, 0.2) top first: each group's
    standardized deviation from its prior mean, (z - mu_p) / sigma_p, has standard deviation
    T_g (thousands of values per group: T within 3%). T^0.5 would give (1, 0.71, 0.45) and
    the reversed order (0.2, 0.5, 1.0)."""
    deep = {"model": "deep", "deep_widths": "8,8", "deep_groups": "1,2", "group_channels": 2}
    cfg = resolve(with_overrides(Config(), deep, "t"))
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 8, 8))
    assert model.num_groups == 3
    temps = [1.0, 0.5, 0.2]
    with torch.no_grad():
        _, records = model.top_down(500, temperature=model.temperatures(temps))
    for (z, _, _, mu_p, logvar_p), t in zip(records, temps, strict=True):
        spread = ((z - mu_p) * torch.exp(-0.5 * logvar_p)).std().item()
        assert spread == pytest.approx(t, rel=0.03), (spread, t)
