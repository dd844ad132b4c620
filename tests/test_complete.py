"""Completion: masks, pseudo-Gibbs, Metropolis-within-Gibbs, super-resolution, baselines, CLI."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

import vaelab
from conftest import small_config
from single_thread import one_thread
from vaelab.api import load_test_images
from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.evaluation.completion import complete, downscale, load_mask, make_mask, project_blocks
from vaelab.evaluation.completion_eval import evaluate_completion, nearest_neighbour
from vaelab.training.loop import fit

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    torch.manual_seed(0)
    with one_thread():
        return fit(
            small_config(epochs=4, hidden="64", latent_dim=4), tmp_path_factory.mktemp("r") / "v"
        )


@pytest.fixture(scope="module")
def model(vae_run):
    return vaelab.load(vae_run)


@pytest.fixture(scope="module")
def x(vae_run):
    return load_test_images(vae_run).test_x[:6].float() / 255


def test_presets_cover_the_stated_share():
    shape = (1, 28, 28)
    assert make_mask("left-half", shape)[..., :14].all()
    assert not make_mask("left-half", shape)[..., 14:].any()
    assert (
        make_mask("top-half", shape)[:, :14].all()
        and not make_mask("top-half", shape)[:, 14:].any()
    )
    assert make_mask("centre-square", shape).float().mean() == 0.25
    share = make_mask("random:0.5", shape, seed=1).float().mean().item()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 784)  # 4 binomial standard errors
    assert torch.equal(make_mask("random:0.3", shape, 2), make_mask("random:0.3", shape, 2))
    for bad in ("random:2", "random:x", "bottom"):
        with pytest.raises(VaelabError, match="mask-preset"):
            make_mask(bad, shape)


def test_mask_png_white_is_missing(tmp_path):
    arr = np.zeros((16, 16), np.uint8)
    arr[:, 8:] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    mask = load_mask(str(tmp_path / "m.png"), (1, 8, 8))
    assert mask[..., 4:].all() and not mask[..., :4].any()


@pytest.mark.parametrize("method", ["pseudo-gibbs", "mwg"])
@pytest.mark.parametrize("preset", ["left-half", "top-half", "centre-square", "random:0.5"])
def test_completion_never_changes_observed_pixels(model, x, method, preset):
    missing = make_mask(preset, model.image_shape, seed=0)
    out = complete(model, x, missing, n=3, steps=5, method=method, seed=0)
    assert out.images.shape == (6, 3, *model.image_shape)
    observed = (~missing).expand_as(out.images)
    assert torch.equal(out.images[observed], x[:, None].expand_as(out.images)[observed])
    assert (out.images >= 0).all() and (out.images <= 1).all()
    # The missing pixels are the decoder's: the chains did fill them.
    assert torch.allclose(out.images[~observed], out.decoded.clamp(0, 1)[~observed])


def test_empty_mask_returns_the_reconstruction(model, x):
    empty = torch.zeros(model.image_shape, dtype=torch.bool)
    out = complete(model, x, empty, n=2, steps=4, seed=0)
    assert torch.equal(out.images, x[:, None].expand_as(out.images))
    recon = model.reconstruct(x)
    torch.testing.assert_close(out.decoded[:, 0], recon)
    torch.testing.assert_close(out.decoded[:, 1], recon)


def test_completions_differ_between_chains(model, x):
    out = complete(model, x, make_mask("left-half", model.image_shape), n=4, steps=10, seed=0)
    assert (out.images[:, 0] - out.images[:, 1]).abs().max() > 1e-3


def test_super_resolution_keeps_the_block_means(model, x):
    for f in (2, 4):
        out = complete(model, x, n=2, steps=5, downscale_factor=f, seed=0)
        for j in range(2):
            # Exact projection up to float32 rounding of the block means (~1e-7).
            torch.testing.assert_close(
                downscale(out.images[:, j], f), downscale(x, f), atol=1e-6, rtol=0
            )
    with pytest.raises(VaelabError, match="downscale"):
        complete(model, x, n=1, downscale_factor=3)


def test_projection_is_exact_when_nothing_clips():
    torch.manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(2, 1, 8, 8)
    low = downscale(0.25 + 0.5 * torch.rand(2, 1, 8, 8), 2)
    torch.testing.assert_close(downscale(project_blocks(x, low, 2), 2), low)


def test_projection_meets_the_optimality_conditions_with_heavy_clipping():
    """The nearest image in [0, 1] with given block means satisfies (KKT): y in [0, 1], the
    block means equal low, and y - x is one constant c per block on every pixel y leaves
    unclipped, with clipped pixels on the side c pushes them (x + c >= 1 at y = 1, <= 0 at
    y = 0). Inputs straying outside [0, 1] (a Gaussian decoder's means) and targets near
    0 and 1 clip most pixels, where shift-and-clip rounds converged slowly. Float64: 1e-9."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=g, dtype=torch.float64) * 1.6 - 0.3
    low = torch.rand(3, 2, 2, 2, generator=g, dtype=torch.float64)
    low[0, 0, 0, 0], low[0, 0, 0, 1] = 0.98, 0.01
    y = project_blocks(x, low, 4, iters=60)
    assert y.min() >= 0 and y.max() <= 1
    torch.testing.assert_close(downscale(y, 4), low, rtol=0, atol=1e-9)
    c = (y - x).unfold(2, 4, 4).unfold(3, 4, 4).flatten(-2)  # (B, C, 2, 2, 16) per block
    free = ((y > 0) & (y < 1)).unfold(2, 4, 4).unfold(3, 4, 4).flatten(-2)
    shift = (c * free).sum(-1, keepdim=True) / free.sum(-1, keepdim=True)
    assert ((c - shift).abs() * free).max() < 1e-9
    shift_px = shift.squeeze(-1).repeat_interleave(4, -2).repeat_interleave(4, -1)
    assert (x + shift_px >= 1 - 1e-9)[y == 1].all() and (x + shift_px <= 1e-9)[y == 0].all()


def test_nearest_neighbour_finds_an_exact_copy():
    torch.manual_seed(0)
    train = torch.rand(50, 1, 8, 8)
    observed = make_mask("left-half", (1, 8, 8)).logical_not()
    query = train[[7, 31]].clone()
    query[:, :, :, :4] = 0  # the missing half is garbage; the observed half matches
    torch.testing.assert_close(nearest_neighbour(train, query, observed), train[[7, 31]])


def test_evaluation_scores_model_and_baselines(model, vae_run):
    """Each reported MSE recomputed independently (float64, per image over the 32 missing
    pixels, then averaged): the model's first completion and the mean of its 2 (replayed
    by seed), the training mean image, and the nearest training image by brute force over
    the observed pixels. The mean of the completions cannot score worse than their
    average score (squared error is convex). Float32 inputs: 1e-6 relative."""
    data = load_test_images(vae_run)
    res = evaluate_completion(vaelab.open_run(vae_run), data, mask="top-half", limit=40, n=2,
                              steps=5)  # fmt: skip
    x = data.test_x[:40].double() / 255
    train = data.train_x.double() / 255
    hole = make_mask("top-half", model.image_shape)

    def mse(pred):
        return ((pred.double() - x)[:, hole] ** 2).mean(1)

    out = complete(model, x.float(), hole, n=2, steps=5, seed=0).images
    obs = (~hole).flatten()
    d = ((x.flatten(1)[:, None, obs] - train.flatten(1)[None, :, obs]) ** 2).sum(-1)
    want = {
        "model": mse(out[:, 0]), "model_mean_of_n": mse(out.mean(1)),
        "mean_image": mse(train.mean(0).expand_as(x)), "nearest_neighbour": mse(train[d.argmin(1)]),
    }  # fmt: skip
    for key, per_image in want.items():
        assert res[key]["mse"] == pytest.approx(per_image.mean().item(), rel=1e-6), key
        assert res[key]["mse_se"] == pytest.approx(per_image.std().item() / math.sqrt(40), rel=1e-5)
    assert res["model_mean_of_n"]["mse"] <= (mse(out[:, 0]).mean() + mse(out[:, 1]).mean()) / 2
    assert res["missing_fraction"] == 0.5
    sr = evaluate_completion(vaelab.open_run(vae_run), data, downscale_factor=2, limit=20, steps=3)
    assert sr["upsample_nearest"]["mse"] > 0


def test_cli_complete_and_evaluate(vae_run, tmp_path, capsys):
    out = tmp_path / "c.png"
    assert main(["complete", str(vae_run), "--index", "2", "--mask-preset", "centre-square",
                 "-n", "3", "--steps", "5", "--out", str(out)]) == 0  # fmt: skip
    assert Image.open(out).size[0] > Image.open(out).size[1] * 4  # one row of 5 images
    assert main(["complete", str(vae_run), "--downscale", "2", "--evaluate", "10", "--steps",
                 "2", "--json", str(tmp_path / "e.json")]) == 0  # fmt: skip
    assert '"upsample_nearest"' in (tmp_path / "e.json").read_text()
    assert main(["complete", str(vae_run), "--index", "0"]) == 2
    assert "--mask" in capsys.readouterr().err


def test_metropolis_within_gibbs_samples_the_exact_conditional():
    """On a 2-pixel Bernoulli VAE with a 1-D latent, p(x2 = 1 | x1 = 1) is a 1-D integral
    (quadrature on a fine grid). MwG is a valid MCMC for any proposal q, so E[p(x2=1|z_T)]
    over 4,000 independent chains must match it within 4 Monte Carlo standard errors."""
    from vaelab.config import ModelConfig
    from vaelab.models import VAE

    torch.manual_seed(0)
    model = VAE.from_config(ModelConfig(hidden=(4,), latent_dim=1), (1, 1, 2)).eval()
    linear = torch.nn.Linear(1, 2)  # both pixels' logits rise with z: x1 = 1 predicts x2 = 1
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3.0], [3.0]]))
        linear.bias.copy_(torch.tensor([-2.0, -1.0]))
    model.decoder = torch.nn.Sequential(linear, torch.nn.Unflatten(1, (1, 1, 1, 2)))
    z = torch.linspace(-8, 8, 8001)[:, None]
    p = torch.sigmoid(model.decoder(z).flatten(1))  # (G, 2)
    prior = torch.exp(-0.5 * z[:, 0].square())
    exact = (prior * p[:, 0] * p[:, 1]).sum() / (prior * p[:, 0]).sum()
    x = torch.tensor([[[[1.0, 0.0]]]])
    missing = torch.tensor([[[False, True]]])
    out = complete(model, x, missing, n=4000, steps=60, method="mwg", seed=0)
    estimate = out.decoded[0, :, 0, 0, 1]
    se = estimate.std() / math.sqrt(len(estimate))
    assert abs(estimate.mean() - exact) < 4 * se + 1e-3, (estimate.mean(), exact, se)
    assert 0.05 < out.acceptance < 1
    unconditional = (prior * p[:, 1]).sum() / prior.sum()
    assert exact - unconditional > 0.1  # the test can tell conditioning from ignoring x1


