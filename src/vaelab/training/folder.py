"""The run folder: what a training run writes, and how a later command finds it.

    RUN/config.yaml              the resolved config (every option, defaults included)
    RUN/run.json                 dataset name, image shape, class names
    RUN/metrics.jsonl            one JSON line per epoch
    RUN/checkpoint.safetensors   weights + optimizer + RNG + progress (see checkpoint.py)
    RUN/samples.png, RUN/reconstructions.png
    RUN/training_curves.png      redrawn each epoch; RUN/report.html at the end (vaelab.report)

A new run refuses an existing non-empty folder unless told ``overwrite``. ``resume``
continues from the checkpoint there; without one (the job was killed before its first
checkpoint) it starts the run from scratch in that folder and says so, so a scheduler can
requeue one command; a folder that does not exist at all is refused (a typo in ``--out``
must not start a new run). A run that has done its epochs is left alone.
Ctrl-C during training stops at the next step boundary with a checkpoint there
(:class:`StopRequest`); before the folder exists it says that nothing was written
(:func:`interrupted_in_setup`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from vaelab.errors import Interrupted, VaelabError
from vaelab.training.checkpoint import CHECKPOINT, TEMP_PREFIX, TrainState

CONFIG, INFO, METRICS = "config.yaml", "run.json", "metrics.jsonl"


def default_run_dir(dataset: str, model: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(dataset).name if "/" in dataset else dataset
    return Path("runs") / f"{stamp}-{name}-{model}"


def check_resume_target(out: Path, resume: bool) -> None:
    """``--resume`` names a folder that exists (checked before any work is done)."""
    if resume and not Path(out).exists():
        raise VaelabError(
            f"--resume: {out} does not exist, so there is no run to continue; check --out, "
            "or drop --resume to start a new run there"
        )


def interrupted_in_setup(out: Path, resuming: bool) -> Interrupted:
    """Ctrl-C while the data is read and the model built, before training started: what is
    on disk and the command that continues (the same command when nothing was written)."""
    if resuming:
        return Interrupted(
            f"interrupted before training resumed; {out / CHECKPOINT} is unchanged", out
        )
    return Interrupted(
        "interrupted before training started (while reading the data and building the "
        "model); nothing was written: run the same command again",
        out,
        None,
    )


def prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """Check the folder against the request and create it; never clobber silently."""
    if resume and overwrite:
        raise VaelabError("--resume and --overwrite contradict each other; pass one")
    if resume:
        if not (out / CHECKPOINT).is_file():
            _start_over(out)
        return out
    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise VaelabError(
                f"--out {out}: run folder exists and is not empty; pass --resume to continue "
                "it or --overwrite to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


# What a run writes before its first checkpoint; --resume starts over only among these.
_BEFORE_FIRST_CHECKPOINT = (
    CONFIG,
    INFO,
    METRICS,
    "training_curves.png",
    "status.json",
    "tensorboard",
)


def can_resume(out: Path, resume: bool) -> bool:
    """``resume`` was asked and there is a checkpoint to resume from."""
    return resume and (Path(out) / CHECKPOINT).is_file()


def _start_over(out: Path) -> None:
    """--resume without a checkpoint: a new run in ``out``, if ``out`` holds nothing but
    what a run writes before its first checkpoint (never delete a user's files)."""
    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out {out}: exists and is not a folder")
    entries = list(out.iterdir()) if out.is_dir() else []
    foreign = [
        p.name for p in entries
        if p.name not in _BEFORE_FIRST_CHECKPOINT and not p.name.startswith(TEMP_PREFIX)
    ]  # fmt: skip
    if foreign:
        raise VaelabError(
            f"--resume: {out} has no {CHECKPOINT} and holds {foreign[0]!r}, which a vaelab "
            "run does not write before its first checkpoint; refusing to start a run there"
        )
    print(
        f"vaelab: {out} has no {CHECKPOINT} yet (stopped before its first checkpoint); "
        "starting the run from scratch",
        file=sys.stderr,
    )
    (out / METRICS).unlink(missing_ok=True)  # rows of the lost attempt
    out.mkdir(parents=True, exist_ok=True)


def finished(state: TrainState, epochs: int) -> bool:
    """The checkpoint has done all ``epochs`` (a resume would train nothing; a checkpoint
    inside an epoch past a lowered ``--epochs`` counts too)."""
    return state.epoch >= epochs


def say_finished(out: Path, state: TrainState) -> None:
    print(
        f"vaelab: the run in {out} is finished ({state.epoch} epochs, step {state.step}); "
        f"to train further: vaelab train --resume --out {out} --epochs N (N > {state.epoch})",
        file=sys.stderr,
    )


class StopRequest:
    """Ctrl-C during training: the first SIGINT only sets ``requested``; the loop then
    writes a checkpoint at the next step boundary (resume stays exact) and raises
    :meth:`interrupted`. A second Ctrl-C interrupts at once (the last checkpoint stays).
    Off under torchrun: ranks would see the signal at different steps, and the checkpoint
    is collective."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.requested, self._previous = enabled, False, None

    def arm(self) -> None:
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C stays as is.
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def disarm(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    @contextmanager
    def armed(self) -> Iterator[StopRequest]:
        """Armed for the duration of a ``with`` block (the epoch loop)."""
        self.arm()
        try:
            yield self
        finally:
            self.disarm()

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nvaelab: stopping after this step, with a checkpoint (Ctrl-C again: at once)",
            file=sys.stderr,
        )

    def interrupted(
        self, out: Path, state: TrainState, steps_per_epoch: int, epochs: int
    ) -> Interrupted:
        """Where training stopped; the checkpoint there is already written."""
        if state.batch:
            where = (
                f"in epoch {state.epoch + 1}/{epochs} after batch {state.batch} of "
                f"{steps_per_epoch}"
            )
        else:
            where = f"after epoch {state.epoch}/{epochs}"
        return Interrupted(
            f"interrupted {where} (step {state.step}); {out / CHECKPOINT} holds that step", out
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VaelabError(f"--device: unknown {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VaelabError(f"--device {name}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise VaelabError(f"--device: unsupported {name!r}; valid: auto, cpu, cuda, cuda:N")
    return device


# cuBLAS needs a fixed workspace for reproducible matmuls; read when its handle is created.
CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """``--deterministic``: inside the block, torch.use_deterministic_algorithms(True) (an op
    without a deterministic kernel raises instead of running), cuDNN deterministic with its
    autotuner off, and CUBLAS_WORKSPACE_CONFIG set (unless the user set it); all restored
    after. Costs speed on CUDA (no cuDNN autotuning, deterministic scatter/index kernels);
    a CPU run is deterministic already."""
    if not on:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]
        if before[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def write_info(out: Path, info: dict[str, Any]) -> None:
    (out / INFO).write_text(json.dumps(info, indent=2) + "\n")


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(out: Path, after_step: int) -> None:
    """Drop lines written after the checkpoint being resumed (a kill between the two)."""
    rows = [r for r in read_metrics(out) if r["step"] <= after_step]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (out / METRICS).write_text(text)


def append_metrics(out: Path, row: dict[str, Any]) -> None:
    with open(out / METRICS, "a") as fh:
        fh.write(json.dumps(row) + "\n")
