"""The 8-bit likelihoods' means and samples against enumeration, and their numerics.

References are independent of the code under test: the 256 bin probabilities of a logistic
(mu, s) enumerated in float64 from its CDF (plain sigmoid differences, edge bins taking the
tails), exact means as sums over the enumerated values, and chi-square goodness-of-fit tests
of draws against those probabilities (p > 1e-4: a false alarm once in 10,000 runs). Each test
was checked to fail on a mutated formula (mean = clamp(mu); the dmol mean without coupling;
samples shifted by half a level; coupling slots in reversed order; softplus for logsigmoid;
no upper log-scale clamp).
"""

import math

import pytest
import torch
from scipy.stats import chi2

from vaelab.likelihoods import build_likelihood

LEVELS = torch.arange(256, dtype=torch.float64)
# Bin v covers [y_v - 1/255, y_v + 1/255] of [-1, 1], y_v = 2v/255 - 1; the edge bins are open.
LOWER = (LEVELS * 2 / 255 - 1 - 1 / 255).clone()
LOWER[0] = -math.inf
UPPER = (LEVELS * 2 / 255 - 1 + 1 / 255).clone()
UPPER[255] = math.inf


def bin_probs(mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """P(v) for v = 0..255 of a logistic (mu, s) (any shape ``S``) -> ``(*S, 256)``, float64."""
    mu, s = mu.double().unsqueeze(-1), s.double().unsqueeze(-1)
    return torch.sigmoid((UPPER - mu) / s) - torch.sigmoid((LOWER - mu) / s)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of ``counts`` (any shape) drawn from ``probs`` (same shape, sum 1); cells
    expected below 5 are pooled into one (the chi-square approximation needs >= 5)."""
    counts, expected = counts.flatten().double(), probs.flatten() * counts.sum()
    keep = expected >= 5
    obs = torch.cat([counts[keep], counts[~keep].sum().view(1)])
    exp = torch.cat([expected[keep], expected[~keep].sum().view(1)])
    stat = ((obs - exp) ** 2 / exp.clamp(min=1e-12)).sum().item()
    return float(chi2.sf(stat, len(obs) - 1))


def test_dlogistic_mean_is_the_enumerated_mean_on_the_grid():
    """mean() = the expected 8-bit value sum_v v P(v), rounded to a level: within half a level
    of it (the clamped logistic's mean and the discretized mean agree to far below a level at
    these scales of 3..90 levels). Wide scales near the edges make E[v] far from clamp(mu)."""
    torch.manual_seed(0)
    mu = torch.tensor([0.9, -0.5, 1.3, 0.0, -0.97, 0.4, 0.7, -1.2, 0.05, 0.3])
    log_s = torch.tensor([-1.0, -2.0, -0.5, -4.0, -1.5, -3.0, -0.3, -1.0, -2.5, -3.7])
    lik = build_likelihood("dlogistic", (1, 1, 10), 1.0)
    got = lik.mean(torch.stack([mu, log_s]).view(1, 2, 1, 1, 10)).flatten().double() * 255
    expected = (bin_probs(mu, log_s.exp()) * LEVELS).sum(-1)
    assert (got - expected).abs().max() <= 0.5 + 1e-3, (got - expected).tolist()
    assert (mu.clamp(-1, 1).double() * 127.5 + 127.5 - expected).abs().max() > 20  # the test bites


def _bin_probs_given(mu: torch.Tensor, log_s: float) -> torch.Tensor:
    return bin_probs(mu, torch.full_like(mu, math.exp(log_s), dtype=torch.float64))


def _rgb_pixel(m: int, seed: int) -> tuple[torch.Tensor, dict]:
    """dmol parameters of one RGB pixel ``(1, n_params, 3, 1, 1)`` with strong coupling, and
    the same values by name: weights pi (M,), mu (M, 3), log s (M, 3), coef (M, 3) in the
    order (G on R, B on R, B on G)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, 3, generator=g, dtype=torch.float64)
    mu = torch.rand(m, 3, generator=g, dtype=torch.float64) * 0.8 - 0.4
    log_s = torch.full((m, 3), -3.0, dtype=torch.float64) + torch.rand(m, 3, generator=g) * 0.5
    raw = torch.tensor([[1.2, -0.9, 0.8], [-1.1, 0.7, 1.0]], dtype=torch.float64)[:m]
    params = torch.zeros(1, 4 * m, 3, 1, 1, dtype=torch.float64)
    params[0, :m, :, 0, 0] = logits
    params[0, m : 2 * m, :, 0, 0] = mu
    params[0, 2 * m : 3 * m, :, 0, 0] = log_s
    params[0, 3 * m :, :, 0, 0] = raw  # slot k, channel p: coefficient p of component k
    named = {"pi": torch.softmax(logits.sum(1), 0), "mu": mu, "log_s": log_s,
             "coef": torch.tanh(raw)}  # fmt: skip
    return params, named