def _gaussian_toy_vae(w=(1.0, 1.5), b=(0.3, 0.9), s=0.3):
    """A 2-pixel VAE with a 1-D latent and a linear Gaussian decoder, x | z ~ N(w z + b, s^2 I),
    so x ~ N(b, w w^T + s^2 I) and p(z | x1) is Gaussian in closed form. The encoder stays
    random: Metropolis-within-Gibbs is exact for any proposal that covers the posterior."""
    from vaelab.config import ModelConfig
    from vaelab.models import VAE

    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(4,), latent_dim=1, likelihood="gaussian-fixed", sigma=s)
    model = VAE.from_config(cfg, (1, 1, 2)).eval()
    linear = torch.nn.Linear(1, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(w)[:, None])
        linear.bias.copy_(torch.tensor(b))
    model.decoder = torch.nn.Sequential(linear, torch.nn.Unflatten(1, (1, 1, 1, 2)))
    return model


def test_metropolis_within_gibbs_is_exact_for_a_gaussian_likelihood():
    """x1 = 1 observed; z | x1 ~ N(w1 (x1 - b1) / (w1^2 + s^2), s^2 / (w1^2 + s^2)) and the
    chain's decoded x2 mean, w2 z_T + b2, must have mean w2 E[z|x1] + b2 = 1.863 and variance
    w2^2 Var(z|x1) = 0.186 over 4,000 independent chains. x2's draws lie mostly above 1
    here: clamping them to [0, 1] (the old chain) pulled the mean to 1.23. Bounds: 4 SE
    of a mean (SE ~ 0.007), and 4 SE of a variance, sqrt(2 / n) relative (~2%)."""
    w, b, s = (1.0, 1.5), (0.3, 0.9), 0.3
    model = _gaussian_toy_vae(w, b, s)
    v = w[0] ** 2 + s**2
    post_mean, post_var = w[0] * (1.0 - b[0]) / v, s**2 / v
    x = torch.tensor([[[[1.0, 0.0]]]])
    missing = torch.tensor([[[False, True]]])
    n = 4000
    out = complete(model, x, missing, n=n, steps=60, method="mwg", seed=0)
    x2 = out.decoded[0, :, 0, 0, 1]
    want_mean, want_var = w[1] * post_mean + b[1], w[1] ** 2 * post_var
    se = x2.std() / math.sqrt(n)
    assert abs(x2.mean() - want_mean) < 4 * se, (x2.mean(), want_mean, se)
    assert abs(x2.var() / want_var - 1) < 4 * math.sqrt(2 / n), (x2.var(), want_var)
    assert out.images.max() <= 1  # what is shown is clamped


