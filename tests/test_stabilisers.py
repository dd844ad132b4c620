"""Training stabilisers for every model: the weight average (--ema), gradient-norm skipping
(--skip-threshold) and free bits (--free-bits), on real data (digits)."""

from __future__ import annotations

import json

import pytest
import torch

import vaelab
from conftest import small_config
from single_thread import one_thread
from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.terms import Terms
from vaelab.objectives import elbo
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.ema import WeightAverage
from vaelab.training.loop import fit
from vaelab.training.step import Stepper

DEEP = {"model": "deep", "deep_widths": "8,8", "deep_groups": "1,2", "group_channels": 2,
        "binarize": "dynamic"}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def _reference_average(thetas: list[torch.Tensor], decay: float) -> torch.Tensor:
    """avg_T = (prod_t d_t) theta_0 + sum_t (1 - d_t) prod_{s>t} d_s theta_t, in float64,
    as explicit weights (not the recursion), d_t = min(decay, (1 + t) / (10 + t))."""
    d = [min(decay, (1 + t) / (10 + t)) for t in range(1, len(thetas))]
    weights = []
    for t in range(len(thetas)):
        later = torch.tensor(d[t:], dtype=torch.float64).prod()
        weights.append(later if t == 0 else (1 - d[t - 1]) * later)
    assert abs(sum(weights) - 1) < 1e-12  # an average
    return sum(w * th.double() for w, th in zip(weights, thetas, strict=True))


def test_weight_average_equals_the_explicit_average():
    net = torch.nn.Linear(3, 2)
    ema = WeightAverage(net, decay=0.6)
    thetas = [net.weight.detach().clone()]
    for _ in range(7):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        ema.update()
        thetas.append(net.weight.detach().clone())
    torch.testing.assert_close(
        ema.module.weight.double(), _reference_average(thetas, 0.6), rtol=1e-6, atol=1e-6
    )  # float32 recursion: ~1e-7 relative


def test_ema_in_training_checkpoint_and_load(tmp_path, monkeypatch):
    """A VAE (EMA is not only for deep) trained 2 epochs with --ema 0.9: the checkpoint's
    ema/ tensors equal the explicit average of the weights after every applied step
    (recorded independently around the Stepper), and vaelab.load serves them."""
    real = Stepper.__call__
    seen: list[list[torch.Tensor]] = []

    def recording(self, *args, **kwargs):
        if not seen:
            seen.append([p.detach().clone() for p in self.params])
        ok, loss, stats = real(self, *args, **kwargs)
        if ok:
            seen.append([p.detach().clone() for p in self.params])
        return ok, loss, stats

    monkeypatch.setattr(Stepper, "__call__", recording)
    run = fit(small_config(epochs=2, ema=0.9), tmp_path / "r")
    tensors = load_checkpoint(run / "checkpoint.safetensors").tensors
    model = vaelab.load(run)
    names = [n for n, _ in model.named_parameters()]
    assert len(seen) == 2 * 26 + 1  # 1,617 images / 64 per batch, and the initial weights
    for i, name in enumerate(names):
        expected = _reference_average([s[i] for s in seen], 0.9)
        torch.testing.assert_close(tensors[f"ema/{name}"].double(), expected, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
        assert torch.equal(dict(model.named_parameters())[name], tensors[f"ema/{name}"])
        assert not torch.equal(tensors[f"ema/{name}"], tensors[f"model/{name}"])


def _batch_and_norm(cfg):
    """A model, a digits batch and the gradient norm of its first step, computed here."""
    from vaelab.data import load_dataset

    x = load_dataset("digits").train_x[:64].float() / 255
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 8, 8))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    loss, _ = elbo(model(x, 1))
    loss.backward()
    norm = torch.sqrt(sum(p.grad.double().square().sum() for p in model.parameters()))
    model.zero_grad()
    model.load_state_dict(state)
    return model, x, norm.item()


