"""Objectives that match the aggregate posterior to the prior without a per-image KL.

With codes z ~ q(z|x) (a point z = f(x) for ``--model ae``) of a batch, ``(N, D)``, and as
many draws z' ~ p(z) = N(0, I):

* WAE-MMD (Tolstikhin et al. 2018): loss = -E log p(x|z) + lambda MMD^2(q_z, p_z).
* InfoVAE-MMD (Zhao et al. 2019): loss = -E log p(x|z) + (1 - alpha) KL(q(z|x) || p(z))
  + (alpha + lambda - 1) MMD^2(q_z, p_z)  (needs a posterior: ``--model vae``).
* SWAE (Kolouri et al. 2019): loss = -E log p(x|z) + lambda SW_2^2(q_z, p_z), the sliced
  Wasserstein distance over L random directions.
* RAE (Ghosh et al. 2020): loss = -E log p(x|z) + beta 1/2 ||z||^2 + lambda R(decoder), R
  the decoder's squared L2 weight norm (``l2``) or its gradient penalty ||d D(z)/dz||_F^2
  (``gp``; Hutchinson's estimate E_v ||v^T J||^2, v ~ N(0, I), one vector-Jacobian product).
  A RAE has no prior: it is sampled post hoc (``--sampler gmm``, ``maf``, ``two-stage``).

The kernels, with C = 2 D s^2 (s = ``--*-kernel-scale``, Tolstikhin et al.'s choice for a
N(0, I) prior with s = 1): RBF k(a, b) = exp(-||a - b||^2 / C), inverse multiquadratic
k(a, b) = C / (C + ||a - b||^2). MMD^2 is the unbiased U-statistic (Gretton et al. 2012):
its expectation is the population MMD^2 exactly (tests/test_wae.py checks it against the
closed form for two Gaussians under the RBF kernel).

The models hand their codes to these reductions as ``Terms.extras["z"]`` ``(K, B, D)``
(the capability ``codes_in_terms``; ``vae`` and ``ae``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaelab.errors import VaelabError, at_least, positive, unknown_name
from vaelab.models.terms import Terms

# ---------------------------------------------------------------- distances between samples


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 ``(N, M)`` for ``a (N, D)``, ``b (M, D)``."""
    return (a.square().sum(-1)[:, None] + b.square().sum(-1)[None, :] - 2 * a @ b.T).clamp_min(0)


def rbf_kernel(d2: torch.Tensor, c: float) -> torch.Tensor:
    """exp(-d^2 / C) of squared distances."""
    return torch.exp(-d2 / c)


def imq_kernel(d2: torch.Tensor, c: float) -> torch.Tensor:
    """C / (C + d^2) of squared distances (heavier tails than the RBF's)."""
    return c / (c + d2)


KERNELS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "rbf": rbf_kernel, "imq": imq_kernel,
}  # fmt: skip


