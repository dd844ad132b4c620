"""FactorVAE (Kim & Mnih 2018): the beta-ELBO plus gamma times a density-ratio estimate of
the total correlation TC(z) = KL(q(z) || prod_d q(z_d)), from a discriminator.

The discriminator D: R^D -> 2 logits tells samples of q(z) (the batch's draws z) from
samples of prod_d q(z_d) (the same draws with each dimension permuted independently across
the batch, :func:`permute_dims`). At its optimum softmax(D(z))_0 = q(z) / (q(z) + prod q(z_d)),
so TC ~ E_q(z)[log D_0(z) - log D_1(z)] = mean(logit_0 - logit_1) (the density-ratio trick).

In vaelab's one training step both losses come from one backward pass:

- the model's loss gets gamma * TC, with D's weights detached (no gradient reaches D);
- D's cross-entropy on the detached z (class 0) and permuted z (class 1) is added as the
  zero-valued ``loss - loss.detach()``: it changes no reported number and only D's
  parameters receive its gradient.

D has its own Adam (Kim & Mnih: lr 1e-4, betas (0.5, 0.9)), stepped by the training step
after the model's optimizer (:meth:`FactorTerm.side_optimizers`); fused, as the model's:
with D's 5M weights the foreach Adam's elementwise passes were a quarter of a CPU step
(41 against 57 ms at batch 32, benchmarks/README.md). Its moments and step
counts live in this module's buffers, so the checkpoint's ``objective/*`` tensors hold
the discriminator and its optimizer, and ``--resume`` continues bit for bit. (The paper
permutes a second batch; vaelab permutes the same batch's draws, as pythae does with half
a batch: one encoder pass per step.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vaelab.errors import VaelabError, at_least, positive
from vaelab.models.terms import Terms
from vaelab.objectives.latent_terms import LatentTerm

BETAS = (0.5, 0.9)  # the discriminator's Adam (Kim & Mnih 2018, Appendix)


@dataclass(frozen=True)
class FactorVAEOptions:
    factor_gamma: float = 35.0  # factorvae: gamma, the weight of the total-correlation estimate
    disc_hidden: int = 1000  # factorvae: units per hidden layer of the discriminator
    disc_layers: int = 6  # factorvae: hidden layers of the discriminator
    disc_lr: float = 1e-4  # factorvae: learning rate of the discriminator's Adam


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """``z`` ``(B, D)`` with each column shuffled by its own permutation (from the global
    RNG): a sample of prod_d q(z_d) per row (Kim & Mnih 2018, Algorithm 1)."""
    b, d = z.shape
    idx = torch.argsort(torch.rand(b, d, device=z.device), dim=0)
    return torch.gather(z, 0, idx)


def discriminator(latent_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """MLP D -> hidden (LeakyReLU 0.2) x layers -> 2 logits (Kim & Mnih's architecture)."""
    mods: list[nn.Module] = []
    width = latent_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    mods.append(nn.Linear(width, 2))
    return nn.Sequential(*mods)


class FactorTerm(LatentTerm):
    """gamma * TC estimate for the model, and the discriminator's loss for D (docstring)."""

    def __init__(self, options: FactorVAEOptions, latent_dim: int) -> None:
        super().__init__()
        at_least("--disc-layers", options.disc_layers, 1)
        at_least("--disc-hidden", options.disc_hidden, 1)
        positive("--disc-lr", options.disc_lr)
        if options.factor_gamma < 0:
            raise VaelabError(f"--factor-gamma: must be >= 0, got {options.factor_gamma}")
        self.gamma, self.lr = options.factor_gamma, options.disc_lr
        self.disc = discriminator(latent_dim, options.disc_hidden, options.disc_layers)
        # Adam's state per parameter, as buffers (checkpointed with the objective).
        for i, p in enumerate(self.disc.parameters()):
            self.register_buffer(f"adam_step_{i}", torch.zeros((), dtype=torch.float32))
            self.register_buffer(f"adam_m_{i}", torch.zeros_like(p))
            self.register_buffer(f"adam_v_{i}", torch.zeros_like(p))
        self._optimizer: torch.optim.Optimizer | None = None

    def side_optimizers(self) -> list[torch.optim.Optimizer]:
        """D's Adam, its state bound to this module's buffers (wherever they now live)."""
        params = list(self.disc.parameters())
        if self._optimizer is None:
            cuda = params[0].device.type == "cuda"  # capturable: the step count stays there
            self._optimizer = torch.optim.Adam(
                params, lr=self.lr, betas=BETAS, capturable=cuda, fused=True
            )
        for i, p in enumerate(params):
            self._optimizer.state[p] = {
                "step": getattr(self, f"adam_step_{i}"),
                "exp_avg": getattr(self, f"adam_m_{i}"),
                "exp_avg_sq": getattr(self, f"adam_v_{i}"),
            }
        return [self._optimizer]

    def forward(self, terms: Terms, beta: torch.Tensor) -> tuple[torch.Tensor, dict]:
        z = terms.extras["z"].flatten(0, 1)  # (K*B, D)
        frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
        logits = functional_call(self.disc, frozen, (z,))
        tc = (logits[:, 0] - logits[:, 1]).mean()
        real = z.detach()
        both = self.disc(torch.cat([real, permute_dims(real)]))
        target = torch.cat([real.new_zeros(len(real)), real.new_ones(len(real))]).long()
        disc_loss = F.cross_entropy(both, target)
        accuracy = (both.argmax(1) == target).float().mean()
        value = self.gamma * tc + (disc_loss - disc_loss.detach())
        return value, {"tc": tc, "disc_loss": disc_loss, "disc_accuracy": accuracy}
