"""The categorical VAE with the Gumbel-softmax relaxation (Jang et al. 2017), alone or joint
with Gaussian latents (JointVAE, Dupont 2018): ``--model gumbel``.

z = [z_c, y_1..y_V]: ``--latent-dim`` Gaussian numbers when ``--joint true`` (none
otherwise) and ``--cat-vars`` groups of ``--categories`` (see :mod:`vaelab.latents.gumbel`
for the maths). The encoder emits 2 D_c + V C numbers (mu, log sigma^2, the logits). In
training the groups are relaxed at the temperature tau(step) (Jang's exponential annealing,
``--tau-start``, ``--tau-min``, ``--tau-rate`` per training step; the step count is a buffer,
so resume continues the schedule); in evaluation they are exact one-hot draws, so the test
ELBO and the importance-sampled NLL bound the discrete model. The KL is analytic: the
Gaussian KL plus sum_v KL(Cat(pi_v) || U(C)); ``Terms.extras`` holds both parts
(``kl_cont``, ``kl_disc``) and the capacity targets at this step (``capacity``: C_z, C_c,
gamma, from the family's ``--cont-capacity``, ``--disc-capacity``, ``--capacity-steps``,
``--capacity-gamma``) for the JointVAE capacity objective (``--objective capacity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError, at_least, positive
from vaelab.latents import NormalFamily, full_precision
from vaelab.latents.gumbel import (
    JointPosterior,
    JointPrior,
    categorical_kl_uniform,
    temperature_at,
)
from vaelab.models.base import likelihood_of
from vaelab.models.terms import Terms
from vaelab.models.vae import VAE
from vaelab.nn import build_bodies


@dataclass(frozen=True)
class GumbelOptions:
    categories: int = 10  # gumbel: classes of each categorical latent
    cat_vars: int = 0  # gumbel: categorical latents (0: --latent-dim of them alone, 1 with --joint)
    joint: bool = False  # gumbel: add --latent-dim Gaussian latents (JointVAE)
    tau_start: float = 1.0  # gumbel: initial Gumbel-softmax temperature
    tau_min: float = 0.5  # gumbel: floor of the annealed temperature
    tau_rate: float = 3e-5  # gumbel: tau = max(tau_min, tau_start exp(-rate step))
    capacity_gamma: float = 30.0  # gumbel: --objective capacity: weight of |KL - C|
    cont_capacity: float = 5.0  # gumbel: --objective capacity: final C of the Gaussian KL
    disc_capacity: float = 5.0  # gumbel: --objective capacity: final C of the categorical KL
    capacity_steps: int = 25000  # gumbel: --objective capacity: steps for C to rise from 0


class GumbelVAE(VAE):
    """Categorical (and optionally Gaussian) latents; relaxed draws in training."""

    options = GumbelOptions
    any_estimator = False  # the relaxed draw is its estimator
    latent_space = "categorical"
    capacity_terms = True
    chain = None
    export_refusal = "encoder: the posterior is (mu, logvar, logits), not (mu, logvar)"

    def __init__(self, encoder, decoder, prior: JointPrior, likelihood, image_shape, opts):
        super().__init__(encoder, decoder, prior, likelihood, image_shape, NormalFamily())
        self.opts = opts
        self.continuous_dims, self.categories = prior.dc, prior.categories
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        o = cls.options_of(cfg)
        at_least("--categories", o.categories, 2)
        at_least("--cat-vars", o.cat_vars, 0)
        positive("--tau-start", o.tau_start)
        positive("--tau-min", o.tau_min)
        at_least("--tau-rate", o.tau_rate, 0)
        at_least("--capacity-gamma", o.capacity_gamma, 0)
        at_least("--cont-capacity", o.cont_capacity, 0)
        at_least("--disc-capacity", o.disc_capacity, 0)
        at_least("--capacity-steps", o.capacity_steps)
        if cfg.posterior != "normal" or cfg.prior != "normal":
            raise VaelabError("--model gumbel: its posterior and prior are fixed; leave "
                              "--posterior and --prior unset")  # fmt: skip

    @classmethod
    def resolved_options(cls, cfg: ModelConfig) -> GumbelOptions:
        """The options with ``--cat-vars 0`` filled in: alone, ``--latent-dim`` categorical
        latents (Jang et al. 2017's 20 x 10 on MNIST by default; --latent-dim is then the
        number of groups, not ignored); with ``--joint``, one (Dupont 2018's JointVAE)."""
        o = cls.options_of(cfg)
        return o if o.cat_vars else replace(o, cat_vars=1 if o.joint else cfg.latent_dim)

    @classmethod
    def describe(cls, cfg: ModelConfig) -> str:
        o = cls.resolved_options(cfg)
        cont = f"{cfg.latent_dim} Gaussian + " if o.joint else ""
        return f"{cfg.model} {cfg.arch} latent {cont}{o.cat_vars}x{o.categories} categorical"

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> GumbelVAE:
        cls.check_config(cfg)
        o = cls.resolved_options(cfg)
        dc = cfg.latent_dim if o.joint else 0
        prior = JointPrior(dc, o.cat_vars, o.categories)
        likelihood = likelihood_of(cfg, image_shape)
        encoder, decoder = build_bodies(
            cfg.arch, image_shape, cfg.hidden, prior.latent_dim,
            2 * dc + o.cat_vars * o.categories, likelihood.n_params, blocks=cfg.blocks,
        )  # fmt: skip
        return cls(encoder, decoder, prior, likelihood, image_shape, o)

    @property
    def tau(self) -> float:
        o = self.opts
        return temperature_at(int(self.step), o.tau_start, o.tau_min, o.tau_rate)

    def capacity(self) -> torch.Tensor:
        """JointVAE's capacity targets at the current step, ``(3,)``: (C_z, C_c, gamma), each C
        rising linearly from 0 to its final value over ``capacity_steps``; C_c is capped at
        the categorical KL's maximum V log C (Dupont 2018, section 3)."""
        o = self.opts
        frac = min(1.0, int(self.step) / o.capacity_steps)
        c_disc = min(o.disc_capacity, o.cat_vars * math.log(o.categories))
        return torch.tensor([frac * o.cont_capacity, frac * c_disc, o.capacity_gamma])

    def _posterior(self, x: torch.Tensor, relaxed: bool) -> JointPosterior:
        params = full_precision(self.encoder(x))
        dc = self.continuous_dims
        mu, logvar = params[..., :dc], params[..., dc : 2 * dc].clamp(-30.0, 20.0)
        logits = params[..., 2 * dc :].unflatten(-1, (self.opts.cat_vars, self.opts.categories))
        return JointPosterior(mu, logvar, logits, self.tau, relaxed)

    def encode(self, x: torch.Tensor) -> JointPosterior:
        """q(z|x): relaxed in training mode, exact one-hot groups in evaluation mode."""
        return self._posterior(x, self.training)

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(mu, the one-hot mode of each group) ``(B, D)``."""
        q = self._posterior(x, False)
        mode = F.one_hot(q.logits.argmax(-1), q.logits.shape[-1]).to(q.mu.dtype)
        return torch.cat([q.mu, mode.flatten(-2)], -1)

    def _terms(self, x: torch.Tensor, samples: int, relaxed: bool) -> Terms:
        q = self._posterior(x, relaxed)
        z = q.rsample((samples,))
        kl_cont = 0.5 * (q.mu.square() + q.logvar.exp() - 1.0 - q.logvar).sum(-1)
        kl_disc = categorical_kl_uniform(q.logits)
        tau = q.tau if relaxed else None
        return Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=lambda: self.prior.log_prob(z, tau),
            log_qz_x=lambda: q.log_prob(z),
            kl=kl_cont + kl_disc,
            extras={"kl_cont": kl_cont, "kl_disc": kl_disc, "capacity": self.capacity()},
        )

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        if self.training and torch.is_grad_enabled():
            self.step += 1  # the temperature schedule's clock
        return self._terms(x, samples, relaxed=self.training)

    def terms_at(self, x: torch.Tensor, z: torch.Tensor, q: Distribution) -> Terms:
        tau = q.tau if q.relaxed else None
        return Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=self.prior.log_prob(z, tau), log_qz_x=q.log_prob(z),
            kl=q.mu.new_zeros(q.mu.shape[:-1]) + categorical_kl_uniform(q.logits)
            + 0.5 * (q.mu.square() + q.logvar.exp() - 1.0 - q.logvar).sum(-1),
        )  # fmt: skip

    def log_weights(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """Weights of the discrete model (one-hot draws) whatever the mode."""
        return self._terms(x, samples, relaxed=False).log_w()
