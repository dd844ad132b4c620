"""The training objective's state in the checkpoint: a score-baseline's running mean and
learned b(x) resume exactly, and checkpoints written while the estimator was a submodule
of the model (``model/estimator.*``) still load and resume."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save as st_save

import vaelab
from conftest import small_config
from single_thread import one_thread
from vaelab.training.checkpoint import CHECKPOINT, checkpoint_digest, load_checkpoint
from vaelab.training.load import read_estimator
from vaelab.training.loop import fit

OPTS = {"estimator": "score-baseline", "learned_baseline": True, "binarize": "dynamic"}
STEPS_PER_EPOCH = 26  # 1,617 digits training images in batches of 64 (small_config)


def tensors(run):
    return load_checkpoint(run / CHECKPOINT).tensors


def to_legacy_layout(run) -> None:
    """Rewrite ``run``'s checkpoint as the code before issue 13 item 6 wrote it: the
    estimator's tensors under ``model/estimator.*`` (the same module names; its parameters
    were last in model.parameters(), so the optimizer's indices do not change)."""
    ckpt = load_checkpoint(run / CHECKPOINT)
    old = {("model/" + k[len("objective/") :] if k.startswith("objective/") else k): v
           for k, v in ckpt.tensors.items()}  # fmt: skip
    meta = dict(ckpt.meta)
    meta["sha256"] = checkpoint_digest(old, meta)
    (run / CHECKPOINT).write_bytes(st_save(old, metadata={"vaelab": json.dumps(meta)}))


def test_score_baseline_state_resumes_bit_for_bit_and_old_checkpoints_load(tmp_path):
    """2 epochs in one run == 1 epoch, then --resume for 1 more: weights, optimizer state
    and the baseline's running mean, step count and network, bit for bit (a baseline restarted
    at resume centres different signals: the weights would differ). The same from a copy of
    the half-way checkpoint in the old layout: vaelab.load gives the same model, the run's
    estimator reads back the same, and its resume ends in the same tensors."""
    cfg = small_config(epochs=2, **OPTS)
    with one_thread():
        full = fit(cfg, tmp_path / "full")
        half = fit(small_config(epochs=1, **OPTS), tmp_path / "half")
        legacy = tmp_path / "legacy"
        legacy.mkdir()
        for f in half.iterdir():
            (legacy / f.name).write_bytes(f.read_bytes())
        to_legacy_layout(legacy)
        assert "model/estimator.mean_f" in tensors(legacy)
        assert not any(k.startswith("objective/") for k in tensors(legacy))
        loaded, want = vaelab.load(legacy).state_dict(), vaelab.load(half).state_dict()
        assert loaded.keys() == want.keys() and all(torch.equal(loaded[k], want[k]) for k in want)
        est = read_estimator(legacy, cfg, (1, 8, 8))
        assert int(est.count) == STEPS_PER_EPOCH and est.net is not None
        assert torch.equal(est.mean_f, tensors(half)["objective/estimator.mean_f"])
        fit(cfg, half, resume=True)
        fit(cfg, legacy, resume=True)
    a = tensors(full)
    assert int(a["objective/estimator.count"]) == 2 * STEPS_PER_EPOCH  # one update per step
    assert any(k.startswith("objective/estimator.net.") for k in a)
    for run in (half, legacy):
        b = tensors(run)
        keys = [k for k in a if k.startswith(("model/", "objective/", "optim/"))]
        assert keys and set(keys) <= set(b), run
        for key in keys:
            assert torch.equal(a[key], b[key]), (run.name, key)
