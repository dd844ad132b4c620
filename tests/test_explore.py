"""Interpolation, traversal, latent embeddings and the manifold grid (vaelab.evaluation.explore)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import small_config

from vaelab.api import load, load_test_images, open_run
from vaelab.data.prepare import eval_images, to_unit
from vaelab.errors import VaelabError
from vaelab.evaluation import nll
from vaelab.evaluation.explore import (
    dim_scores,
    embed,
    interpolate,
    kl_per_dim,
    latent_means,
    lerp,
    prior_quantile_grid,
    slerp,
    top_dims,
    traverse,
)
from vaelab.evaluation.pictures import latent_plot


@pytest.fixture(scope="module")
def digits_2d(tmp_path_factory):
    """A VAE with a 2-D latent on digits (about 2 s)."""
    from vaelab.training.loop import fit

    out = tmp_path_factory.mktemp("runs") / "digits2d"
    return fit(small_config(latent_dim=2, epochs=4, hidden="64"), out)


def _test(run):
    """The run's test set and its test images as the run evaluates them."""
    run = open_run(run)
    data = load_test_images(run)
    return data, eval_images(data.test_x, run.config.data.binarize, run.config.train.seed)


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolation_endpoints_decode_to_reconstructions(digits_run, method):
    model = load(digits_run)
    _, x = _test(digits_run)
    path = interpolate(model, x[3], x[40], 7, method)
    recon = model.reconstruct(to_unit(x[[3, 40]]))
    assert path.shape == (7, *model.image_shape)
    # Same decoder on the same z up to float32 rounding in slerp's normalisation.
    torch.testing.assert_close(path[0], recon[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(path[-1], recon[1], atol=1e-5, rtol=0)
    # And the interior differs from both ends (the path actually moves).
    assert (path[3] - recon[0]).abs().max() > 1e-3 and (path[3] - recon[1]).abs().max() > 1e-3


@pytest.mark.parametrize("dim", [2, 8, 64])
def test_slerp_norm_stays_between_endpoint_norms(dim):
    gen = torch.Generator().manual_seed(dim)
    for _ in range(20):
        z0 = torch.randn(dim, generator=gen) * 2
        z1 = -0.7 * z0 + 0.3 * torch.randn(dim, generator=gen)  # nearly opposite, other norm
        norms = slerp(z0, z1, 25).norm(dim=1)
        lo, hi = min(z0.norm(), z1.norm()), max(z0.norm(), z1.norm())
        assert norms.min() >= lo * (1 - 1e-5) and norms.max() <= hi * (1 + 1e-5)
        # The linear path through nearly opposite points dips far inside: the property
        # above is a real constraint, not something every path satisfies.
        assert lerp(z0, z1, 25).norm(dim=1).min() < 0.5 * lo


def test_slerp_moves_at_constant_angle_on_the_sphere():
    z0, z1 = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    path = slerp(z0, z1, 7)
    torch.testing.assert_close(path.norm(dim=1), torch.full((7,), 3.0))
    cos = (path[:-1] * path[1:]).sum(1) / 9.0
    # A quarter circle in 6 equal steps: each step turns by (pi/2)/6.
    torch.testing.assert_close(cos, torch.full((6,), float(np.cos(np.pi / 12))))
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)


def test_kl_per_dim_sums_to_the_elbo_kl_term(digits_run):
    model = load(digits_run)
    _, x = _test(digits_run)
    kl = kl_per_dim(model, x)
    # test_bound uses the prior's closed-form KL, summed over dimensions: same maths.
    assert kl.sum().item() == pytest.approx(nll.test_bound(model, x)["kl"], rel=1e-4)
    assert (kl >= -1e-6).all()
    assert top_dims(kl, 3) == torch.argsort(kl, descending=True)[:3].tolist()


def test_traverse_rows_move_one_dimension_through_the_mean(digits_run):
    model = load(digits_run)
    _, x = _test(digits_run)
    dims = [0, 5]
    grid = traverse(model, x[7], dims, steps=5, span=2.0).reshape(2, 5, *model.image_shape)
    recon = model.reconstruct(to_unit(x[7:8]))[0]
    # The middle column has offset 0: both rows decode the unchanged mean.
    torch.testing.assert_close(grid[0, 2], recon, atol=1e-6, rtol=0)
    torch.testing.assert_close(grid[1, 2], recon, atol=1e-6, rtol=0)
    mu = latent_means(model, x[7:8])[0]
    z = mu.clone()
    z[5] += 2.0
    torch.testing.assert_close(grid[1, 4], model.likelihood.mean(model.decode(z[None]))[0])


def test_latent_plot_uses_every_test_point_once(digits_2d):
    model = load(digits_2d)
    data, x = _test(digits_2d)
    fig, coords, labels = latent_plot(open_run(digits_2d), data)
    ax = fig.axes[0]
    plotted = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(plotted) == len(coords) == len(labels) == len(data.test_x)
    # 2-D latents are drawn as they are: the points are exactly the latent means, each once.
    expected = latent_means(model, x).double().numpy()
    order = lambda a: a[np.lexsort(a.T)]  # noqa: E731
    np.testing.assert_allclose(order(plotted), order(expected), rtol=1e-6)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [str(c) for c in range(10)]  # digits: one entry per class 0..9
    assert ax.get_xlabel() == "z1" and ax.get_ylabel() == "z2" and ax.get_title()


def test_pca_embedding_keeps_the_leading_variance():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=gen) * torch.tensor([5.0, 0.1, 3.0, 0.1, 0.1, 0.1])
    coords, prefix = embed(z, "pca")
    assert prefix == "PC" and coords.shape == (500, 2)
    # The top two principal axes are the two wide coordinates (variances 25 and 9).
    assert coords.var(0, ddof=1) == pytest.approx(z[:, [0, 2]].double().var(0).numpy(), rel=0.05)