@pytest.mark.parametrize("above", [True, False])
def test_skip_threshold_skips_exactly_above_the_norm(above):
    """A threshold 0.1% below the step's gradient norm (float64, computed independently)
    skips it and leaves the weights alone; 0.1% above applies it."""
    cfg = small_config()
    model, x, norm = _batch_and_norm(cfg)
    threshold = norm * (0.999 if above else 1.001)
    cfg = small_config(skip_threshold=threshold)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = Stepper(model, opt, cfg, torch.device("cpu"))
    torch.manual_seed(1)
    ok, _, _ = step(x, 1.0)
    assert bool(ok) is not above
    assert step.skip_reason == ("grad-norm" if above else "")
    unchanged = all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert unchanged is above
    assert step.norms[2] == 1 and step.norms[1].item() == pytest.approx(norm, rel=1e-5)


def test_skipped_steps_are_counted_and_too_many_stop(tmp_path):
    cfg = small_config(epochs=1, skip_threshold=1e-9, max_bad_steps=1000, **DEEP)
    run = fit(cfg, tmp_path / "all")
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["skipped_grad_norm"] == row["skipped_steps"] == row["step"] == 26
    assert row["grad_norm_max"] > 1e-9
    init = fit(small_config(epochs=0, **DEEP), tmp_path / "init")
    a, b = (load_checkpoint(r / "checkpoint.safetensors").tensors for r in (run, init))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model/"))  # nothing applied
    with pytest.raises(VaelabError, match="20 consecutive steps with a gradient norm above"):
        fit(small_config(epochs=1, skip_threshold=1e-9), tmp_path / "stop")


def test_free_bits_floor_acts_per_group():
    """sum_g max(F, mean_b KL_g): the gradient reaching a group's KL is 0 below the floor
    and beta / B above it (by the definition; B = 4 images, beta = 0.5)."""
    kl_groups = torch.tensor([[0.1, 0.3, 0.2, 0.2], [1.0, 2.0, 0.5, 0.5], [0.4, 0.4, 0.4, 0.4]],
                             requires_grad=True)  # fmt: skip
    recon = torch.zeros(1, 4)
    terms = Terms(recon, recon, recon, kl=kl_groups.sum(0), kl_groups=kl_groups)
    loss, stats = elbo(terms, beta=0.5, free_bits=0.5)
    assert loss.item() == pytest.approx(0.5 * (0.5 + 1.0 + 0.5))  # group means 0.2, 1.0, 0.4
    assert stats["kl"].item() == pytest.approx(kl_groups.sum(0).mean().item())  # true KL
    loss.backward()
    expected = torch.tensor([0.0, 0.5 / 4, 0.0]).unsqueeze(1).expand(3, 4)
    torch.testing.assert_close(kl_groups.grad, expected)


def test_free_bits_on_the_deep_model():
    """With the floor between the groups' KLs, the groups below get no gradient; a floor
    above all of them leaves the reconstruction term's gradient alone."""
    cfg = small_config(**DEEP)
    model, x, _ = _batch_and_norm(cfg)
    torch.manual_seed(1)
    terms = model(x, 1)
    terms.kl_groups.retain_grad()
    means = terms.kl_groups.mean(1).detach()
    floor = means.median().item()
    loss, _ = elbo(terms, 1.0, free_bits=floor)
    loss.backward()
    below = means < floor
    # KL warm-up's beta = 0 (its first step) leaves only the reconstruction term.
    torch.testing.assert_close(elbo(terms, 0.0)[0], -terms.log_px_z.mean())
    assert below.any() and (~below).any()
    assert (terms.kl_groups.grad[below] == 0).all()
    assert (terms.kl_groups.grad[~below] == 1 / len(x)).all()
    grads = {}
    for name, objective in (("floored", lambda t: elbo(t, 1.0, free_bits=1e6)[0]),
                            ("recon", lambda t: -t.log_px_z.mean())):  # fmt: skip
        model.zero_grad()
        torch.manual_seed(1)
        objective(model(x, 1)).backward()
        grads[name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    for a, b in zip(grads["floored"], grads["recon"], strict=True):
        torch.testing.assert_close(a, b)


def test_bad_stabiliser_options_fail_before_anything_is_written(tmp_path):
    for options, message in (({"ema": 1.0}, "--ema"), ({"skip_threshold": 0.0}, "--skip-thr"),
                             ({"free_bits": 1.0, "objective": "iwae"}, "--free-bits"),
                             ({**DEEP, "deep_groups": "1"}, "--deep-groups")):  # fmt: skip
        with pytest.raises(VaelabError, match=message):
            fit(small_config(**options), tmp_path / "x")
        assert not (tmp_path / "x").exists()