def _linear(weight, bias) -> torch.nn.Linear:
    layer = torch.nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def _mwg_moments(model, x1: float, n: int = 4000, steps: int = 60):
    x = torch.tensor([[[[x1, 0.0]]]])
    out = complete(model, x, torch.tensor([[[False, True]]]), n=n, steps=steps,
                   method="mwg", seed=0)  # fmt: skip
    x2 = out.decoded[0, :, 0, 0, 1]
    return x2.mean(), x2.var(), x2.std() / math.sqrt(n)


def test_metropolis_within_gibbs_is_exact_for_a_two_layer_vae():
    """HVAE toy, all Gaussian and linear: z2 ~ N(0, 1), z1 | z2 ~ N(c z2, t^2),
    x | z1 ~ N(w z1 + b, s^2 I), so z1 ~ N(0, a), a = c^2 + t^2, and z1 | x1 is Gaussian.
    The chain must carry (z1, z2) and decode p(x|z1): its decoded x2 = w2 z1_T + b2 has
    mean w2 E[z1|x1] + b2 and variance w2^2 Var(z1|x1). The old chain kept z2 only and
    decoded through E[z1|z2] = c z2, dropping t^2 of z1's spread. Bounds as above (4 SE)."""
    from vaelab.config import ModelConfig
    from vaelab.models import HVAE

    c, t, w, b, s = 1.0, 0.8, (1.0, 1.5), (0.3, 0.2), 0.3
    torch.manual_seed(0)
    cfg = ModelConfig(model="hvae", hidden=(4,), latent_dim=1, likelihood="gaussian-fixed",
                      sigma=s, options=HVAE.options(z1_dim=1, z1_hidden=(4,)))  # fmt: skip
    model = HVAE.from_config(cfg, (1, 1, 2)).eval()
    model.down = _linear([[c], [0.0]], [0.0, 2 * math.log(t)])  # z2 -> (mu, logvar) of z1
    model.decoder = torch.nn.Sequential(
        _linear([[w[0]], [w[1]]], list(b)), torch.nn.Unflatten(1, (1, 1, 1, 2))
    )
    a, x1 = c * c + t * t, 0.9
    var1 = 1 / (1 / a + w[0] ** 2 / s**2)  # z1 | x1: precision-weighted
    mean1 = var1 * w[0] * (x1 - b[0]) / s**2
    mean, var, se = _mwg_moments(model, x1)
    assert abs(mean - (w[1] * mean1 + b[1])) < 4 * se, (mean, w[1] * mean1 + b[1], se)
    assert abs(var / (w[1] ** 2 * var1) - 1) < 4 * math.sqrt(2 / 4000), (var, w[1] ** 2 * var1)


