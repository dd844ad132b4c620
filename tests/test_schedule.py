"""Schedules as pure functions of the step (training/schedule.py) and the loop that applies them:
the learning rate against torch's own schedulers, step by step; the rate each training step
of fit() and of gradvar's training really used; and an interrupted, resumed run equal to an
uninterrupted one in every checkpoint tensor and metrics value."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from conftest import small_config
from vaelab.config import resolve
from vaelab.data import load_dataset
from vaelab.evaluation.gradient_variance import during_training
from vaelab.training import loop
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit
from vaelab.training.schedule import LR_SCHEDULES, beta_at, lr_at
from vaelab.training.step import Stepper

DATA = Path(__file__).parent / "data"
STEPS_PER_EPOCH = 5  # the first 300 digits in batches of 64: 4 full batches and one of 44


@pytest.fixture(scope="module")
def digits300():
    """300 digits training images (and the whole test set): few steps, an uneven last batch."""
    data = load_dataset("digits")
    return dataclasses.replace(data, train_x=data.train_x[:300], train_y=data.train_y[:300])


def torch_rates(schedule: str, lr: float, epochs: int, steps_per_epoch: int) -> list[float]:
    """The rate an optimizer held at each step of ``epochs`` epochs under torch's
    CosineAnnealingLR(T_max=epochs) / StepLR(epochs // 3, 0.5), stepped once per epoch, as
    vaelab's loop stepped them before lr_at; plus the rate after the last epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = {
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs)),
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, max(1, epochs // 3), 0.5),
        "none": lambda: None,
    }[schedule]()
    rates = []
    for _ in range(epochs):
        rates += [opt.param_groups[0]["lr"]] * steps_per_epoch
        opt.step()  # (no gradient: a no-op, which keeps torch from warning about the order)
        if scheduler is not None:
            scheduler.step()
    return [*rates, opt.param_groups[0]["lr"]]


def test_the_schedule_choices_are_the_registry():
    from vaelab.cli.train import choices
    from vaelab.training.options import REGISTRIES

    assert REGISTRIES["schedule"] is LR_SCHEDULES
    assert choices("schedule") == tuple(LR_SCHEDULES)


@pytest.mark.parametrize("schedule", ["none", "cosine", "step"])
@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 10])
def test_lr_at_equals_torch_schedulers_step_by_step(schedule, epochs):
    """lr_at(step) for every step of the run and after it, against torch's schedulers.
    StepLR multiplies by 0.5 (exact in binary), so it must agree exactly. CosineAnnealingLR
    updates the rate by a recursion, lr_e = lr_{e-1} (1 + cos(pi e/T)) / (1 + cos(pi (e-1)/T)),
    whose rounding drifts by about one ulp per epoch from the closed form lr_at uses: 1e-13
    relative allows ~500 ulps, far more than 10 epochs can drift and far less than any
    schedule error (the smallest change between epochs here is ~2%)."""
    cfg = small_config(schedule=schedule, epochs=epochs, lr=0.01)
    want = torch_rates(schedule, 0.01, epochs, 3)
    got = [lr_at(cfg, s, 3) for s in range(len(want))]
    if schedule == "cosine":
        assert got == pytest.approx(want, rel=1e-13, abs=1e-18)
    else:
        assert got == want


def test_beta_at_is_the_linear_warm_up():
    """beta 2 over 1.5 epochs of 4 steps: 2 s / 6 until step 6, then 2 (and no warm-up: 2)."""
    cfg = small_config(beta=2.0, warmup_epochs=1.5)
    assert [beta_at(cfg, s, 4) for s in range(9)] == pytest.approx(
        [0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2, 2, 2], abs=1e-15
    )
    assert beta_at(small_config(beta=2.0), 0, 4) == 2.0