def _exact_rgb_means(p: dict) -> torch.Tensor:
    """E[v_R], E[v_G], E[v_B] of the coupled mixture by enumeration: for each component,
    P(r) (256), P(g | r) (256 x 256) and E[v_B | r, g] (256 x 256) from the bin
    probabilities, with y = 2v/255 - 1 feeding the coupling."""
    y = LEVELS * 2 / 255 - 1
    means = torch.zeros(3, dtype=torch.float64)
    for k in range(len(p["pi"])):
        (mr, mg, mb), (sr, sg, sb), (c_gr, c_br, c_bg) = p["mu"][k], p["log_s"][k], p["coef"][k]
        pr = _bin_probs_given(mr.view(1), sr.item())[0]  # (256,)
        pg = _bin_probs_given(mg + c_gr * y, sg.item())  # (r, g)
        mu_b = mb + c_br * y.view(256, 1) + c_bg * y.view(1, 256)  # (r, g)
        eb = (_bin_probs_given(mu_b, sb.item()) * LEVELS).sum(-1)  # (r, g)
        joint = pr.view(256, 1) * pg  # P(r, g)
        means += p["pi"][k] * torch.stack(
            [(pr * LEVELS).sum(), (joint * LEVELS.view(1, 256)).sum(), (joint * eb).sum()]
        )
    return means


def test_dmol_rgb_mean_follows_the_coupling():
    """mean() of a coupled RGB pixel against the enumerated E[v_c]. The coupling is evaluated
    at each component's mean of the earlier channels (documented), exact for red and, with
    scales of a few levels and locations inside (-1, 1), within ~0.1 level for green and
    blue; 1 level covers that plus the rounding. Without the coupling green and blue move by
    tens of levels."""
    params, named = _rgb_pixel(2, seed=5)
    lik = build_likelihood("dmol", (3, 1, 1), 1.0, 2).double()
    got = lik.mean(params).flatten() * 255
    expected = _exact_rgb_means(named)
    assert (got - expected).abs().max() <= 1.0, (got.tolist(), expected.tolist())
    uncoupled = (named["pi"].view(2, 1) * (named["mu"] + 1) * 127.5).sum(0)
    assert (uncoupled - expected).abs().max() > 10  # the coupling matters in this pixel


def test_dlogistic_samples_follow_the_enumerated_levels_at_full_resolution():
    """400k draws per pixel against the 256 enumerated probabilities, level by level (no
    pooling): a half-level shift or a floor for a round moves mass across every bin edge.
    One pixel sits mid-range (scale ~4 levels), one against the top edge (its tail piles up
    in bin 255)."""
    torch.manual_seed(6)
    mu, log_s = torch.tensor([0.1, 0.97]), torch.tensor([-3.5, -3.0])
    lik = build_likelihood("dlogistic", (1, 1, 2), 1.0)
    params = torch.stack([mu, log_s]).view(1, 2, 1, 1, 2).expand(400_000, -1, -1, -1, -1)
    levels = (lik.sample(params) * 255).round().long().view(-1, 2)
    probs = bin_probs(mu, log_s.exp())
    for i in range(2):
        counts = torch.bincount(levels[:, i], minlength=256)
        assert chi_square_p(counts, probs[i]) > 1e-4


