"""fit(): the training loop, to be read top to bottom.

    config = check_config(config)              every value and name; nothing created yet
    with joined(device) as world:              torchrun's process group, or this process
        s = setup(config, out, world, ...)     data, model, optimizer, checkpoint, run folder
        for epoch, for batch b:
            train_step(s, *s.batch(perm, b))   lr_at/beta_at, forward, objective, backward,
                                               finite check, skip or clip + step, EMA
            (--checkpoint-every or Ctrl-C: save(s) at this step boundary)
        end_of_epoch(s, ...)                   test bound, metrics row, curves, checkpoint
    the run's pictures (``drawings``)

A step whose loss or gradient is not finite (or whose gradient norm exceeds
--skip-threshold) is skipped and counted; --max-bad-steps in a row stop the run with the
last good checkpoint intact. Resume is exact: the epoch order is a function of (seed,
epoch), the schedules are functions of the step, and the RNG state is checkpointed. Under
torchrun the same loop runs in every process with DDP (training/distributed.py). What the
run folder shows (training curves, end-of-run pictures, report.html) is drawn by the
evaluation layer through :class:`Drawings` the caller passes: training imports none of it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from vaelab.config import Config
from vaelab.data import ImageData
from vaelab.data.prepare import epoch_permutation
from vaelab.errors import VaelabError
from vaelab.likelihoods import nll_meaning
from vaelab.training import folder as runfs
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.collapse import CollapseWatch
from vaelab.training.distributed import joined
from vaelab.training.schedule import beta_at, lr_at
from vaelab.training.session import Session, check_config, run_folder, save, setup
from vaelab.training.step import LossReadout
from vaelab.training.tracking import tracked

CURVES_EVERY = 30.0  # seconds between redraws of training_curves.png during training
TALLY = "epoch_tally"  # TrainState.extra key: the interrupted epoch's sums (mid-epoch saves)


@dataclass(frozen=True)
class Drawings:
    """What :func:`fit` draws into the run folder with ``--report`` (rank 0 only). The
    caller hands it in (``vaelab.evaluation.html_report.RUN_DRAWINGS`` for ``vaelab train`` and
    ``vaelab.train``): drawing is evaluation-layer code, which training does not import."""

    curves: Callable[[Path, float], object]  # (run folder, min seconds between redraws)
    pictures: Callable[[nn.Module, ImageData, Path, Config], object]  # end of the run


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
    (see :mod:`vaelab.training.distributed`: global ``--batch-size``, rank 0 writes).
    """
    config = check_config(config)  # every value and name, before anything is read or created
    t = config.train
    report = t.report and drawings is not None
    with joined(t.device, t.deterministic) as world:
        out = run_folder(config, out, world)
        s = setup(config, out, world, resume=resume, overwrite=overwrite, data=data)
        if s is None:  # finished already (setup said so)
            return out
        stop = runfs.StopRequest(enabled=not world.distributed)  # Ctrl-C: at a step boundary
        watch = CollapseWatch(config, enabled=world.is_main and s.model.has_posterior)
        with stop.armed(), tracked(s) as tracker:  # status.json and --track (rank 0)
            for epoch in range(s.state.epoch, t.epochs):
                perm = epoch_permutation(len(s.train_x), t.seed, epoch, world.device)
                tally = Tally.start(s)
                bar, readout = progress_bar(s, epoch), LossReadout(world.device)
                for b in bar:
                    step = train_step(s, *s.batch(perm, b))
                    tally.add(step)
                    tracker.step(s, step)
                    if (
                        not bar.disable
                        and b % 20 == 0
                        and (shown := readout(step.loss)) is not None
                    ):
                        bar.set_postfix(loss=f"{shown:.2f}")  # no host sync (LossReadout)
                    due = bool(t.checkpoint_every) and s.state.step % t.checkpoint_every == 0
                    if (due or stop.requested) and b + 1 < s.steps_per_epoch:  # else: epoch's end
                        save_mid_epoch(s, epoch, b, tally)  # once, when a Ctrl-C lands on one too
                        if stop.requested:
                            raise stop.interrupted(out, s.state, s.steps_per_epoch, t.epochs)
                row = end_of_epoch(s, epoch, tally, drawings if report else None)
                watch.see(row)
                tracker.epoch(s, row)
                if stop.requested and epoch + 1 < t.epochs:
                    raise stop.interrupted(out, s.state, s.steps_per_epoch, t.epochs)
        # Trained: a Ctrl-C from here on stops at once (the checkpoint is final).
        if t.epochs == 0:  # a new run of no epochs: its checkpoint holds the initial weights
            save(s)
        if report:
            pictures = partial(drawings.pictures, s.eval_model, s.data, out, config)
            world.on_main(pictures, "drawing the run's pictures")
    return out


