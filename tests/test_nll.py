"""Importance-sampled log p(x) against the closed form of a linear-Gaussian model.

p(z) = N(0, I_d), p(x|z) = N(Wz + b, s^2 I_D)  =>  p(x) = N(b, W W^T + s^2 I). With
orthogonal columns of W the true posterior is diagonal, so an encoder can be exact:
then every importance weight equals p(x) and the estimate is exact for any K.
"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vaelab.evaluation.nll import (
    images_fingerprint,
    log_likelihood,
    paired_difference,
    summarize_nll,
)
from vaelab.latents.priors import StandardNormalPrior
from vaelab.likelihoods import GaussianFixed
from vaelab.models.vae import VAE

C, H, W = 1, 4, 4
D, d, S = C * H * W, 3, 0.1


def linear_gaussian(exact: bool):
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, d, dtype=torch.float64))
    w = q * torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)  # orthogonal columns
    b = torch.full((D,), 0.5, dtype=torch.float64)
    decoder = nn.Sequential(nn.Linear(d, D), nn.Unflatten(1, (1, C, H, W))).double()
    decoder[0].weight.data, decoder[0].bias.data = w.clone(), b.clone()
    # Exact posterior: Sigma = (I + W^T W / s^2)^-1 (diagonal), mu = Sigma W^T (x - b) / s^2.
    sigma = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + w.T @ w / S**2)
    enc = nn.Linear(D, 2 * d).double()
    enc.weight.data = torch.cat([sigma @ w.T / S**2, torch.zeros(d, D, dtype=torch.float64)])
    enc.bias.data = torch.cat([-(sigma @ w.T @ b) / S**2, torch.log(torch.diagonal(sigma))])
    if not exact:  # a wrong but reasonable posterior: shifted means, doubled variances
        enc.bias.data[:d] += 0.05
        enc.bias.data[d:] += math.log(2.0)
    model = VAE(nn.Sequential(nn.Flatten(), enc), decoder, StandardNormalPrior(d),
                GaussianFixed((C, H, W), S), (C, H, W)).double()  # fmt: skip
    # The buffer was made in float32; exactness to 1e-9 needs log(s) in float64.
    model.likelihood.log_sigma.fill_(math.log(S))
    p_x = MultivariateNormal(b, w @ w.T + S**2 * torch.eye(D, dtype=torch.float64))
    return model, p_x


def data(model, n=40):
    torch.manual_seed(1)
    with torch.no_grad():
        x = model.likelihood.sample(model.decode(model.prior.sample(n)))
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def test_exact_posterior_gives_exact_log_likelihood():
    model, p_x = linear_gaussian(exact=True)
    x = data(model)
    exact = p_x.log_prob(x.double().div(255).flatten(1))
    est = log_likelihood(model, x, samples=7, batch_size=16, chunk=3)
    torch.testing.assert_close(est, exact, rtol=1e-9, atol=1e-8)


def test_chunks_are_pooled_into_one_estimate_of_log_px():
    """K = 2000 draws from a wrong-but-reasonable posterior, taken 2 at a time: the chunks'
    log weights must be pooled into one logmeanexp over all 2000 (bias ~var(w)/2K, nil
    here), not averaged chunk by chunk (that is IWAE with K = 2: 0.19 nats low here).
    Over 10 seeds the mean of exact - estimate over these 40 images measured -0.001 with a
    spread (SD) of 0.0036 pooled, and 0.190 (SD 0.0037) chunk-averaged; the 0.015 margin is
    4 SDs of the pooled spread and 1/12 of the chunk-averaged error."""
    model, p_x = linear_gaussian(exact=False)
    x = data(model)
    exact = p_x.log_prob(x.double().div(255).flatten(1))
    torch.manual_seed(2)
    est = log_likelihood(model, x, samples=2000, batch_size=40, chunk=2)
    assert abs((exact - est).mean()) < 0.015, (exact - est).mean()


def test_summary_standard_errors_against_the_statistics_module():
    """nll_nats_se is the sample SD of per-image NLL / sqrt(N); bits/dim and its SE follow
    by converting each image's NLL to bits per dimension first (Python's statistics
    module, an independent route). Float64 throughout: 1e-12 relative."""
    import statistics

    log_px = torch.tensor([-310.2, -295.7, -402.1, -288.0, -350.5, -333.3], dtype=torch.float64)
    s = summarize_nll(log_px, D)
    nll = [-v for v in log_px.tolist()]
    bits = [v / (D * math.log(2)) for v in nll]
    assert s["nll_nats"] == pytest.approx(statistics.fmean(nll), rel=1e-12)
    assert s["nll_nats_se"] == pytest.approx(statistics.stdev(nll) / math.sqrt(6), rel=1e-12)
    assert s["bits_per_dim"] == pytest.approx(statistics.fmean(bits), rel=1e-12)
    assert s["bits_per_dim_se"] == pytest.approx(statistics.stdev(bits) / math.sqrt(6), rel=1e-12)
    assert s["images"] == 6 and math.isnan(summarize_nll(log_px[:1], D)["nll_nats_se"])


def test_paired_difference_is_the_difference_of_means_with_a_paired_se():
    model, _ = linear_gaussian(exact=False)
    x = data(model, n=200)
    torch.manual_seed(3)
    a = log_likelihood(model, x, samples=5)
    b = log_likelihood(model, x, samples=5)  # same model, fresh draws: only MC noise differs
    d = paired_difference(a.tolist(), b.tolist())
    sa, sb = summarize_nll(a, D), summarize_nll(b, D)
    assert d["nll_difference"] == pytest.approx(sb["nll_nats"] - sa["nll_nats"], abs=1e-9)
    assert d["nll_difference_se"] == pytest.approx(
        (a - b).std().item() / math.sqrt(len(a)), rel=1e-9
    )
    # Per-image log p(x) spreads with how typical each image is, which both estimates share;
    # the K=5 noise that differs is far smaller, so pairing shrinks the SE many-fold.
    assert d["nll_difference_se"] < sa["nll_nats_se"] / 5
    with pytest.raises(ValueError, match="200 vs 199"):
        paired_difference(a.tolist(), b[:-1].tolist())


def test_images_fingerprint_tells_the_evaluated_images_apart():
    x = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    assert images_fingerprint(x) == images_fingerprint(x.clone())
    y = x.clone()
    y[3, 0, 2, 2] ^= 1
    assert images_fingerprint(y) != images_fingerprint(x)
    assert images_fingerprint(x[:9]) != images_fingerprint(x)


def test_a_dynamically_binarized_run_is_evaluated_on_the_same_images_twice(tmp_path):
    """Training redraws binary pixels every step, but evaluation must score one fixed draw:
    two evaluations of the run report the same images fingerprint (so their per-image
    values pair), and it is not that of the grey-level test images."""
    import vaelab
    from conftest import small_config
    from vaelab.training.loop import fit

    run = fit(small_config(binarize="dynamic", epochs=1), tmp_path / "dyn")
    a = vaelab.evaluate(run, samples=2, limit=30, extras=False)
    b = vaelab.evaluate(run, samples=2, limit=30, extras=False)
    assert a["images_fingerprint"] == b["images_fingerprint"]
    assert a["log_px_per_image"] != b["log_px_per_image"]  # fresh draws of z, same images
    grey = vaelab.api.load_test_images(run).test_x[:30]
    assert a["images_fingerprint"] != images_fingerprint(grey)