def test_dmol_rgb_samples_follow_the_enumerated_joint_distribution():
    """200k draws of one coupled RGB pixel (2 components) against its joint distribution
    over (R, G, B), pooled into 8 x 8 x 8 cells of 32 levels: per component
    P(r) P(g | r) P(b in cell | r, g), enumerated over r and g."""
    torch.manual_seed(7)
    params, p = _rgb_pixel(2, seed=8)
    lik = build_likelihood("dmol", (3, 1, 1), 1.0, 2).double()
    draws = (lik.sample(params.expand(200_000, -1, -1, -1, -1)) * 255).round().long()
    cells = draws.view(-1, 3) // 32
    counts = torch.bincount(cells[:, 0] * 64 + cells[:, 1] * 8 + cells[:, 2], minlength=512)
    y = LEVELS * 2 / 255 - 1
    probs = torch.zeros(8, 8, 8, dtype=torch.float64)
    for k in range(2):
        (mr, mg, mb), (sr, sg, sb), (c_gr, c_br, c_bg) = p["mu"][k], p["log_s"][k], p["coef"][k]
        pr = _bin_probs_given(mr.view(1), sr.item())[0]
        pg = _bin_probs_given(mg + c_gr * y, sg.item())  # (r, g)
        mu_b = mb + c_br * y.view(256, 1) + c_bg * y.view(1, 256)
        pb = _bin_probs_given(mu_b, sb.item()).view(256, 256, 8, 32).sum(-1)  # (r, g, cell)
        joint = (pr.view(256, 1, 1) * pg.unsqueeze(-1) * pb).view(8, 32, 8, 32, 8)
        probs += p["pi"][k] * joint.sum((1, 3))
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert chi_square_p(counts, probs) > 1e-4


def test_edge_bin_log_probability_is_exact_in_float64():
    """log P(255) = log(1 - sigma(b)) = -b - log1p(e^-b) with b = 20.5 (the mean ~13 levels
    below the top at a scale of a third of a level): softplus(b) returns b itself above 20 and drops
    log1p(e^-b) = 1.25e-9; F.logsigmoid keeps it (float64 to 1e-13)."""
    s = math.exp(-6.0)  # a third of a level, above the -7 floor
    mu = 1.0 - 1 / 255 - 20.5 * s  # b = (y_255 - mu - 1/255) / s = 20.5
    lik = build_likelihood("dlogistic", (1, 1, 1), 1.0).double()
    params = torch.tensor([mu, math.log(s)], dtype=torch.float64).view(1, 2, 1, 1, 1)
    b = 20.5
    expected = -b - math.log1p(math.exp(-b))
    got = lik.log_prob(torch.ones(1, 1, 1, 1, dtype=torch.float64), params).item()
    assert got == pytest.approx(expected, abs=1e-13, rel=0)


@pytest.mark.parametrize("name", ["dlogistic", "dmol"])
def test_huge_log_scales_give_finite_gradients(name):
    """A decoder emitting log s = 90 (1/s underflows float32) with interior and edge values:
    the loss and every gradient stay finite (the log scale is clamped above)."""
    lik = build_likelihood(name, (3, 2, 2), 1.0, 2)
    params = torch.zeros(1, lik.n_params, 3, 2, 2)
    m = lik.n_params // 4 if name == "dmol" else 0
    params[:, 2 * m : 3 * m if name == "dmol" else 2] = 90.0
    params.requires_grad_()
    x = torch.tensor([0.0, 128 / 255, 1.0, 7 / 255]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    loss = -lik.log_prob(x, params).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(params.grad).all()
