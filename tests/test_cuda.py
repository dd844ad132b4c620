"""Checks that need a real CUDA GPU (marked ``cuda``: skipped without one). The CPU tests
(test_gpu_paths.py, test_precision.py, test_gpu_multi.py) emulate these paths; here the
real device confirms them: ``python benchmarks/gpu_check.py`` runs this file on a lent GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import vaelab
from conftest import small_config
from test_precision import CASES, model_and_images, terms_under
from vaelab.data import dataset_for
from vaelab.models import build_model
from vaelab.training.checkpoint import CHECKPOINT, load_checkpoint
from vaelab.training.distributed import World
from vaelab.training.loop import fit, train_step
from vaelab.training.session import build_session, check_config

pytestmark = pytest.mark.cuda


def weights(run):
    return load_checkpoint(run / CHECKPOINT).model_state()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_mixed_precision_resume_is_exact(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no bf16 on this GPU")
    cfg = dict(precision=precision, device="cuda", hidden="64", likelihood="gaussian-fixed",
               sigma=0.01, deterministic=True)  # fmt: skip
    fit(check_config(small_config(epochs=2, **cfg)), tmp_path / "a")
    fit(check_config(small_config(epochs=1, **cfg)), tmp_path / "b")
    fit(check_config(small_config(epochs=2, **cfg)), tmp_path / "b", resume=True)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cuda_deterministic_reruns_are_bit_identical(tmp_path):
    cfg = dict(device="cuda", arch="conv", hidden="16,32", epochs=1, deterministic=True)
    for name in ("a", "b"):
        fit(check_config(small_config(**cfg)), tmp_path / name)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("options", [{}, dict(skip_threshold=1e6, warmup_epochs=1.0),
                                     dict(estimator="score-baseline")])  # fmt: skip
def test_cuda_step_synchronises_once(options):
    # torch's sync debug mode warns at every synchronizing CUDA call: one per step (the
    # decision to apply it), after the first steps (allocator and cuBLAS warm-up).
    config = check_config(small_config(device="cuda", **options))
    s = build_session(config, dataset_for(config), World(device=torch.device("cuda")))
    perm = torch.randperm(len(s.train_x), device="cuda")
    for b in range(3):
        train_step(s, *s.batch(perm, b))
    counts = []
    for b in range(3, 6):
        batch = s.batch(perm, b)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_step(s, *batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts == [1, 1, 1], counts


@pytest.mark.parametrize("case", ["mlp-bernoulli-K5", "mlp-vamp", "conv-dmol"])
def test_cuda_bf16_densities_are_float32_sums(case):
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no bf16 on this GPU")
    model, x = model_and_images(CASES[case])
    model, x = model.cuda(), x.cuda()
    amp, outputs = terms_under(model, x, torch.autocast("cuda", dtype=torch.bfloat16))
    exact, _ = terms_under(model, x, torch.autocast("cuda", enabled=False), list(outputs))
    for a, b in zip(amp, exact, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_cuda_complete_returns_cpu_tensors():
    model = build_model(small_config().model, (1, 8, 8)).cuda()
    out = vaelab.complete(model, torch.rand(1, 1, 8, 8, device="cuda"), mask="left-half")
    assert out.device.type == "cpu"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_second_gpu_generator_is_checkpointed(tmp_path):
    cfg = dict(device="cuda:1", hidden="32", epochs=1)
    run = fit(check_config(small_config(**cfg)), tmp_path / "r")
    state = load_checkpoint(run / CHECKPOINT).tensors["rng/cuda"]
    assert torch.equal(state, torch.cuda.get_rng_state(torch.device("cuda", 1)))
