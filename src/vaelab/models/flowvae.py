"""The VAE with a normalizing-flow posterior: ``--model flow --flow iaf|planar --flow-steps N``.

q(z|x) is a diagonal Gaussian pushed through N flow steps (:mod:`vaelab.latents.flows`):
inverse autoregressive steps with a context h from the encoder (Kingma et al. 2016), or
amortised planar steps (Rezende & Mohamed 2015). With z_0 = mu + sigma * eps,

    z_T = f_N o ... o f_1 (z_0),
    log q(z_T|x) = log N(eps; 0, I) - sum_d log sigma_d - sum_t log |det df_t/dz_{t-1}|,

exact, so log w = log p(x|z_T) + log p(z_T) - log q(z_T|x) are true importance weights
(IWAE and the importance-sampled NLL stay valid). The KL has no closed form: the ELBO
uses the sampled log q(z|x) - log p(z). The encoder emits (mu, log sigma^2, flow
parameters): 2D + the context size (iaf) or N (2D + 1) (planar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.distributions import Distribution, constraints

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError, at_least, unknown_name
from vaelab.latents import NormalFamily, full_precision, standard_normal_log_prob
from vaelab.latents.flows import FLOWS, build_flow
from vaelab.latents.priors import build_prior
from vaelab.models.base import likelihood_of
from vaelab.models.terms import Terms
from vaelab.models.vae import VAE
from vaelab.nn import build_bodies


@dataclass(frozen=True)
class FlowOptions:
    flow: str = "iaf"  # flow: the posterior flow, iaf (Kingma 2016) or planar (Rezende 2015)
    flow_steps: int = 2  # flow: number of flow steps on q(z|x)
    flow_hidden: int = 64  # flow: IAF context size and MADE hidden width


class FlowPosterior(Distribution):
    """q(z|x) = the law of z_T (event ``(D,)``, batch ``(B,)``). ``rsample`` is exact;
    ``log_prob`` is exact at the posterior's own draws (the flow is not inverted: planar
    steps have no closed-form inverse) and refused elsewhere; ``mean`` and ``stddev`` are
    Monte Carlo estimates from 256 draws (what a tool that wants a point and a spread uses)."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, mu, logvar, extra, flow) -> None:
        self.mu, self.logvar, self.extra, self.flow = mu, logvar, extra, flow
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] = []
        super().__init__(mu.shape[:-1], mu.shape[-1:], validate_args=False)

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_T ``(n, B, D)``, log q(z_T|x) ``(n, B)``), differentiable."""
        eps = torch.randn((n, *self.mu.shape), dtype=self.mu.dtype, device=self.mu.device)
        z0 = self.mu + torch.exp(0.5 * self.logvar) * eps
        z, logdet = self.flow(z0, self.extra)
        log_q = standard_normal_log_prob(eps) - 0.5 * self.logvar.sum(-1) - logdet
        return z, log_q

    def rsample(self, sample_shape=()) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        z, log_q = self.draw(n)
        z = z.reshape(*sample_shape, *z.shape[1:])
        self._cache.append((z, log_q.reshape(*sample_shape, *log_q.shape[1:])))
        return z

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        for z, log_q in self._cache:
            if value is z or (value.shape == z.shape and torch.equal(value, z)):
                return log_q
        raise VaelabError("log q(z|x) of a flow posterior is known at its own draws only")

    @property
    def mean(self) -> torch.Tensor:
        with torch.no_grad():
            return self.draw(256)[0].mean(0)

    @property
    def stddev(self) -> torch.Tensor:
        with torch.no_grad():
            return self.draw(256)[0].std(0)


class FlowVAE(VAE):
    """A VAE whose q(z|x) is a Gaussian followed by IAF or planar flow steps."""

    options = FlowOptions
    any_estimator = False  # the flow's draw is the reparameterised path; no score estimator
    chain = None
    export_refusal = "encoder: a flow posterior is not one graph from image to q(z|x)"

    def __init__(self, encoder, decoder, prior, likelihood, image_shape, flow) -> None:
        super().__init__(encoder, decoder, prior, likelihood, image_shape, NormalFamily())
        self.flow = flow

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        o = cls.options_of(cfg)
        if o.flow not in FLOWS:
            raise unknown_name("--flow", o.flow, FLOWS)
        at_least("--flow-steps", o.flow_steps)
        at_least("--flow-hidden", o.flow_hidden)
        if cfg.posterior != "normal" or cfg.prior != "normal":
            raise VaelabError("--model flow: the flow starts from --posterior normal and "
                              "scores against --prior normal")  # fmt: skip

    @classmethod
    def describe(cls, cfg: ModelConfig) -> str:
        o = cls.options_of(cfg)
        return f"{cfg.model} ({o.flow} x{o.flow_steps}) {cfg.arch} latent {cfg.latent_dim}"

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> FlowVAE:
        cls.check_config(cfg)
        o = cls.options_of(cfg)
        likelihood = likelihood_of(cfg, image_shape)
        flow = build_flow(o.flow, cfg.latent_dim, o.flow_steps, o.flow_hidden)
        encoder, decoder = build_bodies(
            cfg.arch, image_shape, cfg.hidden, cfg.latent_dim,
            2 * cfg.latent_dim + flow.param_size(), likelihood.n_params, blocks=cfg.blocks,
        )  # fmt: skip
        prior = build_prior("normal", cfg.latent_dim)
        return cls(encoder, decoder, prior, likelihood, image_shape, flow)

    def _split(self, params: torch.Tensor):
        d = self.latent_dim
        mu, logvar = self.family.split(params[..., : 2 * d])
        return mu, logvar, full_precision(params[..., 2 * d :])

    def encode(self, x: torch.Tensor) -> FlowPosterior:
        return FlowPosterior(*self._split(self.encoder(x)), self.flow)

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The flow applied to the base mean, f(mu) ``(B, D)``: the point a plot shows (the
        posterior mean itself has no closed form)."""
        mu, _, extra = self._split(self.encoder(x))
        return self.flow(mu, extra)[0]

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        q = self.encode(x)
        z, log_q = q.draw(samples)
        return Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=self.prior.log_prob(z), log_qz_x=log_q, kl=None,
        )  # fmt: skip

    def terms_at(self, x: torch.Tensor, z: torch.Tensor, q: Distribution) -> Terms:
        return Terms(
            log_px_z=self.likelihood.log_prob(x, self.decode(z)),
            log_pz=self.prior.log_prob(z), log_qz_x=q.log_prob(z), kl=None,
        )  # fmt: skip