@pytest.fixture
def applied_rates(monkeypatch):
    """The learning rate the optimizer held at each call of the Stepper (each update)."""
    rates: list[float] = []
    real = Stepper.__call__

    def spy(self, *args, **kwargs):
        rates.append(self.optimizer.param_groups[0]["lr"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Stepper, "__call__", spy)
    return rates


def test_gradvar_trains_with_the_runs_schedule(applied_rates, digits300):
    """gradvar's --during-training trains through fit's train_step: its own loop took a
    constant rate; now 3 epochs of --schedule step halve it each epoch, as fit does."""
    cfg = resolve(small_config(schedule="step", epochs=10))  # the run's 10: gradvar spans 3
    rows = during_training(cfg, digits300, 3, ["reparam"], draws=2, batch_size=16)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert applied_rates == torch_rates("step", 1e-3, 3, STEPS_PER_EPOCH)[:-1]


def test_resumed_run_equals_uninterrupted_bit_for_bit(
    tmp_path, monkeypatch, applied_rates, digits300
):
    """The stateful options at once (step schedule, KL warm-up, --ema, gradient norms kept
    by --skip-threshold inf, dynamic binarization), stopped mid-epoch 2 after its checkpoint
    at step 6 and resumed: every checkpoint tensor (weights, Adam moments, weight average,
    RNG) and the training state equal those of one uninterrupted run, and so does every
    metrics value but the timings.

    The uninterrupted run also shows the schedule applied: --schedule step over 3 epochs
    halves the rate each epoch (step size 3 // 3 = 1), so the rates its optimizer held at its
    15 updates are torch StepLR's, exactly, and each metrics row's lr is the next step's."""
    cfg = small_config(epochs=3, schedule="step", warmup_epochs=1.5, ema=0.9, binarize="dynamic",
                       skip_threshold=float("inf"), checkpoint_every=3)  # fmt: skip
    full = fit(cfg, tmp_path / "full", data=digits300)
    assert applied_rates == torch_rates("step", 1e-3, 3, STEPS_PER_EPOCH)[:-1]
    assert [r["lr"] for r in read_metrics(full)] == [5e-4, 2.5e-4, 1.25e-4]
    real, calls = loop.train_step, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # 2 steps after the checkpoint at step 6 (epoch 2, batch 1)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "resumed", data=digits300)
    monkeypatch.setattr(loop, "train_step", real)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.safetensors").state.step == 6
    resumed = fit(cfg, tmp_path / "resumed", resume=True, data=digits300)
    a = load_checkpoint(full / "checkpoint.safetensors")
    b = load_checkpoint(resumed / "checkpoint.safetensors")
    assert a.state == b.state and a.state.step == 3 * STEPS_PER_EPOCH
    assert a.tensors.keys() == b.tensors.keys()
    assert any(k.startswith("ema/") for k in a.tensors)
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    timing = {"seconds", "images_per_s"}
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in read_metrics(run)]
            for run in (full, resumed)]  # fmt: skip
    assert rows[0] == rows[1] and len(rows[0]) == 3 and "grad_norm_max" in rows[0][0]


def test_a_checkpoint_written_before_lr_at_resumes(tmp_path):
    """tests/data/run-before-lr-at: a mid-epoch checkpoint written by vaelab before lr_at
    (its torch scheduler state stored, Adam groups with initial_lr; see its README). Resumed
    now, it finishes epoch 2 as a run started now does: same rates (cosine: 0.005 in epoch 2,
    0 after it), and the same weights. They are equal bit for bit on the machine that wrote
    the fixture (the ops are the same); the tolerance admits a CPU whose kernels round
    differently, whose differences after 52 Adam steps stay near float32 rounding (1e-6)."""
    old = tmp_path / "old"
    shutil.copytree(DATA / "run-before-lr-at", old, ignore=shutil.ignore_patterns("*.py", "*.md"))
    before = load_checkpoint(old / "checkpoint.safetensors")
    assert before.meta["scheduler"]["T_max"] == 2 and before.state.step == 30
    cfg = small_config(hidden="16", epochs=2, lr=0.01, schedule="cosine", checkpoint_every=30)
    resumed = fit(cfg, old, resume=True)
    fresh = fit(cfg, tmp_path / "fresh")
    a = load_checkpoint(resumed / "checkpoint.safetensors").tensors
    b = load_checkpoint(fresh / "checkpoint.safetensors").tensors
    assert a.keys() == b.keys()
    for name in a:
        if name.startswith(("model/", "optim/")):
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)
    assert [r["lr"] for r in read_metrics(resumed)] == [0.005, 0.0]
