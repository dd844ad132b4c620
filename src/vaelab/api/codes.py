"""Discrete codes (``--model vqvae``): ``vaelab.train_prior(run)`` fits the learned prior
over the run's code grids (see :mod:`vaelab.training.code_prior`); ``vaelab sample`` and
``vaelab evaluate`` read it from RUN/prior/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaelab.api import as_run
from vaelab.errors import VaelabError
from vaelab.training.code_prior import PriorOptions, fit_prior, read_prior
from vaelab.training.record import Run


def train_prior(
    run: str | Path | Run, epochs: int = 20, *, batch_size: int = 64, lr: float = 1e-3,
    width: int = 64, layers: int = 6, kernel: int = 3, seed: int = 0, device: str = "cpu",
    resume: bool = False, overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Fit a gated PixelCNN over the frozen encoder's code grids of the training images
    (``epochs`` passes, Adam ``lr``); saved as RUN/prior/prior.safetensors + prior.json,
    ``resume`` continues it to ``epochs``. Returns the JSON record (options, history of
    train/test NLL per grid and per code)."""
    run = as_run(run, device)
    options = PriorOptions(epochs, batch_size, lr, width, layers, kernel, seed)
    meta = fit_prior(run, options, resume=resume, overwrite=overwrite, progress=progress)
    meta["folder"] = str(Path(run.folder) / "prior")
    return meta


def code_prior(run: Run, command: str) -> Any:
    """The run's trained code prior, or a one-line refusal naming the command to train it."""
    found = read_prior(run)
    if found is None:
        raise VaelabError(f"{command}: {run.folder} has no code prior yet; train one with "
                          f"`vaelab train-prior {run.folder}`")  # fmt: skip
    return found[0]
