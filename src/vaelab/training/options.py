"""What ``fit()`` settles before it creates anything: every name checked against its
registry (with a "did you mean"), and what ``--resume`` may change.

Options that may change on ``--resume`` (``RESUMABLE``) are how long and how fast to train
and how to watch it: the run continues as if it had been started with the new values
(see :func:`vaelab.training.checkpoint.apply_hyperparameters`). Every other option defines the
model, the data or the sequence of batches and noise already drawn (batch size, seed,
objective, samples, beta and its warm-up): changing one would make the run neither the old
one nor a new one, so it is refused, naming each such flag. ``--compile`` is declined
where it would make training slower (:func:`compile_declined`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaelab.config import Config
from vaelab.data import check_dataset
from vaelab.errors import VaelabError, unknown_name
from vaelab.latents import FAMILIES
from vaelab.latents.priors import PRIORS
from vaelab.likelihoods import LIKELIHOODS
from vaelab.models import MODELS
from vaelab.nn import ARCHS
from vaelab.objectives import OBJECTIVES
from vaelab.objectives.estimators import ESTIMATORS
from vaelab.training.schedule import LR_SCHEDULES
from vaelab.training.trackers import check_trackers

# Config field -> the registry its value must name: the one map of registries. The CLI's
# --help reads it from this file's source (vaelab.cli.names.registry_map: no torch import),
# so every value is a registry imported by name above.
REGISTRIES: dict[str, Mapping[str, Any]] = {
    "model": MODELS, "arch": ARCHS, "likelihood": LIKELIHOODS, "prior": PRIORS,
    "posterior": FAMILIES, "estimator": ESTIMATORS, "objective": OBJECTIVES,
    "schedule": LR_SCHEDULES,
}  # fmt: skip

RESUMABLE: frozenset[str] = frozenset({
    "epochs", "lr", "schedule", "weight_decay", "clip_grad", "max_bad_steps",
    "checkpoint_every", "eval_samples", "device", "precision", "compile", "progress", "report",
    "deterministic",
    "track", "track_every",
})  # fmt: skip


def check_names(config: Config) -> None:
    """Every registry name and the dataset, before any data is read or folder made: the one
    place a name is checked (``config`` resolved: the objective is set)."""
    flat = _flat(config.to_dict())
    for name, registry in REGISTRIES.items():
        if flat[name] is not None and flat[name] not in registry:
            raise unknown_name(f"--{name}", flat[name], registry)
    likelihood, binarize = config.model.likelihood, config.data.binarize
    if LIKELIHOODS[likelihood].discrete and binarize != "none":
        # They model the 256 levels of the data: binarized pixels would be another data set.
        raise VaelabError(
            f"--binarize {binarize}: --likelihood {likelihood} models the 8-bit values 0..255;"
            " use --binarize none (or a bernoulli likelihood for binary pixels)"
        )
    check_dataset(config.data.dataset)
    check_trackers(config.train.track)


def _flat(nested: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: v for section in nested.values() for k, v in section.items()}


def _flag(name: str, value: Any) -> str:
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"--{name.replace('_', '-')} {value}"


def check_resume(saved: dict[str, dict[str, Any]], now: Config, out: Path) -> None:
    """Refuse a resume that changes any option outside ``RESUMABLE``; ``saved`` is the
    checkpoint's ``Config.to_dict()``. Options the saved run predates are not compared."""
    old, new = _flat(saved), _flat(now.to_dict())
    changed = [k for k in old if k in new and k not in RESUMABLE and old[k] != new[k]]
    if changed:
        was = " ".join(_flag(k, old[k]) for k in changed)
        asked = " ".join(_flag(k, new[k]) for k in changed)
        raise VaelabError(
            f"--resume: the run in {out} was trained with {was}, this command asks {asked}; "
            f"only {', '.join('--' + k.replace('_', '-') for k in sorted(RESUMABLE))} may "
            "change on resume (start a new run for the others)"
        )


def compile_declined(model: nn.Module, device: torch.device) -> str | None:
    """Why ``torch.compile`` would not pay for ``model`` on ``device`` (None: it would).

    On CPU a convolutional model ran slower compiled than eager (0.52x per epoch, conv VAE
    on mnist-5k): torch.profiler shows the oneDNN convolutions, ~80% of the eager step,
    taking the same time either way, while the compiled graphs around them took ~6x the
    time of eager's elementwise kernels. The MLP VAE gains (1.2x vs 1.1x a minimal loop).
    """
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
    if device.type == "cpu" and any(isinstance(m, convs) for m in model.modules()):
        return "a convolutional model runs slower compiled than eager on CPU"
    return None
