"""The tools on a VQ-VAE run (--model vqvae): completion of missing pixels by the iterated
projection encode -> nearest codes -> decode, and the explorer's sampling and similar
images; on a tiny model trained for a few epochs on the built-in digits."""

from __future__ import annotations

import json

import pytest
import torch

import vaelab
from vaelab.cli import main
from vaelab.data.prepare import eval_images
from vaelab.evaluation.completion import make_mask


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqtools") / "run"
    argv = ["train", "--model", "vqvae", "--arch", "conv", "--hidden", "16,16", "--blocks", "1",
            "--latent-dim", "4", "--codes", "16", "--dataset", "digits", "--binarize", "static",
            "--epochs", "5", "--batch-size", "64", "--progress", "false", "--report", "false",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_completion_keeps_the_observed_pixels_and_fills_closer_to_the_truth(vq_run):
    run = vaelab.open_run(vq_run)
    x = eval_images(vaelab.api.load_test_images(run).test_x[:100], "static", 0).float() / 255
    missing = make_mask("left-half", run.model.image_shape)
    images = vaelab.complete(run, x, missing, n=2, steps=10)
    assert images.shape == (100, 2, *run.model.image_shape)
    seen = ~missing.expand_as(x)
    for j in range(2):
        assert torch.equal(images[:, j][seen], x[seen])  # exactly, not approximately
    # The start is 0.5 in every missing pixel: a squared error of exactly 0.25 on binary
    # pixels. The decoder's mean at the codes of the visible half must do better (on this
    # model 0.14: half the ink of a digit's left half is predictable from its right half).
    err = (images[:, 0] - x).square()[~seen].mean()
    assert err < 0.25 - 0.05
    # With fill=mean the encoder is deterministic: every chain of one image is the same.
    assert torch.equal(images[:, 0], images[:, 1])


def test_completion_of_a_vq_run_from_the_cli_writes_the_grid_and_refuses_mwg(
    vq_run, tmp_path, capsys
):  # fmt: skip
    png = tmp_path / "c.png"
    argv = ["complete", str(vq_run), "--mask-preset", "top-half", "-n", "3", "--out", str(png)]
    assert main(argv) == 0
    from PIL import Image

    # original, observed, 3 completions of an 8x8 image in one row (save_grid pads by 2)
    assert Image.open(png).size[0] > 5 * 8
    assert main(argv) != 0  # exists: never overwritten unless asked
    assert "--overwrite" in capsys.readouterr().err
    assert main(["complete", str(vq_run), "--mask-preset", "top-half", "--method", "mwg",
                 "--out", str(tmp_path / "m.png")]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "mwg" in err and "pseudo-gibbs" in err and "Traceback" not in err
    assert not (tmp_path / "m.png").exists()
    ev = tmp_path / "ev.json"
    assert main(["complete", str(vq_run), "--mask-preset", "left-half", "--evaluate", "40",
                 "--steps", "5", "--json", str(ev)]) == 0  # fmt: skip
    result = json.loads(ev.read_text())
    assert result["images"] == 40 and result["model"]["mse"] < 0.25
