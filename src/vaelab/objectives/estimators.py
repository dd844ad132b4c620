"""Gradient estimators: how z ~ q(z|x) is drawn and which surrogate carries its gradient.

The ELBO's encoder gradient is grad_phi E_q[f(z)], with f(z) = log p(x|z) when the KL is
analytic (its own exact gradient is added by autograd) and f(z) = log p(x|z) + beta (log p(z)
- log q(z|x)) when it is sampled. Sampling z blocks the gradient; each estimator restores it:

    reparam         z = mu + sigma * eps (Normal); torch's implicit reparameterization
                    (Figurnov et al. 2018) for Gamma and Beta. Gradient: grad_z f * dz/dphi.
    score           REINFORCE: z is drawn without a graph and the objective adds
                    f(z) * grad log q(z|x) (Williams 1992; black-box VI).
    score-baseline  the same with (f(z) - b) * grad log q(z|x), b a running mean of f (EMA
                    buffer, checkpointed) plus optionally a learned b(x) (a small MLP on x,
                    fitted to f by least squares). Any b that does not depend on z keeps the
                    estimate unbiased, since E_q[grad log q] = 0.
    grep            G-REP (Ruiz, Titsias & Blei 2016) for Gamma q: eps = T^-1(z) with the
                    standardization T^-1(z) = (log z - psi(alpha) + log beta) / sqrt(psi1(alpha));
                    z = T(eps; alpha, beta) is differentiated with eps fixed (g_rep) and the
                    objective adds f(z) * grad log pi(eps; alpha, beta) (g_corr), where
                    pi(eps) = q(T(eps)) |dT/deps| is the (parameter-dependent) law of eps.

The objective (:class:`vaelab.objectives.Objective`) owns the estimator and chooses how z
is drawn when it is called: a pathwise estimator (``reparam``) leaves the draw to the model's
own ``forward`` (its closed-form Normal path), any other draws z from the model's posterior
q(z|x) (``model.encode``) and scores the model there (``model.terms_at``). A draw returns
``score`` ``(K, B)``: a tensor of value 0 whose gradient is the term that multiplies f (grad
log q for score, grad log pi for grep); :meth:`Estimator.surrogate` turns it, with the
baseline fitted to the f the objective builds (with its own beta: KL warm-up), into a
zero-valued loss term, so the reported ELBO is unchanged. A baseline of f at beta = 1 would
centre the wrong signal. Decoder and prior gradients are pathwise in every case (their
parameters do not affect how z is drawn). An estimator is an ``nn.Module`` inside the
objective, so a baseline's running mean and network are saved in the checkpoint
(``objective/estimator.*``) and trained by the same optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, Gamma, Independent

from vaelab.errors import VaelabError, unknown_name


@dataclass
class Draw:
    z: torch.Tensor  # (K, B, D)
    score: torch.Tensor | None = None  # (K, B), value 0; None for pathwise-only estimators


def _zero_valued(t: torch.Tensor) -> torch.Tensor:
    """``t - t.detach()``: value 0, gradient that of ``t``."""
    return t - t.detach()


class Estimator(nn.Module):
    """How z ~ q is drawn and which zero-valued surrogate adds the rest of the gradient.

    ``pathwise``: z = q.rsample() carries the whole gradient, so the objective lets the model
    draw z itself (its own forward); otherwise the objective draws z with :meth:`draw` from
    the model's q(z|x) and adds :meth:`surrogate`. ``families``: the posterior families it
    applies to (None: every family).
    """

    pathwise = False
    families: tuple[str, ...] | None = None

    def draw(self, q: Distribution, samples: int) -> Draw:
        """``samples`` draws z ``(K, B, D)`` from q and their score term (or None)."""
        return Draw(q.rsample((samples,)))

    def baseline(self, x: torch.Tensor | None, f: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The control variate b, broadcastable to ``(K, B)``, and extra loss terms."""
        return torch.zeros((), device=f.device, dtype=f.dtype), {}

    def surrogate(
        self, x: torch.Tensor | None, score: torch.Tensor | None, f: torch.Tensor
    ) -> torch.Tensor | float:
        """Zero-valued loss term adding the score-function part of the gradient.

        ``f`` ``(K, B)``: the per-sample learning signal of the objective being minimised as
        -mean_{k,b} f (with the objective's beta); ``x`` the batch (for a learned b(x)).
        Returns -mean_{k,b} (f - b) * score, b the baseline fitted to this same f (+ its
        zero-valued fitting term); 0 when the draw has no score term.
        """
        if score is None:
            return 0.0
        f = f.detach()
        b, more = self.baseline(x, f)
        loss = -((f - b.detach()) * score).mean()
        for term in more.values():  # e.g. the learned baseline's least-squares fit
            loss = loss + term
        return loss