@dataclass
class StepStats:
    """What :func:`train_step` did: ``applied`` (False: skipped for ``skip_reason``,
    "non-finite" or "grad-norm"), the loss (0-d, detached, on the device: reading it is a
    host sync) and the objective's stats (0-d tensors: bound, recon, kl, ...)."""

    applied: bool
    loss: torch.Tensor
    stats: dict[str, torch.Tensor]
    skip_reason: str = ""


def train_step(
    s: Session, x: torch.Tensor, y: torch.Tensor | None = None, scale: float = 1.0
) -> StepStats:
    """One training step on this rank's batch ``x`` (B, C, H, W) in [0, 1] (labels ``y``
    (B,) for models with ``uses_labels``; ``scale``: an uneven DDP shard's loss weight).
    The only place a batch updates the model:

    lr = lr_at(step) and beta = beta_at(step); forward, objective, backward, the finite
    check and --skip-threshold, --clip-grad, the optimizer step (:class:`Stepper`, under
    DDP/autocast/compile); the weight average (--ema); the step and skip counters; and the
    stop after --max-bad-steps skipped steps in a row (the same decision on every rank).
    """
    config, state = s.config, s.state
    lr = lr_at(config, state.step, s.steps_per_epoch)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    beta = beta_at(config, state.step, s.steps_per_epoch)
    applied, loss, stats = s.stepper(x, beta, y, scale)
    state.step += 1
    if applied:
        state.bad_steps = 0
        if s.ema:
            s.ema.update()
        return StepStats(True, loss.detach(), stats)
    reason = s.stepper.skip_reason
    state.bad_steps += 1
    state.skipped_steps += 1
    state.skipped_grad_norm += reason == "grad-norm"
    if state.bad_steps >= config.train.max_bad_steps:
        why = (
            "a gradient norm above --skip-threshold"
            if reason == "grad-norm"
            else "a non-finite loss or gradient"
        )
        last = f"; the last good checkpoint is {s.out / CHECKPOINT}" if s.out else ""
        raise VaelabError(
            f"training stopped at step {state.step}: {state.bad_steps} consecutive steps "
            f"with {why} (--max-bad-steps){last}"
        )
    return StepStats(False, loss.detach(), stats, reason)


@dataclass
class Tally:
    """One epoch's sums of loss, bound, recon and KL over its applied steps, kept on the
    device (no host sync per step); ``first``: the batch the epoch (re)started at. A
    mid-epoch checkpoint carries them (and the Stepper's gradient-norm sums) in the training
    state, so the metrics row of a resumed epoch is that of an uninterrupted one."""

    first: int
    sums: torch.Tensor  # (4,)
    counted: int = 0
    t0: float = field(default_factory=time.perf_counter)
    # The objective's other stats (beta-TCVAE's mi/tc/dim_kl, FactorVAE's disc_loss, ...),
    # summed likewise; they become metrics.jsonl's train_<name> columns.
    more: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def start(cls, s: Session) -> Tally:
        """The tally of the epoch ``s`` is at: empty, or as a mid-epoch checkpoint left it
        (rank 0 holds the sum over ranks that was saved)."""
        saved = s.state.extra.pop(TALLY, None)
        tally = cls(s.state.batch, torch.zeros(4, device=s.world.device))
        if saved is not None and s.state.batch:
            if s.world.is_main:
                tally.sums += torch.tensor(saved["sums"][:4], device=tally.sums.device)
                tally.counted = int(saved["sums"][4])
                for i, key in enumerate(saved.get("more", [])):
                    tally.more[key] = torch.tensor(saved["sums"][5 + i], device=tally.sums.device)
            s.stepper.norms.copy_(torch.tensor(saved["grad_norms"]))
        return tally

    def add(self, step: StepStats) -> None:
        if step.applied:
            self.counted += 1
            stats = step.stats
            self.sums += torch.stack([step.loss, stats["bound"], stats["recon"], stats["kl"]])
            for key, value in stats.items():
                if key not in BASE_STATS:
                    self.more[key] = self.more.get(key, 0.0) + value.float()

    def total(self, s: Session) -> torch.Tensor:
        """loss, bound, recon, kl, applied steps, then the other stats in ``sorted(more)``
        order, summed over every rank (collective)."""
        more = [self.more[k].reshape(1) for k in sorted(self.more)]
        counted = self.sums.new_tensor([self.counted])
        return s.world.all_sum(torch.cat([self.sums, counted, *more]))


BASE_STATS = ("bound", "recon", "kl")  # every objective's stats: train_bound etc.


