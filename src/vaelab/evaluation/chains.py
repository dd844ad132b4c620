"""Latent states for Metropolis-within-Gibbs completion (Mattei & Frellsen 2018), per model.

The chain targets p(h, x_mis | x_obs), h the model's whole latent state, by alternating

1. h | x: an independence Metropolis step at the current x = (x_obs, x_mis): propose
   h' ~ g(h'|x) and accept with probability
   min(1, [p(x, h') g(h|x)] / [p(x, h) g(h'|x)]);
2. x_mis ~ p(x_mis | h): the likelihood's own draw, never clamped (a Gaussian draw outside
   [0, 1] belongs to p(x_mis|h); only pictures clamp).

Step 1 leaves p(h | x) invariant for any proposal that does not look at the current h,
also one picked afresh each step with randomness independent of h (a mixture of valid
kernels), as long as g(h|x) and g(h'|x) are scored under the same pick. So every model
needs: a proposal (``sample()``, ``log_prob(h)``) given x, log p(x, h), and p(x|h)'s
parameters. The state h is a tuple of tensors whose first dimension is the chain.

* VAE: h = z, g = q(z|x).
* HVAE: h = (z1, z2), g = q(z1|x) q(z2|z1), p(x, h) = p(x|z1) p(z1|z2) p(z2) -- not
  the one-latent view of the exploring tools, which decodes through E[z1|z2].
* CVAE and M2: h = (y, z), g = r(y|x) q(z|x,y) with r the model's class posterior
  (M2's classifier; the CVAE's softmax of one-sample class ELBOs, a random pick of the
  kind above) mixed with 10% uniform so no class is out of reach, and
  p(x, h) = p(y) p(z) p(x|z,y). y is part of the state, not re-inferred.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical

from vaelab.errors import VaelabError
from vaelab.models import MODELS
from vaelab.models.base import Model
from vaelab.models.cvae import CVAE
from vaelab.models.hvae import HVAE, _gaussian_draw, _gaussian_log_prob
from vaelab.models.vae import VAE

State = tuple[torch.Tensor, ...]


class VaeChain:
    """h = (z,), g = q(z|x)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def proposal(self, x: torch.Tensor):
        return _Wrapped(self.model.encode(x))

    def log_joint(self, h: State, x: torch.Tensor) -> torch.Tensor:
        """log p(x, h), ``(B,)``."""
        (z,) = h
        return self.model.likelihood.log_prob(x, self.x_params(h)) + self.model.prior.log_prob(z)

    def x_params(self, h: State) -> torch.Tensor:
        """Parameters of p(x|h)."""
        return self.model.decode(h[0])


class _Wrapped:
    """A torch Distribution over z as a proposal over states (z,)."""

    def __init__(self, q) -> None:
        self.q = q

    def sample(self) -> State:
        return (self.q.sample(),)

    def log_prob(self, h: State) -> torch.Tensor:
        return self.q.log_prob(h[0])


class HvaeChain(VaeChain):
    """h = (z1, z2), g = q(z1|x) q(z2|z1)."""

    def proposal(self, x: torch.Tensor):
        return _HvaeProposal(self.model, x)

    def log_joint(self, h: State, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = h
        m = self.model
        log_p1 = _gaussian_log_prob(z1, m.down(z2), m.family)
        return m.likelihood.log_prob(x, self.x_params(h)) + log_p1 + m.prior.log_prob(z2)

    def x_params(self, h: State) -> torch.Tensor:
        return VAE.decode(self.model, h[0])  # p(x|z1): the decoder proper


class _HvaeProposal:
    def __init__(self, model: HVAE, x: torch.Tensor) -> None:
        self.model, self.params1 = model, model.encoder(x)

    def sample(self) -> State:
        z1, _ = _gaussian_draw(self.params1, self.model.family)
        z2, _ = _gaussian_draw(self.model.up(z1), self.model.family)
        return z1, z2

    def log_prob(self, h: State) -> torch.Tensor:
        z1, z2 = h
        fam = self.model.family
        return _gaussian_log_prob(z1, self.params1, fam) + _gaussian_log_prob(
            z2, self.model.up(z1), fam
        )


class LabelChain(VaeChain):
    """h = (y, z), g = r(y|x) q(z|x,y), p(x, h) = p(y) p(z) p(x|z,y) with p(y) = 1/C."""

    uniform_share = 0.1

    def proposal(self, x: torch.Tensor):
        c = self.model.num_classes
        log_r = self.model.class_log_probs(x)
        mixed = torch.logaddexp(
            log_r + math.log1p(-self.uniform_share),
            torch.full_like(log_r, math.log(self.uniform_share / c)),
        )
        return _LabelProposal(self.model, x, mixed)

    def log_joint(self, h: State, x: torch.Tensor) -> torch.Tensor:
        _, z = h
        log_py = -math.log(self.model.num_classes)
        return self.model.likelihood.log_prob(x, self.x_params(h)) + self.model.prior.log_prob(
            z
        ) + log_py  # fmt: skip

    def x_params(self, h: State) -> torch.Tensor:
        y, z = h
        return self.model.decode(z, y)


class _LabelProposal:
    def __init__(self, model: CVAE, x: torch.Tensor, log_r: torch.Tensor) -> None:
        self.model, self.x, self.log_r = model, x, log_r

    def sample(self) -> State:
        y = Categorical(logits=self.log_r).sample()
        return y, self.model.encode(self.x, y).sample()

    def log_prob(self, h: State) -> torch.Tensor:
        y, z = h
        log_ry = self.log_r.gather(-1, y[:, None])[:, 0]
        return log_ry + self.model.encode(self.x, y).log_prob(z)


# The chain each model declares (``Model.chain``, never inherited: a subclass such as a new
# family is a different model and names its chain deliberately).
CHAINS: dict[str, type[VaeChain]] = {"vae": VaeChain, "hvae": HvaeChain, "label": LabelChain}


def chain_for(model: Model) -> VaeChain:
    """The Metropolis-within-Gibbs state of ``model``, or a one-line error naming the flag."""
    if model.chain not in CHAINS:
        name = next((n for n, cls in MODELS.items() if cls is type(model)), None)
        what = f"--model {name}" if name else f"model class {type(model).__name__}"
        raise VaelabError(f"--method mwg: {what} has no exact chain; use --method pseudo-gibbs")
    return CHAINS[model.chain](model)


def select(ok: torch.Tensor, new: State, old: State) -> State:
    """Per chain, ``new`` where ``ok`` (``(B,)`` bool) else ``old``."""
    return tuple(
        torch.where(ok.view(-1, *([1] * (n.dim() - 1))), n, o)
        for n, o in zip(new, old, strict=True)
    )