@pytest.mark.parametrize("model_name", ["cvae", "m2"])
def test_metropolis_within_gibbs_is_exact_for_a_label_model(model_name):
    """CVAE/M2 toy with 2 classes: x | z, y ~ N(w z + b_y, s^2 I), z ~ N(0, 1), y uniform.
    x1 = 0.4 lies between the classes, so p(y | x1) is a real mixture and p(x2 | x1) has
    two modes. The decoded x2 = w2 z_T + b_{y_T,2} must have the mixture's mean and
    variance: sum_y p(y|x1) m_y and sum_y p(y|x1) (w2^2 v + m_y^2) - mean^2, with z | x1, y
    ~ N(.., v) in closed form. The old chain re-inferred y = argmax each step (one mode)."""
    from vaelab.config import ModelConfig
    from vaelab.models import MODELS

    w, s, bs, x1 = (0.5, 0.5), 0.3, ((0.2, 0.1), (0.6, 0.9)), 0.4
    torch.manual_seed(0)
    cfg = ModelConfig(model=model_name, hidden=(4,), latent_dim=1, likelihood="gaussian-fixed",
                      sigma=s, options=MODELS[model_name].options(num_classes=2))  # fmt: skip
    model = MODELS[model_name].from_config(cfg, (1, 1, 2)).eval()
    rows = [[w[0], bs[0][0], bs[1][0]], [w[1], bs[0][1], bs[1][1]]]
    model.decoder = torch.nn.Sequential(
        _linear(rows, [0.0, 0.0]), torch.nn.Unflatten(1, (1, 1, 1, 2))
    )
    u = w[0] ** 2 + s**2  # Var(x1 | y)
    log_py = torch.tensor([-0.5 * (x1 - b[0]) ** 2 / u for b in bs])
    py = torch.softmax(log_py, 0)
    v = s**2 / u  # Var(z | x1, y)
    m = torch.tensor([w[1] * w[0] * (x1 - b[0]) / u + b[1] for b in bs])
    want_mean = (py * m).sum()
    want_var = (py * (w[1] ** 2 * v + m**2)).sum() - want_mean**2
    mean, var, se = _mwg_moments(model, x1)
    assert abs(mean - want_mean) < 4 * se, (mean, want_mean, se)
    assert abs(var / want_var - 1) < 4 * math.sqrt(2 / 4000), (var, want_var)


