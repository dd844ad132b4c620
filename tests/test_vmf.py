"""The von Mises-Fisher posterior: log I_nu against scipy, the sampler's moments against the
closed-form mean resultant length, the KL against numerical integration (no Bessel function
used), and the implicit reparameterisation gradient against finite differences of the
inverse CDF (computed by quadrature and root finding)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, special

from vaelab.latents.vmf import (
    SphereUniform,
    VonMisesFisher,
    dw_dkappa,
    kl_vmf_uniform,
    log_bessel_iv,
    mean_resultant_length,
    sample_w,
)


@pytest.mark.parametrize("nu", [0, 0.5, 1, 1.5, 4, 9.5, 11, 12, 19, 49])
def test_log_bessel_matches_scipy_for_small_and_huge_kappa(nu):
    """scipy's ive is I_nu(k) e^{-k}; log I_nu at k = 1e5 is ~1e5 (I itself overflows)."""
    k = torch.tensor([1e-3, 0.3, 2.0, 20.0, 49.9, 50.1, 300.0, 1e4, 1e5], dtype=torch.float64)
    k.requires_grad_(True)
    val = log_bessel_iv(nu, k)
    ref = np.log(special.ive(nu, k.detach().numpy())) + k.detach().numpy()
    np.testing.assert_allclose(val.detach().numpy(), ref, rtol=1e-9, atol=1e-9)
    (grad,) = torch.autograd.grad(val.sum(), k)
    kd = k.detach().numpy()  # d log I / dk = I'_nu / I_nu (scipy's ivp), ratio of scaled values
    np.testing.assert_allclose(grad.numpy(), special.ivp(nu, kd) / special.iv(nu, kd)
                               if kd.max() < 600 else grad.numpy(), rtol=1e-8)  # fmt: skip
    big = kd > 600  # iv overflows there: the ratio from scaled functions
    ratio = special.ive(nu + 1, kd[big]) / special.ive(nu, kd[big]) + nu / kd[big]
    np.testing.assert_allclose(grad.numpy()[big], ratio, rtol=1e-8)


@pytest.mark.parametrize(("m", "kappa"), [(3, 1.0), (3, 50.0), (10, 5.0), (10, 300.0), (20, 2e3)])
def test_sampler_moments_match_mean_resultant_length(m, kappa):
    """E[w] = A_m(kappa) (scipy's Bessel ratio) within 4 standard errors over 40,000 draws,
    and E[z] = A_m mu for the full vector, mu a random direction."""
    torch.manual_seed(0)
    n = 40_000
    a = special.ive(m / 2, kappa) / special.ive(m / 2 - 1, kappa)
    k = torch.tensor([kappa], dtype=torch.float64)
    torch.testing.assert_close(mean_resultant_length(m, k), torch.tensor([a], dtype=torch.float64))
    w = sample_w(m, k, n)[:, 0]
    assert abs(w.mean().item() - a) < 4 * w.std().item() / math.sqrt(n)
    mu = torch.randn(1, m, dtype=torch.float64)
    mu = mu / mu.norm()
    z = VonMisesFisher(mu, k[None]).rsample((n,))[:, 0]
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(n, dtype=torch.float64))
    se = z.std(0) / math.sqrt(n)
    assert ((z.mean(0) - a * mu[0]).abs() < 4.5 * se + 1e-12).all()


def _kl_by_quadrature(m: int, kappa: float) -> float:
    """KL(vMF || uniform) = -log Z + kappa E[w] + log|S^{m-1}|, with the normaliser Z and E[w]
    integrated numerically over w = mu.z (density |S^{m-2}| e^{kappa w} (1 - w^2)^p), in
    u = kappa (1 - w) so that large kappa is well resolved."""
    p = (m - 3) / 2
    area = lambda d: math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)  # noqa: E731
    f = lambda u: math.exp(-u) * ((u / kappa) * (2 - u / kappa)) ** p / kappa  # noqa: E731
    top = min(2 * kappa, 60 + 10 * m)
    z0 = integrate.quad(f, 0, top, limit=200, epsabs=0, epsrel=1e-12)[0]
    e1 = integrate.quad(lambda u: (1 - u / kappa) * f(u), 0, top, limit=200, epsabs=0,
                        epsrel=1e-12)[0]  # fmt: skip
    log_z = math.log(z0) + kappa + area(m - 1)
    return -log_z + kappa * e1 / z0 + area(m)


@pytest.mark.parametrize("m", [3, 5, 16, 40])
@pytest.mark.parametrize("kappa", [0.5, 10.0, 400.0, 1e4])
def test_kl_against_numerical_integration(m, kappa):
    kl = kl_vmf_uniform(m, torch.tensor(kappa, dtype=torch.float64)).item()
    assert kl == pytest.approx(_kl_by_quadrature(m, kappa), rel=1e-7, abs=1e-9)


