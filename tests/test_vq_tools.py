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


@pytest.fixture(scope="module")
def prior_run(vq_run, tmp_path_factory):
    """A copy of ``vq_run`` with a trained code prior (5 epochs, width 16, 3 layers)."""
    import shutil

    run = tmp_path_factory.mktemp("vqprior") / "run"
    shutil.copytree(vq_run, run)
    argv = ["train-prior", str(run), "--epochs", "5", "--width", "16", "--layers", "3"]
    assert main(argv) == 0
    return run


def test_the_prior_completion_draws_the_missing_codes_from_their_exact_posterior(prior_run):
    """The 2x2 code grid of an 8x8 digit with its top half missing: the top two cells are
    resampled, the bottom two kept. Their posterior p(k_top | x_obs, k_bottom) ∝ p(k) p(x_obs|k)
    is enumerated over all 16 x 16 pairs (the prior's log p(grid), a Bernoulli of the decoder's
    logits over the observed pixels only, float64); 2000 draws of the importance-resampled
    completion (32 proposals each) must match it in total variation to within 0.1, where the
    proposal alone (the prior's p(k_top)) is 0.3 off on this image: sampling noise with ~5
    likely pairs is ~0.03 and the bias of 32-proposal resampling was 0.03-0.05 on four images."""
    import torch.nn.functional as F
    from torch.distributions import Bernoulli

    from vaelab.evaluation.vq_complete import prior_inpaint
    from vaelab.training.code_prior import read_prior

    run = vaelab.open_run(prior_run)
    model, prior = run.model.eval(), read_prior(run)[0]
    x = eval_images(vaelab.api.load_test_images(run).test_x[:1], "static", 0).float() / 255
    missing = make_mask("top-half", model.image_shape)
    k = model.num_codes
    with torch.no_grad():
        kept = model.codes(torch.where(missing, 0.5, x))[0, 1].tolist()
        grids = torch.tensor([[[a, b], kept] for a in range(k) for b in range(k)])
        logits = model.decoder(model.quantizer.codebook[grids].permute(0, 3, 1, 2))[:, 0, 0]
        seen = ~missing[0]
        log_obs = (Bernoulli(logits=logits.double()).log_prob(x[0, 0].double()) * seen).sum((1, 2))
        exact = torch.softmax(prior.log_prob(grids).double() + log_obs, 0)
        top = F.log_softmax(prior(grids).double(), 1)[:, :, 0]  # p(k_00), p(k_01 | k_00)
        rows = torch.arange(len(grids))
        proposal = (top[rows, grids[:, 0, 0], 0] + top[rows, grids[:, 0, 1], 1]).exp()
        torch.manual_seed(0)
        n = 2000
        codes = prior_inpaint(model, prior, x.expand(n, -1, -1, -1),
                              missing.expand(n, -1, -1, -1), 1, proposals=32)  # fmt: skip
    assert (codes[:, 1] == torch.tensor(kept)).all()  # the observed row's codes are kept
    drawn = torch.bincount(codes[:, 0, 0] * k + codes[:, 0, 1], minlength=k * k).double() / n
    assert float((proposal - exact).abs().sum() / 2) > 0.2  # the pixels do inform the codes
    assert float((drawn - exact).abs().sum() / 2) < 0.1


def test_pixelcnn_logits_of_a_row_need_only_the_rows_above_it():
    """What the completion's row cropping relies on: the logits of row i from the grid cut
    after row i equal those from the whole grid (the masks ignore later rows; padding at the
    cut edge must not leak in)."""
    from vaelab.nn.pixelcnn import GatedPixelCNN

    torch.manual_seed(0)
    net = GatedPixelCNN(11, (5, 6), width=16, layers=3, kernel=5).eval()
    grids = torch.randint(0, 11, (4, 5, 6))
    with torch.no_grad():
        full = net(grids)
        for i in range(5):
            assert torch.equal(net(grids[:, : i + 1])[:, :, i], full[:, :, i])


def test_completion_keeps_the_observed_pixels_and_fills_closer_to_the_truth(vq_run):
    run = vaelab.open_run(vq_run)
    x = eval_images(vaelab.api.load_test_images(run).test_x[:100], "static", 0).float() / 255
    missing = make_mask("left-half", run.model.image_shape)
    with pytest.warns(UserWarning, match="vaelab train-prior"):  # no prior: said so
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


def test_completion_with_a_code_prior_keeps_the_observed_pixels_and_fills_closer(
    prior_run, tmp_path
):  # fmt: skip
    run = vaelab.open_run(prior_run)
    x = eval_images(vaelab.api.load_test_images(run).test_x[:100], "static", 0).float() / 255
    missing = make_mask("top-half", run.model.image_shape)
    images = vaelab.complete(prior_run, x, missing, n=3)  # the run's prior is read
    seen = ~missing.expand_as(x)
    for j in range(3):
        assert torch.equal(images[:, j][seen], x[seen])
    assert (images[:, 0] - x).square()[~seen].mean() < 0.25 - 0.05  # as above: 0.5 is 0.25
    assert not torch.equal(images[:, 0], images[:, 1])  # draws of the prior, not one answer
    png = tmp_path / "p.png"
    assert main(["complete", str(prior_run), "--mask-preset", "top-half", "-n", "2",
                 "--out", str(png)]) == 0  # fmt: skip
    assert png.is_file()


def test_completion_of_a_vq_run_from_the_cli_writes_the_grid_and_refuses_mwg(
    vq_run, tmp_path, capsys
):  # fmt: skip
    png = tmp_path / "c.png"
    argv = ["complete", str(vq_run), "--mask-preset", "top-half", "-n", "3", "--out", str(png)]
    assert main(argv) == 0
    assert "vaelab train-prior" in capsys.readouterr().err  # one line: how to do better
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
    assert result["code_prior"] is False  # the projection: this run has no prior


def _post(app, path: str, body: dict) -> tuple[int, dict]:
    status, _, data = app.handle("POST", path, json.dumps(body).encode())
    return status, json.loads(data)


def test_the_explorer_samples_only_with_a_code_prior_and_finds_nearby_codes(
    vq_run, prior_run, tmp_path
):  # fmt: skip
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
    shutil.copytree(prior_run / "prior", run / "prior")
    app = build_app(run, limit=20)
    assert json.loads(app.handle("GET", "/api/info")[2])["features"]["sample_note"] is None
    status, got = _post(app, "/api/sample", {"n": 5, "temperature": 0.7, "seed": 4})
    prior = read_prior(vaelab.open_run(run))[0]
    expect = sample_images(app.explorer.model, prior, 5, 0.7, 4)
    assert status == 200 and got["images"] == png_data_urls(expect)
