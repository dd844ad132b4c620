"""Post-hoc latent samplers beside the GMM: a masked autoregressive flow and a two-stage VAE.

Both are fitted after training to the latent codes of the run's training images and then
decoded by the run's model, like the ``gmm`` sampler (:mod:`vaelab.evaluation.samplers`):

* ``maf`` (Papamakarios et al. 2017): a density p(z) fitted by maximum likelihood to the
  posterior means E_q[z|x] (the codes of ``ae``). Each of ``L`` layers is a Gaussian MADE
  (Germain et al. 2015): with the layer's input ordering, u_d = (z_d - m_d(z_<d))
  exp(-a_d(z_<d)), so log p(z) = log N(u_L; 0, I) - sum_layers sum_d a_d, the Jacobian
  being triangular; the layers alternate the order (a reversal between them). The codes
  are standardised first (mean s, scale c per dimension; log|det| -sum log c). Sampling
  inverts each layer one dimension at a time (D network passes per layer).
* ``two-stage`` (Dai & Wipf 2019): a second, small VAE on the codes z ~ q(z|x) (the first
  stage's posterior draws; the codes of ``ae``): u ~ N(0, I_D) -> Gaussian decoder with
  mean g(u) and a learned scalar variance gamma (the paper's learned gamma, which lets the
  second stage fit the aggregate posterior closely), encoder q(u|z) a diagonal Gaussian.
  Samples: u ~ N(0, I), z ~ N(g(u), gamma I) (the paper's z = g(u) is its gamma -> 0
  limit; see :meth:`TwoStage.sample`), x = the first stage's mean at z.

Each fit is saved in the run folder as ``<name>-<weights hash>.safetensors`` (its tensors)
plus ``.json`` (its settings and final fit), named after the run's weights so a run trained
further gets a fresh fit, and reused by later commands.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vaelab.data.prepare import to_unit
from vaelab.training.checkpoint import tensor_digest

LOG_2PI = math.log(2 * math.pi)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask`` ``(out, in)``."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Gaussian MADE over ``dim`` inputs: ``(m, a)`` ``(N, D)`` each, output d a function of
    inputs 0..d-1 only (degrees: inputs 1..D, hidden units cycle 1..D-1, a unit of degree k
    sees inputs of degree <= k; output d sees hidden units of degree < d)."""

    def __init__(self, dim: int, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        d_in = torch.arange(1, dim + 1)
        degrees = [d_in] + [torch.arange(hidden) % max(dim - 1, 1) + 1 for _ in range(layers)]
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(degrees):
            blocks += [MaskedLinear(len(a), len(b), (b[:, None] >= a[None, :]).float()), nn.Tanh()]
        out_mask = (d_in[:, None] > degrees[-1][None, :]).float().repeat(2, 1)
        self.net = nn.Sequential(*blocks, MaskedLinear(len(degrees[-1]), 2 * dim, out_mask))
        self.dim = dim

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, a = self.net(z).chunk(2, -1)
        return m, a.clamp(-8, 8)  # a bounded log-scale keeps the fit finite


class MAF(nn.Module):
    """``layers`` MADEs with order reversals between them, on standardised codes."""

    def __init__(self, dim: int, layers: int = 5, hidden: int = 128) -> None:
        super().__init__()
        self.made = nn.ModuleList(MADE(dim, hidden) for _ in range(layers))
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.settings = {"dim": dim, "layers": layers, "hidden": hidden}

    def to_base(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u = f(z) ``(N, D)`` and log|det df/dz| ``(N,)``."""
        u = (z - self.shift) / self.scale
        logdet = -self.scale.log().sum().expand(len(z))
        for i, made in enumerate(self.made):
            m, a = made(u)
            u = (u - m) * torch.exp(-a)
            logdet = logdet - a.sum(-1)
            if i < len(self.made) - 1:
                u = u.flip(-1)
        return u, logdet

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) ``(N,)`` by the change of variables."""
        u, logdet = self.to_base(z)
        return -0.5 * (u.square().sum(-1) + u.shape[-1] * LOG_2PI) + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``(n, D)`` draws: u ~ N(0, t^2 I) through the inverse layers, last first."""
        u = temperature * torch.randn(
            n, self.settings["dim"], device=self.shift.device, dtype=self.shift.dtype
        )
        for i in reversed(range(len(self.made))):
            if i < len(self.made) - 1:
                u = u.flip(-1)
            z = torch.zeros_like(u)
            for d in range(u.shape[-1]):  # z_d needs z_<d: one pass per dimension
                m, a = self.made[i](z)
                z[:, d] = u[:, d] * torch.exp(a[:, d]) + m[:, d]
            u = z
        return u * self.scale + self.shift


class TwoStage(nn.Module):
    """Dai & Wipf's second-stage VAE on codes ``(N, D)``: ``u`` of the same size D."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        mlp = lambda n_out: nn.Sequential(  # noqa: E731
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n_out),
        )  # fmt: skip
        self.encoder, self.decoder = mlp(2 * dim), mlp(dim)
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.settings = {"dim": dim, "hidden": hidden}

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The one-sample ELBO of standardised codes ``(N,)`` (a lower bound on log p(z)
        up to the standardisation's constant): E log N(z; g(u), gamma I) - KL(q(u|z) || N(0, I))."""
        v = (z - self.shift) / self.scale
        mu, logvar = self.encoder(v).chunk(2, -1)
        u = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        d = v.shape[-1]
        rec = -0.5 * ((v - self.decoder(u)).square().sum(-1) / self.log_gamma.exp()
                      + d * (self.log_gamma + LOG_2PI))  # fmt: skip
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
        return rec - kl

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``(n, D)`` draws of the fitted density: u ~ N(0, t^2 I), z ~ N(g(u), t^2 gamma I).
        Dai & Wipf decode g(u) alone, exact in their regime gamma -> 0 (its long stage-2
        training on a first stage with a learned gamma of its own). On codes that look
        Gaussian (posterior draws of a Bernoulli VAE, of a beta-VAE) the second stage fits
        them with gamma near 1 and a g(u) of small spread, and g(u) alone collapses every
        draw towards the mean (measured: a latent Frechet distance of 15.6 to the codes
        instead of 0.19, the decoded FD twice the prior's); gamma's noise is part of the
        density the ELBO fitted, and is drawn."""
        shape = (n, self.settings["dim"])
        u = temperature * torch.randn(shape, device=self.shift.device, dtype=self.shift.dtype)
        noise = torch.randn(shape, device=self.shift.device, dtype=self.shift.dtype)
        z = self.decoder(u) + temperature * (0.5 * self.log_gamma).exp() * noise
        return z * self.scale + self.shift


def fit_density(
    net: nn.Module, codes: torch.Tensor, epochs: int = 40, batch: int = 256, lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Maximum likelihood (MAF) or ELBO (two-stage) fit of ``net`` to ``codes (N, D)`` with
    Adam; the codes are standardised by ``net.shift``/``net.scale``. 10% are held out: the
    returned fit gives the final mean log p (or ELBO) on the training and held-out codes."""
    g = torch.Generator().manual_seed(seed)
    codes = codes.float()
    perm = torch.randperm(len(codes), generator=g)
    held, train = codes[perm[: len(codes) // 10]], codes[perm[len(codes) // 10 :]]
    net.shift.copy_(train.mean(0))
    net.scale.copy_(train.std(0).clamp_min(1e-6))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(train), generator=g).split(batch):
                loss = -net.log_prob(train[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    with torch.no_grad():
        return {
            "train_log_p": net.log_prob(train).mean().item(),
            "held_out_log_p": net.log_prob(held).mean().item() if len(held) else math.nan,
        }


@torch.no_grad()
def model_codes(model: nn.Module, x: torch.Tensor, draw: bool, batch: int = 1000) -> torch.Tensor:
    """Codes ``(N, D)`` of uint8 images ``x``: posterior draws z ~ q(z|x) (``draw``, a model
    with a posterior) or means E_q[z|x] / the point codes of ``ae``."""
    param = next(model.parameters())
    out = []
    for start in range(0, len(x), batch):
        xb = to_unit(x[start : start + batch].to(param.device), param.dtype)
        out.append(model.encode(xb).sample() if draw and model.has_posterior
                   else model.latent_mean(xb))  # fmt: skip
    return torch.cat(out).float().cpu()


NETS = {"maf": MAF, "two-stage": TwoStage}


def posthoc_for(
    name: str, model: nn.Module, train_x, run_dir: str | Path | None = None, limit: int = 20000
) -> nn.Module:
    """The fitted ``maf`` or ``two-stage`` net of ``model``: loaded from ``run_dir`` when
    there (``<name>-<hash>.safetensors`` + ``.json``), else fitted to the codes of the first
    ``limit`` training images ``train_x`` (a tensor or a function returning one) and saved."""
    digest = tensor_digest(model.state_dict())[:10]
    stem = Path(run_dir) / f"{name}-{digest}" if run_dir else None
    if stem is not None and stem.with_suffix(".json").is_file():
        info = json.loads(stem.with_suffix(".json").read_text())
        net = NETS[name](**info["settings"])
        net.load_state_dict(load_file(str(stem.with_suffix(".safetensors"))))
        return net.eval()
    x = (train_x() if callable(train_x) else train_x)[:limit]
    codes = model_codes(model, x, draw=name == "two-stage")
    net = NETS[name](codes.shape[-1])
    fit = fit_density(net, codes)
    if stem is not None:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(stem.with_suffix(".safetensors")))  # fmt: skip
        stem.with_suffix(".json").write_text(json.dumps(
            {"sampler": name, "settings": net.settings, "codes": len(codes), "fit": fit},
            indent=2))  # fmt: skip
    return net.eval()


def posthoc_images(model, n, temperature, net: nn.Module | None = None, **_) -> torch.Tensor:
    """Decoded means at z drawn from a fitted post-hoc ``net``."""
    param = next(model.parameters())
    z = net.sample(n, temperature).to(param.device, param.dtype)
    labels = (torch.arange(n, device=z.device) % model.num_classes,) if model.uses_labels else ()
    return model.likelihood.mean(model.decode(z, *labels))
