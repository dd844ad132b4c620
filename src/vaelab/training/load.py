"""A trained model from its run folder, below the API (which wraps it as ``vaelab.load``).

It sits in the training layer because it reads what training writes (the checkpoint, the
weight average): models may not import it, so M1+M2, whose M2 is built on a trained VAE
(M1), gets that M1 from :func:`build_run_model` instead of loading it itself.
Nothing is unpickled: the weights come from safetensors and the config from JSON.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from vaelab.config import Config, ModelConfig, config_from_dict
from vaelab.errors import VaelabError
from vaelab.models import M2, build_model
from vaelab.objectives.estimators import Estimator, build_estimator
from vaelab.training.checkpoint import CHECKPOINT, load_checkpoint
from vaelab.training.ema import averaged_state
from vaelab.training.folder import resolve_device
from vaelab.training.record import Run


def read_run(run: str | Path, device: str = "cpu") -> Run:
    """Run folder ``run`` as a :class:`Run`: the trained model (eval mode, on ``device``; the
    weight average where the run kept one), its Config, the checkpoint's info without the
    config (dataset name, image shape, class names) and the folder. Nothing is patched onto
    the model: code that needs the config or the folder takes the Run."""
    run = Path(run)
    if not run.is_dir():
        raise VaelabError(f"{run}: no such run folder")
    ckpt = load_checkpoint(run / CHECKPOINT)
    config = config_from_dict(ckpt.info["config"], str(run / CHECKPOINT))
    model = build_run_model(config.model, tuple(ckpt.info["image_shape"]))
    model.load_state_dict(averaged_state(ckpt.tensors) or ckpt.model_state())  # --ema: average
    info = {k: v for k, v in ckpt.info.items() if k != "config"}
    return Run(model.to(resolve_device(device)).eval(), config, info, run)


def read_estimator(run: str | Path, config: Config, image_shape: tuple[int, int, int]) -> Estimator:
    """The gradient estimator run folder ``run`` trained with (``config``), with its state
    from the checkpoint (a baseline's running mean and network; old checkpoints kept it in
    the model, ``model/estimator.*``, which ``objective_state`` maps)."""
    m = config.model
    estimator = build_estimator(
        m.estimator, m.posterior, m.baseline_decay, m.learned_baseline,
        in_features=math.prod(image_shape),
    )  # fmt: skip
    prefix = "estimator."
    state = load_checkpoint(Path(run) / CHECKPOINT).objective_state()
    estimator.load_state_dict({k[len(prefix) :]: v for k, v in state.items()
                               if k.startswith(prefix)})  # fmt: skip
    return estimator


def load_m1(run: str) -> nn.Module:
    """The trained VAE of run folder ``run``, M1 of M1+M2 (its weights are then overwritten
    by M2's own copy when an M2 checkpoint is loaded)."""
    if not Path(run).is_dir():
        raise VaelabError(f"--m1-run {run}: no such run folder (train a VAE there first)")
    m1 = read_run(run)
    if m1.config.model.model != "vae":  # its latent_mean is what M2 models
        raise VaelabError(f"--m1-run {run}: expected a --model vae run, got --model "
                          f"{m1.config.model.model}")  # fmt: skip
    return m1.model


def build_run_model(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """:func:`vaelab.models.build_model`, with M1+M2's M1 loaded from ``--m1-run``: what
    training and loading build, so a model never loads a run folder itself."""
    m1_run = M2.options_of(cfg).m1_run if cfg.model == "m2" else None
    return build_model(cfg, image_shape, m1=load_m1(m1_run) if m1_run else None)
