"""The post-hoc GMM sampler: moments of its draws, npz round trip, caching in a run."""

import numpy as np
import pytest
import torch

import vaelab
from vaelab.errors import VaelabError
from vaelab.evaluation.samplers import GaussianMixture, fit_gmm, sample_images, sample_with


def mixture_moments(gmm: GaussianMixture):
    """Mean sum_n w_n mu_n; covariance sum_n w_n (S_n + mu_n mu_n^T) - m m^T."""
    w, mu, cov = gmm.weights, gmm.means, gmm.covariances
    m = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return m, second - np.outer(m, m)


def test_gmm_samples_have_the_fitted_mixture_moments(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal([-3, 0, 1], [1.0, 0.5, 0.2], size=(600, 3))
    b = rng.normal([2, 1, -1], [0.3, 1.0, 0.7], size=(400, 3)) @ np.array(
        [[1, 0.5, 0], [0, 1, 0], [0, 0.3, 1]]
    )
    gmm = fit_gmm(torch.tensor(np.concatenate([a, b])), components=2)
    gmm = GaussianMixture.load(gmm.save(tmp_path / "g.npz"))  # what a later command reads
    m, cov = mixture_moments(gmm)
    s = gmm.sample(200_000, generator=torch.Generator().manual_seed(1)).numpy()
    # Each coordinate's mean has SE sqrt(var / n) (<= 0.006 here); 5 SE bound. Covariance
    # entries of 200k draws are within ~1%: 3% of the diagonal scale.
    se = np.sqrt(np.diag(cov) / len(s))
    assert (np.abs(s.mean(0) - m) < 5 * se).all(), (s.mean(0), m)
    scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert (np.abs(np.cov(s, rowvar=False) - cov) < 0.03 * scale).all()
    # The fit found the two clusters with their shares.
    assert sorted(np.round(gmm.weights, 2)) == [0.4, 0.6]


def test_gmm_npz_holds_no_objects(tmp_path):
    gmm = GaussianMixture(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    with np.load(gmm.save(tmp_path / "g.npz"), allow_pickle=False) as f:
        assert set(f.files) == {"weights", "means", "covariances"}


def test_gmm_sampler_on_a_trained_run_is_cached(digits_run):
    run = vaelab.open_run(digits_run)
    model = run.model
    before = set(digits_run.glob("gmm-*.npz"))
    images = sample_with(run, 16, "gmm", components=3, seed=0)
    files = set(digits_run.glob("gmm-3-*.npz")) - before
    assert len(files) <= 1 and list(digits_run.glob("gmm-3-*.npz"))
    assert images.shape == (16, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    again = sample_with(run, 16, "gmm", components=3, seed=0)  # same fit, same seed
    torch.testing.assert_close(again, images)
    with pytest.raises(VaelabError, match="--sampler"):
        sample_images(model, 4, "nope")
    with pytest.raises(VaelabError, match="--sampler gmm"):
        sample_images(model, 4, "gmm")
