"""One training run in memory, :class:`Session`: what :func:`setup` builds, what the loop's
``train_step`` and ``end_of_epoch`` advance, and what :func:`save` checkpoints.

:func:`setup` works in three stages, so that a bad input leaves no run folder behind:

1. when resuming, the run folder's checkpoint is read and checked against this config (a
   finished run is reported and nothing else happens);
2. :func:`build_session`: data, model (seeded: the same initial weights on every rank),
   labels, the objective (its estimator; M2's class loss, fed from the labelled images by
   the :class:`LossModule`), optimizer (the model's and the objective's parameters), the
   checkpoint's weights, objective state, optimizer state and RNG, the images on the
   device, the step machinery (:class:`Stepper`) and the weight average;
3. the run folder: created (or emptied with ``overwrite``), metrics rows past the checkpoint
   dropped, config.yaml and run.json written (rank 0).

Stage 2 alone is a session without a folder, which ``vaelab gradvar`` trains.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaelab.config import Config, resolve, save_config, validate
from vaelab.data import ImageData, dataset_for
from vaelab.data.prepare import binarize_fixed, eval_images, prepare
from vaelab.errors import VaelabError
from vaelab.objectives import build_objective, ramp_note
from vaelab.training import folder as runfs
from vaelab.training.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    TrainState,
    apply_hyperparameters,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
)
from vaelab.training.distributed import World, check_batch
from vaelab.training.ema import WeightAverage, make_average
from vaelab.training.labels import labelled_stream, prepare_labels
from vaelab.training.load import build_run_model
from vaelab.training.options import check_names, check_resume
from vaelab.training.stabilise import check_stabilisers
from vaelab.training.step import LossModule, Stepper, make_optimizer


@dataclass
class Session:
    """Everything one training run holds; see the module docstring."""

    config: Config
    world: World
    model: nn.Module  # the model being trained (the Stepper holds its DDP-wrapped form)
    optimizer: torch.optim.Optimizer
    stepper: Stepper  # forward/objective/backward/update of one batch
    ema: WeightAverage | None  # --ema: the weight average that evaluation uses
    state: TrainState  # the next (epoch, batch), the step count and skip counters
    data: ImageData
    train_x: torch.Tensor  # (N, C, H, W) uint8 on the device, statically binarized if asked
    train_y: torch.Tensor | None  # (N,) labels for models with uses_labels (-1: hidden)
    test_x: torch.Tensor  # this rank's share of the test images as evaluated, uint8
    steps_per_epoch: int  # global batches per epoch
    info: dict[str, Any]  # dataset, image shape, class names, config: stored in checkpoints
    out: Path | None = None  # the run folder (None: a session in memory only)
    objective: nn.Module | None = None  # the loss, its estimator's state (checkpointed)

    @property
    def eval_model(self) -> nn.Module:
        """What the test bound and the pictures use: the weight average with --ema."""
        return self.ema.module if self.ema else self.model

    def batch(self, perm: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Batch ``b`` of the epoch ordered by ``perm``, this rank's share: images (B_r, C, H,
        W) in [0, 1] (a dynamic binarization drawn now, from the global RNG), labels (B_r,)
        or None, and the loss weight of an uneven shard (train.distributed)."""
        bs = self.config.train.batch_size
        idx, scale = self.world.shard(perm[b * bs : (b + 1) * bs])
        y = self.train_y[idx] if self.train_y is not None else None
        dynamic = self.config.data.binarize == "dynamic"
        x = prepare(self.train_x.index_select(0, idx), dynamic)  # ~8x faster than x[idx]
        return x, y, scale


def check_config(config: Config) -> Config:
    """``config`` with the defaults that follow from other options filled in (as recorded in
    config.yaml), after checking every value and name: nothing is read or created yet."""
    config = validate(resolve(config))
    check_names(config)
    check_stabilisers(config)
    return config


