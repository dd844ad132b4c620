"""Generation from a trained model: prior samples, reconstructions, similar images.

All functions take a loaded model and uint8 or float image tensors and return
float images in [0, 1], ``(N, C, H, W)``; vaelab.evaluation.pictures draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError, at_least


def _a(model: torch.nn.Module) -> str:
    name = type(model).__name__
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"


def no_posterior(model: torch.nn.Module, command: str, instead: str) -> VaelabError:
    """The one-line refusal for a tool that needs q(z|x) on a model with a point code."""
    return VaelabError(
        f"{command}: {_a(model)} run has a point code, no posterior q(z|x) to draw from; {instead}"
    )


def no_prior(model: torch.nn.Module, flag: str) -> VaelabError:
    """The one-line refusal for drawing from the prior of a model that declares none
    (``has_prior`` False: a point code, whose latent space has holes)."""
    return VaelabError(
        f"{flag}: {_a(model)} run has no prior p(z) to sample from (its codes "
        "leave holes in the latent space); use --sampler gmm, maf or two-stage (fitted to its "
        "codes after training), or train with --model vae"
    )


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    n: int,
    temperature: float | Sequence[float] = 1.0,
    seed: int | None = None,
) -> torch.Tensor:
    """Decode ``z ~ N(0, temperature^2 I)``; the images are the means of p(x|z). A model with
    latent groups (``--model deep``) also takes one temperature per group, top first."""
    at_least("-n", n)
    if not isinstance(temperature, int | float):
        if not model.group_temperatures:
            raise VaelabError("--group-temperature: this model has no latent groups (deep has)")
        model.temperatures(temperature)  # checks the count
    elif temperature <= 0:
        raise VaelabError(f"--temperature: must be > 0, got {temperature}")
    if not model.has_prior:
        raise no_prior(model, "sample")
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    return model.sample(n, temperature)


@torch.no_grad()
def reconstruct(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Means of p(x|z) at z = E_q[z|x] for uint8 images ``x``."""
    model.eval()
    return model.reconstruct(to_unit(x.to(model.device)))


@torch.no_grad()
def near_images(
    model: torch.nn.Module, x: torch.Tensor, n: int = 16, spread: float = 1.0,
    seed: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Images like ``x``, one uint8 image ``(C, H, W)``: decode z = mu + spread * sigma * eps.

    ``spread`` = 1 samples the posterior q(z|x) itself; 0 returns the reconstruction n
    times; larger values wander further from the input.
    """
    at_least("-n", n)
    at_least("--spread", spread, 0)
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    xu = to_unit(x.unsqueeze(0).to(model.device))
    if not model.has_posterior:
        raise no_posterior(model, "similar", "use interpolate, or train with --model vae")
    labels = model.label_args(xu)  # a conditional model: encode and decode with x's label
    q = model.encode(xu, *labels)
    if model.latent_space != "euclidean" and spread == 1:  # q(z|x) itself, on its space
        return model.likelihood.mean(model.decode(q.sample((n,))[:, 0], *labels))
    if model.latent_space == "categorical" and spread != 0:
        raise VaelabError("--spread: a categorical latent is drawn from q(z|x) (1) or "
                          f"its mean (0), not scaled; got {spread}")  # fmt: skip
    mu = model.latent_mean(xu, *labels) if model.latent_space != "euclidean" else q.mean
    z = mu + spread * q.stddev * torch.randn(n, *mu.shape[1:], device=mu.device)
    if model.latent_space == "sphere":  # wander on the sphere: the moved point normalised
        z = z / z.norm(dim=-1, keepdim=True)
    return model.likelihood.mean(model.decode(z, *labels))
