"""Conditional VAE: encoder q(z|x,y) and decoder p(x|z,y) both see the label y.

Generative model p(y) p(z) p(x|z,y) with p(y) uniform over C classes and p(z) = N(0, I).
With y observed the bound is on log p(x|y):

    ELBO(x, y) = E_q(z|x,y) [log p(x|z,y)] - KL(q(z|x,y) || p(z))

With y unknown (``y=None``, e.g. the per-epoch test bound) the model bounds log p(x) by
enumerating the classes with weights w(y|x) (any distribution over y):

    log p(x) >= sum_y w(y|x) [ELBO(x, y) + log p(y)] + H(w)

which is tight at w = the posterior r(y|x) = softmax_y(ELBO(x, y) + log p(y)): the CVAE
uses r, estimated from K draws of z independent of the K draws that estimate the class
ELBOs it weighs (the same draws would give logsumexp_y of noisy class ELBOs, biased above
the bound, even above log p(x)); M2 (``m2.py``) uses its classifier q(y|x).
Shapes: x ``(B, C, H, W)``, y ``(B,)`` int64, z ``(K, B, D)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError
from vaelab.latents import FAMILIES, NormalFamily
from vaelab.likelihoods import Likelihood, build_likelihood
from vaelab.models.terms import Terms
from vaelab.models.vae import VAE
from vaelab.nn import build_bodies
from vaelab.priors import Prior, build_prior


class CVAE(VAE):
    """A VAE whose encoder and decoder are conditioned on a one-hot label."""

    uses_labels = True
    any_estimator = False  # one reparameterized draw per class inside forward

    def __init__(
        self,
        features: nn.Module,
        encoder: nn.Module,
        head: nn.Module,
        decoder: nn.Module,
        prior: Prior,
        likelihood: Likelihood,
        image_shape: tuple[int, int, int],
        num_classes: int,
        family: NormalFamily | None = None,
    ) -> None:
        super().__init__(encoder, decoder, prior, likelihood, image_shape, family)
        # ``features`` maps images to what the model sees (Identity, or M1's frozen encoder);
        # ``encoder`` maps that to a feature vector, ``head`` maps [feature, one-hot y] to q.
        self.features, self.head = features, head
        self.num_classes = num_classes
        self.context_y: torch.Tensor | None = None  # labels inferred by the last encode(x)

    @property
    def on_images(self) -> bool:
        """False for M1+M2, which models M1's features rather than the images."""
        return isinstance(self.features, nn.Identity)

    @classmethod
    def parts(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> dict:
        """The networks shared by CVAE and M2 (keyword arguments of ``__init__``)."""
        if cfg.num_classes < 2:
            raise VaelabError(f"--num-classes: must be at least 2, got {cfg.num_classes}")
        if cfg.prior != "normal" or cfg.posterior != "normal":
            raise VaelabError(
                f"--model {cfg.model}: supports --prior normal and --posterior normal only"
            )
        likelihood = build_likelihood(cfg.likelihood, image_shape, cfg.sigma, cfg.mixtures)
        family = FAMILIES["normal"]()
        width = cfg.hidden[-1]
        encoder, decoder = build_bodies(
            cfg.arch, image_shape, cfg.hidden, cfg.latent_dim + cfg.num_classes, width,
            likelihood.n_params, blocks=cfg.blocks,
        )  # fmt: skip
        head = nn.Sequential(
            nn.ReLU(), nn.Linear(width + cfg.num_classes, family.params_size(cfg.latent_dim))
        )
        return {
            "features": nn.Identity(), "encoder": encoder, "head": head, "decoder": decoder,
            "prior": build_prior(cfg.prior, cfg.latent_dim), "likelihood": likelihood,
            "image_shape": image_shape, "num_classes": cfg.num_classes, "family": family,
        }  # fmt: skip

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> CVAE:
        return cls(**cls.parts(cfg, image_shape))

    def _onehot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).to(like.dtype)

    def _require(self, y: torch.Tensor | None, what: str) -> torch.Tensor:
        if y is None:
            raise VaelabError(f"{what}: a conditional model needs a label y (or an encode first)")
        return y

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x,y): batch shape ``(B,)``, event ``(D,)``. Without ``y`` the label is inferred,
        y = argmax of :meth:`class_log_probs`, and kept as the context of the next
        label-less :meth:`decode`: tools written for a VAE (similar images, interpolation,
        traversal, completion) then treat the model as the VAE of the inferred class."""
        if y is None:
            y = self.context_y = self.class_log_probs(x).argmax(-1)
        h = self.encoder(self.features(x))
        return self.family.dist(self.head(torch.cat([h, self._onehot(y, h)], -1)))

    def encode_all(self, x: torch.Tensor) -> Distribution:
        """q(z|x,y) for every class at once: batch shape ``(B, C)``, event ``(D,)``."""
        h = self.encoder(self.features(x))
        eye = torch.eye(self.num_classes, dtype=h.dtype, device=h.device)
        hy = torch.cat(
            [h[:, None].expand(-1, self.num_classes, -1), eye.expand(len(h), -1, -1)], -1
        )
        return self.family.dist(self.head(hy))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Likelihood parameters ``(..., n_params, C, H, W)`` for z ``(..., D)`` and labels
        ``y`` broadcastable to z's leading shape."""
        if y is None:
            y = self._require(self.context_y, "decode")
            y = y if len(y) == (z.shape[-2] if z.dim() > 1 else 1) else y[:1]
        onehot = self._onehot(y, z).expand(*z.shape[:-1], self.num_classes)
        return super().decode(torch.cat([z, onehot], -1))

    def latent_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:  # inferred, and kept for the next label-less decode (as in encode)
            y = self.context_y = self.class_log_probs(x).argmax(-1)
        return self.encode(x, y).mean

    def class_terms(self, x: torch.Tensor, samples: int) -> dict[str, torch.Tensor]:
        """Per-class terms for every image: log p(x|z_k,y), log p(z_k), log q(z_k|x,y) each
        ``(K, B, C)`` and kl ``(B, C)``, with z_k ~ q(z|x,y) drawn class by class."""
        q = self.encode_all(x)
        z = q.rsample((samples,))  # (K, B, C, D)
        labels = torch.arange(self.num_classes, device=x.device)
        params = self.decode(z, labels)
        target = self.features(x).unsqueeze(1)  # (B, 1, C, H, W) broadcasts over classes
        kl = self.prior.analytic_kl(q)
        return {
            "log_px_z": self.likelihood.log_prob(target, params),
            "log_pz": self.prior.log_prob(z),
            "log_qz_x": q.log_prob(z),
            "kl": kl if kl is not None else (q.log_prob(z) - self.prior.log_prob(z)).mean(0),
        }

    def log_weights(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """Importance weights for log p(x) with the classes enumerated, ``(K * C, B)``.

        w_{k,y} = p(x|z_k,y) p(z_k) / q(z_k|x,y), z_k ~ q(z|x,y), estimates p(x|y) without
        bias; with p(y) = 1/C, p(x) = (1/C) sum_y p(x|y) is the plain mean of all K * C of
        them, so the importance-sampled log p(x) of :mod:`vaelab.evaluation.nll` (a log-mean
        over every weight it is given) needs nothing else. Costs C decodes per sample.
        """
        t = self.class_terms(x, samples)
        log_w = t["log_px_z"] + t["log_pz"] - t["log_qz_x"]  # (K, B, C)
        return log_w.permute(0, 2, 1).reshape(-1, log_w.shape[1])

    def class_elbos(self, x: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """ELBO(x, y) for every class, ``(B, C)`` (a K-sample estimate of the recon term)."""
        t = self.class_terms(x, samples)
        return t["log_px_z"].mean(0) - t["kl"]

    def class_log_probs(self, x: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """log r(y|x) = log softmax_y(ELBO(x, y) + log p(y)), ``(B, C)``: Bayes' rule with
        the bound in place of log p(x|y) (a generative classifier)."""
        return torch.log_softmax(self.class_elbos(x, samples), -1)

    def marginal_terms(
        self, t: dict[str, torch.Tensor], w: torch.Tensor, log_w: torch.Tensor,
        entropy: torch.Tensor,
    ) -> Terms:  # fmt: skip
        """Combine per-class terms into a bound on log p(x) (or log p(x, y) where w is
        one-hot, log_w = 0 and entropy = 0): recon - kl = sum_y w [ELBO + log p(y)] + H(w).

        ``kl`` is then KL(w(y) q(z|x,y) || p(y) p(z)), the joint KL over (y, z); its z part
        sum_y w KL(q(z|x,y) || p(z)), the only part a beta weighs, is ``extras["kl_z"]``."""
        log_py = -math.log(self.num_classes)
        return Terms(
            log_px_z=(w * t["log_px_z"]).sum(-1),
            log_pz=(w * (t["log_pz"] + log_py)).sum(-1),
            log_qz_x=(w * (t["log_qz_x"] + log_w)).sum(-1),
            kl=(w * (t["kl"] - log_py)).sum(-1) - entropy,
            extras={"kl_z": (w * t["kl"]).sum(-1)},
        )

    def forward(self, x: torch.Tensor, samples: int = 1, y: torch.Tensor | None = None) -> Terms:
        if y is None:
            # The weights come from draws independent of the ones they weigh: r computed
            # from the same noisy class ELBOs makes the estimate logsumexp_y of them, whose
            # mean lies above logsumexp of their means (Jensen) and can exceed log p(x).
            # With independent r the estimate is unbiased for a valid bound (any w works).
            with torch.no_grad():
                log_r = torch.log_softmax(self.class_elbos(x, samples), -1)
            r = log_r.exp()
            t = self.class_terms(x, samples)
            return self.marginal_terms(t, r, log_r, -(r * log_r).sum(-1))
        q = self.encode(x, y)
        z = q.rsample((samples,))
        return Terms(
            log_px_z=self.likelihood.log_prob(self.features(x), self.decode(z, y)),
            log_pz=self.prior.log_prob(z),
            log_qz_x=q.log_prob(z),
            kl=self.prior.analytic_kl(q),
        )

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, y: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """``n`` images of class ``y`` (an int or ``(n,)`` labels; None cycles the classes)."""
        z = self.prior.sample(n, temperature)
        if y is None:
            y = torch.arange(n, device=z.device) % self.num_classes
        y = torch.as_tensor(y, device=z.device).expand(n)
        return self.likelihood.mean(self.decode(z, y))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z,y) at z = E_q[z|x,y]; without labels y = argmax r(y|x)."""
        if y is None:
            y = self.class_log_probs(x).argmax(-1)
        return self.likelihood.mean(self.decode(self.encode(x, y).mean, y))
