"""ELBO and IWAE as reductions of the same Terms."""

import math

import torch

import vaelab
from vaelab.data.prepare import to_unit
from vaelab.models.terms import Terms
from vaelab.objectives import elbo, iwae


def _terms(k=4, b=6, kl=True):
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(k, b, generator=g, dtype=torch.float64) for _ in range(3)]
    return Terms(*t, kl=torch.rand(b, generator=g, dtype=torch.float64) if kl else None)


def test_elbo_uses_analytic_kl_and_beta():
    terms = _terms()
    loss, stats = elbo(terms, beta=0.5)
    expected = -(terms.log_px_z.mean(0) - 0.5 * terms.kl).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["bound"], (terms.log_px_z.mean(0) - terms.kl).mean())


def test_elbo_without_analytic_kl_uses_sample_estimate():
    terms = _terms(kl=False)
    loss, _ = elbo(terms)
    torch.testing.assert_close(loss, -terms.log_w().mean())


def test_iwae_matches_closed_forms_on_a_linear_gaussian_model():
    """On the linear-Gaussian model of test_nll with a wrong posterior q, two closed forms:
    E[IWAE_1] = ELBO = log p(x) - KL(q(z|x) || p(z|x)) (both Gaussians), and IWAE_K -> log p(x).
    20,000 single-sample bounds per image must average to the ELBO within 4 SE, the K = 5000
    bound must lie within 4 SE of log p(x) (its bias ~var(w)/2K ~ 4e-4 is far smaller), and
    IWAE_5000 must clear IWAE_1 by most of the KL (0.48 nats here)."""
    from torch.distributions import MultivariateNormal, kl_divergence

    from test_nll import S, data, linear_gaussian

    model, p_x = linear_gaussian(exact=False)
    x = data(model, n=4).double().div(255)
    w, b = model.decoder[0].weight.detach(), model.decoder[0].bias.detach()
    eye = torch.eye(w.shape[1], dtype=torch.float64)
    post_cov = torch.linalg.inv(eye + w.T @ w / S**2)
    post_mean = (x.flatten(1) - b) @ w @ post_cov / S**2  # (B, d)
    with torch.no_grad():
        mu, logvar = model.encoder(x).chunk(2, -1)
        q = MultivariateNormal(mu, torch.diag_embed(logvar.exp()))
        log_px = p_x.log_prob(x.flatten(1))
        exact_elbo = log_px - kl_divergence(q, MultivariateNormal(post_mean, post_cov))
        torch.manual_seed(0)
        t = model(x, 20_000)
        single = Terms(
            t.log_px_z.reshape(1, -1), t.log_pz.reshape(1, -1), t.log_qz_x.reshape(1, -1)
        )  # fmt: skip  (20,000 x B bounds, K = 1)
        per_image = t.log_w()  # (K, B)
        se = per_image.std(0) / math.sqrt(20_000)
        assert (per_image.mean(0) - exact_elbo).abs().max() < 4 * se.max(), (se, exact_elbo)
        torch.testing.assert_close(-iwae(single)[0], per_image.mean(), rtol=1e-12, atol=1e-12)
        t5000 = model(x, 5000)
        big = -iwae(t5000)[0]
        # Delta method: SD(log mean w) ~ SD(w) / (mean(w) sqrt(K)) per image (~0.01 here).
        w5000 = (t5000.log_w() - t5000.log_w().max(0).values).exp()
        se_big = ((w5000.std(0) / w5000.mean(0)).square().sum() / 5000).sqrt() / 4
    assert abs(big - log_px.mean()) < 4 * se_big, (big, log_px.mean(), se_big)
    assert big - exact_elbo.mean() > 0.8 * (log_px - exact_elbo).mean()


def test_iwae_is_logmeanexp_and_above_elbo():
    terms = _terms(k=8, kl=False)
    lw = terms.log_w()
    expected = -(torch.logsumexp(lw, 0) - torch.log(torch.tensor(8.0))).mean()
    torch.testing.assert_close(iwae(terms)[0], expected)
    assert iwae(terms)[0] <= elbo(terms)[0]  # Jensen: logmeanexp >= mean


def test_model_iwae_rises_with_k(digits_run):
    model = vaelab.load(digits_run)
    x = to_unit(vaelab.api.load_test_images(digits_run).test_x)
    bounds = []
    for k in (1, 5, 50):
        torch.manual_seed(2)
        with torch.no_grad():
            bounds.append(-iwae(model(x, k))[0].item())
    # E[IWAE_K] is non-decreasing in K (Burda et al. 2016); on 180 images the gaps
    # (~1-3 nats) are many times the estimator's standard error (~0.1 nats).
    assert bounds[0] < bounds[1] < bounds[2], bounds


def test_closed_form_gaussian_path_matches_torch_distributions(digits_run):
    """VAE.forward's closed-form path (Normal q + plain reparameterization: z = mu + sigma
    eps, log q = log N(eps; 0, I) - sum log sigma, lazily computed log p(z)) against the
    generic path through torch.distributions (q = model.encode(x), q.rsample, scored by
    model.terms_at with Independent(Normal).log_prob): the same draws (same seed),
    log-densities and KL to float32 rounding, and the same IWAE gradient for every
    parameter. The reparam Objective takes the closed-form path."""
    from vaelab.api import load_test_images
    from vaelab.objectives import Objective

    model = vaelab.load(digits_run)
    x = to_unit(load_test_images(digits_run).test_x[:16])

    def generic(x, k):
        q = model.encode(x)
        return model.terms_at(x, q.rsample((k,)), q)

    def no_distributions(params):  # the closed-form path builds no Distribution
        raise AssertionError("the reparam objective left the closed-form path")

    results = []
    for draw in (Objective("iwae").draw, None):
        model.zero_grad()
        torch.manual_seed(3)
        if draw is not None:
            model.family.dist = no_distributions
            terms = draw(model, x, 5)[0]
            del model.family.dist
        else:
            terms = generic(x, 5)
        loss, _ = iwae(terms)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((terms, grads))
    (fast, g_fast), (slow, g_slow) = results
    for name in ("log_px_z", "log_pz", "log_qz_x", "kl"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), msg=name)
    assert g_fast.keys() == g_slow.keys() and len(g_fast) > 0
    for name in g_fast:
        torch.testing.assert_close(g_fast[name], g_slow[name], rtol=1e-4, atol=1e-5, msg=name)


def test_objective_stats_hold_no_autograd_graph():
    """The loop adds each step's stats into one running sum per epoch: stats that required
    grad made that sum part of every step's graph, kept alive until the epoch ended. The
    Objective's stats are detached, for every reduction; its loss still carries the graph."""
    from vaelab.config import ModelConfig
    from vaelab.models import VAE
    from vaelab.objectives import Objective

    model = VAE.from_config(ModelConfig(hidden=(8,), latent_dim=2), (1, 4, 4))
    for name in ("elbo", "iwae"):
        loss, stats = Objective(name)(model, torch.rand(3, 1, 4, 4), samples=2)
        assert loss.requires_grad and stats.keys() == {"bound", "recon", "kl"}
        running = torch.zeros(3)
        running += torch.stack([stats["bound"], stats["recon"], stats["kl"]])
        assert not running.requires_grad, name
