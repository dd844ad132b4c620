"""fit(): one readable training loop.

Each step: slice a batch from the uint8 tensor on the device, scale/binarize it,
``terms = model(x, K)``, ``loss = objective(terms, beta)``, backward, (clip), step.
A step whose loss or gradient norm is not finite is skipped and counted; too many
in a row stop the run with the last good checkpoint intact. After each epoch:
test-set ELBO, one JSON line of metrics, one atomic checkpoint. Resume is exact:
the epoch order is a function of (seed, epoch) and the RNG state is checkpointed.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vaelab.config import Config, save_config, validate
from vaelab.data import ImageData, load_dataset, parse_resize
from vaelab.errors import VaelabError
from vaelab.evaluate.nll import test_bound
from vaelab.models import build_model
from vaelab.objectives import get_objective
from vaelab.train import run as runfs
from vaelab.train.batches import binarize_fixed, epoch_permutation, eval_images, prepare
from vaelab.train.checkpoint import CHECKPOINT, TrainState, load_checkpoint, save_checkpoint


def load_data(config: Config) -> ImageData:
    d = config.data
    resize = parse_resize(d.resize) if d.resize else None
    return load_dataset(
        d.dataset, resize=resize, channels=d.channels, test_fraction=d.test_fraction,
        seed=config.train.seed,
    )  # fmt: skip


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


class Stepper:
    """The forward/backward/update of one batch, optionally under autocast/compile."""

    def __init__(self, model, optimizer, config: Config, device: torch.device) -> None:
        t = config.train
        self.model, self.optimizer, self.config = model, optimizer, config
        self.objective = get_objective(t.objective)
        amp = device.type == "cuda" and t.precision != "fp32"
        if t.precision != "fp32" and device.type != "cuda":
            warnings.warn(f"--precision {t.precision} needs CUDA; training in fp32", stacklevel=2)
        dtype = torch.bfloat16 if t.precision == "bf16" else torch.float16
        self.autocast = torch.autocast("cuda", dtype=dtype) if amp else nullcontext()
        self.scaler = torch.amp.GradScaler("cuda") if amp and t.precision == "fp16" else None
        self.loss_fn = torch.compile(self._loss) if t.compile else self._loss

    def _loss(self, x: torch.Tensor, beta: torch.Tensor, y: torch.Tensor | None = None):
        k = self.config.train.samples
        terms = self.model(x, k) if y is None else self.model(x, k, y=y)
        return self.objective(terms, beta)

    def __call__(
        self, x: torch.Tensor, beta: float, y: torch.Tensor | None = None
    ) -> tuple[bool, torch.Tensor, dict]:
        """One update; ``y`` (labels, -1 where hidden) goes to models with ``uses_labels``."""
        with self.autocast:
            loss, stats = self.loss_fn(x, torch.tensor(beta, device=x.device), y)
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            return False, loss, stats
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        clip = self.config.train.clip_grad
        if clip is not None:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True)
            if not torch.isfinite(norm):
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler:
                    self.scaler.update()
                return False, loss, stats
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
) -> Path:
    """Train ``config`` into run folder ``out``; returns the folder. See module docstring."""
    validate(config)
    out = Path(out) if out else runfs.default_run_dir(config.data.dataset, config.model.model)
    out = runfs.prepare_run_dir(out, resume=resume, overwrite=overwrite)
    ckpt = load_checkpoint(out / CHECKPOINT) if resume else None
    if ckpt is not None:
        _check_compatible(ckpt.info["config"], config, out)
    t = config.train
    device = runfs.resolve_device(t.device)
    data = data or load_data(config)
    torch.manual_seed(t.seed)
    model = build_model(config.model, data.image_shape).to(device)
    optimizer, scheduler = make_optimizer(model, config, device)
    info = {
        "dataset": data.name,
        "image_shape": list(data.image_shape),
        "class_names": list(data.class_names) if data.class_names else None,
        "config": config.to_dict(),
    }
    state = TrainState()
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state())
        ckpt.restore_training(optimizer, scheduler, device)
        state = ckpt.state
        runfs.truncate_metrics(out, state.step)
    save_config(config, out / runfs.CONFIG)
    runfs.write_info(out, {k: v for k, v in info.items() if k != "config"})

    train_x = data.train_x
    if config.data.binarize == "static":
        train_x = binarize_fixed(train_x, t.seed)
    pin = device.type == "cuda"
    train_x = (train_x.pin_memory() if pin else train_x).to(device, non_blocking=pin)
    test_x = eval_images(data.test_x, config.data.binarize, t.seed).to(device)
    # Labelled models (CVAE, M2) get each batch's labels; -1 marks a hidden label.
    train_y = data.train_y.to(device) if getattr(model, "uses_labels", False) else None
    dynamic = config.data.binarize == "dynamic"
    n, bs = len(train_x), t.batch_size
    steps_per_epoch = math.ceil(n / bs)
    stepper = Stepper(model, optimizer, config, device)
    save = lambda: save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, state, info)  # noqa: E731

    model.train()
    for epoch in range(state.epoch, t.epochs):
        perm = epoch_permutation(n, t.seed, epoch, device)
        sums = torch.zeros(4, device=device)
        counted, t0 = 0, time.perf_counter()
        bar = tqdm(
            range(state.batch, steps_per_epoch), desc=f"epoch {epoch + 1}/{t.epochs}",
            disable=not (t.progress and sys.stderr.isatty()), leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for b in bar:
            idx = perm[b * bs : (b + 1) * bs]
            y = train_y[idx] if train_y is not None else None
            ok, loss, stats = stepper(
                prepare(train_x[idx], dynamic), beta_at(config, state.step, steps_per_epoch), y
            )
            state.step += 1
            if ok:
                state.bad_steps = 0
                sums += torch.stack([loss.detach(), stats["bound"], stats["recon"], stats["kl"]])
                counted += 1
            else:
                state.bad_steps += 1
                state.skipped_steps += 1
                if state.bad_steps >= t.max_bad_steps:
                    raise VaelabError(
                        f"training stopped at step {state.step}: {state.bad_steps} consecutive "
                        f"steps with a non-finite loss or gradient (--max-bad-steps); the last "
                        f"good checkpoint is {out / CHECKPOINT}"
                    )
            if t.progress and b % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.2f}")
            if (
                t.checkpoint_every
                and state.step % t.checkpoint_every == 0
                and b + 1 < steps_per_epoch
            ):
                state.epoch, state.batch = epoch, b + 1
                save()
        seconds = time.perf_counter() - t0
        if scheduler is not None:
            scheduler.step()
        train = (sums / max(counted, 1)).tolist()
        test = test_bound(model, test_x, samples=t.eval_samples)
        row = {
            "epoch": epoch + 1, "step": state.step, "lr": optimizer.param_groups[0]["lr"],
            "beta": beta_at(config, state.step, steps_per_epoch),
            "train_loss": train[0], "train_bound": train[1], "train_recon": train[2],
            "train_kl": train[3], "test_elbo": test["elbo"], "test_recon": test["recon"],
            "test_kl": test["kl"], "seconds": seconds,
            "images_per_s": (steps_per_epoch - state.batch) * bs / seconds,
            "skipped_steps": state.skipped_steps,
        }  # fmt: skip
        runfs.append_metrics(out, row)
        if t.progress:
            tqdm.write(
                f"epoch {epoch + 1}: train loss {train[0]:.2f}  test ELBO {test['elbo']:.2f} "
                f"(recon {test['recon']:.2f}, KL {test['kl']:.2f})  {seconds:.1f}s"
            )
        state.epoch, state.batch = epoch + 1, 0
        save()
    if ckpt is None and t.epochs == 0:
        save()
    if t.report:
        from vaelab.generate import write_run_pictures

        write_run_pictures(model, data, out, config)
    return out


def _check_compatible(saved: dict[str, Any], config: Config, out: Path) -> None:
    """Resuming with another model or data setup would silently train something else."""
    now = config.to_dict()
    for section in ("model", "data"):
        for key, value in saved[section].items():
            if now[section].get(key) != value:
                raise VaelabError(
                    f"--resume: the checkpoint in {out} was trained with {key}={value!r}, "
                    f"this run asks {key}={now[section].get(key)!r}"
                )
