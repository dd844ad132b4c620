"""Training on a CPU flushes subnormal floats (training/session.py ``flush_denormals``):
importance weights' gradients underflow into that range, where x86 GEMMs run several times
slower (benchmarks/README.md, the zoo table's speed)."""

from __future__ import annotations

import torch

from conftest import small_config
from single_thread import one_thread
from vaelab.training.loop import fit


def test_a_cpu_training_run_flushes_subnormal_floats(tmp_path):
    # Whatever an earlier test's run left set: subnormals kept, so only this fit can flush.
    torch.set_flush_denormal(False)
    assert torch.tensor([1e-40], dtype=torch.float32).item() > 0.0
    with one_thread():
        fit(small_config(epochs=1, objective="miwae", samples=2, miwae_m=2), tmp_path / "r")
    # 1e-40 is below float32's smallest normal number (1.18e-38): flushed to zero
    assert torch.tensor([1e-40], dtype=torch.float32).item() == 0.0
    assert torch.tensor([1e-37], dtype=torch.float32).item() > 0.0  # normal numbers stay
