"""Discretized logistic (dlogistic) and PixelCNN++'s mixture (dmol) on 8-bit values.

References: exact enumeration of the 256 values in float64 (probabilities sum to 1), an
independent scalar brute force with Python floats (a loop over pixels, components and
channels), a uniform mixture whose NLL is 8 bits/dim by construction, and the enumerated
probabilities for the sampler.
"""

import math

import pytest
import torch
from scipy.stats import chi2

from vaelab.config import Config, resolve_model, with_overrides
from vaelab.errors import VaelabError
from vaelab.likelihoods import LIKELIHOODS, build_likelihood
from vaelab.models import MODELS, build_model

LEVELS = torch.arange(256, dtype=torch.float64)


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))


def brute_bin_prob(v: int, mu: float, s: float) -> float:
    """P(v) of a logistic(mu, s) discretized to 256 bins over [-1, 1], edges open; each
    difference is taken on the side where both terms are small (no cancellation)."""
    lo = ((2 * v / 255 - 1) - 1 / 255 - mu) / s
    hi = ((2 * v / 255 - 1) + 1 / 255 - mu) / s
    if v == 0:
        return _sigmoid(hi)
    if v == 255:
        return _sigmoid(-lo)
    if lo > 0:  # both CDFs near 1: use the survival functions
        return _sigmoid(-lo) - _sigmoid(-hi)
    return _sigmoid(hi) - _sigmoid(lo)


