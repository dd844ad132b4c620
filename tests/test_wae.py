"""WAE/InfoVAE/SWAE distances against closed forms, and the objectives end to end.

MMD: the unbiased U-statistic's mean over many independent draws must equal the population
MMD^2 of two Gaussians under the RBF kernel, which has a closed form: for u = x - y with
u_d ~ N(delta_d, s2_d) independent per dimension, E exp(-||u||^2 / C) =
prod_d (1 + 2 s2_d / C)^(-1/2) exp(-delta_d^2 / (C + 2 s2_d)). Tolerances are 4 standard
errors of the Monte Carlo mean; the biased (V-statistic) estimate is shown to miss by more,
so the test can tell them apart. SW_2^2: the 1-D W_2^2 of two Gaussians is
(mu1 - mu2)^2 + (s1 - s2)^2; for isotropic Gaussians in D dimensions every projection is a
1-D Gaussian, so SW_2^2 = ||mu1 - mu2||^2 / D + (s1 - s2)^2."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.objectives import Objective
from vaelab.objectives.wae import (
    DecoderRegulariser,
    InfoVAEOptions,
    WAEOptions,
    check_model,
    mmd_unbiased,
    sliced_wasserstein,
)


def expected_rbf(delta: torch.Tensor, s2: torch.Tensor, c: float) -> float:
    return float(torch.prod((1 + 2 * s2 / c) ** -0.5 * torch.exp(-delta.square() / (c + 2 * s2))))


def closed_form_mmd(mu1, v1, mu2, v2, c) -> float:
    zero = torch.zeros_like(mu1)
    return (expected_rbf(zero, 2 * v1, c) + expected_rbf(zero, 2 * v2, c)
            - 2 * expected_rbf(mu1 - mu2, v1 + v2, c))  # fmt: skip


def biased_mmd(a, b, c):
    k = lambda p, q: torch.exp(-torch.cdist(p, q).square() / c)  # noqa: E731
    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()


def test_unbiased_mmd_has_the_closed_form_expectation_for_two_gaussians():
    g = torch.Generator().manual_seed(0)
    d, n, trials, scale = 2, 16, 4000, 0.7
    c = 2 * d * scale**2
    mu1, v1 = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    mu2 = torch.tensor([0.8, -0.5], dtype=torch.float64)
    v2 = torch.tensor([1.8, 0.5], dtype=torch.float64)
    est, biased = [], []
    for _ in range(trials):
        a = mu1 + v1.sqrt() * torch.randn(n, d, generator=g, dtype=torch.float64)
        b = mu2 + v2.sqrt() * torch.randn(n, d, generator=g, dtype=torch.float64)
        est.append(mmd_unbiased(a, b, "rbf", scale))
        biased.append(biased_mmd(a, b, c))
    est, biased = torch.stack(est), torch.stack(biased)
    truth = closed_form_mmd(mu1, v1, mu2, v2, c)
    se = est.std().item() / math.sqrt(trials)
    assert truth > 20 * se  # the distributions differ measurably
    assert abs(est.mean().item() - truth) < 4 * se
    assert abs(biased.mean().item() - truth) > 4 * se  # the test tells the V-statistic apart


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_unbiased_mmd_is_zero_in_expectation_for_equal_distributions(kernel):
    g = torch.Generator().manual_seed(1)
    est = torch.stack([
        mmd_unbiased(torch.randn(12, 3, generator=g, dtype=torch.float64),
                     torch.randn(12, 3, generator=g, dtype=torch.float64), kernel)
        for _ in range(3000)
    ])  # fmt: skip
    se = est.std().item() / math.sqrt(len(est))
    assert abs(est.mean().item()) < 4 * se
    shifted = mmd_unbiased(torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g) + 1,
                           kernel)  # fmt: skip
    assert shifted > 20 * se  # and clearly positive when they differ


def test_sliced_wasserstein_matches_1d_gaussians_in_closed_form():
    g = torch.Generator().manual_seed(2)
    n = 200_000
    a = 0.3 + 1.0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    b = -0.7 + 2.0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    truth = (0.3 + 0.7) ** 2 + (1.0 - 2.0) ** 2
    # quantile coupling of 2e5 draws: the error is ~1e-2 at most (the tails' order statistics)
    assert sliced_wasserstein(a, b, projections=4, generator=g).item() == pytest.approx(
        truth, abs=0.03
    )


def test_sliced_wasserstein_of_isotropic_gaussians_in_d_dimensions():
    g = torch.Generator().manual_seed(3)
    d, n = 4, 20_000
    mu = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = mu + 1.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    truth = mu.square().sum().item() / d + 0.5**2
    got = sliced_wasserstein(a, b, projections=2000, generator=g).item()
    assert got == pytest.approx(truth, rel=0.05)  # E over directions of (theta.mu)^2 is ||mu||^2/D


def tiny(model: str, dtype=torch.float64):
    cfg = ModelConfig(model=model, arch="mlp", hidden=(8,), latent_dim=2)
    return build_model(cfg, (1, 4, 4)).to(dtype)


def test_wae_loss_is_reconstruction_plus_weighted_mmd():
    torch.manual_seed(0)
    model, x = tiny("ae"), torch.rand(32, 1, 4, 4, dtype=torch.float64).round()
    off = Objective("wae", options=WAEOptions(wae_weight=0.0))
    on = Objective("wae", options=WAEOptions(wae_weight=5.0))
    torch.manual_seed(1)
    l0, s0 = off(model, x)
    torch.manual_seed(1)
    l1, s1 = on(model, x)
    assert l0.item() == pytest.approx(-s0["recon"].item())
    assert l1.item() == pytest.approx(-s1["recon"].item() + 5.0 * s1["mmd"].item())


def test_infovae_weights_kl_and_mmd_as_zhao_et_al():
    torch.manual_seed(0)
    model, x = tiny("vae"), torch.rand(32, 1, 4, 4, dtype=torch.float64).round()
    o = InfoVAEOptions(info_alpha=0.25, info_lambda=3.0)
    loss, s = Objective("infovae", options=o)(model, x)
    want = -s["recon"] + 0.75 * s["kl"] + 2.25 * s["mmd"]
    assert loss.item() == pytest.approx(want.item())


def test_rae_gradient_penalty_is_the_decoders_jacobian_norm_in_expectation():
    torch.manual_seed(0)
    model, x = tiny("ae"), torch.rand(4, 1, 4, 4, dtype=torch.float64)
    z = model.latent_mean(x).detach()
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: model.decode(v[None])[0], zi)
                       .reshape(-1, 2) for zi in z])  # fmt: skip
    truth = jac.square().sum((1, 2)).mean().item()  # E_x ||J||_F^2
    term = DecoderRegulariser("gp", 1.0)
    draws = torch.stack([term(model, x, None, None)[0].detach() for _ in range(4000)])
    assert draws.mean().item() == pytest.approx(truth, abs=4 * draws.std().item() / math.sqrt(4000))


def test_objectives_refuse_models_they_cannot_train():
    with pytest.raises(VaelabError, match="--model ae"):
        check_model("rae", tiny("vae"), "normal")
    with pytest.raises(VaelabError, match="needs --model vae"):
        check_model("infovae", tiny("ae"), "normal")
    with pytest.raises(VaelabError, match="codes"):
        check_model("wae", tiny("hvae"), "normal")
    with pytest.raises(VaelabError, match="--prior normal"):
        check_model("swae", tiny("vae"), "mixture")
