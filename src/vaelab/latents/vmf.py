"""The von Mises-Fisher posterior and the uniform prior on the sphere S^{m-1} (Davidson et
al. 2018, "Hyperspherical Variational Auto-Encoders").

    vMF(z; mu, kappa) = C_m(kappa) exp(kappa mu.z),   |z| = |mu| = 1, kappa >= 0,
    log C_m(kappa) = nu log kappa - (m/2) log 2 pi - log I_nu(kappa),   nu = m/2 - 1,
    E[z] = A_m(kappa) mu,  A_m(kappa) = I_{m/2}(kappa) / I_{m/2-1}(kappa),
    KL(vMF || U(S^{m-1})) = kappa A_m(kappa) + log C_m(kappa) + log |S^{m-1}|,
    |S^{m-1}| = 2 pi^{m/2} / Gamma(m/2).

log I_nu is computed without overflow for any kappa (:func:`log_bessel_iv`): the power
series in log space for kappa < 50, the upward recurrence from I_0, I_1 (torch's scaled
i0e/i1e) or I_{-1/2}, I_{1/2} (closed forms) above, where it is stable for nu^2 < 2 kappa,
and the uniform (Debye) asymptotic expansion for nu >= 12. Its derivative is
I_{nu+1}/I_nu + nu/kappa.

Sampling (Wood 1994): w = mu.z has density prop. to exp(kappa w) (1 - w^2)^{(m-3)/2} on
[-1, 1], drawn by rejection from a Beta proposal; z = w mu + sqrt(1 - w^2) v with v uniform
on the directions orthogonal to mu (a Householder reflection of e_1 onto mu). The gradient
of w with respect to kappa is implicit (Figurnov et al. 2018): for the CDF F(w; kappa),
dw/dkappa = -(dF/dkappa) / p(w), which with E[w] = A_m(kappa) is

    dw/dkappa = -int_{-1}^{w} (t - A_m(kappa)) f(t) dt / f(w),   f(t) = e^{kappa t} (1 - t^2)^p,

computed by Gauss-Legendre quadrature in u = kappa (1 - t) (the integrand lives on u of a
few times p + 1 whatever kappa).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Beta, Distribution, constraints

from vaelab.latents.priors import Prior

_SERIES_TERMS = 200
_GL_NODES, _GL_WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(96))


def _log_iv_series(nu: float, k: torch.Tensor) -> torch.Tensor:
    j = torch.arange(_SERIES_TERMS, dtype=k.dtype, device=k.device)
    lk = torch.log(k.clamp_min(1e-300) / 2)[..., None]
    terms = (2 * j + nu) * lk - torch.lgamma(j + 1) - torch.lgamma(j + nu + 1)
    return torch.logsumexp(terms, -1)


def _log_iv_recurrence(nu: float, k: torch.Tensor) -> torch.Tensor:
    if nu == int(nu):  # I_0, I_1 scaled by e^{-k}
        lo, hi, order = torch.special.i0e(k), torch.special.i1e(k), 0.0
    else:  # I_{-1/2} = sqrt(2/(pi k)) cosh k, I_{1/2} = sqrt(2/(pi k)) sinh k, times e^{-k}
        c = torch.sqrt(2 / (math.pi * k))
        e2 = torch.exp(-2 * k)
        lo, hi, order = c * (1 + e2) / 2, c * (1 - e2) / 2, -0.5
    while order + 1 < nu - 1e-9:  # I_{n+1} = I_{n-1} - (2n/k) I_n, on the scaled values
        lo, hi, order = hi, lo - 2 * (order + 1) / k * hi, order + 1
    return torch.log(hi if abs(nu - (order + 1)) < 1e-9 else lo) + k


def _log_iv_debye(nu: float, k: torch.Tensor) -> torch.Tensor:
    z = k / nu
    s = torch.sqrt(1 + z * z)
    t = 1 / s
    eta = s + torch.log(z / (1 + s))
    t2 = t * t
    u1 = t * (3 - 5 * t2) / 24
    u2 = t2 * (81 - 462 * t2 + 385 * t2 * t2) / 1152
    u3 = t * t2 * (30375 - 369603 * t2 + 765765 * t2**2 - 425425 * t2**3) / 414720
    u4 = (
        t2**2
        * (4465125 - 94121676 * t2 + 349922430 * t2**2 - 446185740 * t2**3 + 185910725 * t2**4)
        / 39813120
    )
    series = 1 + u1 / nu + u2 / nu**2 + u3 / nu**3 + u4 / nu**4
    return -0.5 * math.log(2 * math.pi * nu) + nu * eta - 0.5 * torch.log(s) + torch.log(series)


def _log_iv_value(nu: float, k: torch.Tensor) -> torch.Tensor:
    kd = k.double()
    if nu >= 12:
        out = _log_iv_debye(nu, kd.clamp_min(1e-300))
    else:
        small = kd < 50
        out = torch.where(
            small, _log_iv_series(nu, kd.clamp_max(50)), _log_iv_recurrence(nu, kd.clamp_min(50))
        )
    return out.to(k.dtype)


class _LogIv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k: torch.Tensor, nu: float) -> torch.Tensor:
        out = _log_iv_value(nu, k)
        ctx.save_for_backward(k, out)
        ctx.nu = nu
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        k, out = ctx.saved_tensors
        # d/dk log I_nu(k) = I_{nu+1}(k) / I_nu(k) + nu / k
        ratio = torch.exp(_log_iv_value(ctx.nu + 1, k) - out)
        return grad * (ratio + ctx.nu / k), None


def log_bessel_iv(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """log I_nu(kappa) for a fixed order nu >= 0 (an integer or a half-integer below 12;
    any nu >= 12) and kappa > 0 of any size, differentiable in kappa."""
    return _LogIv.apply(kappa, float(nu))


def mean_resultant_length(m: int, kappa: torch.Tensor) -> torch.Tensor:
    """A_m(kappa) = I_{m/2}(kappa) / I_{m/2-1}(kappa) = |E[z]| under vMF on S^{m-1}."""
    return torch.exp(log_bessel_iv(m / 2, kappa) - log_bessel_iv(m / 2 - 1, kappa))


def log_sphere_area(m: int) -> float:
    """log |S^{m-1}| = log 2 + (m/2) log pi - lgamma(m/2)."""
    return math.log(2) + m / 2 * math.log(math.pi) - math.lgamma(m / 2)


def vmf_log_normalizer(m: int, kappa: torch.Tensor) -> torch.Tensor:
    """log C_m(kappa) = (m/2 - 1) log kappa - (m/2) log 2 pi - log I_{m/2-1}(kappa)."""
    nu = m / 2 - 1
    return nu * torch.log(kappa) - m / 2 * math.log(2 * math.pi) - log_bessel_iv(nu, kappa)


def kl_vmf_uniform(m: int, kappa: torch.Tensor) -> torch.Tensor:
    """KL(vMF(mu, kappa) || U(S^{m-1})) = kappa A_m + log C_m + log |S^{m-1}| (>= 0)."""
    return (
        kappa * mean_resultant_length(m, kappa)
        + vmf_log_normalizer(m, kappa)
        + (log_sphere_area(m))
    )


@torch.no_grad()
def sample_w(m: int, kappa: torch.Tensor, n: int) -> torch.Tensor:
    """Wood's rejection sampler: n draws of w = mu.z per kappa, ``(n, *kappa.shape)``,
    computed in float64."""
    k = kappa.double().expand(n, *kappa.shape)
    b = (m - 1) / (2 * k + torch.sqrt(4 * k * k + (m - 1) ** 2))  # stable form of Wood's b
    x0 = (1 - b) / (1 + b)
    c = k * x0 + (m - 1) * torch.log(1 - x0 * x0)
    w = torch.empty_like(k)
    todo = torch.ones_like(k, dtype=torch.bool)
    half = torch.tensor((m - 1) / 2, dtype=torch.float64, device=k.device)
    beta = Beta(half, half)
    while todo.any():
        idx = todo.nonzero(as_tuple=True)
        bb, kk, xx, cc = b[idx], k[idx], x0[idx], c[idx]
        e = beta.sample(bb.shape)
        cand = (1 - (1 + bb) * e) / (1 - (1 - bb) * e)
        u = torch.rand_like(cand)
        ok = kk * cand + (m - 1) * torch.log(1 - xx * cand) - cc >= torch.log(u)
        w[tuple(i[ok] for i in idx)] = cand[ok]
        todo[tuple(i[ok] for i in idx)] = False
    return w.clamp(-1.0, 1.0)


def dw_dkappa(m: int, w: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """The implicit reparameterisation gradient dw/dkappa at draws ``w`` (float64 inside).
    With u = kappa (1 - t), f(t)/f(w) = e^{-(u - u_w)} (u/u_w)^p ((2 - u/kappa)/(2 - u_w/kappa))^p,
    integrated over u from u_w to min(2 kappa, u_w + 40 + 4p) by Gauss-Legendre."""
    p = (m - 3) / 2
    k = kappa.double().expand_as(w)
    wd = w.double()
    a = mean_resultant_length(m, k)
    uw = (k * (1 - wd)).clamp_min(1e-12)
    hi = torch.minimum(2 * k, uw + 40 + 4 * max(p, 0.0))
    nodes, weights = _GL_NODES.to(w.device), _GL_WEIGHTS.to(w.device)
    half = ((hi - uw) / 2)[..., None]
    u = uw[..., None] + half * (nodes + 1)
    kk = k[..., None]
    log_ratio = -(u - uw[..., None])
    if p != 0:
        log_ratio = log_ratio + p * (torch.log(u / uw[..., None]) + torch.log(
            (2 - u / kk).clamp_min(1e-300) / (2 - uw[..., None] / kk)
        ))  # fmt: skip
    integrand = (1 - u / kk - a[..., None]) * torch.exp(log_ratio)
    integral = (integrand * weights).sum(-1) * half[..., 0] / k  # dt = du / kappa
    return (-integral).to(w.dtype)


def householder_to(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reflect ``y`` (around e_1) onto ``mu``: H y with H = I - 2 v v^T, v = (e_1 - mu)/|.|."""
    e1 = torch.zeros_like(mu)
    e1[..., 0] = 1
    v = e1 - mu
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return y - 2 * (y * v).sum(-1, keepdim=True) * v


