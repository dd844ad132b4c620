"""The two-stochastic-layer VAE (--model hvae): exact log p(x) on a linear-Gaussian
hierarchy, and real training through the CLI.

p(z2) = N(0, I), p(z1|z2) = N(A z2, s1^2 I), p(x|z1) = N(W z1 + b, s^2 I) gives
p(x) = N(b, W (A A^T + s1^2 I) W^T + s^2 I). z2 is independent of x given z1, so the true
posterior is p(z1|x) p(z2|z1): the HVAE's own inference structure q(z1|x) q(z2|z1). With
A's columns along coordinate axes and W's columns orthogonal both factors are diagonal
Gaussians whose means are linear maps, so linear layers represent them exactly; then
every importance weight equals p(x) and the estimate is exact for any K.
"""

import json
import math
import subprocess
import sys

import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vaelab.evaluation.nll import log_likelihood
from vaelab.latents.priors import StandardNormalPrior
from vaelab.likelihoods import GaussianFixed
from vaelab.models.hvae import HVAE
from vaelab.objectives import elbo

C, H, W = 1, 3, 3
D, D1, D2, S, S1 = C * H * W, 3, 2, 0.1, 0.5
f64 = torch.float64


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
    layer.weight.data, layer.bias.data = weight.clone(), bias.clone()
    return layer


def linear_hierarchy() -> tuple[HVAE, MultivariateNormal]:
    torch.manual_seed(0)
    a = torch.zeros(D1, D2, dtype=f64)
    a[0, 0], a[2, 1] = 1.5, 0.8  # columns along axes: A A^T is diagonal
    q, _ = torch.linalg.qr(torch.randn(D, D1, dtype=f64))
    w = q * torch.tensor([0.3, 0.2, 0.1], dtype=f64)  # orthogonal columns
    b = torch.full((D,), 0.5, dtype=f64)
    p1 = a @ a.T + S1**2 * torch.eye(D1, dtype=f64)  # Cov z1 (diagonal)
    # p(z1|x): Sigma1 = (P1^-1 + W^T W / s^2)^-1, mean Sigma1 W^T (x - b) / s^2.
    sigma1 = torch.linalg.inv(torch.linalg.inv(p1) + w.T @ w / S**2)
    # p(z2|z1): Sigma2 = (I + A^T A / s1^2)^-1, mean Sigma2 A^T z1 / s1^2.
    sigma2 = torch.linalg.inv(torch.eye(D2, dtype=f64) + a.T @ a / S1**2)
    zeros = torch.zeros
    encoder = nn.Sequential(nn.Flatten(), _linear(
        torch.cat([sigma1 @ w.T / S**2, zeros(D1, D, dtype=f64)]),
        torch.cat([-(sigma1 @ w.T @ b) / S**2, torch.diagonal(sigma1).log()]),
    ))  # fmt: skip
    up = nn.Sequential(_linear(
        torch.cat([sigma2 @ a.T / S1**2, zeros(D2, D1, dtype=f64)]),
        torch.cat([zeros(D2, dtype=f64), torch.diagonal(sigma2).log()]),
    ))  # fmt: skip
    down = nn.Sequential(_linear(
        torch.cat([a, zeros(D1, D2, dtype=f64)]),
        torch.cat([zeros(D1, dtype=f64), torch.full((D1,), 2 * math.log(S1), dtype=f64)]),
    ))  # fmt: skip
    decoder = nn.Sequential(_linear(w, b), nn.Unflatten(1, (1, C, H, W)))
    model = HVAE(encoder, decoder, up, down, StandardNormalPrior(D2),
                 GaussianFixed((C, H, W), S), (C, H, W)).double()  # fmt: skip
    model.likelihood.log_sigma.fill_(math.log(S))  # the buffer was float32
    p_x = MultivariateNormal(b, w @ p1 @ w.T + S**2 * torch.eye(D, dtype=f64))
    return model, p_x


def test_exact_posterior_gives_exact_log_likelihood_through_both_layers():
    model, p_x = linear_hierarchy()
    torch.manual_seed(1)
    x = (p_x.sample((30,)).clamp(0, 1) * 255).round().to(torch.uint8).reshape(30, C, H, W)
    exact = p_x.log_prob(x.double().div(255).flatten(1))
    est = log_likelihood(model, x, samples=7, batch_size=8, chunk=3)
    torch.testing.assert_close(est, exact, rtol=1e-9, atol=1e-8)
    # The ELBO of an exact posterior is tight too: every log w_k = log p(x).
    terms = model(x.double().div(255), 5)
    torch.testing.assert_close(-elbo(terms)[0], exact.mean(), rtol=1e-9, atol=1e-8)


def test_a_wrong_top_posterior_is_a_strict_lower_bound():
    """With q(z2|z1)'s variances x4 the weights vary, so log p(x) estimates (K = 3) fall
    below the exact value: over 200 images the mean gap is ~0.3 nats with a standard error
    of ~0.07 (measured over 5 seeds: 0.27-0.36), so gap > 3 SE holds with margin; and the
    ELBO (one sample, averaged over 200 draws) sits ~1.3 nats lower still."""
    model, p_x = linear_hierarchy()
    model.up[0].bias.data[D2:] += math.log(4.0)
    torch.manual_seed(1)
    x = (p_x.sample((200,)).clamp(0, 1) * 255).round().to(torch.uint8).reshape(200, C, H, W)
    exact = p_x.log_prob(x.double().div(255).flatten(1))
    torch.manual_seed(2)
    gap = exact - log_likelihood(model, x, samples=3, batch_size=50, chunk=3)
    assert gap.mean() > 3 * gap.std() / math.sqrt(len(gap)), gap.mean()
    bound = -elbo(model(x.double().div(255), 200))[0]
    assert bound < (exact - gap).mean() - 0.5


def test_hvae_trains_and_generates_from_the_cli(tmp_path):
    """Digits, 3 epochs, IWAE K=3: the test bound improves, evaluate reports an NLL not
    worse than -ELBO (K=200 importance samples tighten the bound; 0.5 nats covers the Monte
    Carlo noise of evaluate's one-sample ELBO over 180 test images), sample writes a grid."""
    run = tmp_path / "hvae"
    cmd = [sys.executable, "-m", "vaelab"]
    subprocess.run([*cmd, "train", "--dataset", "digits", "--model", "hvae", "--hidden", "64",
                    "--latent-dim", "4", "--z1-dim", "8", "--z1-hidden", "32", "--objective",
                    "iwae", "--samples", "3", "--epochs", "3", "--batch-size", "64",
                    "--progress", "false", "--report", "false", "--out", str(run)],
                   check=True, capture_output=True, text=True, timeout=300)  # fmt: skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_elbo"] > rows[0]["test_elbo"]
    evaluate = [*cmd, "evaluate", str(run), "--samples", "200", "--no-quality", "--json"]
    subprocess.run([*evaluate, str(tmp_path / "e.json")], check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    result = json.loads((tmp_path / "e.json").read_text())
    assert math.isfinite(result["nll_nats"]) and result["nll_nats"] <= -result["elbo"] + 0.5
    subprocess.run([*cmd, "sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png")],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    assert (tmp_path / "s.png").stat().st_size > 0
