"""A deep hierarchical VAE (``--model deep``) after VDVAE (Child 2021) and NVAE (Vahdat &
Kautz 2020): latent groups z_1 .. z_G at several resolutions, several groups per resolution.

    p(x, z) = p(z_1) prod_{g>1} p(z_g | z_<g) p(x | z)       q(z|x) = prod_g q(z_g | x, z_<g)

A bottom-up encoder (:class:`vaelab.nn.cells.BottomUp`) computes one activation a_r(x) per
resolution level r. A top-down decoder carries a state h, a learned constant at the coarsest
level; group g (at level r) does, with every conditional a diagonal Gaussian,

    prior      (mu_p, logvar_p, h') = P_g(h)          (the top group: p(z_1) = N(0, I))
    posterior  (mu_q, logvar_q)     = Q_g([h, a_r(x)])
    z_g ~ q (training, evaluation) or p (sampling),   h <- Cell_g(h + h' + W_g z_g)

and between levels h is upsampled; the last state gives ``likelihood.n_params`` channels per
pixel, so any registry likelihood works. ``forward(x, K)`` returns :class:`Terms` with

    log p(x|z),  log p(z) = sum_g log p(z_g|z_<g),  log q(z|x) = sum_g log q(z_g|x,z_<g),

each ``(K, B)``, so the IWAE objective and the importance-sampled NLL use every group, and
the KL per group in closed form given the sampled z_<g, KL_g = KL(q(z_g|x,z_<g) || p(z_g|z_<g)),
averaged over the K samples: ``kl_groups`` ``(G, B)`` and ``kl`` = their sum. By the chain rule
of KL, E_q[sum_g KL_g] = KL(q(z|x) || p(z)): the ELBO objective (with beta warm-up and free
bits per group) uses it as a lower-variance estimate of the KL.

The exploring tools see the top group as "the" latent (D = group_channels x side x side at the
coarsest level): ``encode(x)`` is q(z_1|x), ``decode(z_1)`` sets every lower group to its prior
mean; ``sample(n, temperature)`` takes one temperature or one per group (top first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError, at_least
from vaelab.latents import LOG_2PI, full_precision
from vaelab.latents.priors import StandardNormalPrior
from vaelab.likelihoods import Likelihood
from vaelab.models.base import likelihood_of
from vaelab.models.terms import Terms
from vaelab.models.vae import VAE
from vaelab.nn.cells import Activation, BottomUp, ResidualCell, Up, bottleneck, sides


def _split(params: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) from the first 2c channels; the clamp keeps exp() finite after a bad step."""
    params = full_precision(params)  # float32 under autocast: noise, z, densities
    return params[:, :c], params[:, c : 2 * c].clamp(-30.0, 20.0)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over (channels, height, width): ``(N,)``, in float32
    or wider (under fp16/bf16 autocast the densities are still summed in float32)."""
    z, mu, logvar = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
                     for t in (z, mu, logvar))  # fmt: skip
    return (-0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI)).flatten(1).sum(1)


def kl_normal(mq: torch.Tensor, lq: torch.Tensor, mp: torch.Tensor, lp: torch.Tensor):
    """KL(N(mq, e^lq) || N(mp, e^lp)) = 1/2 (lp - lq + (e^lq + (mq - mp)^2) / e^lp - 1),
    summed over (channels, height, width): ``(N,)``."""
    mq, lq, mp, lp = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
                      for t in (mq, lq, mp, lp))  # fmt: skip
    kl = 0.5 * (lp - lq + (torch.exp(lq) + (mq - mp).square()) * torch.exp(-lp) - 1.0)
    return kl.flatten(1).sum(1)


class GroupBlock(nn.Module):
    """One latent group of ``channels`` x side x side at level ``level``: its prior and
    posterior networks, the projection of z into the state, and one residual cell."""

    def __init__(
        self, width: int, channels: int, level: int, top: bool, act: Activation, scale: float
    ) -> None:
        super().__init__()
        self.level, self.channels, self.top = level, channels, top
        mid = max(1, width // 2)
        # The top group's prior is N(0, I): it has no prior network.
        self.prior = None if top else bottleneck(width, mid, 2 * channels + width, act)
        self.posterior = bottleneck(2 * width, mid, 2 * channels, act)
        self.z_proj = nn.Conv2d(channels, width, 1)
        self.cell = ResidualCell(width, act, scale)
        with torch.no_grad():  # VDVAE: each prior starts at N(0, I), adding nothing to h
            if self.prior is not None:
                self.prior[-1].weight.zero_()
                self.prior[-1].bias.zero_()
            self.z_proj.weight.mul_(scale)

    def prior_params(self, h: torch.Tensor):
        """(mu_p, logvar_p, h') for state ``h``; h' is None for the top group."""
        if self.prior is None:
            zero = h.new_zeros(h.shape[0], self.channels, *h.shape[2:])
            return zero, zero, None
        out = self.prior(h)
        mu, logvar = _split(out, self.channels)
        return mu, logvar, out[:, 2 * self.channels :]

    def posterior_params(self, h: torch.Tensor, a: torch.Tensor):
        return _split(self.posterior(torch.cat([h, a], 1)), self.channels)

    def update(self, h: torch.Tensor, extra: torch.Tensor | None, z: torch.Tensor):
        h = h + self.z_proj(z.to(h.dtype))
        return self.cell(h if extra is None else h + extra)


@dataclass(frozen=True)
class DeepOptions:
    deep_widths: tuple[int, ...] = (32, 64, 64)  # deep: channels per resolution, finest first
    deep_groups: tuple[int, ...] = (0, 2, 4)  # deep: latent groups per resolution, finest first
    group_channels: int = 8  # deep: latent channels per group (group = channels x side x side)
    deep_blocks: int = 1  # deep: residual cells per resolution in the encoder


class DeepVAE(VAE):
    """See the module docstring. ``widths``/``groups``: per resolution level, finest first."""

    export_refusal = (
        "decoder: DeepVAE.decode is not one network from z to the likelihood's parameters "
        "(latent groups are drawn top-down through the decoder)"
    )

    any_estimator = False  # one reparameterized draw per latent group inside forward
    default_ema = 0.999  # VDVAE/NVAE evaluate and sample with a weight average
    latent_groups = True
    group_temperatures = True
    options = DeepOptions

    @classmethod
    def describe(cls, cfg: ModelConfig) -> str:
        """--arch, --hidden and --latent-dim do not apply: the hierarchy's own options."""
        o = cls.options_of(cfg)
        widths = ",".join(map(str, o.deep_widths))
        groups = ",".join(map(str, o.deep_groups))
        return (f"deep widths {widths}, latent groups {groups} of {o.group_channels} "
                "channels per resolution")  # fmt: skip

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        likelihood: Likelihood,
        widths: Sequence[int],
        groups: Sequence[int],
        channels: int,
        blocks: int = 1,
        act: Activation = nn.GELU,
    ) -> None:
        c, height, width = image_shape
        levels = len(widths)
        hs, ws = sides(height, levels), sides(width, levels)
        scale = 1.0 / math.sqrt(sum(groups) + blocks * levels)
        stages: list[nn.Module] = []
        for r in reversed(range(levels)):
            if r < levels - 1:
                stages.append(Up(widths[r + 1], widths[r], (hs[r], ws[r])))
            if groups[r] == 0:
                stages += [ResidualCell(widths[r], act, scale) for _ in range(blocks)]
            for _ in range(groups[r]):
                stages.append(GroupBlock(widths[r], channels, r, not stages, act, scale))
        super().__init__(
            BottomUp(c, tuple(widths), blocks, act), nn.ModuleList(stages),
            StandardNormalPrior(channels * hs[-1] * ws[-1]), likelihood, image_shape,
        )  # fmt: skip
        self.h_top = nn.Parameter(torch.zeros(1, widths[-1], hs[-1], ws[-1]))
        self.out = nn.Sequential(act(), nn.Conv2d(widths[0], likelihood.n_params * c, 3, padding=1))
        self.group_shapes = [
            (channels, hs[s.level], ws[s.level]) for s in stages if isinstance(s, GroupBlock)
        ]

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        """The ``--deep-*`` options and the parts the model supports (no image needed)."""
        if (cfg.posterior, cfg.prior) != ("normal", "normal"):
            raise VaelabError(
                "--model deep: needs --posterior normal and --prior normal "
                f"(got {cfg.posterior}, {cfg.prior})"
            )
        o = cls.options_of(cfg)
        widths, groups = o.deep_widths, o.deep_groups
        if len(widths) != len(groups):
            raise VaelabError(
                f"--deep-groups: one count per resolution of --deep-widths ({len(widths)}), "
                f"got {len(groups)}"
            )
        if not widths or min(widths) < 1 or min(groups) < 0 or groups[-1] < 1:
            raise VaelabError(
                f"--deep-widths/--deep-groups: widths >= 1, counts >= 0 and at least one group "
                f"at the coarsest resolution (got {widths}, {groups})"
            )
        at_least("--group-channels", o.group_channels)
        at_least("--deep-blocks", o.deep_blocks, 0)

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> DeepVAE:
        cls.check_config(cfg)
        o = cls.options_of(cfg)
        return cls(
            image_shape, likelihood_of(cfg, image_shape), o.deep_widths, o.deep_groups,
            o.group_channels, o.deep_blocks,
        )  # fmt: skip

    @property
    def num_groups(self) -> int:
        return len(self.group_shapes)

    def temperatures(self, temperature: float | Sequence[float]) -> list[float]:
        """One temperature per group (top first), from one value or a sequence of G values."""
        if isinstance(temperature, int | float):
            return [float(temperature)] * self.num_groups
        temps = [float(t) for t in temperature]
        if len(temps) != self.num_groups or min(temps) < 0:
            raise VaelabError(
                f"--group-temperature: expected {self.num_groups} values >= 0 (one per latent "
                f"group, top first), got {temperature}"
            )
        return temps

    def top_down(
        self,
        n: int,
        acts: list[torch.Tensor] | None = None,
        given: Sequence[torch.Tensor | None] | None = None,
        temperature: Sequence[float] | None = None,
        mean: bool = False,
    ) -> tuple[torch.Tensor, list[tuple]]:
        """Run the decoder for ``n`` images. Each group's z is ``given[g]`` when set, else
        drawn from q(z_g|x,z_<g) when encoder activations ``acts`` (``n`` rows) are given
        (its mean with ``mean``), else from p(z_g|z_<g) with spread x ``temperature[g]``
        (0: the prior mean). Returns the likelihood parameters ``(n, n_params, C, H, W)``
        and per group ``(z, mu_q, logvar_q, mu_p, logvar_p)`` (q's are None without acts)."""
        temps = temperature if temperature is not None else [1.0] * self.num_groups
        h = self.h_top.expand(n, -1, -1, -1)
        records: list[tuple] = []
        for stage in self.decoder:
            if not isinstance(stage, GroupBlock):
                h = stage(h)
                continue
            g = len(records)
            mu_p, logvar_p, extra = stage.prior_params(h)
            mu_q = logvar_q = None
            if acts is not None:
                mu_q, logvar_q = stage.posterior_params(h, acts[stage.level])
            if given is not None and given[g] is not None:
                z = given[g].reshape(mu_p.shape).to(mu_p.dtype)
            elif mu_q is not None:
                z = mu_q if mean else mu_q + torch.exp(0.5 * logvar_q) * torch.randn_like(mu_q)
            else:
                z = mu_p + temps[g] * torch.exp(0.5 * logvar_p) * torch.randn_like(mu_p)
            records.append((z, mu_q, logvar_q, mu_p, logvar_p))
            h = stage.update(h, extra, z)
        params = self.out(h)
        return params.unflatten(1, (self.likelihood.n_params, self.image_shape[0])), records

    def _terms(self, x: torch.Tensor, params: torch.Tensor, records: list[tuple], k: int):
        b = x.shape[0]
        log_px_z = self.likelihood.log_prob(x, params.reshape(k, b, *params.shape[1:]))
        kl = torch.stack([kl_normal(mq, lq, mp, lp) for _, mq, lq, mp, lp in records])
        kl_groups = kl.reshape(len(records), k, b).mean(1)  # (G, B)
        return Terms(
            log_px_z=log_px_z,
            log_pz=lambda: sum(log_normal(z, mp, lp) for z, _, _, mp, lp in records).reshape(k, b),
            log_qz_x=lambda: sum(log_normal(z, mq, lq) for z, mq, lq, _, _ in records).reshape(
                k, b
            ),
            kl=kl_groups.sum(0),
            kl_groups=kl_groups,
        )

    def forward(self, x: torch.Tensor, samples: int = 1) -> Terms:
        # The encoder runs once; its activations are tiled K times (row k*B + b is image b),
        # at the levels that have groups (the finest level's copy is the largest).
        used = {s.level for s in self.decoder if isinstance(s, GroupBlock)}
        acts = [a.repeat(samples, 1, 1, 1) if r in used else a
                for r, a in enumerate(self.encoder(x))]  # fmt: skip
        params, records = self.top_down(samples * x.shape[0], acts)
        return self._terms(x, params, records, samples)

    def score(self, x: torch.Tensor, zs: Sequence[torch.Tensor]) -> Terms:
        """:class:`Terms` (K = 1) of images ``x`` at given latents, one ``(B, ...)`` tensor
        per group: log p(x|z), sum_g log p(z_g|z_<g) and sum_g log q(z_g|x,z_<g)."""
        params, records = self.top_down(x.shape[0], self.encoder(x), given=list(zs))
        return self._terms(x, params, records, 1)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z_1|x) of the top group, event shape ``(D,)`` (it reads only the top state)."""
        top = self.decoder[0]
        mu, logvar = top.posterior_params(self.h_top.expand(x.shape[0], -1, -1, -1),
                                          self.encoder(x)[-1])  # fmt: skip
        std = torch.exp(0.5 * logvar.flatten(1))
        return Independent(Normal(mu.flatten(1), std, validate_args=False), 1, validate_args=False)

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for top-group latents ``z (..., D)``; lower groups at their
        prior means given the groups above (temperature 0)."""
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        given = [flat] + [None] * (self.num_groups - 1)
        params, _ = self.top_down(len(flat), given=given, temperature=[0.0] * self.num_groups)
        return params.reshape(*lead, *params.shape[1:])

    @torch.no_grad()
    def sample(self, n: int, temperature: float | Sequence[float] = 1.0) -> torch.Tensor:
        """Ancestral draws, each group's spread x its temperature; the means of p(x|z)."""
        params, _ = self.top_down(n, temperature=self.temperatures(temperature))
        return self.likelihood.mean(params)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) with every group at its posterior mean given the groups above."""
        params, _ = self.top_down(x.shape[0], self.encoder(x), mean=True)
        return self.likelihood.mean(params)

    @torch.no_grad()
    def group_kl(self, x: torch.Tensor, batch_size: int = 500) -> list[float]:
        """Mean KL of each group (nats, top first) over uint8 images ``x`` ``(N, C, H, W)``:
        which groups carry information (near 0: the group is unused, "collapsed")."""
        param = next(self.parameters())
        total = torch.zeros(self.num_groups, dtype=torch.float64)
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(param.device, param.dtype) / 255
            total += self(xb, 1).kl_groups.sum(1).double().cpu()
        return (total / len(x)).tolist()
