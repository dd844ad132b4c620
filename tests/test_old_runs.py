"""Run folders written before the family options moved into sections of their own
(tests/data/run-before-sections, see its README) still load, sample and resume bit-exactly."""

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import small_config
from vaelab.api import load
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit

DATA = Path(__file__).parent / "data" / "run-before-sections"
HVAE = {"model": "hvae", "hidden": "16", "latent_dim": 2, "z1_dim": 6, "z1_hidden": "12",
        "epochs": 2, "lr": 0.01, "checkpoint_every": 30}  # fmt: skip
M2 = {"model": "m2", "hidden": "16", "latent_dim": 2, "alpha": 50.0, "labels_per_class": 5,
      "num_classes": 10}  # fmt: skip


def _copy(name: str, tmp_path: Path) -> Path:
    run = tmp_path / name
    shutil.copytree(DATA / name, run, ignore=shutil.ignore_patterns("*.py", "*.md"))
    return run


def _same_weights(a: Path, b: Path) -> None:
    ta = load_checkpoint(a / "checkpoint.safetensors").tensors
    tb = load_checkpoint(b / "checkpoint.safetensors").tensors
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


def test_old_runs_load_and_sample_what_they_sampled_then(tmp_path):
    # The same weights and the same draws: the images are equal bit for bit on the machine
    # that wrote them (a CPU that rounds differently would differ near float32 precision).
    for name in ("hvae", "m2"):
        model = load(_copy(name, tmp_path))
        torch.manual_seed(0)
        then = load_file(str(DATA / name / "sample.safetensors"))["images"]
        torch.testing.assert_close(model.sample(4), then, rtol=0, atol=1e-6)


def test_an_old_hvae_run_resumes_as_a_fresh_run_of_the_same_flags(tmp_path):
    old = _copy("hvae", tmp_path)
    assert load_checkpoint(old / "checkpoint.safetensors").state.step == 30
    resumed = fit(small_config(**HVAE), old, resume=True)
    fresh = fit(small_config(**HVAE), tmp_path / "fresh")
    _same_weights(resumed, fresh)


def test_an_old_m2_run_resumes_for_a_second_epoch_as_a_fresh_two_epoch_run(tmp_path):
    old = _copy("m2", tmp_path)
    resumed = fit(small_config(**M2, epochs=2), old, resume=True)
    fresh = fit(small_config(**M2, epochs=2), tmp_path / "fresh")
    _same_weights(resumed, fresh)
    timing = {"seconds", "images_per_s"}
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in read_metrics(run)]
            for run in (resumed, fresh)]  # fmt: skip
    assert len(rows[0]) == len(rows[1]) == 2
    # Epoch 1's row was written by a75b601; later code also logs the objective's own terms
    # (train_class_loss): every figure the old row has must be the fresh run's.
    old_first = rows[0][0]
    assert old_first == {k: rows[1][0][k] for k in old_first}
    assert rows[0][1] == rows[1][1]
