"""Model registry: ``--model NAME`` -> a :class:`~vaelab.models.base.Model` subclass with
``from_config(ModelConfig, image_shape)``. A new family is one module and one line here;
its options (``options``, a frozen dataclass) come with it (see docs/architecture.md)."""

from __future__ import annotations

from torch import nn

from vaelab.config import OWNERS, ModelConfig, OptionOwner, resolve_model
from vaelab.errors import unknown_name
from vaelab.models.autoencoder import Autoencoder
from vaelab.models.base import Model
from vaelab.models.cvae import CVAE
from vaelab.models.deep import DeepVAE
from vaelab.models.flowvae import FlowVAE
from vaelab.models.gumbel import GumbelVAE
from vaelab.models.hvae import HVAE
from vaelab.models.m2 import M2
from vaelab.models.svae import SVAE
from vaelab.models.vae import VAE
from vaelab.models.vqvae import VQVAE

MODELS: dict[str, type[Model]] = {
    "ae": Autoencoder, "vae": VAE, "hvae": HVAE, "cvae": CVAE, "m2": M2,
}  # fmt: skip
MODELS["deep"] = DeepVAE
# zoob (issue 23): flow posteriors, hyperspherical and categorical latents
MODELS["flow"] = FlowVAE
MODELS["svae"] = SVAE
MODELS["gumbel"] = GumbelVAE
# vq (issue 22): discrete codes
MODELS["vqvae"] = VQVAE

# The config's model section holds the options of the family --model names.
OWNERS["model"] = OptionOwner("model", "model", lambda: {n: c.options for n, c in MODELS.items()})


def build_model(
    cfg: ModelConfig, image_shape: tuple[int, int, int], m1: nn.Module | None = None
) -> Model:
    """A fresh model of ``cfg``; ``m1``: M1+M2's trained VAE (``--m1-run``), which models
    do not load themselves (see :func:`vaelab.training.load.build_run_model`)."""
    if cfg.model not in MODELS:
        raise unknown_name("--model", cfg.model, MODELS)
    deps = {"m1": m1} if m1 is not None else {}  # only M2's from_config takes it
    # hidden=None: the arch's own widths (config.ARCH_WIDTHS)
    return MODELS[cfg.model].from_config(resolve_model(cfg), image_shape, **deps)


__all__ = [
    "CVAE", "HVAE", "M2", "MODELS", "SVAE", "VAE", "VQVAE", "Autoencoder", "DeepVAE", "FlowVAE",
    "GumbelVAE", "Model", "build_model",
]  # fmt: skip