def run_folder(config: Config, out: str | Path | None, world: World) -> Path:
    """The run folder: ``out``, or a new dated one under runs/ (not under torchrun, where
    every process must name the same folder)."""
    if out is None and world.distributed:
        raise VaelabError("--out: under torchrun name the run folder (all processes share it)")
    return Path(out) if out else runfs.default_run_dir(config.data.dataset, config.model.model)


def setup(
    config: Config,
    out: Path,
    world: World,
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: ImageData | None = None,
) -> Session | None:
    """The session that trains ``config`` (checked by :func:`check_config`) into ``out``,
    resumed from its checkpoint with ``resume``; None when that run is already finished
    (after saying so). ``data``: the images, if the caller has them (else the config's)."""
    if resume and overwrite:
        raise VaelabError("--resume and --overwrite contradict each other; pass one")
    runfs.check_resume_target(out, resume)
    # No checkpoint yet (killed in its first epoch): start over, so a requeued job just works.
    ckpt = load_checkpoint(out / CHECKPOINT) if runfs.can_resume(out, resume) else None
    if ckpt is not None:
        check_resume(ckpt.info["config"], config, out)
        if runfs.finished(ckpt.state, config.train.epochs):
            world.on_main(lambda: runfs.say_finished(out, ckpt.state), "checking the run")
            return None
    try:
        if data is None:  # rank 0 first: a download/extraction into the cache happens once
            data = world.main_first(partial(dataset_for, config), "loading the dataset")
        session = build_session(config, data, world, ckpt)
    except KeyboardInterrupt:  # Ctrl-C in the first seconds: say what to do next
        raise runfs.interrupted_in_setup(out, ckpt is not None) from None
    session.out = out

    def prepare_dir() -> None:
        runfs.prepare_run_dir(out, resume=resume, overwrite=overwrite)
        remove_stale_temps(out)  # left by a process killed mid-write; never read

    world.on_main(prepare_dir, "preparing the run folder")
    if ckpt is not None:
        truncate = partial(runfs.truncate_metrics, out, ckpt.state.step)
        world.on_main(truncate, "rewriting metrics")
    world.on_main(partial(_write_setup, session), "writing config.yaml")
    return session


def _write_setup(session: Session) -> None:
    save_config(session.config, session.out / runfs.CONFIG)
    runfs.write_info(session.out, {k: v for k, v in session.info.items() if k != "config"})


