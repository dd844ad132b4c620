"""An evaluation that survives Ctrl-C, a kill or a full disk: its partial sums on disk.

The importance-sampled NLL (hours for the deep model on Fashion-MNIST) is a sum over
batches of images, each batch independent given the random state at its start. After
every batch :class:`Progress` holds what is done: the test bound, the per-image
log p(x) of the finished batches and the random state (CPU, and CUDA where the model is)
at the boundary; every ``every`` seconds, at Ctrl-C and when the NLL is done it writes
them to RUN/evaluation.partial.safetensors (safetensors tensors + a JSON header, written
to a temp file, fsync'ed and renamed: a kill mid-write leaves the previous file whole;
nothing is pickled). ``vaelab evaluate RUN --resume`` reloads them, restores the random
state and goes on with the next batch, so it prints the number an uninterrupted run with
the same seed prints, bit for bit. The file records the settings that decide the numbers
(K, the images, the batch and chunk sizes, the seed, the checkpoint); a resume under other
settings is refused, naming them. The file is removed once the evaluation is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaelab.errors import Interrupted, VaelabError
from vaelab.training.checkpoint import CHECKPOINT, atomic_write_bytes

PARTIAL = "evaluation.partial.safetensors"
_KEY = "vaelab_partial_evaluation"


def _random_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_random_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], device)


def run_identity(folder: Path) -> str:
    """Which trained weights: the checkpoint's size and modification time (a resumed
    training run rewrites it, and its evaluation must then start over)."""
    path = Path(folder) / CHECKPOINT
    try:
        st = path.stat()
    except OSError:
        return "no checkpoint"
    return f"{st.st_size}-{st.st_mtime_ns}"


class Progress:
    """The state of one evaluation's long reduction; see the module docstring.

    ``settings`` (JSON-able) must match for a resume; ``device`` is where the model runs.
    """

    def __init__(
        self, path: Path, settings: dict[str, Any], device: torch.device, every: float = 60.0
    ) -> None:
        self.path, self.settings, self.device, self.every = Path(path), settings, device, every
        self.bound: dict[str, float] | None = None
        self.log_px: list[torch.Tensor] = []  # per finished batch, float64
        self.nll_done = False
        self.random: dict[str, torch.Tensor] = {}
        self._saved_at = time.monotonic()

    @property
    def images_done(self) -> int:
        return sum(len(t) for t in self.log_px)

    @classmethod
    def start(
        cls, folder: Path, settings: dict[str, Any], device: torch.device, resume: bool,
        every: float = 60.0,
    ) -> tuple[Progress, str | None]:  # fmt: skip
        """A fresh or (``resume``) reloaded Progress for run ``folder``, and a note to print
        (None: nothing to say). Refuses, before any work, a partial file left by an earlier
        run when not resuming (it would be lost), and a resume under other settings."""
        settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
        progress = cls(Path(folder) / PARTIAL, settings, device, every)
        path = progress.path
        if not path.is_file():
            note = f"--resume: {folder} holds no interrupted evaluation; starting it" if (
                resume) else None  # fmt: skip
            return progress, note
        header, tensors = _read(path)
        done = sum(len(t) for k, t in tensors.items() if k.startswith("log_px_"))
        if not resume:
            raise VaelabError(
                f"{path}: an interrupted evaluation ({done} of {header['settings']['images']} "
                "images done) is there; pass --resume to continue it, or delete the file to "
                "start over"
            )
        old = header["settings"]
        differ = [k for k in settings if old.get(k) != settings[k]]
        if differ:
            was = ", ".join(f"{k} {old.get(k)!r}" for k in differ)
            now = ", ".join(f"{k} {settings[k]!r}" for k in differ)
            raise VaelabError(
                f"--resume: {path} was started with {was}; this command has {now}: repeat "
                "the first command's options, or delete the file to start over"
            )
        progress.bound = header["bound"]
        progress.nll_done = header["nll_done"]
        batches = sorted((k for k in tensors if k.startswith("log_px_")), key=lambda k: int(k[7:]))
        progress.log_px = [tensors[k] for k in batches]
        progress.random = {k: v for k, v in tensors.items() if k.startswith("rng_")}
        what = "the NLL is done" if progress.nll_done else (
            f"{progress.images_done} of {settings['images']} images done")  # fmt: skip
        return progress, f"resuming the evaluation in {path} ({what})"

    def restore_random(self) -> None:
        """Put the random state back where the saved work stopped."""
        if self.random:
            _set_random_state(self.random, self.device)

    def bound_done(self, bound: dict[str, float]) -> None:
        self.bound = bound
        self.random = _random_state(self.device)

    def batch_done(self, log_px: torch.Tensor) -> None:
        """One more batch of per-image log p(x); written out when ``every`` seconds passed."""
        self.log_px.append(log_px.double().cpu())
        self.random = _random_state(self.device)
        if time.monotonic() - self._saved_at >= self.every:
            self.save()

    def nll_finished(self) -> None:
        self.nll_done = True
        self.save()

    def save(self) -> None:
        """Write the state atomically (nothing before the test bound is done)."""
        if self.bound is None:
            return
        tensors = {f"log_px_{i}": t.contiguous() for i, t in enumerate(self.log_px)}
        tensors.update({k: v.contiguous() for k, v in self.random.items()})
        header = {"settings": self.settings, "bound": self.bound, "nll_done": self.nll_done}
        atomic_write_bytes(self.path, st_save(tensors, metadata={_KEY: json.dumps(header)}))
        self._saved_at = time.monotonic()

    def remove(self) -> None:
        """The evaluation is written: the partial state is no longer needed."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and tensors of a partial file, or one line saying it is damaged."""
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + length]).get("__metadata__", {})
        header = json.loads(metadata[_KEY])
        header["settings"]["images"]  # a KeyError here: not our file
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise VaelabError(
            f"{path}: not a readable partial evaluation ({type(exc).__name__}); delete it to "
            "start the evaluation over"
        ) from None
    return header, tensors


def resume_command(folder: Path, settings: dict[str, Any]) -> str:
    """The ``vaelab evaluate ... --resume`` line that repeats the interrupted command."""
    s, parts = settings, ["vaelab evaluate", str(folder), f"--samples {settings['samples']}"]
    if s["limit"] is not None:
        parts.append(f"--limit {s['limit']}")
    if s["seed"] is not None:
        parts.append(f"--seed {s['seed']}")
    if s["device"] != "cpu":
        parts.append(f"--device {s['device']}")
    if not s["quality"]:
        parts.append("--no-quality")
    else:
        parts += [f"--sampler {name}" for name in s["samplers"] if s["samplers"] != ["prior"]]
        if s["components"] != 10:
            parts.append(f"--components {s['components']}")
        if s["quality_samples"] != 5000:
            parts.append(f"--quality-samples {s['quality_samples']}")
    return " ".join([*parts, "--resume"])


def interrupted(
    progress: Progress | None, folder: Path | None, settings: dict[str, Any]
) -> Interrupted:
    """Ctrl-C during an evaluation: save what is done and say how to go on (an
    :class:`~vaelab.errors.Interrupted` for the caller to raise)."""
    if progress is None or progress.bound is None:
        return Interrupted(
            "interrupted before the first results were saved: run the same command again",
            folder, None,
        )  # fmt: skip
    progress.save()
    what = "after the NLL" if progress.nll_done else (
        f"after {progress.images_done} of {settings['images']} images of the NLL")  # fmt: skip
    return Interrupted(
        f"interrupted {what}; {progress.path} holds them", folder,
        resume_command(folder, settings),
    )  # fmt: skip