class VonMisesFisher(Distribution):
    """vMF(mu, kappa) on S^{m-1}: ``mu`` ``(B, m)`` unit vectors, ``kappa`` ``(B, 1)``.
    ``rsample`` is differentiable in mu (pathwise) and kappa (implicitly); ``mean`` is
    E[z] = A_m(kappa) mu (inside the ball); the mode is ``loc``."""

    arg_constraints: dict = {}  # noqa: RUF012 (torch's own class attribute)
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, kappa: torch.Tensor) -> None:
        self.loc, self.kappa = loc, kappa
        self.m = loc.shape[-1]
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        k = self.kappa[..., 0]
        w0 = sample_w(self.m, k.detach(), n).to(self.loc.dtype)
        grad = dw_dkappa(self.m, w0, k.detach())
        w = w0 + (k - k.detach()) * grad  # value w0, gradient dw/dkappa
        v = torch.randn((n, *self.loc.shape[:-1], self.m - 1), dtype=self.loc.dtype,
                        device=self.loc.device)  # fmt: skip
        v = v / v.norm(dim=-1, keepdim=True)
        y = torch.cat([w[..., None], torch.sqrt((1 - w * w).clamp_min(0))[..., None] * v], -1)
        z = householder_to(self.loc, y)
        return z.reshape(*sample_shape, *z.shape[1:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = self.kappa[..., 0]
        return vmf_log_normalizer(self.m, k) + k * (self.loc * value).sum(-1)

    def entropy(self) -> torch.Tensor:
        k = self.kappa[..., 0]
        return -(vmf_log_normalizer(self.m, k) + k * mean_resultant_length(self.m, k))

    @property
    def mean(self) -> torch.Tensor:
        return mean_resultant_length(self.m, self.kappa[..., 0])[..., None] * self.loc

    @property
    def stddev(self) -> torch.Tensor:
        """Per-coordinate spread, sqrt(E z_i^2 - E[z_i]^2), by 256 draws (what `similar`
        scales)."""
        with torch.no_grad():
            return self.rsample((256,)).std(0)


class SphereUniform(Prior):
    """p(z) = U(S^{m-1}): log p(z) = -log |S^{m-1}|; draws are normalised Gaussians
    (``temperature`` has no meaning on the sphere and is ignored)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_zero", torch.zeros(()))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full(z.shape[:-1], -log_sphere_area(self.latent_dim), dtype=z.dtype,
                          device=z.device)  # fmt: skip

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        g = torch.randn(n, self.latent_dim, device=self._zero.device, dtype=self._zero.dtype)
        return g / g.norm(dim=-1, keepdim=True)

    def analytic_kl(self, q: Distribution) -> torch.Tensor | None:
        if isinstance(q, VonMisesFisher):
            return kl_vmf_uniform(self.latent_dim, q.kappa[..., 0])
        return None