def save_mid_epoch(s: Session, epoch: int, b: int, tally: Tally) -> None:
    """A checkpoint at the boundary after batch ``b`` of ``epoch`` (--checkpoint-every, or
    Ctrl-C), with the epoch's tally so far (collective: every rank calls it)."""
    s.state.epoch, s.state.batch = epoch, b + 1
    s.state.extra[TALLY] = {"sums": tally.total(s).tolist(), "grad_norms": s.stepper.norms.tolist(),
                            "more": sorted(tally.more)}  # fmt: skip
    save(s)
    del s.state.extra[TALLY]


def progress_bar(s: Session, epoch: int) -> tqdm:
    """The batches left in ``epoch``, with a live bar on rank 0 at a terminal."""
    show = s.config.train.progress and s.world.is_main and sys.stderr.isatty()
    return tqdm(
        range(s.state.batch, s.steps_per_epoch), desc=f"epoch {epoch + 1}/{s.config.train.epochs}",
        disable=not show, leave=False, dynamic_ncols=True,
    )  # fmt: skip


def end_of_epoch(
    s: Session, epoch: int, tally: Tally, drawings: Drawings | None = None
) -> dict[str, Any]:
    """After epoch ``epoch`` (0-based): the training means over every rank's applied steps,
    the test bound of the evaluated model, one metrics.jsonl row (lr and beta: the values
    the next step takes), the curves (``drawings``, at most every CURVES_EVERY s), a line on
    the terminal, and the checkpoint. Returns the row."""
    t, world = s.config.train, s.world
    seconds = time.perf_counter() - tally.t0
    sums = tally.total(s)
    train = (sums[:4] / sums[4].clamp(min=1)).tolist()
    more = dict(zip(sorted(tally.more), (sums[5:] / sums[4].clamp(min=1)).tolist(), strict=True))
    test = world.test_bound(s.eval_model, s.test_x, t.eval_samples)
    images = min(len(s.train_x), s.steps_per_epoch * t.batch_size) - tally.first * t.batch_size
    row = {
        "epoch": epoch + 1, "step": s.state.step,
        "lr": lr_at(s.config, s.state.step, s.steps_per_epoch),
        "beta": beta_at(s.config, s.state.step, s.steps_per_epoch),
        "train_loss": train[0], "train_bound": train[1], "train_recon": train[2],
        "train_kl": train[3], "test_elbo": test["elbo"], "test_recon": test["recon"],
        "test_kl": test["kl"], "seconds": seconds, "images_per_s": images / seconds,
        "skipped_steps": s.state.skipped_steps, "skipped_grad_norm": s.state.skipped_grad_norm,
    }  # fmt: skip
    row.update({f"train_{k}": v for k, v in more.items()})  # the objective's own terms
    row.update(s.model.epoch_stats())  # a VQ-VAE's codebook usage and perplexity
    norms = s.stepper.norms
    if norms[2] > 0:  # measured with --clip-grad or --skip-threshold
        total, top, count = norms.tolist()
        row.update(grad_norm_mean=total / count, grad_norm_max=top)
        norms.zero_()
    world.on_main(partial(runfs.append_metrics, s.out, row), "writing metrics.jsonl")
    if drawings is not None:  # to watch a running job; at most every 30 s: a redraw costs
        # ~0.3 s, 7% of a 4 s reference epoch (cProfile), so drawing every epoch was most of
        # the per-epoch overhead. The end of the run draws the final curves.
        curves = partial(drawings.curves, s.out, CURVES_EVERY)
        world.on_main(curves, "drawing training_curves.png")
    if t.progress and world.is_main:
        tqdm.write(
            f"epoch {epoch + 1}: train loss {train[0]:.2f}  test ELBO {test['elbo']:.2f} "
            f"(recon {test['recon']:.2f}, KL {test['kl']:.2f}){_bits(s, test['elbo'])}  "
            f"{seconds:.1f}s"
            + "".join(f"  {k} {v:.3g}" for k, v in more.items())
            + (
                f"  codes used {row['codes_used']}, perplexity {row['code_perplexity']:.1f}"
                if "codes_used" in row
                else ""
            )
        )
    s.state.epoch, s.state.batch = epoch + 1, 0
    save(s)
    return row


def _bits(s: Session, elbo: float) -> str:
    """``", -ELBO 4.96 bits/dim"`` where bits/dim is -log P(x) of the data as stored (8-bit
    likelihoods, binarized Bernoulli: see likelihoods.nll_meaning), else ``""``."""
    cfg = s.config
    if not nll_meaning(cfg.model.likelihood, cfg.data.binarize)["bits_per_dim_comparable"]:
        return ""
    return f", -ELBO {-elbo / (math.prod(s.data.image_shape) * math.log(2)):.3f} bits/dim"