def test_metropolis_within_gibbs_refuses_a_model_without_a_chain(vae_run):
    """The plain autoencoder has no q(z|x) density: mwg says so in one line, no traceback."""
    from vaelab.config import ModelConfig
    from vaelab.models import Autoencoder

    ae = Autoencoder.from_config(ModelConfig(hidden=(4,), latent_dim=1), (1, 1, 2))
    with pytest.raises(VaelabError, match="--method mwg: --model ae has no exact chain"):
        complete(ae, torch.zeros(1, 1, 1, 2), torch.tensor([[[False, True]]]), method="mwg")


@pytest.mark.parametrize("fill", ["sample", "mean"])
def test_pseudo_gibbs_with_drawn_fills_is_exact_gibbs_under_the_exact_posterior(fill):
    """The Gaussian toy above with its encoder set to the exact posterior, q(z|x) = p(z|x) =
    N(V w.(x - b) / s^2, V), V = 1 / (1 + |w|^2 / s^2). Pseudo-Gibbs that *draws* x_mis
    (Rezende et al. 2014) is then an exact Gibbs sampler: x2_T ~ p(x2 | x1), so the returned
    decode at E_q[z | x_T], linear in x2_T with slope w2^2 V / s^2, has the closed-form mean
    and variance below (4 SE bounds as above). Putting back the mean E[x2|z] (the default
    fill) drops the s^2 noise of each step: its variance is 0.39 of that here (< 1/2)."""
    w, b, s = (1.0, 1.5), (0.3, 0.9), 0.3
    model = _gaussian_toy_vae(w, b, s)
    big_v = 1 / (1 + (w[0] ** 2 + w[1] ** 2) / s**2)
    g = big_v / s**2
    model.encoder = _linear([[g * w[0], g * w[1]], [0.0, 0.0]],
                            [-g * (w[0] * b[0] + w[1] * b[1]), math.log(big_v)])  # fmt: skip
    model.encoder = torch.nn.Sequential(torch.nn.Flatten(), model.encoder)
    u = w[0] ** 2 + s**2
    x1 = 1.0
    cond_mean = b[1] + w[0] * w[1] * (x1 - b[0]) / u  # x2 | x1 from N(b, w w^T + s^2 I)
    cond_var = w[1] ** 2 + s**2 - (w[0] * w[1]) ** 2 / u
    slope = w[1] * g * w[1]  # d decode_2(E_q[z|x]) / d x2
    mean_at = lambda x2: b[1] + w[1] * g * (w[0] * (x1 - b[0]) + w[1] * (x2 - b[1]))  # noqa: E731
    x = torch.tensor([[[[x1, 0.0]]]])
    n = 4000
    out = complete(model, x, torch.tensor([[[False, True]]]), n=n, steps=30, fill=fill, seed=0)
    d2 = out.decoded[0, :, 0, 0, 1]
    want_var = slope**2 * cond_var
    if fill == "sample":
        se = d2.std() / math.sqrt(n)
        assert abs(d2.mean() - mean_at(cond_mean)) < 4 * se, (d2.mean(), mean_at(cond_mean))
        assert abs(d2.var() / want_var - 1) < 4 * math.sqrt(2 / n), (d2.var(), want_var)
    else:
        assert d2.var() < 0.5 * want_var, (d2.var(), want_var)