def test_manifold_grid_decodes_the_prior_quantiles(digits_2d, digits_run):
    model = load(digits_2d)
    tiles, q = prior_quantile_grid(model, 5)
    # Quantiles of N(0,1) at 0.1, 0.3, 0.5, 0.7, 0.9 (table values).
    np.testing.assert_allclose(q[0], [-1.28155, -0.52440, 0.0, 0.52440, 1.28155], atol=1e-4)
    z = torch.tensor([[float(q[0][4]), float(q[1][4])]])  # first row is high z2; col 4 high z1
    torch.testing.assert_close(tiles[4], model.likelihood.mean(model.decode(z))[0])
    with pytest.raises(VaelabError, match="2-D latent"):
        prior_quantile_grid(load(digits_run), 5)  # an 8-D latent


@pytest.mark.parametrize(
    ("options", "kind"),
    [({"posterior": "gamma", "prior": "gamma"}, "KL"), ({"prior": "mixture"}, "activity")],
)
def test_other_latents_rank_dims_and_report(tmp_path, options, kind):
    """Gamma-Gamma has a closed-form KL per dimension; a mixture prior does not factorize,
    so dimensions are ranked by their activity Var_x E_q[z_d] instead."""
    from vaelab.evaluation.html_report import write_report
    from vaelab.training.loop import fit

    run = fit(small_config(epochs=1, **options), tmp_path / "run")
    model = load(run)
    _, x = _test(run)
    scores, got = dim_scores(model, x)
    assert got == kind and scores.shape == (4,) and (scores >= -1e-6).all()
    if kind == "KL":  # with a factorized prior the per-dimension KLs add up to the KL term
        assert scores.sum().item() == pytest.approx(nll.test_bound(model, x)["kl"], rel=1e-4)
    else:
        expected = latent_means(model, x).var(0)
        torch.testing.assert_close(scores, expected)
    page = write_report(run).read_text()
    assert f"the most {kind};" in page  # the traversal caption names the ranking
