"""Normalizing flows on the posterior: planar steps (Rezende & Mohamed 2015) and inverse
autoregressive steps (Kingma et al. 2016), each returning the log-determinant of its
Jacobian so that log q(z_T|x) stays exact:

    z_0 ~ N(mu, diag sigma^2),  z_t = f_t(z_{t-1}),
    log q(z_T|x) = log N(z_0; mu, sigma) - sum_t log |det df_t/dz_{t-1}|.

Shapes: latents ``(..., D)``; the amortised parameters (the planar steps' u, w, b and the
IAF's context h) come from the encoder and broadcast over the leading sample axis K.

Planar step: f(z) = z + u' tanh(w.z + b), with u' = u + (m(w.u) - w.u) w / |w|^2 and
m(a) = -1 + softplus(a), which keeps w.u' >= -1 so f is invertible;
log |det| = log |1 + u'.psi(z)|, psi(z) = (1 - tanh^2(w.z + b)) w.

IAF step: [m, s] = MADE(z, h), sigma = sigmoid(s), f(z) = sigma * z + (1 - sigma) * m
(the paper's numerically stable form); m_d and s_d depend on z_{<d} only (the masks), so
the Jacobian is triangular and log |det| = sum_d log sigma_d. Each step reverses the order
of the dimensions of the step before (the paper's alternating orderings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def planar_param_size(latent_dim: int) -> int:
    """Numbers one amortised planar step takes from the encoder: u (D), w (D), b (1)."""
    return 2 * latent_dim + 1


def planar_step(
    z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One planar step: (f(z) ``(..., D)``, log |det df/dz| ``(...)``); u, w ``(..., D)``,
    b ``(..., 1)`` broadcast against z."""
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / w.square().sum(-1, keepdim=True).clamp_min(1e-12)
    a = torch.tanh((w * z).sum(-1, keepdim=True) + b)
    psi_u = ((1.0 - a.square()) * (w * u_hat).sum(-1, keepdim=True)).squeeze(-1)
    return z + u_hat * a, torch.log((1.0 + psi_u).abs().clamp_min(1e-12))


class PlanarFlow(nn.Module):
    """``steps`` amortised planar steps; their parameters are the encoder's extra outputs
    ``(B, steps * (2D + 1))``."""

    def __init__(self, latent_dim: int, steps: int) -> None:
        super().__init__()
        self.latent_dim, self.steps = latent_dim, steps

    def param_size(self) -> int:
        return self.steps * planar_param_size(self.latent_dim)

    def forward(self, z: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_T ``(K, B, D)``, sum_t log|det| ``(K, B)``) for z_0 ``(K, B, D)``."""
        d = self.latent_dim
        logdet = z.new_zeros(z.shape[:-1])
        n = planar_param_size(d)
        for t in range(self.steps):
            p = extra[..., t * n : (t + 1) * n]
            u, w, b = p[..., :d], p[..., d : 2 * d], p[..., 2 * d :]
            z, ld = planar_step(z, u, w, b)
            logdet = logdet + ld
        return z, logdet


def made_masks(latent_dim: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MADE masks (Germain et al. 2015) for inputs of degrees 1..D: hidden unit k has degree
    1 + (k mod max(1, D - 1)) and sees inputs of degree <= its own; output d sees hidden
    units of degree < d. Returns (input->hidden ``(H, D)``, hidden->output ``(D, H)``)."""
    deg_in = torch.arange(1, latent_dim + 1)
    deg_h = 1 + torch.arange(hidden) % max(1, latent_dim - 1)
    m1 = (deg_h[:, None] >= deg_in[None, :]).float()
    m2 = (deg_in[:, None] > deg_h[None, :]).float()
    return m1, m2


class IAFStep(nn.Module):
    """One IAF step: a one-hidden-layer MADE over z with the context h added (unmasked) to
    its hidden layer, giving m and s (the "forget gate" bias starts at +1.5 as in the paper,
    so sigma ~ 0.82 and each step begins near the identity)."""

    def __init__(self, latent_dim: int, context: int, hidden: int) -> None:
        super().__init__()
        m1, m2 = made_masks(latent_dim, hidden)
        self.register_buffer("mask_in", m1)
        self.register_buffer("mask_out", m2.repeat(2, 1))
        self.inp = nn.Linear(latent_dim, hidden)
        self.ctx = nn.Linear(context, hidden, bias=False)
        self.out = nn.Linear(hidden, 2 * latent_dim)
        nn.init.normal_(self.out.weight, std=1e-3)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[latent_dim:] = 1.5

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hid = F.elu(F.linear(z, self.inp.weight * self.mask_in, self.inp.bias) + self.ctx(h))
        m, s = F.linear(hid, self.out.weight * self.mask_out, self.out.bias).chunk(2, dim=-1)
        log_sigma = F.logsigmoid(s)
        sigma = log_sigma.exp()
        return sigma * z + (1.0 - sigma) * m, log_sigma.sum(-1)


class IAFFlow(nn.Module):
    """``steps`` IAF steps with the order of z reversed between steps; the encoder's extra
    output is the context h ``(B, context)``."""

    def __init__(self, latent_dim: int, steps: int, context: int, hidden: int) -> None:
        super().__init__()
        self.context = context
        self.layers = nn.ModuleList(IAFStep(latent_dim, context, hidden) for _ in range(steps))

    def param_size(self) -> int:
        return self.context

    def forward(self, z: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = z.new_zeros(z.shape[:-1])
        h = extra.expand(*z.shape[:-1], extra.shape[-1])
        for i, layer in enumerate(self.layers):
            if i > 0:
                z = z.flip(-1)
            z, ld = layer(z, h)
            logdet = logdet + ld
        if len(self.layers) % 2 == 0:  # undo the last reversal: z_T in the original order
            z = z.flip(-1)
        return z, logdet


def build_flow(kind: str, latent_dim: int, steps: int, hidden: int) -> nn.Module:
    """The posterior flow ``--flow`` names (``iaf``: context of ``hidden`` numbers)."""
    if kind == "planar":
        return PlanarFlow(latent_dim, steps)
    return IAFFlow(latent_dim, steps, context=hidden, hidden=hidden)


FLOWS = ("iaf", "planar")