def mmd_unbiased(
    a: torch.Tensor, b: torch.Tensor, kernel: str = "imq", scale: float = 1.0
) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between the samples ``a (N, D)`` and ``b (M, D)``
    (N, M >= 2): mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean_{i,j} k(a_i, b_j),
    C = 2 D scale^2. It can be negative (an unbiased estimate of a value >= 0)."""
    n, m, d = len(a), len(b), a.shape[-1]
    c, k = 2.0 * d * scale**2, KERNELS[kernel]
    kaa, kbb = k(_sq_dists(a, a), c), k(_sq_dists(b, b), c)
    kab = k(_sq_dists(a, b), c)
    off_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    off_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return off_a + off_b - 2.0 * kab.mean()


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    projections: int = 50,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte Carlo SW_2^2 between equal-size samples ``a, b (N, D)``: over L directions
    theta uniform on the sphere, the mean of the 1-D W_2^2 of the projections, each the mean
    squared difference of the sorted projected samples (the 1-D optimal coupling)."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein: shapes {tuple(a.shape)} vs {tuple(b.shape)}")
    theta = torch.randn(a.shape[-1], projections, dtype=a.dtype, device=a.device,
                        generator=generator)  # fmt: skip
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta).sort(0).values, (b @ theta).sort(0).values
    return (pa - pb).square().mean()


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class WAEOptions:
    wae_kernel: str = "imq"  # wae: MMD kernel, imq or rbf
    wae_kernel_scale: float = 1.0  # wae: kernel scale s (C = 2 D s^2)
    wae_weight: float = 10.0  # wae: lambda, the weight of MMD^2(q_z, p_z)


@dataclass(frozen=True)
class InfoVAEOptions:
    info_kernel: str = "imq"  # infovae: MMD kernel, imq or rbf
    info_kernel_scale: float = 1.0  # infovae: kernel scale s (C = 2 D s^2)
    info_alpha: float = 0.0  # infovae: alpha; the KL weighs 1 - alpha
    info_lambda: float = 1000.0  # infovae: lambda; MMD^2 weighs alpha + lambda - 1


@dataclass(frozen=True)
class SWAEOptions:
    swae_projections: int = 50  # swae: L random directions of the sliced Wasserstein distance
    swae_weight: float = 10.0  # swae: lambda, the weight of SW_2^2(q_z, p_z)


@dataclass(frozen=True)
class RAEOptions:
    rae_regulariser: str = "l2"  # rae: decoder regulariser, l2 (weights) or gp (gradient penalty)
    rae_embedding_weight: float = 1e-4  # rae: beta, the weight of 1/2 ||z||^2
    rae_reg_weight: float = 1e-7  # rae: lambda, the weight of the decoder regulariser


RAE_REGULARISERS = ("l2", "gp")

# ---------------------------------------------------------------- reductions


def codes(terms: Terms) -> torch.Tensor:
    """The model's codes ``(K*B, D)`` from ``Terms.extras["z"]``."""
    z = terms.extras["z"]
    return z.reshape(-1, z.shape[-1])


def _recon_stats(terms: Terms) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    recon, kl = terms.log_px_z.mean(0), terms.kl_per_image()
    return recon, {"bound": (recon - kl).mean(), "recon": recon.mean(), "kl": kl.mean()}


def wae(terms: Terms, beta: float = 1.0, options: WAEOptions | None = None):
    """WAE-MMD's loss (``beta`` is ignored: there is no KL); stats add ``mmd``."""
    o = options or WAEOptions()
    z = codes(terms)
    mmd = mmd_unbiased(z, torch.randn_like(z), o.wae_kernel, o.wae_kernel_scale)
    recon, stats = _recon_stats(terms)
    return -recon.mean() + o.wae_weight * mmd, {**stats, "mmd": mmd}


def infovae(terms: Terms, beta: float = 1.0, options: InfoVAEOptions | None = None):
    """InfoVAE-MMD's loss (``beta`` is ignored: alpha sets the KL's weight)."""
    o = options or InfoVAEOptions()
    z = codes(terms)
    mmd = mmd_unbiased(z, torch.randn_like(z), o.info_kernel, o.info_kernel_scale)
    recon, stats = _recon_stats(terms)
    kl = terms.kl_per_image()
    loss = -recon.mean() + (1 - o.info_alpha) * kl.mean() + (o.info_alpha + o.info_lambda - 1) * mmd
    return loss, {**stats, "mmd": mmd}


def swae(terms: Terms, beta: float = 1.0, options: SWAEOptions | None = None):
    """SWAE's loss (``beta`` is ignored); stats add ``sw2``."""
    o = options or SWAEOptions()
    z = codes(terms)
    sw = sliced_wasserstein(z, torch.randn_like(z), o.swae_projections)
    recon, stats = _recon_stats(terms)
    return -recon.mean() + o.swae_weight * sw, {**stats, "sw2": sw}


