"""Objectives: reductions of a model's :class:`~vaelab.models.terms.Terms`, and the
:class:`Objective` that owns the gradient estimator and the extra loss terms.

Every model returns, for K samples z_k ~ q(z|x) per image, the three log-densities
``log_px_z``, ``log_pz`` and ``log_qz_x``, each ``(K, B)``, and the analytic
``kl = KL(q(z|x) || p(z))`` ``(B,)`` where it has a closed form. With
log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x):

    ELBO  = mean_k [log p(x|z_k)] - KL                      (beta-weighted KL in training)
    IWAE  = log mean_k exp(log w_k)    (>= ELBO; equals it for K = 1; rises with K)

Each reduction (:data:`OBJECTIVES`) is a pure function ``(terms, beta) -> (loss, stats)``:
``loss`` is the scalar to minimise (the negative bound averaged over images), ``stats``
per-image averages as 0-d tensors (no host sync): ``bound`` (the objective's bound with
beta = 1), ``recon`` (E_q log p(x|z)) and ``kl``.

:class:`Objective` is what training calls (as Pyro's ``Trace_ELBO`` is separate from the
model and guide): ``objective(model, x, beta, y=, samples=, labelled=)``. It chooses at call
time how z is drawn (its :mod:`~vaelab.objectives.estimators` estimator: the model's own
reparameterized ``forward``, or ``model.encode`` + ``estimator.draw`` + ``model.terms_at``
and the estimator's zero-valued surrogate), reduces the Terms, and adds its extra terms
(M2's alpha/N x class loss, :class:`ClassLoss`). It is an ``nn.Module`` so the estimator's
state (a baseline's running mean and network) is saved with the checkpoint.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.config import OWNERS, Config, OptionOwner, resolve
from vaelab.errors import VaelabError, unknown_name
from vaelab.models.gumbel import GumbelOptions
from vaelab.models.m2 import DEFAULT_ALPHA_PER_IMAGE, M2
from vaelab.models.terms import Terms  # what models return: the objectives' input
from vaelab.objectives import iw, wae
from vaelab.objectives.capacity import capacity
from vaelab.objectives.estimators import Estimator, Reparam, build_estimator
from vaelab.objectives.factorvae import FactorTerm, FactorVAEOptions
from vaelab.objectives.iw import GROUPS, CIWAEOptions, MIWAEOptions, PIWAEOptions, split_gradients
from vaelab.objectives.latent_terms import (
    AnnealedOptions,
    CapacityTerm,
    DIPOptions,
    DIPTerm,
    LatentTerm,
    check_annealed,
)
from vaelab.objectives.tcvae import BTCVAEOptions, TCTerm
from vaelab.objectives.vq import vq as vq_objective
from vaelab.objectives.wae import InfoVAEOptions, RAEOptions, SWAEOptions, WAEOptions


def logmeanexp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(t, dim=dim) - math.log(t.shape[dim])


def free_bits_kl(terms: Terms, floor: float) -> torch.Tensor:
    """The KL term with free bits (Kingma et al. 2016): sum_g max(floor, mean_b KL_g(x_b))
    over latent groups (``terms.kl_groups``; a model without groups is one group). A group
    whose batch-mean KL is below ``floor`` nats contributes a constant: no gradient pushes
    it further towards its prior, so it stays free to carry information."""
    groups = terms.kl_groups if terms.kl_groups is not None else terms.kl_per_image()[None]
    return groups.mean(1).clamp(min=floor).sum()


def elbo(
    terms: Terms, beta: float = 1.0, free_bits: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative beta-ELBO: -(E_q[log p(x|z)] - beta * KL), averaged over the batch; with
    ``free_bits`` > 0 the KL term is :func:`free_bits_kl` (the reported bound is not)."""
    recon = terms.log_px_z.mean(0)
    kl = terms.kl_per_image()
    if free_bits > 0:
        loss = -recon.mean() + beta * free_bits_kl(terms, free_bits)
    else:
        loss = -(recon - beta * kl).mean()
    bound = recon - kl
    return loss, {"bound": bound.mean(), "recon": recon.mean(), "kl": kl.mean()}


