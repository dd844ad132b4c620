"""Defaults that follow from other options, and bad option values refused before anything
is created, through ``vaelab train``'s command line."""

import pytest
import yaml

import vaelab
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
        (["--arch", "cnn"], "--arch: unknown 'cnn'; valid: mlp, conv; did you mean 'conv'?"),
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