def flush_denormals(device: torch.device) -> None:
    """On a CPU, treat subnormal floats (below 1.2e-38 in float32) as zero for this
    process. Importance weights' gradients (IWAE, MIWAE, PIWAE, CIWAE) are full of them: the
    softmax of log-weights that differ by tens of nats underflows into the subnormal range,
    and x86 GEMMs on subnormals run several times slower (measured: a MIWAE(2, 5) step 57.9
    -> 27.0 CPU ms, IWAE(5) 34.6 -> 18.3, the plain VAE unchanged). The values lost are
    below float32's normal range. A GPU runs subnormals at full speed, so only a CPU flushes."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)


def build_session(
    config: Config, data: ImageData, world: World, ckpt: Checkpoint | None = None
) -> Session:
    """Stage 2 of :func:`setup`: the model, optimizer and images of ``config`` on
    ``world.device``, restored from ``ckpt`` when given; touches no file."""
    t = config.train
    flush_denormals(world.device)
    check_batch(world, t.batch_size)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = build_run_model(config.model, data.image_shape).to(world.device)
    data = prepare_labels(model, config, data)  # CVAE/M2 checks; --labels-per-class hides
    objective = build_objective(config, model, len(data.train_x)).to(world.device)
    unit = LossModule(
        model, objective, t.samples, labelled_stream(model, config, data, world.device)
    )
    optimizer = make_optimizer(unit, config)  # the model's parameters, then the objective's
    if world.rank:  # rank 0's noise is one process's noise; the others draw their own
        torch.manual_seed(t.seed + world.rank)
    state = TrainState()
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state())
        objective.load_state_dict(ckpt.objective_state())  # e.g. a baseline's running mean
        ckpt.restore_training(optimizer, world.device, world.rank)
        state = ckpt.state
        # This command's --lr and --weight-decay apply from here on (and lr_at its schedule).
        apply_hyperparameters(optimizer, t.lr, t.weight_decay)
    train_x, test_x = _device_images(config, data, world)
    # Labelled models (CVAE, M2) get each batch's labels; -1 marks a hidden label.
    train_y = data.train_y.to(world.device) if model.uses_labels else None
    info = {
        "dataset": data.name,
        "image_shape": list(data.image_shape),
        "class_names": list(data.class_names) if data.class_names else None,
        "config": config.to_dict(),
    }
    steps_per_epoch = world.steps_per_epoch(len(train_x), t.batch_size)
    if (note := ramp_note(config, t.epochs * steps_per_epoch)) and world.rank == 0:
        warnings.warn(note, stacklevel=2)
    stepper = Stepper(unit, optimizer, config, world.device, world)
    if ckpt is not None:
        ckpt.restore_scaler(stepper.scaler)  # fp16: the scale the run had reached
    # --ema: evaluation, pictures and vaelab.load use the average of the weights.
    ema = make_average(model, config, ckpt.tensors if ckpt else None, state.extra)
    model.train()
    return Session(
        config=config, world=world, model=model, optimizer=optimizer, stepper=stepper,
        ema=ema, state=state, data=data, train_x=train_x, train_y=train_y, test_x=test_x,
        steps_per_epoch=steps_per_epoch, info=info,
        objective=objective,
    )  # fmt: skip


def _device_images(
    config: Config, data: ImageData, world: World
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images as trained on (one fixed draw with --binarize static) and this
    rank's share of the test images as evaluated, uint8 on the device (pinned on CUDA)."""
    seed, device = config.train.seed, world.device
    train_x = data.train_x
    if config.data.binarize == "static":
        train_x = binarize_fixed(train_x, seed)
    test_x = eval_images(data.test_x, config.data.binarize, seed)[world.rank :: world.size]
    pin = device.type == "cuda"
    if pin:
        check_fits(data.name, train_x, test_x, device)
    train_x = (train_x.pin_memory() if pin else train_x).to(device, non_blocking=pin)
    return train_x, test_x.to(device)


# Share of the GPU's free memory the images may take: the rest is for the model, its
# optimizer state and the activations of a step.
IMAGES_SHARE = 0.5


def check_fits(name: str, train_x: torch.Tensor, test_x: torch.Tensor, device: torch.device):
    """A one-line error instead of CUDA's out-of-memory when the uint8 images (kept on the
    GPU whole, see DESIGN) would take more than IMAGES_SHARE of its free memory."""
    free, total = torch.cuda.mem_get_info(device)
    need = train_x.numel() * train_x.element_size() + test_x.numel() * test_x.element_size()
    if need > IMAGES_SHARE * free:
        gib = 2.0**30
        raise VaelabError(
            f"--dataset {name}: its {len(train_x)} training images take {need / gib:.1f} GiB "
            f"on {device}, which has {free / gib:.1f} of {total / gib:.1f} GiB free (at most "
            f"half is for images); use --resize or --center-crop, a smaller dataset, "
            "or --device cpu"
        )


def save(session: Session) -> None:
    """Checkpoint the session at ``session.state`` (collective: every rank calls it; each
    rank's RNG state is gathered, rank 0 writes)."""
    s = session
    tensors = s.world.gather_rng()
    if s.ema:
        tensors.update(s.ema.tensors())
        s.state.extra["ema_updates"] = s.ema.updates
    write = partial(
        save_checkpoint, s.out / CHECKPOINT, s.model, s.optimizer, s.state, s.info, tensors,
        s.objective, device=s.world.device, scaler=s.stepper.scaler,
    )  # fmt: skip
    s.world.on_main(write, "writing the checkpoint")
