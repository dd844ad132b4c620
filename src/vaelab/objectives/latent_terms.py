"""Loss terms that read the latent draw: the capacity-annealed beta-VAE and DIP-VAE, and the
base class the disentanglement objectives share (beta-TCVAE: :mod:`.tcvae`; FactorVAE:
:mod:`.factorvae`).

A :class:`LatentTerm` is an ``nn.Module`` (so its state, a step counter or a discriminator
and its optimizer's moments, is checkpointed with the objective as ``objective/parts.*``)
called as ``term(terms, beta) -> (value, stats)``. The :class:`~vaelab.objectives.Objective`
hands it the Terms of the draw it trained on, with ``terms.extras``:

    z       (K, B, D)  the reparameterized draws z ~ q(z|x)
    q_mean  (B, D)     the mean of the Gaussian q(z|x)
    q_std   (B, D)     its standard deviations

A term with an optimizer of its own (FactorVAE's discriminator) lists it in
:meth:`LatentTerm.side_optimizers`; the training step (:mod:`vaelab.training.step`) steps it
after the model's, from the same backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vaelab.errors import VaelabError, positive
from vaelab.models.terms import Terms


class LatentTerm(nn.Module):
    """A loss term on the draw: ``forward(terms, beta) -> (value, stats)`` (module docstring)."""

    def side_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers of this term's own parameters (stepped by the training step)."""
        return []


# --- capacity-annealed beta-VAE (Burgess et al. 2018) ---------------------------------


@dataclass(frozen=True)
class AnnealedOptions:
    capacity_max: float = 25.0  # annealed: C_max, the KL target in nats at the end of the ramp
    capacity_steps: int = 100000  # annealed: training steps over which C rises from 0 to C_max
    capacity_gamma: float = 1000.0  # annealed: gamma, the weight of |KL - C(t)|


def capacity_at(step: int | torch.Tensor, c_max: float, steps: int) -> torch.Tensor:
    """C(t) = C_max * min(1, t / T): the linear ramp of Burgess et al. 2018 (Sec. 4)."""
    t = torch.as_tensor(step, dtype=torch.float64)
    return (c_max * (t / steps).clamp(max=1.0)).float()


class CapacityTerm(LatentTerm):
    """gamma * |KL - C(t)|, with KL the batch mean of KL(q(z|x) || p(z)) and t the number of
    training calls so far (a buffer: saved and resumed with the run). With the
    ``annealed`` reduction (reconstruction only) the loss is Burgess et al.'s
    -E_q log p(x|z) + gamma |KL - C(t)|."""

    def __init__(self, options: AnnealedOptions) -> None:
        super().__init__()
        self.options = options
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def forward(self, terms: Terms, beta: torch.Tensor) -> tuple[torch.Tensor, dict]:
        o = self.options
        c = capacity_at(self.step, o.capacity_max, o.capacity_steps).to(terms.log_px_z.device)
        if self.training:
            self.step += 1
        kl = terms.kl_per_image().mean()
        return o.capacity_gamma * (kl - c).abs(), {"capacity": c}


def check_annealed(options: AnnealedOptions, beta: float) -> None:
    positive("--capacity-steps", options.capacity_steps)
    if options.capacity_max < 0 or options.capacity_gamma < 0:
        raise VaelabError("--capacity-max and --capacity-gamma: must be >= 0")
    if beta != 1.0:
        raise VaelabError(
            "--beta: --objective annealed weighs |KL - C(t)| by --capacity-gamma; leave --beta at 1"
        )


# --- DIP-VAE I and II (Kumar et al. 2018) --------------------------------------------


@dataclass(frozen=True)
class DIPOptions:
    dip_kind: str = "ii"  # dip: i (covariance of the means) or ii (covariance of q(z))
    lambda_od: float = 10.0  # dip: weight of the squared off-diagonal covariances
    lambda_d: float | None = None  # dip: weight of (diag - 1)^2 (default 10*od for i, od for ii)


def dip_covariance(mean: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
    """The covariance DIP-VAE pushes to the identity, ``(D, D)``, over a batch ``(B, D)``:
    DIP-I Cov_p(x)[mu(x)] (``std`` None), DIP-II Cov_q(z)[z] = E_p(x)[diag sigma^2(x)] +
    Cov_p(x)[mu(x)] (Kumar et al. 2018, Eqs. 6-7). Population (1/B) covariance."""
    centred = mean - mean.mean(0)
    cov = centred.T @ centred / mean.shape[0]
    if std is not None:
        cov = cov + torch.diag(std.square().mean(0))
    return cov


def dip_regulariser(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2: zero iff C = I."""
    diag = torch.diagonal(cov)
    off = cov - torch.diag(diag)
    return lambda_od * off.square().sum() + lambda_d * (diag - 1).square().sum()


def dip_lambdas(options: DIPOptions) -> tuple[float, float]:
    """(lambda_od, lambda_d), lambda_d defaulting as Kumar et al.'s experiments set it."""
    if options.lambda_d is not None:
        return options.lambda_od, options.lambda_d
    return options.lambda_od, options.lambda_od * (10.0 if options.dip_kind == "i" else 1.0)


class DIPTerm(LatentTerm):
    """DIP-VAE's regulariser (:func:`dip_regulariser` of :func:`dip_covariance`), added to
    the beta-ELBO loss."""

    def __init__(self, options: DIPOptions) -> None:
        super().__init__()
        if options.dip_kind not in ("i", "ii"):
            raise VaelabError(f"--dip-kind: expected i or ii, got {options.dip_kind!r}")
        if options.lambda_od < 0 or (options.lambda_d is not None and options.lambda_d < 0):
            raise VaelabError("--lambda-od and --lambda-d: must be >= 0")
        self.kind = options.dip_kind
        self.lambda_od, self.lambda_d = dip_lambdas(options)

    def forward(self, terms: Terms, beta: torch.Tensor) -> tuple[torch.Tensor, dict]:
        std = terms.extras["q_std"] if self.kind == "ii" else None
        cov = dip_covariance(terms.extras["q_mean"], std)
        reg = dip_regulariser(cov, self.lambda_od, self.lambda_d)
        return reg, {"dip_reg": reg}
