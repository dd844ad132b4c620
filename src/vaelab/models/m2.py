"""M2 of Kingma, Rezende, Mohamed & Welling (2014): semi-supervised learning with a VAE.

Generative model p(y) p(z) p(x|y,z) (the CVAE's, :mod:`vaelab.models.cvae`); inference
q(y|x) = Cat(classifier(x)) and q(z|x,y). For a labelled image the bound is on log p(x, y),

    L(x, y) = E_q(z|x,y) [log p(x|y,z) + log p(y)] - KL(q(z|x,y) || p(z)),

and for an unlabelled one on log p(x), summing over all classes:

    U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)).

Training minimises -(sum_labelled L + sum_unlabelled U) + alpha * E_labelled[-log q(y|x)]
(the paper's J^alpha; the paper's alpha = 0.1 * N, the default here 10 * N, see
:data:`DEFAULT_ALPHA_PER_IMAGE`), divided by N: per step the batch's mean
bound plus alpha / N times the labelled batch's mean class loss, the expectation of the
paper's per-step cost (its minibatches also mix labelled and unlabelled images in
proportion). ``forward(x, K, y)`` takes labels with -1 where hidden (``y=None``: all
hidden) and returns Terms whose recon - kl is L or U per image. The classification loss
is not the model's: it is a term of the ``m2`` objective (:class:`vaelab.objectives.ClassLoss`,
alpha / N x the cross-entropy of ``class_logits``), fed every training step by the loop
with a batch of the labelled images (:class:`vaelab.training.labels.LabelledStream`; Kingma's
code puts labelled images in every minibatch): with 100 labels in 60,000 images a uniform
batch would hold a label once in five steps.

M1+M2 (``m1_run``): ``features`` is the frozen encoder of a trained VAE (M1), x -> E_q[z1|x]
shaped ``(B, 1, 1, D1)``, and M2 models those features with a Gaussian likelihood. The M1
model is handed in (``from_config(..., m1=)``, by :func:`vaelab.training.load.build_run_model`):
a model does not read run folders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.config import ModelConfig
from vaelab.errors import VaelabError, at_least
from vaelab.models.cvae import CVAE
from vaelab.models.terms import Terms
from vaelab.nn import ARCHS

# Default alpha / N. The paper's 0.1 (alpha = 0.1 * N) relies on ~3,000 epochs: in tens of
# epochs the bound's gradient on q(y|x) is ~10x the class loss's, q(y|x) does not fit its
# own labels and the decoder never learns to use y (its class posterior stays at chance);
# with 10 the two gradients are comparable (benchmarks/m2_curves.py, benchmarks/README.md).
DEFAULT_ALPHA_PER_IMAGE = 10.0


class M1Features(nn.Module):
    """x -> the posterior mean of a trained VAE, ``(B, 1, 1, D1)``; frozen (no gradients)."""

    def __init__(self, m1: nn.Module) -> None:
        super().__init__()
        self.m1 = m1.requires_grad_(False)

    def train(self, mode: bool = True) -> M1Features:
        return super().train(False)  # M1 is fixed: never in training mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.m1.latent_mean(x)[:, None, None, :]


@dataclass(frozen=True)
class M2Options:
    num_classes: int = 10  # cvae | m2: number of classes of the labels
    m1_run: str | None = None  # m2: run folder of a trained VAE (M1); M2 models its latents
    alpha: float | None = None  # m2: weight of the classification loss (None: 10 * N)
    labels_per_class: int = 0  # m2: keep this many labels per class, hide the rest (0: all)


class M2(CVAE):
    """CVAE + classifier q(y|x); see the module docstring."""

    semi_supervised = True
    has_classifier = True
    chain = "label"
    export_refusal = (
        "encoder and decoder: both also take the class label y (the decoder p(x|z,y), the "
        "encoder q(z|x,y) or q(y|x)); only image -> posterior and z -> image graphs are exported"
    )
    options = M2Options

    def __init__(self, classifier: nn.Module, **parts) -> None:
        super().__init__(**parts)
        self.classifier = classifier

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        super().check_config(cfg)
        options = cls.options_of(cfg)
        at_least("--labels-per-class", options.labels_per_class, 0)
        at_least("--alpha", options.alpha, 0)

    @classmethod
    def from_config(
        cls, cfg: ModelConfig, image_shape: tuple[int, int, int], m1: nn.Module | None = None
    ) -> M2:
        """M2 of ``cfg``; with ``--m1-run``, ``m1`` is that run's trained VAE."""
        features: nn.Module = nn.Identity()
        if cls.options_of(cfg).m1_run:
            if not cfg.likelihood.startswith("gaussian"):
                raise VaelabError(
                    "--likelihood: M1+M2 models real-valued M1 features; pass gaussian-learned "
                    f"or gaussian-pixel, not {cfg.likelihood}"
                )
            if m1 is None:  # a caller's mistake, not a user's: say where M1 comes from
                raise TypeError("M1+M2: pass m1= (vaelab.training.load.build_run_model loads it)")
            features = M1Features(m1)
            image_shape = (1, 1, m1.latent_dim)
            cfg = replace(cfg, arch="mlp")  # features are vectors: only MLP bodies apply
        parts = cls.parts(cfg, image_shape)
        parts["features"] = features
        return cls(classifier_net(cfg, image_shape, parts["num_classes"]), **parts)

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x), ``(B, C)``."""
        return self.classifier(self.features(x))

    def class_log_probs(self, x: torch.Tensor, samples: int = 1) -> torch.Tensor:
        return torch.log_softmax(self.class_logits(x), -1)

    def forward(self, x: torch.Tensor, samples: int = 1, y: torch.Tensor | None = None) -> Terms:
        log_q = self.class_log_probs(x)  # (B, C)
        if y is None:
            y = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        known = (y >= 0)[:, None]
        onehot = F.one_hot(y.clamp(min=0), self.num_classes).to(log_q.dtype)
        q = log_q.exp()
        w = torch.where(known, onehot, q)
        log_w = torch.where(known, torch.zeros_like(log_q), log_q)
        entropy = torch.where(known[:, 0], 0.0, -(q * log_q).sum(-1))
        return self.marginal_terms(self.class_terms(x, samples), w, log_w, entropy)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, y: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        return self.to_images(super().sample(n, temperature, y))

    def to_images(self, out: torch.Tensor) -> torch.Tensor:
        """Means of p(x|z,y): images, or for M1+M2 M1 latents, decoded by M1."""
        if isinstance(self.features, M1Features):
            m1 = self.features.m1
            return m1.likelihood.mean(m1.decode(out.flatten(1)))
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_images(super().reconstruct(x, y))


def classifier_net(
    cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """q(y|x)'s network: the encoder body of ``cfg.arch`` with ``num_classes`` outputs
    (logits). The supervised-only baseline of :mod:`vaelab.classify` builds the same one."""
    return ARCHS[cfg.arch][0](image_shape, cfg.hidden, num_classes, blocks=cfg.blocks)
