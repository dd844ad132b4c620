"""One checkpoint file per run, written atomically, loaded without unpickling.

``checkpoint.safetensors`` holds every tensor (``model/*``; ``objective/*``, the training
objective's state, e.g. a gradient estimator's baseline; ``optim/<i>/<key>``; ``rng/*``)
and, in the safetensors header's string metadata, one JSON document with
the step, epoch, position in the epoch, config, optimizer hyper-parameters and a
sha256 of all tensor bytes and of that JSON document (no scheduler state: the learning
rate is a function of the step, :func:`vaelab.training.schedule.lr_at`). Writing
goes to a temporary file in the same folder, is fsync'ed, then renamed over the old
one: a crash (even ``kill -9``) or a full disk leaves the previous checkpoint intact,
and a left-over temporary file is never read. Loading parses only the safetensors
format and JSON (never pickle) and checks the sha256, so a modified, truncated or
foreign file is refused with a :class:`VaelabError` rather than silently used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaelab.errors import VaelabError

CHECKPOINT = "checkpoint.safetensors"
FORMAT = 2  # 2: the sha256 also covers the JSON metadata
TEMP_PREFIX = f".{CHECKPOINT}.tmp-"
# Checkpoints written while the gradient estimator was a submodule of the model hold its
# state as model/estimator.*; it is the objective's now (objective/estimator.*).
LEGACY_ESTIMATOR = "estimator."


@dataclass
class TrainState:
    """Where training is: the next (epoch, batch) to run and the counters so far."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    bad_steps: int = 0
    skipped_steps: int = 0
    skipped_grad_norm: int = 0  # steps skipped by --skip-threshold (also in skipped_steps)
    best_test_elbo: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """sha256 of the tensors and of the metadata (all of it but the digest itself)."""
    h = hashlib.sha256(tensor_digest(tensors).encode())
    body = {k: v for k, v in meta.items() if k != "sha256"}
    h.update(json.dumps(body, sort_keys=True).encode())
    return h.hexdigest()


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files left by a writer that was killed mid-write."""
    removed = []
    for tmp in Path(folder).glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsync'ed temp file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # never matches a load path
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise VaelabError(
            f"cannot write {path} ({exc.strerror or exc}); the previous file is intact"
        ) from None
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: TrainState,
    info: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    objective: torch.nn.Module | None = None,
    *,
    device: torch.device | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write model, objective, optimizer, RNG and progress to ``path`` atomically.

    ``info`` carries what loading needs besides weights: the config, image shape,
    class names, dataset name. ``extra_tensors`` are stored as they are (under
    torchrun: the RNG states of ranks 1..N-1, ``rng/torch/<rank>``). ``device``: the
    training device, whose CUDA generator state is saved (``rng/cuda``); ``scaler``: the
    fp16 loss scaler, whose scale and growth counter go into the JSON (``scaler``), so a
    resumed fp16 run takes the steps the uninterrupted one would.
    """
    tensors = {f"model/{k}": v.detach() for k, v in model.state_dict().items()}
    if objective is not None:
        tensors.update({f"objective/{k}": v.detach() for k, v in objective.state_dict().items()})
    optim_meta = None
    if optimizer is not None:
        opt_tensors, optim_meta = _optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    if device is not None and device.type == "cuda":
        # The training device's generator: without a device, get_rng_state reads the
        # current device, which is cuda:0 for --device cuda:1 outside torchrun.
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors.update(extra_tensors or {})
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "state": asdict(state),
        "info": info,
        "optimizer": optim_meta,
        "scheduler": None,  # read by vaelab before lr_at; checkpoints it wrote still load
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    meta["sha256"] = checkpoint_digest(tensors, meta)
    data = st_save(tensors, metadata={"vaelab": json.dumps(meta)})
    atomic_write_bytes(Path(path), data)


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def state(self) -> TrainState:
        return TrainState(**self.meta["state"])

    @property
    def info(self) -> dict[str, Any]:
        return self.meta["info"]

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's state dict (an old checkpoint's ``model/estimator.*`` left out)."""
        return drop_legacy(
            {k[len("model/") :]: v for k, v in self.tensors.items() if k.startswith("model/")}
        )

    def objective_state(self) -> dict[str, torch.Tensor]:
        """The training objective's state dict: ``objective/*``, or in a checkpoint written
        before the estimator moved out of the model, its ``model/estimator.*`` tensors."""
        state = {k[len("objective/") :]: v for k, v in self.tensors.items()
                 if k.startswith("objective/")}  # fmt: skip
        legacy = "model/" + LEGACY_ESTIMATOR
        old = {k[len("model/") :]: v for k, v in self.tensors.items() if k.startswith(legacy)}
        return state or old

    def restore_training(
        self,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        rank: int = 0,
    ) -> None:
        """Load optimizer state and this rank's RNG, so the next step is exact. (An older
        checkpoint's scheduler state is not needed: the learning rate is ``lr_at(step)``.)"""
        if self.meta["optimizer"] is not None:
            opt = _optimizer_state(self.tensors, self.meta["optimizer"])
            optimizer.load_state_dict(opt)
        suffix = f"/{rank}" if rank else ""
        if rank and f"rng/torch{suffix}" not in self.tensors:
            # Saved by fewer processes: this rank's noise stream cannot be the old one.
            warnings.warn(
                f"checkpoint has no RNG state for rank {rank}; resuming with a fresh seed "
                "(not bit-exact: resume with the world size the run was saved with)",
                stacklevel=2,
            )
            torch.manual_seed(1_000_003 * (self.state.step + 1) + rank)
            return
        torch.set_rng_state(self.tensors[f"rng/torch{suffix}"])
        if f"rng/cuda{suffix}" in self.tensors and device.type == "cuda":
            torch.cuda.set_rng_state(self.tensors[f"rng/cuda{suffix}"], device)

    def restore_scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        """The fp16 loss scaler as saved (its scale and growth counter); a checkpoint
        written without one (fp32/bf16, or an older vaelab) leaves ``scaler`` at its start."""
        if scaler is not None and self.meta.get("scaler"):
            scaler.load_state_dict(self.meta["scaler"])


def drop_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state dict without the estimator tensors old checkpoints kept in the model."""
    return {k: v for k, v in state.items() if not k.startswith(LEGACY_ESTIMATOR)}


def apply_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """On resume: train on with this command's ``lr`` and ``weight_decay`` (the optimizer
    state restored from the checkpoint carries the old ones) as if the run had been started
    with them. The training step then sets each step's rate, ``lr_at(config, step, E)``, from
    the new --lr, --epochs and --schedule; an unchanged config resumes bit for bit."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; any damage is a :class:`VaelabError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise VaelabError(f"{path}: no checkpoint (expected {CHECKPOINT} written by vaelab train)")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        # The header is 8 bytes of little-endian length, then JSON with our metadata.
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["vaelab"])
    except Exception as exc:  # any parse failure of a damaged/foreign file
        kind = type(exc).__name__
        raise VaelabError(
            f"{path}: not a readable vaelab checkpoint (truncated, corrupted or not "
            f"safetensors: {kind}); nothing was unpickled"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise VaelabError(
            f"{path}: unsupported checkpoint format {found!r} (this vaelab reads {FORMAT})"
        )
    if checkpoint_digest(tensors, meta) != meta.get("sha256"):
        raise VaelabError(
            f"{path}: checksum mismatch (sha256 recorded at write time); the file was "
            "modified after it was written, refusing to load it"
        )
    return Checkpoint(tensors, meta)
