"""Defaults that follow from other options, and bad option values refused before anything
is created, through ``vaelab train``'s command line."""

import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

import vaelab
from test_data_folder import _huge_png
from vaelab.cli import main
from vaelab.errors import did_you_mean

QUIET = ["--dataset", "digits", "--epochs", "0", "--progress", "false", "--report", "false"]


def saved_config(run):
    return yaml.safe_load((run / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("arch", "widths", "first_layer"),
    [("mlp", [400], (400, 64)), ("conv", [32, 64], (32, 1, 3, 3))],
)
def test_each_arch_builds_its_own_default_widths(tmp_path, arch, widths, first_layer):
    # The old single default (400,) made --arch conv one 400-channel convolution.
    run = tmp_path / arch
    assert main(["train", *QUIET, "--arch", arch, "--out", str(run)]) == 0
    assert saved_config(run)["model"]["hidden"] == widths  # recorded resolved
    model = vaelab.load(run)
    # The encoder's first weight: (out features, 8*8 pixels) or (channels, 1, 3, 3).
    first = next(p for n, p in model.named_parameters() if n.endswith("weight"))
    assert tuple(first.shape) == first_layer


def test_m2_takes_its_own_objective_but_refuses_a_conflicting_one(tmp_path, capsys):
    assert main(["train", *QUIET, "--model", "m2", "--out", str(tmp_path / "m2")]) == 0
    assert saved_config(tmp_path / "m2")["train"]["objective"] == "m2"
    assert main(["train", *QUIET, "--out", str(tmp_path / "vae")]) == 0
    assert saved_config(tmp_path / "vae")["train"]["objective"] == "elbo"
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["train", *QUIET, "--model", "m2", "--objective", "iwae", "--out", str(bad)]) == 2
    assert "--objective m2" in capsys.readouterr().err and not bad.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--arch", "cnn"],
            "--arch: unknown 'cnn'; valid: mlp, conv, resnet; did you mean 'conv'?",
        ),
        (["--likelihood", "gaussian"], "did you mean 'gaussian-"),
        (["--dataset", "fashion_mnist"], "did you mean 'fashion-mnist'?"),
        (["--model", "VAE"], "did you mean 'vae'?"),
        (["--prior", "vampprior"], "did you mean 'vamp'?"),
        (["--schedule", "cosin"], "did you mean 'cosine'?"),
        (["--latent-dim", "two"], "--latent-dim: expected int, got 'two'"),
        (["--hidden", "32,x"], "--hidden: expected int"),
        (["--dataset", "digits", "--model", "m2", "--objective", "elbo"], "--objective"),
        (["--dataset", "digits", "--model", "cvae", "--num-classes", "3"], "--num-classes"),
    ],
)  # fmt: skip
def test_bad_values_leave_nothing_behind(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)  # the default run folder would be runs/<time>-...
    code = main(["train", "--dataset", "digits", *args, "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert list(tmp_path.iterdir()) == []


def test_did_you_mean_stays_quiet_for_nonsense():
    assert did_you_mean("xyzzy", ["mlp", "conv"]) is None
    assert did_you_mean("Fashion_MNIST", ["digits", "fashion-mnist"]) == "fashion-mnist"


def test_unknown_key_in_a_config_file_gets_a_suggestion(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  latnt_dim: 3\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "unknown option 'latnt_dim'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_image_folder_with_bad_files_nested_classes_and_alpha(tmp_path):
    # A clip-art-like folder: classes with sub-folders, one truncated PNG, one whose header
    # claims 10 G pixels, icons on a transparent ground; trained from a fresh process.
    rng = np.random.default_rng(0)
    for cls in ("arrows", "stars"):
        for i in range(6):
            rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
            rgba[..., 3] = np.where(rgba[..., 3] > 128, 255, 0)
            path = tmp_path / "art" / cls / ("deep/er" if i % 2 else "") / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgba, "RGBA").save(path)
    good = (tmp_path / "art" / "stars" / "0.png").read_bytes()
    (tmp_path / "art" / "stars" / "cut.png").write_bytes(good[: len(good) // 2])
    _huge_png(tmp_path / "art" / "arrows" / "deep" / "huge.png")
    args = ["train", "--dataset", tmp_path / "art", "--epochs", "0", "--report", "false",
            "--hidden", "16", "--latent-dim", "2", "--out"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "vaelab", *map(str, args), tmp_path / "run"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 of 14 image files (1 too large, 1 unreadable)" in proc.stderr
    assert "2 classes (images at any depth in each class folder): arrows 6, stars 6" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert saved_config(tmp_path / "run")["data"]["background"] == "white"
    bad = main(["train", "--dataset", str(tmp_path / "art"), "--background", "purple",
                "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad == 2 and not (tmp_path / "bad").exists()