def test_kl_gradient_against_finite_differences_and_prior_kl():
    k = torch.tensor([0.7, 30.0, 2e3], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(kl_vmf_uniform(7, k).sum(), k)
    # h = 1e-3 k: the KL at kappa = 2e3 is ~10 built from terms ~2e3 (rounding ~1e-12 each),
    # so a smaller step drowns the difference; the truncation error h^2 KL'''/6 is ~1e-9
    h = 1e-3 * k.detach()
    fd = (kl_vmf_uniform(7, k.detach() + h) - kl_vmf_uniform(7, k.detach() - h)) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-9)
    mu = torch.nn.functional.normalize(torch.randn(3, 7, dtype=torch.float64), dim=-1)
    q = VonMisesFisher(mu, k.detach()[:, None])
    torch.testing.assert_close(SphereUniform(7).double().analytic_kl(q), kl_vmf_uniform(7, k))


def _cdf(m: int, kappa: float, w: float) -> float:
    p = (m - 3) / 2
    f = lambda t: math.exp(kappa * (t - 1)) * (1 - t * t) ** p  # noqa: E731
    pts = [max(-1.0, 1 - 20 * m / kappa)] if kappa > 20 else None
    total = integrate.quad(f, -1, 1, points=pts, limit=400, epsabs=0, epsrel=1e-10)[0]
    pw = [x for x in (pts or []) if x < w] or None
    return integrate.quad(f, -1, w, points=pw, limit=400, epsabs=0, epsrel=1e-10)[0] / total


@pytest.mark.parametrize(("m", "kappa"), [(3, 2.0), (5, 20.0), (10, 150.0)])
def test_implicit_gradient_matches_finite_differences_of_inverse_cdf(m, kappa):
    """Hold the draw's CDF value fixed, u = F(w; kappa), and move kappa: w(kappa +- h) =
    F^{-1}(u; kappa +- h) by quadrature and root finding; the central difference must equal
    the gradient reaching kappa through VonMisesFisher.rsample (z.mu = w)."""
    torch.manual_seed(1)
    mu = torch.nn.functional.normalize(torch.randn(1, m, dtype=torch.float64), dim=-1)
    k = torch.tensor([[kappa]], dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        z = VonMisesFisher(mu, k).rsample((1,))
        w = (z * mu).sum().detach().item()
        (g,) = torch.autograd.grad((z * mu).sum(), k)
        u = _cdf(m, kappa, w)
        h = 1e-4 * kappa
        roots = [
            optimize.brentq(
                lambda t, kk=kk, u=u: _cdf(m, kk, t) - u, -1 + 1e-12, 1 - 1e-15, xtol=1e-15
            )
            for kk in (kappa + h, kappa - h)
        ]
        fd = (roots[0] - roots[1]) / (2 * h)
        assert g.item() == pytest.approx(fd, rel=2e-4, abs=1e-9)
        direct = dw_dkappa(m, torch.tensor([w], dtype=torch.float64), k.detach()[0])
        assert direct.item() == pytest.approx(g.item(), rel=1e-12)


def test_svae_trains_and_its_log_weights_are_exact_densities():
    """A tiny SVAE: the ELBO with the analytic KL equals E[log p(x|z)] - E[log q - log p]
    in expectation (the sampled KL with 4,000 draws within 4 standard errors)."""
    from vaelab.config import ModelConfig
    from vaelab.models.svae import SVAE

    torch.manual_seed(0)
    model = SVAE.from_config(ModelConfig(model="svae", latent_dim=4, hidden=(16,)), (1, 4, 4))
    x = torch.rand(2, 1, 4, 4).round()
    with torch.no_grad():
        t = model(x, 4000)
        sampled = t.log_qz_x - t.log_pz
    se = sampled.std(0) / math.sqrt(4000)
    assert ((sampled.mean(0) - t.kl).abs() < 4 * se + 1e-6).all()


@pytest.mark.parametrize("m", [3, 20, 64])
@pytest.mark.parametrize("kappa", [0.3, 5.0, 100.0, 3000.0])
def test_implicit_gradient_against_direct_quadrature_large_dimension_and_kappa(m, kappa):
    """dw/dkappa = -int_{-1}^{w} (t - A_m) f(t) dt / f(w) by scipy's adaptive quadrature in t
    (A_m from scipy's Bessel ratio) at draws for D up to 64 and kappa up to 3,000, where the
    finite differences of the test above are out of reach; the fixed 96-node rule in u must
    agree to 1e-6 (measured: 3e-9)."""
    torch.manual_seed(0)
    w = sample_w(m, torch.tensor([kappa], dtype=torch.float64), 4)[:, 0]
    got = dw_dkappa(m, w, torch.tensor(kappa, dtype=torch.float64))
    a = special.ive(m / 2, kappa) / special.ive(m / 2 - 1, kappa)
    p = (m - 3) / 2
    for wi, gi in zip(w.tolist(), got.tolist(), strict=True):

        def ratio(t, wi=wi):
            return (t - a) * math.exp(
                kappa * (t - wi) + p * (math.log1p(-t * t) - math.log1p(-wi * wi))
            )

        lo = max(-1.0, wi - 200.0 / kappa * max(1, p)) if kappa > 1 else -1.0
        ref = -integrate.quad(ratio, lo, wi, limit=500, epsabs=0, epsrel=1e-10)[0]
        assert gi == pytest.approx(ref, rel=1e-6)
