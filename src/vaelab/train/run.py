"""The run folder: what a training run writes, and how a later command finds it.

    RUN/config.yaml              the resolved config (every option, defaults included)
    RUN/run.json                 dataset name, image shape, class names
    RUN/metrics.jsonl            one JSON line per epoch
    RUN/checkpoint.safetensors   weights + optimizer + RNG + progress (see checkpoint.py)
    RUN/samples.png, RUN/reconstructions.png
    RUN/training_curves.png      redrawn each epoch; RUN/report.html at the end (vaelab.report)

A new run refuses an existing non-empty folder unless told ``overwrite``; ``resume``
requires a checkpoint there.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from vaelab.errors import VaelabError
from vaelab.train.checkpoint import CHECKPOINT

CONFIG, INFO, METRICS = "config.yaml", "run.json", "metrics.jsonl"


def default_run_dir(dataset: str, model: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(dataset).name if "/" in dataset else dataset
    return Path("runs") / f"{stamp}-{name}-{model}"


def prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """Check the folder against the request and create it; never clobber silently."""
    if resume and overwrite:
        raise VaelabError("--resume and --overwrite contradict each other; pass one")
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise VaelabError(f"--resume: {out} has no {CHECKPOINT} to resume from")
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
