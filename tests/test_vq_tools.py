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


def _post(app, path: str, body: dict) -> tuple[int, dict]:
    status, _, data = app.handle("POST", path, json.dumps(body).encode())
    return status, json.loads(data)


def test_the_explorer_samples_only_with_a_code_prior_and_finds_nearby_codes(vq_run, tmp_path):
    import shutil

    from vaelab.evaluation.vq import nearby_codes, sample_images
    from vaelab.training.code_prior import read_prior
    from vaelab.web.app import build_app
    from vaelab.web.fields import png_data_url, png_data_urls

    run = tmp_path / "run"
    shutil.copytree(vq_run, run, ignore=shutil.ignore_patterns("prior"))
    app = build_app(run, limit=20)
    info = json.loads(app.handle("GET", "/api/info")[2])
    features = info["features"]
    assert features["sample"] and features["similar"] and features["complete"]
    assert "vaelab train-prior" in features["sample_note"] and info["completions"] == [
        "pseudo-gibbs"
    ]
    status, got = _post(app, "/api/sample", {"n": 4})
    assert status == 400 and "vaelab train-prior" in got["error"] and "\n" not in got["error"]
    # similar: the test image's grid with codes moved to nearby entries, as `vaelab similar`
    model, x = app.explorer.model, app.explorer.test_image(2)
    status, got = _post(app, "/api/similar", {"index": 2, "n": 6, "spread": 2.0, "seed": 3})
    assert status == 200 and got["images"] == png_data_urls(nearby_codes(model, x, 6, 2.0, 3))
    # spread 0 moves no code: n copies of the reconstruction, not an error
    status, got = _post(app, "/api/similar", {"index": 2, "n": 3, "spread": 0.0})
    recon = model.reconstruct(x[None].float() / 255)[0].clamp(0, 1)
    assert status == 200 and got["images"] == [png_data_url(recon)] * 3
    mask = "11110000" * 8  # the left half of an 8x8 digit missing
    status, got = _post(app, "/api/complete", {"index": 2, "mask": mask, "n": 2, "steps": 7})
    missing = make_mask("left-half", model.image_shape)
    filled = vaelab.complete(model, x[None].float() / 255, missing, n=2, steps=7)
    assert status == 200 and got["images"] == png_data_urls(filled[0])
    # with a prior: the page's draws are the prior's code grids, decoded (vaelab sample's)
    assert main(["train-prior", str(run), "--epochs", "1", "--width", "8", "--layers", "2"]) == 0
    app = build_app(run, limit=20)
    assert json.loads(app.handle("GET", "/api/info")[2])["features"]["sample_note"] is None
    status, got = _post(app, "/api/sample", {"n": 5, "temperature": 0.7, "seed": 4})
    prior = read_prior(vaelab.open_run(run))[0]
    expect = sample_images(app.explorer.model, prior, 5, 0.7, 4)
    assert status == 200 and got["images"] == png_data_urls(expect)
