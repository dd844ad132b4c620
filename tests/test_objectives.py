"""ELBO and IWAE as reductions of the same Terms."""

import torch

import vaelab
from vaelab.objectives import Terms, elbo, iwae
from vaelab.train.batches import to_unit


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


def test_iwae_with_one_sample_equals_elbo():
    terms = _terms(k=1, kl=False)
    torch.testing.assert_close(iwae(terms)[0], elbo(terms)[0])


def test_iwae_is_logmeanexp_and_above_elbo():
    terms = _terms(k=8, kl=False)
    lw = terms.log_w()
    expected = -(torch.logsumexp(lw, 0) - torch.log(torch.tensor(8.0))).mean()
    torch.testing.assert_close(iwae(terms)[0], expected)
    assert iwae(terms)[0] <= elbo(terms)[0]  # Jensen: logmeanexp >= mean


def test_model_iwae_k1_equals_elbo_and_rises_with_k(digits_run):
    model = vaelab.load(digits_run)
    x = to_unit(vaelab.api.load_test_images(model).test_x)
    torch.manual_seed(1)
    t1 = model(x, 1)
    t1.kl = None  # single-sample estimate on both sides
    torch.testing.assert_close(iwae(t1)[0], elbo(t1)[0])
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
    generic path through torch.distributions (rsample, Independent(Normal).log_prob): the
    same draws (same seed), log-densities and KL to float32 rounding, and the same IWAE
    gradient for every parameter."""
    from vaelab.api import load_test_images
    from vaelab.estimators import Reparam

    class ViaDistributions(Reparam):  # not `Reparam` itself: takes the generic path
        pass

    model = vaelab.load(digits_run)
    x = to_unit(load_test_images(model).test_x[:16])
    results = []
    for estimator in (Reparam(), ViaDistributions()):
        model.estimator = estimator
        model.zero_grad()
        torch.manual_seed(3)
        terms = model(x, 5)
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