def test_cli_fill_sample_and_a_bad_fill(vae_run, tmp_path, capsys):
    """`--fill sample` reaches the chain (recorded in the JSON; binary draws of a Bernoulli
    VAE differ from the mean fill's completions), and an unknown fill is one line."""
    args = ["complete", str(vae_run), "--mask-preset", "left-half", "--evaluate", "8",
            "--steps", "3", "-n", "2"]  # fmt: skip
    assert main([*args, "--fill", "sample", "--json", str(tmp_path / "s.json")]) == 0
    assert '"fill": "sample"' in (tmp_path / "s.json").read_text()
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line usage error
        main([*args, "--fill", "bogus"])
    assert exit_info.value.code == 2
    assert "--fill" in capsys.readouterr().err
    model = vaelab.load(vae_run)
    x = load_test_images(vae_run).test_x[:2].float() / 255
    mask = make_mask("left-half", model.image_shape)
    a = complete(model, x, mask, n=1, steps=3, fill="sample", seed=0).decoded
    b = complete(model, x, mask, n=1, steps=3, fill="mean", seed=0).decoded
    assert not torch.allclose(a, b)
    with pytest.raises(VaelabError, match="--fill"):
        complete(model, x, mask, fill="median")


def test_static_binarization_baselines_and_gmm_use_the_images_trained_on(tmp_path, monkeypatch):
    """With --binarize static the model trained on one seeded draw of the training images;
    the GMM sampler's fit and the completion baselines must use that very draw (they used
    the test set's seed + 1: other images). The draw is captured from the training loop
    itself, and the mean-image baseline's MSE is recomputed from it (float32 sums: 1e-6)."""
    session = importlib.import_module("vaelab.training.session")
    from vaelab.data.prepare import eval_images, to_unit
    from vaelab.evaluation.samplers import training_images

    captured = []
    real = session.binarize_fixed
    monkeypatch.setattr(
        session, "binarize_fixed", lambda x, s: captured.append(real(x, s)) or captured[-1]
    )
    torch.manual_seed(0)
    run = fit(small_config(binarize="static", epochs=1), tmp_path / "static")
    opened = vaelab.open_run(run)
    model = opened.model
    (trained,) = captured
    assert torch.equal(training_images(opened.config, 300), trained[:300])
    data = load_test_images(opened)
    res = evaluate_completion(opened, data, mask="top-half", limit=30, n=1, steps=1)
    x = to_unit(eval_images(data.test_x[:30], "static", opened.config.train.seed))
    hole = make_mask("top-half", model.image_shape).expand_as(x)
    want = (to_unit(trained).mean(0) - x).square()[hole].view(30, -1).mean(1).mean()
    assert res["mean_image"]["mse"] == pytest.approx(float(want), rel=1e-6, abs=1e-7)
