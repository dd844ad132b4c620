"""Every CLI command is a Python function ``vaelab.<command>`` returning what it draws;
the run travels as a :class:`vaelab.training.record.Run`, opened once."""

from __future__ import annotations

import pytest
import torch

import vaelab
from vaelab.api import open_run, prepared_test_images
from vaelab.cli import COMMANDS, main
from vaelab.errors import VaelabError
from vaelab.training.record import Run


def test_every_command_is_a_function_of_the_package_not_a_module():
    # vaelab.classify/report/gradvar/complete/evaluate/train are also submodules: importing
    # them must not turn vaelab.<command> into the module.
    import vaelab.evaluation.classifier
    import vaelab.evaluation.completion
    import vaelab.evaluation.gradient_variance
    import vaelab.evaluation.html_report

    for command in COMMANDS:
        name = command.replace("-", "_")
        function = getattr(vaelab, name)
        assert callable(function) and function.__module__.startswith("vaelab."), command
        assert not isinstance(function, type(vaelab)), f"vaelab.{name} is a module"
        assert name in vaelab.__all__


def test_open_run_holds_model_config_info_and_folder(digits_run):
    run = open_run(digits_run)
    assert isinstance(run, Run) and run.folder == digits_run
    assert run.config.data.dataset == "digits" and run.image_shape == (1, 8, 8)
    assert run.info["dataset"] == "digits"
    assert not run.model.training
    assert open_run(run) is run  # a Run passes through every API function unopened


def test_sample_is_the_decoded_mean_at_seeded_prior_draws(digits_run):
    # Reference: the model's own definition, p(z) = N(0, I) and images = E[x | z], with the
    # same generator state; exact equality (same ops on the same numbers, one thread).
    run = open_run(digits_run)
    images = vaelab.sample(run, 8, seed=3, temperature=0.5)
    torch.manual_seed(3)
    z = 0.5 * torch.randn(8, run.model.latent_dim)
    with torch.no_grad():
        expected = run.model.likelihood.mean(run.model.decode(z))
    assert images.shape == (8, 1, 8, 8)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)


def test_reconstruct_and_similar_at_zero_spread_decode_the_posterior_mean(digits_run, tmp_path):
    run = open_run(digits_run)
    x = prepared_test_images(run)[:5]
    with torch.no_grad():
        mean = run.model.encode(x.float() / 255).mean
        expected = run.model.likelihood.mean(run.model.decode(mean))
    inputs, recon = vaelab.reconstruct(run, 5, out=tmp_path / "r.png")
    torch.testing.assert_close(inputs, x.float() / 255)
    torch.testing.assert_close(recon, expected, rtol=0, atol=1e-6)
    assert (tmp_path / "r.png").is_file()
    # spread 0: z = mu for every draw, so all n decodings are test image 2's reconstruction
    tiles = vaelab.similar(run, 2, n=3, spread=0.0)
    assert tiles.shape == (4, 1, 8, 8)
    torch.testing.assert_close(tiles[0], x[2].float() / 255)
    torch.testing.assert_close(tiles[1:], expected[2].expand(3, -1, -1, -1), rtol=0, atol=1e-6)


def test_interpolate_rows_run_from_source_to_target(digits_run):
    rows = vaelab.interpolate(digits_run, 0, 1, steps=4)
    x = prepared_test_images(open_run(digits_run))[:2].float() / 255
    assert set(rows) == {"linear", "spherical"}
    for row in rows.values():
        assert row.shape == (6, 1, 8, 8)
        torch.testing.assert_close(row[0], x[0])
        torch.testing.assert_close(row[-1], x[1])


def test_api_refuses_what_the_cli_refuses_and_writes_nothing(digits_run, tmp_path):
    with pytest.raises(VaelabError, match="no such run folder"):
        vaelab.sample(tmp_path / "missing")
    with pytest.raises(VaelabError, match="--index: test index must be in"):
        vaelab.similar(digits_run, 10**6)
    out = tmp_path / "taken.png"
    out.write_bytes(b"")
    with pytest.raises(VaelabError, match="exists; pass overwrite=True"):
        vaelab.sample(digits_run, 4, out=out)
    with pytest.raises(VaelabError, match="has no labels"):  # a plain VAE; was "not callable"
        vaelab.classify(digits_run)
    # the CLI on a bad index: exit 2 and nothing new in the (shared) run folder
    before = sorted(digits_run.rglob("*"))
    assert main(["similar", str(digits_run), "--index", "100000"]) == 2
    assert sorted(digits_run.rglob("*")) == before
