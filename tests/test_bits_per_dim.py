"""bits/dim over 8-bit values through the whole evaluation path (vaelab.evaluation.nll).

A uniform model puts 1/256 on every value, so its NLL is exactly 8 bits per sub-pixel:
the reference is log2(256), not anything the code computes.
"""

import math

import torch
from torch import nn

from conftest import small_config
from single_thread import one_thread
from vaelab.api import evaluate
from vaelab.cli import main
from vaelab.config import Config, with_overrides
from vaelab.evaluation.nll import evaluate_model
from vaelab.models import build_model
from vaelab.training.loop import fit


def _uniform_dmol_vae(shape: tuple[int, int, int]) -> nn.Module:
    """A dmol VAE with 256 components, one centred on each 8-bit value (weights equal,
    scale e^-7) whatever z is, and q(z|x) = N(0, I) = p(z): its importance
    weights are exactly p(x|z) = p(x)."""
    cfg = with_overrides(
        Config(), {"likelihood": "dmol", "mixtures": 256, "hidden": "8", "latent_dim": 2}, "t"
    ).model
    model = build_model(cfg, shape).double()
    m = 256
    last_enc, last_dec = model.encoder[-1], model.decoder[-2]  # decoder ends with Unflatten
    params = torch.zeros(model.likelihood.n_params, *shape, dtype=torch.float64)
    centres = torch.arange(m, dtype=torch.float64) * (2 / 255) - 1
    params[m : 2 * m] = centres.view(m, 1, 1, 1)
    params[2 * m : 3 * m] = -7.0
    with torch.no_grad():
        for layer in (last_enc, last_dec):
            layer.weight.zero_()
            layer.bias.zero_()
        last_dec.bias.copy_(params.flatten())
    return model


def test_uniform_model_gives_8_bits_per_dim():
    torch.manual_seed(0)
    # One channel: a pixel's components are shared by its channels, so 256 components
    # make the R=G=B diagonal uniform, not the 256^3 joint.
    shape = (1, 4, 5)
    x = torch.randint(0, 256, (6, *shape), dtype=torch.uint8)
    x[0] = 0  # the edge bins too
    x[1] = 255
    result = evaluate_model(_uniform_dmol_vae(shape), x, samples=3)
    # Off-centre leakage between neighbouring components cancels to ~1e-6 relative
    # (second-neighbour tails at scale e^-7 are sigma(-21)); 1e-5 bits/dim covers it.
    assert abs(result["bits_per_dim"] - 8.0) < 1e-5
    assert abs(result["nll_nats"] - math.prod(shape) * math.log(256)) < 1e-3
    assert result["bits_per_dim_se"] < 1e-5  # every image equally likely


def test_dmol_trained_on_digits_beats_uniform_by_far(tmp_path):
    """Three epochs must take a dmol far below the uniform model's 8 bits/dim (the reference
    of the test above). digits hold only 17 grey levels (0..16 scaled to 0..255), mostly
    0, so log2(17) = 4.09 bits/dim bounds a model that only learned where the levels are;
    3 epochs reach ~4.3, so 6 leaves room for seeds and platforms while a likelihood that
    did not learn (or mis-normalized bins) stays near or above 8."""

    torch.manual_seed(0)
    with one_thread():
        run = fit(small_config(likelihood="dmol", mixtures=3, epochs=3), tmp_path / "run")
        result = evaluate(run, samples=20, extras=False)
    assert 0 < result["bits_per_dim"] < 6.0, result["bits_per_dim"]


def test_binarize_is_refused_with_8_bit_likelihoods(tmp_path, capsys):
    for name in ("dlogistic", "dmol"):
        code = main(["train", "--dataset", "digits", "--likelihood", name, "--binarize",
                     "dynamic", "--out", str(tmp_path / name), "--progress", "false"])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "--binarize" in err and name in err
        assert not (tmp_path / name).exists()