class Reparam(Estimator):
    """z = q.rsample(): explicit for Normal, implicit for Gamma/Beta."""

    pathwise = True


class Score(Estimator):
    """REINFORCE: z detached; the gradient of E_q[f] is E[f(z) grad log q(z|x)]."""

    def draw(self, q: Distribution, samples: int) -> Draw:
        if not torch.is_grad_enabled():
            return Draw(q.sample((samples,)))
        z = q.sample((samples,))
        return Draw(z, _zero_valued(q.log_prob(z)))


class ScoreBaseline(Score):
    """Score function with a control variate b = EMA of f (+ learned b(x) if enabled).

    The EMA is updated in training mode only, after b is read, so a batch's own f never
    enters its baseline (that would correlate b with z and bias the estimate).
    """

    def __init__(
        self, decay: float = 0.9, learned: bool = False, in_features: int = 0, hidden: int = 64
    ) -> None:
        super().__init__()
        if not 0 <= decay < 1:
            raise VaelabError(f"--baseline-decay: must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("mean_f", torch.zeros(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.net = None
        if learned:
            # b(x) = EMA + net(x): the net only learns the input-dependent residual.
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )

    def baseline(self, x: torch.Tensor | None, f: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b = self.mean_f.to(f.dtype).clone()
        more = {}
        if self.net is not None:
            residual = self.net(x).squeeze(-1)  # (B,)
            target = f.detach().mean(0) - b
            fit = (residual - target).square().mean()
            more["baseline_fit"] = _zero_valued(fit)  # value 0: the ELBO is unchanged
            b = b + residual
        if self.training:
            with torch.no_grad():
                batch = f.mean()
                # Branchless first update (no host read of count: a sync per step on
                # CUDA, and a graph break under --compile).
                ema = self.decay * self.mean_f + (1 - self.decay) * batch
                new = torch.where(self.count == 0, batch, ema)
                self.mean_f.copy_(new)
                self.count += 1
        return b, more

    def warm_up(self, f: torch.Tensor) -> None:
        """Set the running mean to ``f.mean()`` (gradvar on a model not trained with it)."""
        self.mean_f.fill_(float(f.mean()))
        self.count.fill_(1)


class GRep(Score):
    """G-REP for Gamma(alpha, beta) posteriors (Ruiz, Titsias & Blei 2016, log standardization).

    With s = sqrt(psi1(alpha)) and m = psi(alpha) - log beta (the mean and std of log z),
    eps = (log z - m) / s has mean 0 and variance 1 for every (alpha, beta) but its law still
    depends on alpha: log pi(eps) = log q(z) + log z + log s at z = exp(s eps + m). The rate
    enters z = exp(s eps + psi(alpha)) / beta as a pure scale, so d log pi / d beta = 0 and
    the beta-gradient is the ordinary reparameterization one.
    """

    families = ("gamma",)

    def draw(self, q: Distribution, samples: int) -> Draw:
        base = q.base_dist if isinstance(q, Independent) else q
        if not isinstance(base, Gamma):
            raise VaelabError("--estimator grep: needs --posterior gamma")
        if not torch.is_grad_enabled():
            return Draw(q.sample((samples,)))
        alpha, beta = base.concentration, base.rate
        s = torch.polygamma(1, alpha).sqrt()
        m = torch.digamma(alpha) - beta.log()
        with torch.no_grad():
            z0 = base.sample((samples,)).clamp_min(torch.finfo(alpha.dtype).tiny)
            eps = (z0.log() - m) / s
        log_z = s * eps + m  # == log z0 in value, differentiable in (alpha, beta)
        z = log_z.exp()
        # log Gamma(z; alpha, beta) + log z, written with log_z so it never takes log(0).
        log_pi = alpha * beta.log() + alpha * log_z - beta * z - torch.lgamma(alpha) + s.log()
        return Draw(z, _zero_valued(log_pi.sum(-1)))


ESTIMATORS: dict[str, type[Estimator]] = {
    "reparam": Reparam,
    "score": Score,
    "score-baseline": ScoreBaseline,
    "grep": GRep,
}


def build_estimator(
    name: str, posterior: str, decay: float = 0.9, learned: bool = False, in_features: int = 0
) -> Estimator:
    """The estimator ``--estimator name`` for posterior family ``posterior`` (checked)."""
    if name not in ESTIMATORS:
        raise unknown_name("--estimator", name, ESTIMATORS)
    cls = ESTIMATORS[name]
    if cls.families is not None and posterior not in cls.families:
        raise VaelabError(
            f"--estimator {name}: needs --posterior {' or '.join(cls.families)}, got {posterior}"
        )
    if cls is ScoreBaseline:
        return ScoreBaseline(decay, learned, in_features)
    return cls()
