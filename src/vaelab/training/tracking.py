"""What the loop tells the outside world while it trains: the run's status file and the
experiment trackers of ``--track`` (:mod:`vaelab.training.trackers`).

``fit`` opens one :class:`Tracking` around its epoch loop (``with tracked(s) as tracker``)
and calls ``tracker.step(s, step)`` after each step and ``tracker.epoch(s, row)`` after
each epoch. On rank 0 only (under torchrun the other ranks get a no-op):

- ``RUN/status.json``: ``running`` (with the process id and host) while training, then
  ``finished``, ``interrupted`` (Ctrl-C) or ``failed`` (with the error): what
  ``vaelab runs`` reports. A run killed outright stays ``running`` with a dead process id,
  which ``vaelab runs`` reports as interrupted.
- Trackers: per-step scalars every ``--track-every`` steps (loss, bound, recon, KL, lr, β,
  gradient norm, skipped steps), the epoch's metrics row, and a grid of samples (a fixed
  z) and of reconstructions (the first test images) each epoch.

Tracking never changes the training: every value is read, not written; the pictures are
drawn under ``torch.random.fork_rng`` (the global RNG comes back as it was, so the next
batch's noise and the checkpoint's RNG state are unchanged) and the model is put back in
training mode. A tracker that raises (disk full, server gone) is dropped with one warning;
the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaelab.data.prepare import to_unit
from vaelab.errors import Interrupted
from vaelab.training.schedule import beta_at
from vaelab.training.trackers import TRACKERS

if TYPE_CHECKING:
    from vaelab.training.loop import StepStats
    from vaelab.training.session import Session

STATUS = "status.json"
GRID_IMAGES = 64  # samples and (input, reconstruction) pairs per tracked grid


def write_status(out: Path, status: str, **fields: Any) -> None:
    """``RUN/status.json``: ``{"status": ..., "pid": ..., "host": ..., ...}``, replaced
    atomically (a reader never sees half a file)."""
    doc = {"status": status, "pid": os.getpid(), "host": socket.gethostname(), **fields}
    tmp = out / f".{STATUS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, out / STATUS)


def tile(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """``(N, C, H, W)`` floats in [0, 1] as one uint8 ``(H', W', 3)`` grid, ``nrow`` per
    row (None: ceil(sqrt(N))), one pixel of white between tiles."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    x = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    x = x.expand(n, 3, h, w) if c == 1 else x[:, :3]
    grid = torch.full((3, rows * (h + 1) + 1, nrow * (w + 1) + 1), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[
            :, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w
        ] = x[i]
    return grid.permute(1, 2, 0).numpy()


@torch.no_grad()
def pictures(s: Session) -> dict[str, np.ndarray]:
    """Samples (z from a fixed seed) and test images above their reconstructions, as
    uint8 grids, drawn by the evaluated model without touching the training's RNG."""
    model, grids = s.eval_model, {}
    was_training = model.training
    devices = [s.world.device] if s.world.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(s.config.train.seed)
        model.eval()
        try:
            if model.has_prior:
                grids["samples"] = tile(model.sample(GRID_IMAGES))
            x = to_unit(s.test_x[: GRID_IMAGES // 2])
            pairs = torch.cat([x.cpu(), model.reconstruct(x).cpu()])
            grids["reconstructions"] = tile(pairs, nrow=len(x) // 2 or 1)
        finally:
            model.train(was_training)
    return grids


def _earlier_wall_seconds(out: Path) -> float:
    """The wall time of the run's earlier sessions (0 for a new run)."""
    try:
        old = json.loads((out / STATUS).read_text())
        return float(old.get("wall_seconds", 0.0)) if old.get("status") != "running" else 0.0
    except (OSError, ValueError, AttributeError, TypeError):
        return 0.0


class Tracking:
    """The trackers of one run on rank 0 (none elsewhere) and its status file. Every call
    to a tracker goes through :meth:`_each`, which drops a tracker that raises."""

    def __init__(self, s: Session, active: bool) -> None:
        self.active = active and s.out is not None
        self.every = s.config.train.track_every
        self.out = s.out
        self.norms = (0.0, 0.0)  # the Stepper's gradient-norm sum and count at the last report
        names = s.config.train.track if self.active else ()
        self.trackers = {name: TRACKERS[name]() for name in names}
        self.started, self.before = time.time(), 0.0
        if self.active:  # wall time: this session's plus the earlier ones' (resumed runs)
            self.before = _earlier_wall_seconds(self.out)
            write_status(self.out, "running", started=self.started, wall_seconds=self.before)
            self._each("start", s.config.to_dict(), self.out)

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # a tracker must never cost the run
                del self.trackers[name]
                warnings.warn(
                    f"--track {name}: {method} failed ({type(exc).__name__}: {exc}); "
                    "training goes on without it",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def step(self, s: Session, step: StepStats) -> None:
        """After a step: every ``--track-every`` steps, the step's scalars."""
        if not self.trackers or not self.every or s.state.step % self.every:
            return
        values = {"step/loss": step.loss, **{f"step/{k}": v for k, v in step.stats.items()}}
        values = {k: float(v) for k, v in values.items() if torch.is_tensor(v) and v.numel() == 1}
        # The Stepper measures gradient norms with --clip-grad or --skip-threshold (as
        # metrics.jsonl's grad_norm_mean): the mean over the steps since the last report.
        total, _, count = s.stepper.norms.tolist()
        seen, before = (total, count), self.norms if count >= self.norms[1] else (0.0, 0.0)
        if count > before[1]:
            values["step/grad_norm"] = (total - before[0]) / (count - before[1])
        self.norms = seen
        values["step/lr"] = float(s.optimizer.param_groups[0]["lr"])
        values["step/beta"] = beta_at(s.config, s.state.step - 1, s.steps_per_epoch)
        values["step/skipped_steps"] = float(s.state.skipped_steps)
        values["step/applied"] = float(step.applied)
        self._each("scalars", values, s.state.step)

    def epoch(self, s: Session, row: dict[str, Any]) -> None:
        """After an epoch: its metrics.jsonl row as ``epoch/NAME`` scalars, and the
        pictures."""
        if not self.trackers:
            return
        values = {f"epoch/{k}": float(v) for k, v in row.items() if k not in ("step", "epoch")}
        self._each("scalars", values, s.state.step)
        try:
            grids = pictures(s)
        except Exception as exc:  # e.g. a model without sample(): numbers only
            warnings.warn(f"--track: no pictures ({exc})", RuntimeWarning, stacklevel=2)
            grids = {}
        if grids:
            self._each("images", grids, s.state.step)

    def close(self, exc: BaseException | None) -> None:
        if not self.active:
            return
        if exc is None:
            status, extra = "finished", {}
        elif isinstance(exc, Interrupted | KeyboardInterrupt):
            status, extra = "interrupted", {}
        else:
            status, extra = "failed", {"error": f"{type(exc).__name__}: {exc}"}
        wall = self.before + time.time() - self.started
        write_status(self.out, status, started=self.started, wall_seconds=wall, **extra)
        self._each("finish", self.out, status)


@contextmanager
def tracked(s: Session) -> Iterator[Tracking]:
    """:class:`Tracking` for the epoch loop of session ``s`` (rank 0 tracks), closed with
    the way the loop ended."""
    tracking = Tracking(s, s.world.is_main)
    try:
        yield tracking
    except BaseException as exc:
        tracking.close(exc)
        raise
    tracking.close(None)
