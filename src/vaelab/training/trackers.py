"""Experiment trackers (``--track tensorboard,mlflow``): where a run's numbers and pictures
are sent besides its own folder. Each is one class in :data:`TRACKERS`; the fan-out, the
fault tolerance (a tracker that raises is dropped with a warning) and the rank-0 rule are
:mod:`vaelab.training.tracking`'s.

A tracker gets, all on rank 0 and all read-only:

    start(config, out)            the resolved config (a dict) and the run folder
    scalars(values, step)         {name: float} at a global step (per step and per epoch)
    images(grids, step)           {name: uint8 (H, W, C) array} at a global step
    finish(out, status)           the run ended ("finished", "interrupted", "failed")

Both backends are optional packages: :func:`check_trackers` refuses a name whose package
is missing, naming the extra to install, before any work.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.errors import VaelabError, unknown_name


class TensorBoardTracker:
    """Event files in ``RUN/tensorboard/`` (``tensorboard --logdir RUN`` or a folder of runs),
    through ``torch.utils.tensorboard.SummaryWriter`` (which needs the ``tensorboard``
    package for its protobufs): scalars, image grids, and the config as text."""

    package = "tensorboard"
    folder = "tensorboard"

    def start(self, config: dict[str, Any], out: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # optional extra

        self.writer = SummaryWriter(log_dir=str(Path(out) / self.folder))
        text = json.dumps(config, indent=2)
        # TensorBoard renders text as Markdown: indent four spaces for a code block.
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def images(self, grids: dict[str, np.ndarray], step: int) -> None:
        for name, image in grids.items():
            self.writer.add_image(name, image, step, dataformats="HWC")
        self.writer.flush()

    def finish(self, out: Path, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


class MlflowTracker:
    """One MLflow run per vaelab run, in the store of ``MLFLOW_TRACKING_URI`` or else
    ``./mlruns`` (a local file store; MLflow 3 keeps it in maintenance mode behind
    ``MLFLOW_ALLOW_FILE_STORE``, which is set for it). Params: the flat config (strings as
    they are, other values as JSON); metrics: the scalars; images: PNGs per step; when
    training ends, the run folder as artifacts (checkpoint, metrics.jsonl, config; the
    end-of-run pictures are drawn after it). The MLflow run is named after the folder."""

    package = "mlflow"

    def start(self, config: dict[str, Any], out: Path) -> None:
        import mlflow  # optional extra

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri(Path("mlruns").resolve().as_uri())
        self.client = mlflow.tracking.MlflowClient()
        name = "vaelab"
        experiment = self.client.get_experiment_by_name(name)
        eid = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(eid, run_name=Path(out).name).info.run_id
        flat = {k: v for section in config.values() for k, v in section.items()}
        text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}
        params = [mlflow.entities.Param(k, v) for k, v in text.items()]
        params.append(mlflow.entities.Param("run_folder", str(Path(out).resolve())))
        self.client.log_batch(self.run_id, params=params)

    def scalars(self, values: dict[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [
            self.mlflow.entities.Metric(k.replace("/", "_"), float(v), now, step)
            for k, v in values.items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def images(self, grids: dict[str, np.ndarray], step: int) -> None:
        for name, image in grids.items():
            self.client.log_image(self.run_id, image, f"{name}/step-{step:07d}.png")

    def finish(self, out: Path, status: str) -> None:
        self.client.log_artifacts(self.run_id, str(out), "run")
        state = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, state)


# name -> tracker class (--track); the extra that installs each is vaelab[NAME]
TRACKERS: dict[str, type] = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


def check_trackers(names: tuple[str, ...]) -> None:
    """Every ``--track`` name known and its package importable, before any work: a missing
    one is one line naming the extra (``pip install 'vaelab[mlflow]'``)."""
    for name in names:
        if name not in TRACKERS:
            raise unknown_name("--track", name, TRACKERS)
        package = TRACKERS[name].package
        if importlib.util.find_spec(package) is None:
            raise VaelabError(
                f"--track {name}: the {package} package is not installed; "
                f"pip install 'vaelab[{name}]'"
            )
    if len(set(names)) != len(names):
        raise VaelabError(f"--track: a tracker named twice in {','.join(names)}")
