"""Importance-weighted variants of Rainforth et al. (2018), "Tighter variational bounds are
not necessarily better", beside the IWAE.

With log w_{m,k} = log p(x|z_{m,k}) + log p(z_{m,k}) - log q(z_{m,k}|x) for M x K
reparameterized draws z_{m,k} ~ q(z|x) per image (K = ``--samples``, M the objective's own
option), per image:

    IWAE_K        = log 1/K sum_k w_k
    ELBO_K        = 1/K sum_k log w_k                       (the K-sample ELBO estimate)
    MIWAE(M, K)   = 1/M sum_m log 1/K sum_k w_{m,k}         (M = 1: IWAE_K; K = 1: ELBO_M)
    CIWAE_beta(K) = beta ELBO_K + (1 - beta) IWAE_K         (beta = 1: ELBO; 0: IWAE)
    PIWAE(M, K)   : the generative network theta (decoder, prior) ascends IWAE_{MK} over all
                    M K draws; the inference network phi (encoder) ascends MIWAE(M, K) on the
                    same draws. Rainforth et al.'s Section 4: the tighter bound is better for
                    theta's gradient, a looser one has a higher signal-to-noise ratio for phi's.

Gradients, per image, with normalised weights w~ = softmax over the log w they average:
d IWAE_K / d log w_k = w~_k, d MIWAE / d log w_{m,k} = w~_{m,k} / M (softmax within group m),
d ELBO_K / d log w_k = 1/K. PIWAE's loss is a surrogate whose gradient is exactly
grad_theta(-IWAE_{MK}) on the generative parameters and grad_phi(-MIWAE(M, K)) on the
inference parameters (``Model.inference_parameters``): both gradients are taken with
``torch.autograd.grad`` on the one graph and put on the parameters through a linear term
(:func:`split_gradients`); its value is -IWAE_{MK}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelab.errors import VaelabError, at_least
from vaelab.models.terms import Terms


@dataclass(frozen=True)
class MIWAEOptions:
    miwae_m: int = 5  # miwae: M, the IWAE_K estimates averaged (M x K draws per image)


@dataclass(frozen=True)
class PIWAEOptions:
    piwae_m: int = 5  # piwae: M; the encoder ascends MIWAE(M, K), the decoder IWAE(M K)


@dataclass(frozen=True)
class CIWAEOptions:
    ciwae_beta: float = 0.5  # ciwae: beta; the bound is beta ELBO_K + (1 - beta) IWAE_K


def _lme(t: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(t, dim=dim) - math.log(t.shape[dim])


def miwae_bound(log_w: torch.Tensor, m: int) -> torch.Tensor:
    """MIWAE(M, K) per image ``(B,)`` of log weights ``(M K, B)`` (draws m-major)."""
    return _lme(log_w.reshape(m, -1, log_w.shape[-1]), 1).mean(0)


def ciwae_bound(log_w: torch.Tensor, beta: float) -> torch.Tensor:
    """CIWAE_beta(K) per image ``(B,)`` of log weights ``(K, B)``."""
    return beta * log_w.mean(0) + (1 - beta) * _lme(log_w, 0)


def _stats(terms: Terms, bound: torch.Tensor) -> dict[str, torch.Tensor]:
    recon = terms.log_px_z.mean(0)
    return {"bound": bound.mean(), "recon": recon.mean(), "kl": terms.kl_per_image().mean()}


def miwae(terms: Terms, beta: float = 1.0, options: MIWAEOptions | None = None):
    """Negative MIWAE(M, K) (``beta`` ignored)."""
    bound = miwae_bound(terms.log_w(), (options or MIWAEOptions()).miwae_m)
    return -bound.mean(), _stats(terms, bound)


def ciwae(terms: Terms, beta: float = 1.0, options: CIWAEOptions | None = None):
    """Negative CIWAE_beta(K) (the objective's ``--ciwae-beta``; the KL's beta is ignored)."""
    bound = ciwae_bound(terms.log_w(), (options or CIWAEOptions()).ciwae_beta)
    return -bound.mean(), _stats(terms, bound)


def piwae(terms: Terms, beta: float = 1.0, options: PIWAEOptions | None = None):
    """Negative IWAE_{MK} (the generative network's loss), with the inference network's
    -MIWAE(M, K) as ``stats["encoder_loss"]`` (with its graph), which
    :class:`~vaelab.objectives.Objective` routes through :func:`split_gradients`."""
    log_w = terms.log_w()
    iwae_mk = _lme(log_w, 0)
    miwae_mk = miwae_bound(log_w, (options or PIWAEOptions()).piwae_m)
    stats = _stats(terms, iwae_mk)
    stats["miwae"] = miwae_mk.mean()
    stats["encoder_loss"] = -miwae_mk.mean()
    return -iwae_mk.mean(), stats


def split_gradients(
    model: torch.nn.Module, theta_loss: torch.Tensor, phi_loss: torch.Tensor
) -> torch.Tensor:
    """A scalar with ``theta_loss``'s value whose gradient is grad(theta_loss) on the
    generative parameters and grad(phi_loss) on ``model.inference_parameters()``:
    sum_p <p, stop_grad(g_p)> - its own value + theta_loss's value."""
    phi = [p for p in model.inference_parameters() if p.requires_grad]
    ids = {id(p) for p in phi}
    theta = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    g_theta = torch.autograd.grad(theta_loss, theta, retain_graph=True, allow_unused=True)
    g_phi = torch.autograd.grad(phi_loss, phi, allow_unused=True)
    linear = theta_loss.new_zeros(())
    for p, g in zip(theta + phi, g_theta + g_phi, strict=True):
        if g is not None:
            linear = linear + (p * g.detach()).sum()
    return theta_loss.detach() + linear - linear.detach()


# name -> options -> M: the objective draws M x K samples per image (K = --samples).
GROUPS = {
    "miwae": lambda o: (o or MIWAEOptions()).miwae_m,
    "piwae": lambda o: (o or PIWAEOptions()).piwae_m,
}


def check_options(name: str, options) -> None:
    if isinstance(options, MIWAEOptions):
        at_least("--miwae-m", options.miwae_m)
    if isinstance(options, PIWAEOptions):
        at_least("--piwae-m", options.piwae_m)
    if isinstance(options, CIWAEOptions) and not 0 <= options.ciwae_beta <= 1:
        raise VaelabError(f"--ciwae-beta: must be in [0, 1], got {options.ciwae_beta}")
