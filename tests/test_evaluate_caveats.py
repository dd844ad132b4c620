"""vaelab evaluate leaves out Frechet distance and precision/recall (JSON null + reason) when
the dataset's classifier is too weak or the test set too small for them to mean anything."""

import json
import math
import shutil

import numpy as np
from PIL import Image

from vaelab.cli import main
from vaelab.evaluation.quality import FEATURES, MIN_ACCURACY, MIN_IMAGES, quality_caveat


def test_thresholds():
    assert MIN_IMAGES == FEATURES + 1  # a non-singular FEATURES x FEATURES covariance
    assert quality_caveat(0.95, 10_000) is None
    assert quality_caveat(MIN_ACCURACY, MIN_IMAGES) is None  # both bounds inclusive
    assert "0.35 test accuracy" in quality_caveat(0.35, 10_000)
    assert "only 128 test images" in quality_caveat(0.95, 128)


def _evaluate(run, capsys, *args):
    code = main(["evaluate", str(run), "--samples", "5", *args])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads((run / "evaluation.json").read_text()), out


def test_weak_classifier_on_a_small_noise_folder(tmp_path, capsys, monkeypatch):
    # Three "classes" of pure noise: nothing for the classifier to learn (chance: 1/3).
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for c in range(3):
        for i in range(20):
            path = tmp_path / "noise" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "noise"), "--epochs", "1", "--hidden",
                 "16", "--latent-dim", "2", "--progress", "false", "--report", "false",
                 "--out", str(run)]) == 0  # fmt: skip
    result, out = _evaluate(run, capsys)
    assert result["classifier"]["test_accuracy"] < MIN_ACCURACY
    reason = result["quality_omitted"]
    assert "test accuracy" in reason
    q = result["quality"]["prior"]
    assert (q["frechet_distance"], q["precision"], q["recall"]) == (None, None, None)
    assert q["omitted"] == reason
    lines = [line for line in out.splitlines() if "left out" in line]
    assert lines == [f"Frechet distance and precision/recall left out: {reason}"]


def test_too_few_images_with_a_good_classifier(digits_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path.parent / "vaelab-cache"))
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("gmm-*", "evaluation*"))
    result, _ = _evaluate(run, capsys, "--quality-samples", "50")
    assert result["classifier"]["test_accuracy"] >= MIN_ACCURACY
    assert "only 50 test images" in result["quality_omitted"]
    assert result["quality"]["prior"]["frechet_distance"] is None
    # The class entropies need no covariance: they stay, within [0, log 10] for 10 classes.
    assert 0 < result["quality"]["prior"]["class_entropy_samples"] < math.log(10)
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp.png")]) == 0
