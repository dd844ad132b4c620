"""The learned prior over a VQ-VAE's codes: fitted on the frozen encoder's code grids of the
training images, saved beside the run as RUN/prior/prior.safetensors (weights, Adam's
state, the RNG) + RUN/prior/prior.json (options, epoch, per-epoch NLL), resumable.

    fit_prior(run, epochs=...)    maximise mean log p_prior(k(x)) over training images
    read_prior(run)               the trained :class:`~vaelab.nn.pixelcnn.GatedPixelCNN`, or None

The prior's NLL is reported in nats per code grid and per code (grid / (h*w)); with a
uniform prior it would be log K per code, so "per code" < log K is what the prior learned.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vaelab.data import dataset_for
from vaelab.data.prepare import eval_images, to_unit, train_images
from vaelab.errors import VaelabError, at_least
from vaelab.nn.pixelcnn import GatedPixelCNN
from vaelab.training.checkpoint import _optimizer_state, _optimizer_tensors
from vaelab.training.record import Run

PRIOR_DIR, WEIGHTS, META = "prior", "prior.safetensors", "prior.json"


@dataclass(frozen=True)
class PriorOptions:
    epochs: int = 20  # passes over the training code grids
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 64  # channels of the PixelCNN's stacks
    layers: int = 6  # gated layers
    kernel: int = 3  # kernel side of the masked convolutions
    seed: int = 0


def prior_dir(run: Run) -> Path:
    if run.folder is None:
        raise VaelabError("train-prior: needs a run folder")
    return Path(run.folder) / PRIOR_DIR


@torch.no_grad()
def code_grids(run: Run, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The code grids ``(N, h, w)`` of uint8 images ``x`` (on the model's device)."""
    model = run.model
    device = next(model.parameters()).device
    out = [model.codes(to_unit(x[i : i + batch_size].to(device))) for i in range(0, len(x),
           batch_size)]  # fmt: skip
    return torch.cat(out)


def _build(run: Run, o: PriorOptions) -> GatedPixelCNN:
    m = run.model
    device = next(m.parameters()).device
    return GatedPixelCNN(m.num_codes, m.grid, o.width, o.layers, o.kernel).to(device)


def read_prior(run: Run) -> tuple[GatedPixelCNN, dict[str, Any]] | None:
    """The run's trained code prior (eval mode) and its JSON record, or None if none."""
    if run.folder is None or not (Path(run.folder) / PRIOR_DIR / META).is_file():
        return None
    folder = Path(run.folder) / PRIOR_DIR
    meta = json.loads((folder / META).read_text())
    prior = _build(run, PriorOptions(**meta["options"]))
    tensors = load_file(folder / WEIGHTS)
    prior.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("prior/")})
    return prior.eval(), meta


def mean_nll(prior: GatedPixelCNN, codes: torch.Tensor, batch_size: int = 500) -> float:
    """Mean -log p_prior(k) over grids ``codes`` in nats per grid."""
    was = prior.training
    prior.eval()
    with torch.no_grad():
        total = sum(float(-prior.log_prob(codes[i : i + batch_size]).sum())
                    for i in range(0, len(codes), batch_size))  # fmt: skip
    prior.train(was)
    return total / len(codes)


def fit_prior(
    run: Run, options: PriorOptions = PriorOptions(), *, resume: bool = False,
    overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Fit (or, with ``resume``, continue) the run's code prior; returns its JSON record."""
    if not run.model.discrete_codes:
        raise VaelabError(f"train-prior: {run.folder} is a --model {run.config.model.model} "
                          "run; a code prior needs --model vqvae")  # fmt: skip
    for flag, v in (("--epochs", options.epochs), ("--batch-size", options.batch_size),
                    ("--width", options.width), ("--layers", options.layers),
                    ("--kernel", options.kernel)):  # fmt: skip
        at_least(flag, v, 0 if flag == "--epochs" else 1)
    if not options.lr > 0:
        raise VaelabError(f"--lr: must be > 0, got {options.lr}")
    if resume and overwrite:
        raise VaelabError("--resume and --replace contradict each other; pass one")
    folder = prior_dir(run)
    exists = (folder / META).is_file()
    if exists and not (resume or overwrite):
        raise VaelabError(f"{folder}: a code prior exists; pass --resume or --replace")
    if resume and exists:
        options = PriorOptions(**{**json.loads((folder / META).read_text())["options"],
                                  "epochs": options.epochs})  # fmt: skip
    cfg = run.config
    data = dataset_for(cfg)
    train = code_grids(run, train_images(data.train_x, cfg.data.binarize, cfg.train.seed))
    test = code_grids(run, eval_images(data.test_x, cfg.data.binarize, cfg.train.seed))
    torch.manual_seed(options.seed)
    prior = _build(run, options)
    opt = torch.optim.Adam(prior.parameters(), lr=options.lr)
    meta: dict[str, Any] = {"options": asdict(options), "epoch": 0, "history": []}
    if resume and exists:
        meta = json.loads((folder / META).read_text())
        meta["options"] = asdict(options)
        tensors = load_file(folder / WEIGHTS)
        prior.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("prior/")})
        opt.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
        torch.set_rng_state(tensors["rng/torch"])
    folder.mkdir(exist_ok=True)
    n_codes = run.model.grid[0] * run.model.grid[1]
    for epoch in range(meta["epoch"], options.epochs):
        t0 = time.perf_counter()
        prior.train()
        perm = torch.randperm(len(train))
        total = 0.0
        for i in range(0, len(train), options.batch_size):
            batch = train[perm[i : i + options.batch_size].to(train.device)]
            loss = -prior.log_prob(batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        test_nll = mean_nll(prior, test)
        row = {
            "epoch": epoch + 1,
            "train_nll": total / len(train),
            "test_nll": test_nll,
            "test_nll_per_code": test_nll / n_codes,
            "seconds": time.perf_counter() - t0,
        }
        meta["history"].append(row)
        meta["epoch"] = epoch + 1
        _save(folder, prior, opt, meta)
        if progress:
            print(f"prior epoch {epoch + 1}: train NLL {row['train_nll']:.2f}  test NLL "
                  f"{test_nll:.2f} nats/grid ({row['test_nll_per_code']:.3f} per code; uniform "
                  f"{run.model.uniform_kl() / n_codes:.3f})", flush=True)  # fmt: skip
    return meta


def _save(folder: Path, prior: GatedPixelCNN, opt: torch.optim.Optimizer, meta: dict) -> None:
    """Weights, Adam's state and the RNG as safetensors; the rest as JSON (written last)."""
    tensors, opt_meta = _optimizer_tensors(opt)
    tensors = {**{f"prior/{k}": v.detach().cpu().contiguous() for k, v in
                  prior.state_dict().items()},
               **{k: v.cpu().contiguous() for k, v in tensors.items()},
               "rng/torch": torch.get_rng_state()}  # fmt: skip
    meta["optimizer"] = opt_meta
    save_file(tensors, str(folder / (WEIGHTS + ".tmp")))
    (folder / (WEIGHTS + ".tmp")).replace(folder / WEIGHTS)
    (folder / (META + ".tmp")).write_text(json.dumps(meta, indent=1))
    (folder / (META + ".tmp")).replace(folder / META)