def rae(terms: Terms, beta: float = 1.0, options: RAEOptions | None = None):
    """RAE's reconstruction and code penalty beta/2 ||z||^2 (the decoder regulariser is the
    extra term :class:`DecoderRegulariser`); stats add ``z_sq``."""
    o = options or RAEOptions()
    z = codes(terms)
    z_sq = 0.5 * z.square().sum(-1).mean()
    recon, stats = _recon_stats(terms)
    return -recon.mean() + o.rae_embedding_weight * z_sq, {**stats, "z_sq": z_sq}


class DecoderRegulariser:
    """RAE's lambda R(theta): ``l2`` sum of the squared generative weights (the decoder's),
    or ``gp``: E_x ||J||_F^2, J = d mean-params D(z) / dz at the code z = latent_mean(x)
    (detached: the penalty shapes the decoder only), estimated as ||v^T J||^2 with one
    v ~ N(0, I) per image (unbiased: E_v v^T J J^T v = tr(J J^T))."""

    def __init__(self, kind: str, weight: float) -> None:
        self.kind, self.weight = kind, weight

    def __call__(self, model, x, y, labelled) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.kind == "l2":
            reg = sum(p.square().sum() for p in model.generative_parameters())
        else:
            z = model.latent_mean(x).detach().requires_grad_(True)
            out = model.decode(z)
            v = torch.randn_like(out)
            (g,) = torch.autograd.grad((out * v).sum(), z, create_graph=True)
            reg = g.square().sum(-1).mean()
        return self.weight * reg, {"decoder_reg": reg.detach()}


# ---------------------------------------------------------------- checks


def check_options(name: str, options) -> None:
    """Refuse bad option values of these objectives in their flags' words."""
    if isinstance(options, WAEOptions | InfoVAEOptions):
        kernel = options.wae_kernel if isinstance(options, WAEOptions) else options.info_kernel
        flag = "--wae-kernel" if isinstance(options, WAEOptions) else "--info-kernel"
        if kernel not in KERNELS:
            raise unknown_name(flag, kernel, KERNELS)
        scale = (
            options.wae_kernel_scale
            if isinstance(options, WAEOptions)
            else options.info_kernel_scale
        )
        positive(flag + "-scale", scale)
    if isinstance(options, WAEOptions):
        at_least("--wae-weight", options.wae_weight, 0)
    if isinstance(options, InfoVAEOptions):
        at_least("--info-lambda", options.info_lambda, 0)
    if isinstance(options, SWAEOptions):
        at_least("--swae-projections", options.swae_projections)
        at_least("--swae-weight", options.swae_weight, 0)
    if isinstance(options, RAEOptions):
        if options.rae_regulariser not in RAE_REGULARISERS:
            raise unknown_name("--rae-regulariser", options.rae_regulariser, RAE_REGULARISERS)
        at_least("--rae-embedding-weight", options.rae_embedding_weight, 0)
        at_least("--rae-reg-weight", options.rae_reg_weight, 0)


# Which models each objective can train (read from the model's capabilities).
NEEDS_CODES = ("wae", "infovae", "swae", "rae")


def check_model(name: str, model, prior: str) -> None:
    """Refuse a model these objectives cannot train, in one line."""
    if name in NEEDS_CODES and not model.codes_in_terms:
        raise VaelabError(f"--objective {name}: needs a model that hands its codes to the "
                          "objective (--model vae or ae)")  # fmt: skip
    if name in ("wae", "infovae", "swae") and prior != "normal":
        raise VaelabError(f"--objective {name}: matches q(z) to N(0, I); use --prior normal")
    if name == "infovae" and not model.has_posterior:
        raise VaelabError("--objective infovae: weighs KL(q(z|x) || p(z)); needs --model vae "
                          "(for a point code use --objective wae)")  # fmt: skip
    if name == "rae" and model.has_posterior:
        raise VaelabError("--objective rae: a deterministic autoencoder's objective; use "
                          "--model ae (a VAE's noise is what the RAE replaces)")  # fmt: skip


def rae_terms(config, n_train) -> tuple[DecoderRegulariser, ...]:
    o = config.train.options or RAEOptions()
    return (DecoderRegulariser(o.rae_regulariser, o.rae_reg_weight),) if o.rae_reg_weight else ()