def elbo_signal(terms: Terms, beta: float = 1.0) -> torch.Tensor:
    """The ELBO's per-sample learning signal f ``(K, B)`` for a score-type estimator
    (-mean f has the ELBO loss's gradient through z): log p(x|z) when the KL is analytic
    (its own gradient is exact), else log p(x|z) - beta (log q(z|x) - log p(z))."""
    if terms.kl is not None:
        return terms.log_px_z
    return terms.log_px_z - beta * (terms.log_qz_x - terms.log_pz)


def iwae(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative IWAE bound with K importance samples (``beta`` is ignored: it has no KL)."""
    bound = logmeanexp(terms.log_w(), 0)
    recon = terms.log_px_z.mean(0)
    stats = {"bound": bound.mean(), "recon": recon.mean(), "kl": terms.kl_per_image().mean()}
    return -bound.mean(), stats


def m2(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """M2's negative beta-bound (Kingma et al. 2014; labelled images: L(x, y), unlabelled:
    U(x); see vaelab.models.m2). The ``m2`` :class:`Objective` adds the class loss
    (:class:`ClassLoss`) to it.

    beta weighs only KL(q(z|x,y) || p(z)) (``extras["kl_z"]``): the label's part of the
    bound, log p(y) and H(q(y|x)), is not a KL to the latent prior and keeps weight 1."""
    recon = terms.log_px_z.mean(0)
    kl = terms.kl_per_image()
    kl_beta = kl + (beta - 1.0) * terms.extras["kl_z"]  # y part + beta * z part
    loss = -(recon - kl_beta).mean()
    return loss, {"bound": (recon - kl).mean(), "recon": recon.mean(), "kl": kl.mean()}


Reduction = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

OBJECTIVES: dict[str, Reduction] = {"elbo": elbo, "iwae": iwae, "m2": m2}
OBJECTIVES["capacity"] = capacity  # zoob (issue 23): JointVAE, objectives/capacity.py
# Objectives with options of their own: name -> frozen dataclass, whose fields become flags
# and the objective's section in config.yaml (``TrainConfig.options`` holds the active one;
# its terms builder, :data:`EXTRA_TERMS`, reads them). None of the built-in ones has any:
# M2's alpha is the m2 family's (it weighs M2's classifier).
OBJECTIVE_OPTIONS: dict[str, type] = {}
OWNERS["train"] = OptionOwner("train", "objective", lambda: OBJECTIVE_OPTIONS)
# The reductions a score-type estimator can drive: name -> learning signal f (K, B).
SIGNALS: dict[str, Callable[[Terms, float], torch.Tensor]] = {"elbo": elbo_signal}


def get_objective(name: str) -> Reduction:
    if name not in OBJECTIVES:
        raise unknown_name("--objective", name, OBJECTIVES)
    return OBJECTIVES[name]


class ClassLoss:
    """M2's classification term, ``weight`` x mean_labelled -log q(y|x) (weight = alpha / N:
    the paper's J^alpha divided by N). ``labelled`` ``(x, y)``: the loop's batch of labelled
    images; without one (evaluation, direct calls) the batch's own known labels (y >= 0)."""

    def __init__(self, weight: float = DEFAULT_ALPHA_PER_IMAGE) -> None:
        self.weight = weight

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
        labelled: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        if labelled is not None:
            ce = F.cross_entropy(model.class_logits(labelled[0]), labelled[1])
        elif y is not None and bool((y >= 0).any()):
            known = y >= 0
            ce = F.cross_entropy(model.class_logits(x)[known], y[known])
        else:  # no label in sight: nothing to classify
            ce = x.new_zeros(())
        return self.weight * ce, {"class_loss": ce.detach()}