def brute_dmol(x: torch.Tensor, params: torch.Tensor, m: int) -> float:
    """log p(x) of one image ``x`` (C, H, W) under the documented dmol layout."""
    p = params.tolist()  # (n_params, C, H, W) nested lists of floats
    channels, height, width = x.shape
    pairs = [(c, j) for c in range(channels) for j in range(c)]
    total = 0.0
    for i in range(height):
        for w in range(width):
            v = [round(x[c, i, w].item() * 255) for c in range(channels)]
            y = [2 * vc / 255 - 1 for vc in v]
            logits = [sum(p[k][c][i][w] for c in range(channels)) for k in range(m)]
            top = max(logits)
            norm = sum(math.exp(lg - top) for lg in logits)
            prob = 0.0
            for k in range(m):
                weight = math.exp(logits[k] - top) / norm
                for c in range(channels):
                    mu = p[m + k][c][i][w]
                    for q, (cc, j) in enumerate(pairs):
                        if cc == c:
                            mu += (
                                math.tanh(p[3 * m + (q // channels) * m + k][q % channels][i][w])
                                * y[j]
                            )
                    s = math.exp(max(p[2 * m + k][c][i][w], -7.0))
                    weight *= brute_bin_prob(v[c], mu, s)
                prob += weight
            total += math.log(prob)
    return total


def test_binarized_data_is_refused_for_every_eight_bit_likelihood_of_the_registry():
    # The check reads Likelihood.discrete (no copied list of names): each discrete entry is
    # refused with binarized data, each other one accepted.
    from vaelab.training.options import check_names

    for name, cls in LIKELIHOODS.items():
        cfg = with_overrides(Config(), {"likelihood": name, "binarize": "static",
                                        "dataset": "digits"}, "t")  # fmt: skip
        if cls.discrete:
            with pytest.raises(VaelabError, match=f"--likelihood {name} models the 8-bit"):
                check_names(cfg)
        else:
            check_names(cfg)


@pytest.mark.parametrize("name", ["dlogistic", "dmol"])
def test_256_probabilities_of_a_subpixel_sum_to_one(name):
    torch.manual_seed(0)
    lik = build_likelihood(name, (1, 1, 1), 1.0, 4).double()
    params = torch.randn(20, 1, lik.n_params, 1, 1, 1, dtype=torch.float64)
    params[:, :, lik.n_params // 2 :] -= 3.0  # scales from wide (e^1) to one-bin sharp
    x = (LEVELS / 255).view(256, 1, 1, 1)
    total = lik.log_prob(x, params).exp().sum(-1)  # (20,): each parameter set's sum
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


def test_coupled_rgb_joint_sums_to_one_and_marginal_of_red_is_its_mixture():
    """C=2 (G coupled to R): the 65,536 joint probabilities sum to 1. C=3: summing over
    (G, B) for a fixed R leaves sum_k pi_k P_k(R), the red mixture alone."""
    torch.manual_seed(1)
    g, b = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    lik2 = build_likelihood("dmol", (2, 1, 1), 1.0, 3).double()
    params = torch.randn(2, 1, lik2.n_params, 2, 1, 1, dtype=torch.float64)
    params[:, :, 9:] *= 3  # strong coupling: tanh near +-1
    x = torch.stack([g, b]).reshape(2, -1).T.reshape(-1, 2, 1, 1) / 255
    total = lik2.log_prob(x, params).exp().sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)

    lik3 = build_likelihood("dmol", (3, 1, 1), 1.0, 3).double()
    params = torch.randn(1, lik3.n_params, 3, 1, 1, dtype=torch.float64)
    for r in (0, 77, 255):
        x = torch.stack([torch.full_like(g, r), g, b]).reshape(3, -1).T.reshape(-1, 3, 1, 1)
        marginal = lik3.log_prob(x / 255, params).exp().sum()
        logits = params[0, :3].sum(1).flatten()
        weights = torch.softmax(logits, 0).tolist()
        expected = sum(
            w * brute_bin_prob(r, params[0, 3 + k, 0].item(), math.exp(params[0, 6 + k, 0].item()))
            for k, w in enumerate(weights)
        )
        assert marginal.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_dmol_log_prob_matches_scalar_brute_force(channels):
    torch.manual_seed(channels)
    m = 3
    lik = build_likelihood("dmol", (channels, 3, 2), 1.0, m).double()
    params = torch.randn(2, lik.n_params, channels, 3, 2, dtype=torch.float64)
    params[:, 2 * m : 3 * m] -= 2.5  # typical trained scales, a few grey levels wide
    x = torch.randint(0, 256, (2, channels, 3, 2)).double() / 255
    x[0, :, 0, 0] = 0.0  # both edge bins appear
    x[1, :, 1, 1] = 1.0
    got = lik.log_prob(x, params)
    expected = torch.tensor([brute_dmol(x[i], params[i], m) for i in range(2)], dtype=torch.float64)
    # float64 both ways: only summation order differs.
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_dlogistic_float32_is_exact_in_the_far_tails():
    """Far-off means and small scales: P(v) down to ~1e-100. sigma(a) - sigma(b) in float32
    is 0 there (log = -inf); the log-space identity keeps float32 relative accuracy."""
    lik = build_likelihood("dlogistic", (1, 1, 4), 1.0)
    v = torch.tensor([10, 128, 200, 250])
    mu = torch.tensor([0.9, -0.95, -0.9, 0.0])
    log_s = torch.tensor([-4.5, -4.0, -5.0, -6.0])
    params = torch.stack([mu, log_s]).view(1, 2, 1, 1, 4)
    x = (v.double() / 255).view(1, 1, 1, 4).float()
    per_pixel = [
        math.log(brute_bin_prob(int(vi), m.item(), math.exp(s.item())))
        for vi, m, s in zip(v, mu, log_s, strict=True)
    ]
    assert min(per_pixel) < -200  # the regime the PixelCNN++ fallback exists for
    # float32 inputs carry ~1e-7 relative error in a and b, so log P ~ -500 is good to ~1e-4.
    assert lik.log_prob(x, params).item() == pytest.approx(sum(per_pixel), rel=1e-5)


@pytest.mark.parametrize("name", ["dlogistic", "dmol"])
def test_mean_and_samples_are_8_bit_images(name):
    torch.manual_seed(3)
    lik = build_likelihood(name, (3, 6, 5), 1.0, 4)
    params = 3 * torch.randn(2, 4, lik.n_params, 3, 6, 5)
    for images in (lik.mean(params), lik.sample(params)):
        assert images.shape == (2, 4, 3, 6, 5)
        assert images.min() >= 0 and images.max() <= 1
        levels = images * 255
        torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
        assert len(levels.round().unique()) > 20  # not collapsed onto a few values


def test_dmol_samples_follow_the_enumerated_joint_distribution():
    """200k draws from one coupled 2-channel pixel against its 65,536 enumerated
    probabilities, pooled into 8x8 cells of 32x32 values: a chi-square goodness-of-fit test
    (p > 1e-4, a false alarm once in 10,000 runs)."""
    torch.manual_seed(4)
    lik = build_likelihood("dmol", (2, 1, 1), 1.0, 2).double()
    params = torch.tensor([0.5, -0.5, -0.3, 0.4, -1.5, -2.0, 1.2, -1.0], dtype=torch.float64)
    params = params.view(8, 1).expand(8, 2).reshape(1, 8, 2, 1, 1).clone()
    g, b = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    x = torch.stack([g, b]).reshape(2, -1).T.reshape(-1, 2, 1, 1) / 255
    probs = lik.log_prob(x, params).exp().view(8, 32, 8, 32).sum((1, 3)).flatten()
    draws = lik.sample(params.expand(200_000, -1, -1, -1, -1)) * 255
    v = draws.round().long().view(-1, 2)
    counts = torch.bincount((v[:, 0] // 32) * 8 + v[:, 1] // 32, minlength=64).double()
    expected = probs * len(v)
    keep = expected > 5  # the chi-square approximation needs expected counts >= 5
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    assert counts[~keep].sum() < 50
    assert chi2.sf(stat, int(keep.sum()) - 1) > 1e-4


def test_far_tails_give_finite_gradients():
    lik = build_likelihood("dmol", (3, 2, 2), 1.0, 2)
    params = (torch.randn(1, 1, lik.n_params, 3, 2, 2) * 20).requires_grad_()
    x = torch.randint(0, 256, (1, 3, 2, 2)) / 255
    lik.log_prob(x, params).sum().backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_builds_dmol_with_the_configured_mixtures(model):
    """--mixtures reaches the likelihood whatever the model (a model that forgets to pass
    it would silently use the default)."""
    cfg = with_overrides(Config(), {"model": model, "likelihood": "dmol", "mixtures": 3,
                                    "hidden": "8", "latent_dim": 2}, "t").model  # fmt: skip
    built = build_model(resolve_model(cfg), (3, 8, 8))
    assert built.likelihood.mixtures == 3
    assert built.likelihood.n_params == 3 * 4  # logits, locations, scales, coupling
