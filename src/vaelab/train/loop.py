"""fit(): one readable training loop.

Each step: slice a batch from the uint8 tensor on the device, scale/binarize it,
``terms = model(x, K)``, ``loss = objective(terms, beta)``, backward, (clip), step.
A step whose loss or gradient norm is not finite is skipped and counted; too many
in a row stop the run with the last good checkpoint intact. After each epoch:
test-set ELBO, one JSON line of metrics, one atomic checkpoint. Resume is exact:
the epoch order is a function of (seed, epoch) and the RNG state is checkpointed.
Under torchrun the same loop runs in every process with DDP (train/distributed.py).
What the run folder shows (training curves, end-of-run pictures, report.html) is drawn by
the evaluation layer through :class:`Drawings` the caller passes: training imports none of it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from vaelab.config import Config, resolve, save_config, validate
from vaelab.data import ImageData, dataset_for
from vaelab.data.prepare import binarize_fixed, epoch_permutation, eval_images, prepare
from vaelab.errors import VaelabError
from vaelab.train import run as runfs
from vaelab.train.checkpoint import (
    CHECKPOINT,
    TrainState,
    apply_hyperparameters,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
)
from vaelab.train.distributed import World, check_batch, setup
from vaelab.train.ema import make_average
from vaelab.train.labels import prepare_labels
from vaelab.train.load import build_run_model
from vaelab.train.options import check_names, check_resume
from vaelab.train.stabilise import check_stabilisers
from vaelab.train.step import Stepper

CURVES_EVERY = 30.0  # seconds between redraws of training_curves.png during training


@dataclass(frozen=True)
class Drawings:
    """What :func:`fit` draws into the run folder with ``--report`` (rank 0 only). The
    caller hands it in (``vaelab.report.RUN_DRAWINGS`` for ``vaelab train`` and
    ``vaelab.train``): drawing is evaluation-layer code, which training does not import."""

    curves: Callable[[Path, float], object]  # (run folder, min seconds between redraws)
    pictures: Callable[[nn.Module, ImageData, Path, Config], object]  # end of the run


def make_optimizer(model: torch.nn.Module, config: Config, device: torch.device):
    t = config.train
    # The fused kernel does Adam's five elementwise passes in one (about a third of an
    # MLP VAE's CPU step otherwise); it exists for float32 on CPU and CUDA.
    optimizer = torch.optim.Adam(
        model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True
    )
    if t.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, t.epochs))
    elif t.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, max(1, t.epochs // 3), 0.5)
    else:
        scheduler = None
    return optimizer, scheduler


def beta_at(config: Config, step: int, steps_per_epoch: int) -> float:
    """KL weight: rises linearly from 0 to ``beta`` over ``warmup_epochs``."""
    t = config.train
    if t.warmup_epochs <= 0:
        return t.beta
    return t.beta * min(1.0, step / (t.warmup_epochs * steps_per_epoch))


def fit(
    config: Config,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: ImageData | None = None,
    drawings: Drawings | None = None,
) -> Path:
    """Train ``config`` into run folder ``out``; returns the folder. See module docstring.
    ``drawings``: what ``--report`` draws (None: nothing, whatever ``config.train.report``).

    Under ``torchrun`` every process calls this; it trains with DistributedDataParallel
    (see :mod:`vaelab.train.distributed`: global ``--batch-size``, rank 0 writes).
    """
    config = validate(resolve(config))  # defaults that follow from other options, recorded
    check_names(config)  # every name, before anything is read or created
    check_stabilisers(config)
    world = setup(config.train.device)
    stop = runfs.StopRequest(enabled=not world.distributed)  # Ctrl-C: stop at a step boundary
    try:
        run_dir = _fit(config, out, resume, overwrite, data, world, stop, drawings)
    except BaseException:
        world.close()  # no barrier: another rank may be gone
        raise
    finally:
        stop.disarm()
    world.close(finished=True)
    return run_dir


def _fit(
    config, out, resume, overwrite, data, world: World, stop: runfs.StopRequest,
    drawings: Drawings | None,
) -> Path:  # fmt: skip
    t = config.train
    report = t.report and drawings is not None
    if out is None and world.distributed:
        raise VaelabError("--out: under torchrun name the run folder (all processes share it)")
    out = Path(out) if out else runfs.default_run_dir(config.data.dataset, config.model.model)
    if resume and overwrite:
        raise VaelabError("--resume and --overwrite contradict each other; pass one")

    def prepare_dir() -> None:
        runfs.prepare_run_dir(out, resume=resume, overwrite=overwrite)
        remove_stale_temps(out)  # left by a process killed mid-write; never read

    # Checkpoint, data and model first: a bad input must not leave an empty run folder behind.
    # No checkpoint yet (killed in its first epoch): start over, so a requeued job just works.
    ckpt = load_checkpoint(out / CHECKPOINT) if runfs.can_resume(out, resume) else None
    if ckpt is not None:
        check_resume(ckpt.info["config"], config, out)
        if runfs.finished(ckpt.state, t.epochs):
            world.on_main(lambda: runfs.say_finished(out, ckpt.state), "checking the run")
            return out
    data = data or dataset_for(config)
    check_batch(world, t.batch_size)
    device = world.device
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    raw = build_run_model(config.model, data.image_shape).to(device)
    data = prepare_labels(raw, config, data)  # CVAE/M2 checks; --labels-per-class hides
    world.on_main(prepare_dir, "preparing the run folder")
    optimizer, scheduler = make_optimizer(raw, config, device)
    if world.rank:  # rank 0's noise is one process's noise; the others draw their own
        torch.manual_seed(t.seed + world.rank)
    info = {
        "dataset": data.name,
        "image_shape": list(data.image_shape),
        "class_names": list(data.class_names) if data.class_names else None,
        "config": config.to_dict(),
    }
    state = TrainState()
    if ckpt is not None:
        raw.load_state_dict(ckpt.model_state())
        ckpt.restore_training(optimizer, None, device, world.rank)
        state = ckpt.state
        # This command's --lr, --weight-decay, --schedule and --epochs apply from here on.
        apply_hyperparameters(optimizer, scheduler, t.lr, t.weight_decay, state.epoch)
        world.on_main(lambda: runfs.truncate_metrics(out, state.step), "rewriting metrics")

    def write_setup() -> None:
        save_config(config, out / runfs.CONFIG)
        runfs.write_info(out, {k: v for k, v in info.items() if k != "config"})

    world.on_main(write_setup, "writing config.yaml")

    train_x = data.train_x
    if config.data.binarize == "static":
        train_x = binarize_fixed(train_x, t.seed)
    pin = device.type == "cuda"
    train_x = (train_x.pin_memory() if pin else train_x).to(device, non_blocking=pin)
    test_x = eval_images(data.test_x, config.data.binarize, t.seed)[world.rank :: world.size]
    test_x = test_x.to(device)
    # Labelled models (CVAE, M2) get each batch's labels; -1 marks a hidden label.
    train_y = data.train_y.to(device) if getattr(raw, "uses_labels", False) else None
    dynamic = config.data.binarize == "dynamic"
    n, bs = len(train_x), t.batch_size
    steps_per_epoch = world.steps_per_epoch(n, bs)
    stepper = Stepper(raw, optimizer, config, device, world)
    # --ema: evaluation, pictures and vaelab.load use the average of the weights.
    ema = make_average(raw, config, ckpt.tensors if ckpt else None, state.extra)
    eval_model = ema.module if ema else raw
    main_progress = t.progress and world.is_main

    def save() -> None:
        rng = world.gather_rng()  # collective: every rank takes part
        if ema:
            rng.update(ema.tensors())
            state.extra["ema_updates"] = ema.updates
        world.on_main(
            lambda: save_checkpoint(out / CHECKPOINT, raw, optimizer, scheduler, state, info, rng),
            "writing the checkpoint",
        )

    raw.train()
    stop.arm()
    for epoch in range(state.epoch, t.epochs):
        perm = epoch_permutation(n, t.seed, epoch, device)
        sums = torch.zeros(4, device=device)  # loss, bound, recon, kl over counted steps
        counted = 0
        first = state.batch  # a mid-epoch save overwrites state.batch: images_per_s needs this
        t0 = time.perf_counter()
        bar = tqdm(
            range(state.batch, steps_per_epoch), desc=f"epoch {epoch + 1}/{t.epochs}",
            disable=not (main_progress and sys.stderr.isatty()), leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for b in bar:
            idx, scale = world.shard(perm[b * bs : (b + 1) * bs])
            y = train_y[idx] if train_y is not None else None
            beta = beta_at(config, state.step, steps_per_epoch)
            x = prepare(train_x.index_select(0, idx), dynamic)  # ~8x faster than x[idx]
            ok, loss, stats = stepper(x, beta, y, scale)
            state.step += 1
            if ok:
                state.bad_steps = 0
                counted += 1
                if ema:
                    ema.update()
                sums += torch.stack([loss.detach(), stats["bound"], stats["recon"], stats["kl"]])
            else:
                state.bad_steps += 1
                state.skipped_steps += 1
                state.skipped_grad_norm += stepper.skip_reason == "grad-norm"
                if state.bad_steps >= t.max_bad_steps:  # the same decision on every rank
                    why = ("a gradient norm above --skip-threshold"
                           if stepper.skip_reason == "grad-norm"
                           else "a non-finite loss or gradient")  # fmt: skip
                    raise VaelabError(
                        f"training stopped at step {state.step}: {state.bad_steps} consecutive "
                        f"steps with {why} (--max-bad-steps); the last "
                        f"good checkpoint is {out / CHECKPOINT}"
                    )
            if main_progress and b % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.2f}")
            due = bool(t.checkpoint_every) and state.step % t.checkpoint_every == 0
            if (due or stop.requested) and b + 1 < steps_per_epoch:  # the epoch's end saves
                state.epoch, state.batch = epoch, b + 1
                save()  # once, even when a Ctrl-C lands on a --checkpoint-every step
                if stop.requested:
                    raise stop.interrupted(out, state, steps_per_epoch, t.epochs)
        seconds = time.perf_counter() - t0
        if scheduler is not None:
            scheduler.step()
        sums = world.all_sum(torch.cat([sums, sums.new_tensor([counted])]))
        train = (sums[:4] / sums[4].clamp(min=1)).tolist()
        test = world.test_bound(eval_model, test_x, t.eval_samples)
        row = {
            "epoch": epoch + 1, "step": state.step, "lr": optimizer.param_groups[0]["lr"],
            "beta": beta_at(config, state.step, steps_per_epoch),
            "train_loss": train[0], "train_bound": train[1], "train_recon": train[2],
            "train_kl": train[3], "test_elbo": test["elbo"], "test_recon": test["recon"],
            "test_kl": test["kl"], "seconds": seconds,
            "images_per_s": (min(n, steps_per_epoch * bs) - first * bs) / seconds,
            "skipped_steps": state.skipped_steps,
            "skipped_grad_norm": state.skipped_grad_norm,
        }  # fmt: skip
        if stepper.norms[2] > 0:  # measured with --clip-grad or --skip-threshold
            norms = stepper.norms.tolist()
            row.update(grad_norm_mean=norms[0] / norms[2], grad_norm_max=norms[1])
            stepper.norms.zero_()
        world.on_main(partial(runfs.append_metrics, out, row), "writing metrics.jsonl")
        if report:  # to watch a running job; at most every 30 s: a redraw costs ~0.3 s,
            # 7% of a 4 s reference epoch (cProfile), so drawing every epoch was most of the
            # per-epoch overhead. The end of the run draws the final curves.
            world.on_main(
                partial(drawings.curves, out, CURVES_EVERY), "drawing training_curves.png"
            )
        if main_progress:
            tqdm.write(
                f"epoch {epoch + 1}: train loss {train[0]:.2f}  test ELBO {test['elbo']:.2f} "
                f"(recon {test['recon']:.2f}, KL {test['kl']:.2f})  {seconds:.1f}s"
            )
        state.epoch, state.batch = epoch + 1, 0
        save()
        if stop.requested and epoch + 1 < t.epochs:
            raise stop.interrupted(out, state, steps_per_epoch, t.epochs)
    stop.disarm()  # trained: a Ctrl-C from here on stops at once (the checkpoint is final)
    if ckpt is None and t.epochs == 0:
        save()
    if report:
        world.on_main(
            lambda: drawings.pictures(eval_model, data, out, config),
            "drawing the run's pictures",
        )
    return out