class Objective(nn.Module):
    """The loss of one batch: ``(model, x, beta, y, samples, labelled) -> (loss, stats)``.

    ``name``: the reduction (:data:`OBJECTIVES`); ``estimator``: how z is drawn (default
    reparameterization); ``free_bits``: the ELBO's per-group KL floor; ``terms``: extra loss
    terms ``(model, x, y, labelled) -> (value, stats)`` added to the reduction's loss;
    ``options``: the objective's own options (handed to a reduction that takes ``options=``;
    MIWAE/PIWAE draw M x ``samples`` per image, :data:`~vaelab.objectives.iw.GROUPS`). A
    reduction that returns ``stats["encoder_loss"]`` (PIWAE) has the encoder trained on it
    and the rest on its loss (:func:`~vaelab.objectives.iw.split_gradients`).
    """

    def __init__(
        self, name: str = "elbo", estimator: Estimator | None = None, free_bits: float = 0.0,
        terms: tuple[Callable[..., tuple[torch.Tensor, dict]], ...] = (), options: Any = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.name, self.reduce = name, get_objective(name)
        self.estimator = estimator if estimator is not None else Reparam()
        if not self.estimator.pathwise and name not in SIGNALS:
            raise VaelabError(
                f"--objective {name}: needs --estimator reparam (or elbo for the others)"
            )
        self.free_bits, self.terms = free_bits, terms
        # The objective's own options (OBJECTIVE_OPTIONS' dataclass), handed to its reduction,
        # and the draws per --samples it needs (MIWAE/PIWAE: M groups of K).
        self.options, self.groups = options, GROUPS[name](options) if name in GROUPS else 1
        self._takes_options = "options" in inspect.signature(self.reduce).parameters
        # Terms with state (a step counter, a discriminator): checkpointed as objective/parts.*
        self.parts = nn.ModuleList([t for t in terms if isinstance(t, nn.Module)])
        self.reads_draw = any(isinstance(t, LatentTerm) for t in terms)

    def side_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers of the terms' own parameters (FactorVAE's discriminator), which
        the training step steps after the model's; their parameters are not the model's
        optimizer's (:meth:`side_parameters`)."""
        return [o for t in self.parts if isinstance(t, LatentTerm) for o in t.side_optimizers()]

    def side_parameters(self) -> set[int]:
        """ids of the parameters the side optimizers own."""
        return {id(p) for o in self.side_optimizers() for g in o.param_groups for p in g["params"]}

    def draw(
        self, model: nn.Module, x: torch.Tensor, samples: int, y: torch.Tensor | None = None
    ) -> tuple[Terms, torch.Tensor | None]:
        """The model's Terms at K draws of z and the draws' score term (None: pathwise)."""
        if self.reads_draw:  # the terms read z and q(z|x) (checked Gaussian at build time)
            q = model.encode(x)
            z = q.rsample((samples,))
            terms = model.terms_at(x, z, q)
            terms.extras.update(z=z, q_mean=q.mean, q_std=q.stddev)
            return terms, None
        if self.estimator.pathwise:  # the model's own draw (its closed-form Normal path)
            return (model(x, samples) if y is None else model(x, samples, y=y)), None
        q = model.encode(x)
        d = self.estimator.draw(q, samples)
        return model.terms_at(x, d.z, q), d.score

    def forward(
        self, model: nn.Module, x: torch.Tensor, beta: float | torch.Tensor = 1.0,
        y: torch.Tensor | None = None, samples: int = 1,
        labelled: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        terms, score = self.draw(model, x, samples * self.groups, y)
        extra = {"free_bits": self.free_bits} if self.free_bits > 0 else {}
        if self.options is not None and self._takes_options:
            extra["options"] = self.options
        loss, stats = self.reduce(terms, beta, **extra)
        if "encoder_loss" in stats:  # PIWAE: the encoder's own loss (objectives/iw.py)
            loss = split_gradients(model, loss, stats.pop("encoder_loss"))
        if score is not None:  # zero-valued: the reported bound is unchanged
            loss = loss + self.estimator.surrogate(x, score, SIGNALS[self.name](terms, beta))
        for term in self.terms:
            if isinstance(term, LatentTerm):
                value, more = term(terms, beta)
            else:
                value, more = term(model, x, y, labelled)
            loss = loss + value
            stats.update(more)
        # Detached: the loop sums them over an epoch, which must not keep each step's graph.
        return loss, {k: v.detach() for k, v in stats.items()}


def build_objective(config: Config, model: Any, n_train: int | None = None) -> Objective:
    """The objective a run of ``config`` trains ``model`` with (``config`` resolved): its
    reduction, ``--estimator`` (checked against the posterior family and the model's
    ``any_estimator``), ``--free-bits`` and, for ``--objective m2``, the class loss weighted
    alpha / N (``--alpha``; N = ``n_train`` training images)."""
    config = resolve(config)  # the model's default objective (m2)
    m, t = config.model, config.train
    estimator = build_estimator(
        m.estimator, m.posterior, m.baseline_decay, m.learned_baseline,
        in_features=math.prod(model.image_shape),
    )  # fmt: skip
    if not estimator.pathwise and not model.any_estimator:
        raise VaelabError(
            f"--estimator {m.estimator}: --model {m.model} draws its latents by "
            "reparameterization inside the model; use --estimator reparam"
        )
    if t.objective in DRAWN:
        check_drawn(config, model)
    terms = EXTRA_TERMS[t.objective](config, n_train) if t.objective in EXTRA_TERMS else ()
    wae.check_model(t.objective, model, m.prior)
    return Objective(t.objective, estimator, t.free_bits, terms, t.options)


def check_objective(config: Config) -> None:
    """Refuse bad values of the objective's own options (``config`` resolved), before
    anything is read or created."""
    wae.check_options(config.train.objective, config.train.options)
    iw.check_options(config.train.objective, config.train.options)


def m2_terms(config: Config, n_train: int | None) -> tuple[ClassLoss]:
    """The ``m2`` objective's class loss, weighted alpha / N (``--alpha``, an option of the
    m2 family; the default :data:`~vaelab.models.m2.DEFAULT_ALPHA_PER_IMAGE` per image needs
    no N)."""
    alpha = M2.options_of(config.model).alpha
    if alpha is None:
        return (ClassLoss(DEFAULT_ALPHA_PER_IMAGE),)
    if not n_train:  # a caller's mistake: alpha / N needs N
        raise TypeError("build_objective: --alpha is per data set; pass n_train (N)")
    return (ClassLoss(alpha / n_train),)


# Objectives with loss terms beyond their reduction: name -> (config, N) -> terms (a term:
# ``(model, x, y, labelled) -> (value, stats)``, added to the reduction's loss).
EXTRA_TERMS: dict[str, Callable[[Config, int | None], tuple]] = {"m2": m2_terms}


# --- disentanglement objectives (issue 21): objectives/{latent_terms,tcvae,factorvae}.py ---


def reconstruction(terms: Terms, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-E_q log p(x|z) alone: the reduction of objectives whose KL part is a term of their
    own (annealed, btcvae). The stats are the ELBO's (bound at beta = 1)."""
    recon = terms.log_px_z.mean(0)
    kl = terms.kl_per_image()
    return -recon.mean(), {"bound": (recon - kl).mean(), "recon": recon.mean(), "kl": kl.mean()}


OBJECTIVES["annealed"] = reconstruction  # + gamma |KL - C(t)|
OBJECTIVES["btcvae"] = reconstruction  # + beta (alpha MI + tc_beta TC + gamma dimKL)
OBJECTIVES["factorvae"] = elbo  # + gamma TC (discriminator)
OBJECTIVES["dip"] = elbo  # + DIP regulariser
OBJECTIVE_OPTIONS["annealed"] = AnnealedOptions
OBJECTIVE_OPTIONS["btcvae"] = BTCVAEOptions
OBJECTIVE_OPTIONS["factorvae"] = FactorVAEOptions
OBJECTIVE_OPTIONS["dip"] = DIPOptions
# The objectives whose terms read the draw z ~ q(z|x) and a Gaussian q's mean and std.
DRAWN = frozenset({"annealed", "btcvae", "factorvae", "dip"})


def check_drawn(config: Config, model: Any) -> None:
    """The disentanglement objectives need one Gaussian posterior (encode/terms_at) and
    reparameterized draws; all but annealed a standard normal prior (their terms compare
    q(z) with a factorised N(0, I))."""
    m, t = config.model, config.train
    if not (model.has_posterior and model.any_estimator):
        raise VaelabError(
            f"--objective {t.objective}: --model {m.model} has no single posterior q(z|x) to "
            "draw from; use --model vae (or another family with one)"
        )
    if m.posterior != "normal" or (t.objective != "annealed" and m.prior != "normal"):
        raise VaelabError(
            f"--objective {t.objective}: needs --posterior normal and --prior normal "
            f"(got {m.posterior}, {m.prior})"
        )


def _options(config: Config, cls: type) -> Any:
    o = config.train.options
    return o if isinstance(o, cls) else cls()


def capacity_ramp(config: Config) -> tuple[int, float, str] | None:
    """The run's KL target ramp C(t), rising linearly from 0 over ``steps`` training steps to
    ``final`` nats: ``(steps, final, flag)`` (``flag`` sets ``final``), or None when the
    objective has none. Only the Gaussian part for the gumbel family's capacity objective."""
    objective = config.train.objective
    if objective == "annealed":
        o = _options(config, AnnealedOptions)
        return o.capacity_steps, o.capacity_max, "--capacity-max"
    if objective == "capacity" and isinstance(config.model.options, GumbelOptions):
        o = config.model.options  # the JointVAE capacities live in the gumbel family
        return o.capacity_steps, o.cont_capacity, "--cont-capacity"
    return None


def ramp_note(config: Config, total_steps: int) -> str | None:
    """A one-line notice when a capacity ramp C(t) is longer than the run (``total_steps``
    steps): the KL target then never reaches its final value, and the run is a heavily
    constrained one (the annealed beta-VAE's default ramp is Burgess et al.'s 100,000
    steps). None when the ramp ends inside the run or the objective has none."""
    ramp = capacity_ramp(config)
    if ramp is None or ramp[0] <= total_steps:
        return None
    steps, final, flag = ramp
    reached = final * total_steps / steps
    return (f"--capacity-steps {steps}: longer than this run's {total_steps} steps; the "
            f"KL target reaches only {reached:.3g} of {flag} {final:g} nats (set "
            f"--capacity-steps to about 3/4 of the run's steps for the whole ramp)")  # fmt: skip


def annealed_terms(config: Config, n_train: int | None) -> tuple[CapacityTerm]:
    options = _options(config, AnnealedOptions)
    check_annealed(options, config.train.beta)
    return (CapacityTerm(options),)


def btcvae_terms(config: Config, n_train: int | None) -> tuple[TCTerm]:
    if not n_train:  # a caller's mistake: log q(z) is over the N training images
        raise TypeError("build_objective: --objective btcvae needs n_train (N)")
    return (TCTerm(_options(config, BTCVAEOptions), n_train),)


def factorvae_terms(config: Config, n_train: int | None) -> tuple[FactorTerm]:
    return (FactorTerm(_options(config, FactorVAEOptions), config.model.latent_dim),)


def dip_terms(config: Config, n_train: int | None) -> tuple[DIPTerm]:
    return (DIPTerm(_options(config, DIPOptions)),)


EXTRA_TERMS["annealed"] = annealed_terms
EXTRA_TERMS["btcvae"] = btcvae_terms
EXTRA_TERMS["factorvae"] = factorvae_terms
EXTRA_TERMS["dip"] = dip_terms

# VQ-VAE: reconstruction + commitment (+ codebook) loss, reported as the uniform-prior bound.
OBJECTIVES["vq"] = vq_objective

# Issue 23 (zooa): objectives without a KL (objectives/wae.py) and Rainforth et al.'s
# importance-weighted variants (objectives/iw.py).
OBJECTIVES["wae"] = wae.wae
OBJECTIVES["infovae"] = wae.infovae
OBJECTIVES["swae"] = wae.swae
OBJECTIVES["rae"] = wae.rae
OBJECTIVES["miwae"] = iw.miwae
OBJECTIVES["piwae"] = iw.piwae
OBJECTIVES["ciwae"] = iw.ciwae
OBJECTIVE_OPTIONS["wae"] = WAEOptions
OBJECTIVE_OPTIONS["infovae"] = InfoVAEOptions
OBJECTIVE_OPTIONS["swae"] = SWAEOptions
OBJECTIVE_OPTIONS["rae"] = RAEOptions
OBJECTIVE_OPTIONS["miwae"] = MIWAEOptions
OBJECTIVE_OPTIONS["piwae"] = PIWAEOptions
OBJECTIVE_OPTIONS["ciwae"] = CIWAEOptions
EXTRA_TERMS["rae"] = wae.rae_terms
