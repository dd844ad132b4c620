"""fit(): one readable training loop.

Each step: slice a batch from the uint8 tensor on the device, scale/binarize it,
``loss = objective(model, x, beta)`` (the objective draws z with its estimator and reduces
the model's Terms), backward, (clip), step.
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
import warnings
from collections.abc import Callable
from contextlib import nullcontext
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
from vaelab.objectives import build_objective
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
from vaelab.train.labels import LabelledStream, labelled_stream, prepare_labels
from vaelab.train.load import build_run_model
from vaelab.train.options import check_names, check_resume, compile_declined
from vaelab.train.stabilise import check_stabilisers, grad_norm

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


def grads_finite(params: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool: every gradient is finite. One foreach pass (GradScaler's own check, with
    scale 1): about a fifth of the cost of a global norm, which needs a pass, a stack, and a
    second norm (measured: 305 vs 67 us per step of the reference MLP VAE on CPU)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    found = torch.zeros(1, device=grads[0].device)
    one = torch.ones(1, device=grads[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
    return found[0] == 0


class LossModule(nn.Module):
    """A model and its objective as one module, ``(x, beta, y) -> (loss, stats)``.

    This is what DDP wraps: its search for unused parameters starts from the forward's
    outputs, and a model's ``Terms`` may compute log p(z) and log q(z|x) only when the
    objective asks (a learned prior's parameters are reached only through them). Its
    parameters (the model's, then the objective's: a learned baseline) are what the
    optimizer steps. ``labelled``: M2's labelled images; in training mode each call feeds
    a batch of them to the objective's class loss.
    """

    def __init__(
        self, model: nn.Module, objective: nn.Module, samples: int,
        labelled: LabelledStream | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.model, self.objective, self.samples = model, objective, samples
        self.labelled = labelled

    def forward(self, x: torch.Tensor, beta: torch.Tensor, y: torch.Tensor | None = None):
        batch = self.labelled() if self.labelled is not None and self.training else None
        return self.objective(self.model, x, beta, y, self.samples, batch)


class Stepper:
    """The forward/backward/update of one batch, optionally under autocast/compile.

    ``model`` is the :class:`LossModule` (a bare model gets the objective of ``config``),
    wrapped in DDP under torchrun (whose forward does the gradient all-reduce bookkeeping).
    A step is applied only if the loss and every gradient are finite (on every rank);
    otherwise it is skipped.
    """

    def __init__(
        self, model, optimizer, config: Config, device: torch.device, world: World | None = None
    ) -> None:
        t = config.train
        self.optimizer, self.config = optimizer, config
        self.world = world or World(device=device)
        if not isinstance(model, LossModule):
            model = LossModule(model, build_objective(config, model), t.samples)
            if any(True for _ in model.objective.parameters()):  # not in the optimizer
                raise TypeError("Stepper: build the LossModule (and its optimizer) first")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.model = self.world.wrap(model)
        self.skip_reason = ""  # why the last skipped step was skipped: non-finite | grad-norm
        self.norms = torch.zeros(3, device=device)  # sum, max, count of measured grad norms
        amp = device.type == "cuda" and t.precision != "fp32"
        if t.precision != "fp32" and device.type != "cuda":
            warnings.warn(f"--precision {t.precision} needs CUDA; training in fp32", stacklevel=2)
        dtype = torch.bfloat16 if t.precision == "bf16" else torch.float16
        self.autocast = torch.autocast("cuda", dtype=dtype) if amp else nullcontext()
        self.scaler = torch.amp.GradScaler("cuda") if amp and t.precision == "fp16" else None
        # dynamic=False: an epoch's smaller last batch gets its own static graph. With automatic
        # dynamic shapes it would replace the full-batch graph by a dynamic-shape one that
        # ran 2.6x slower than eager on CPU (measured: epoch 2 of the reference VAE).
        declined = compile_declined(model.model, device) if t.compile else None
        if declined:
            warnings.warn(f"--compile: declined, {declined}; training eager", stacklevel=2)
        compiled = t.compile and not declined
        self.loss_fn = torch.compile(self.model, dynamic=False) if compiled else self.model

    def __call__(
        self, x: torch.Tensor, beta: float, y: torch.Tensor | None = None, scale: float = 1.0
    ) -> tuple[bool, torch.Tensor, dict]:
        """One update; ``y`` (labels, -1 where hidden) goes to models with ``uses_labels``;
        ``scale`` multiplies the loss that is differentiated (an uneven DDP shard's weight)."""
        with self.autocast:
            loss, stats = self.loss_fn(x, torch.tensor(beta, device=x.device), y)
        # Backward even a non-finite loss: under DDP every rank must join the all-reduce.
        scaled = loss * scale if scale != 1.0 else loss
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        clip, skip = self.config.train.clip_grad, self.config.train.skip_threshold
        norm = None
        if clip is not None or skip is not None:
            norm = grad_norm(self.params, clip)
            finite = torch.isfinite(loss) & torch.isfinite(norm)
        else:
            finite = torch.isfinite(loss) & grads_finite(self.params)
        # One host sync decides: a NaN/inf loss or gradient anywhere skips the step; with
        # --skip-threshold a second one (the norm is the same on every rank after DDP's
        # all-reduce) skips a finite step whose gradient norm is too large.
        self.skip_reason = "non-finite"
        keep = self.world.all_true(finite)
        if keep and norm is not None:
            self.norms[0] += norm
            self.norms[1] = torch.maximum(self.norms[1], norm)
            self.norms[2] += 1
            if skip is not None and not norm <= skip:
                keep, self.skip_reason = False, "grad-norm"
        if not keep:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()
            return False, loss, stats
        self.skip_reason = ""
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True, loss, stats


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
    objective = build_objective(config, raw, len(data.train_x)).to(device)  # checks --estimator
    unit = LossModule(raw, objective, t.samples, labelled_stream(raw, config, data, device))
    world.on_main(prepare_dir, "preparing the run folder")
    optimizer, scheduler = make_optimizer(unit, config, device)  # model's, then objective's
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
        objective.load_state_dict(ckpt.objective_state())
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
    train_y = data.train_y.to(device) if raw.uses_labels else None
    dynamic = config.data.binarize == "dynamic"
    n, bs = len(train_x), t.batch_size
    steps_per_epoch = world.steps_per_epoch(n, bs)
    stepper = Stepper(unit, optimizer, config, device, world)
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
            lambda: save_checkpoint(
                out / CHECKPOINT, raw, optimizer, scheduler, state, info, rng, objective
            ),
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
