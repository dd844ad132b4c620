"""benchmarks/profile_step.py counts what a step does: a step of known ops is checked
against what it is known to call (two top-level ops, one host sync, one GEMM)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import profile_step


def test_breakdown_counts_ops_syncs_and_gemm_share():
    a, b = torch.randn(64, 64), torch.randn(64, 64)

    def step():
        c = torch.mm(a, b)  # one GEMM, one top-level op
        float(c.sum())  # a reduction and a host sync (_local_scalar_dense under item)

    r = profile_step.breakdown(step, 5)
    counts = r["counts_per_step"]
    assert counts["host_syncs"] == 1
    assert counts["aten_ops"] == 3  # mm, sum, item (its _local_scalar_dense is inside it)
    assert r["us_by_category"]["gemm"] > 0 and r["us_by_category"]["conv"] == 0
    assert abs(sum(r["share_by_category"].values()) - 1) < 1e-9
    assert r["steps_aligned"] == 5  # every step ran the same op sequence


def test_minimal_loop_bodies_have_vaelabs_parameter_count():
    """The hand-written loop profiled against vaelab uses the same layers: the same number
    of parameters as vaelab's own bodies, for both cases."""
    from vaelab.config import Config, resolve, with_overrides
    from vaelab.training.load import build_run_model

    for case, spec in profile_step.CASES.items():
        config = resolve(with_overrides(Config(), spec["overrides"], "t"))
        ours = build_run_model(config.model, (1, 28, 28))
        enc, dec = profile_step.minimal_bodies(spec["overrides"].get("arch", "mlp"), (1, 28, 28))
        theirs = sum(p.numel() for m in (enc, dec) for p in m.parameters())
        assert sum(p.numel() for p in ours.parameters()) == theirs, case
