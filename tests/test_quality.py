"""Sample-quality metrics: Frechet distance, k-NN precision/recall, the cached classifier,
and reconstruction MSE/PSNR, on digits (a classifier trains in seconds)."""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from scipy import linalg

from vaelab.data import load_dataset
from vaelab.evaluation.quality import (
    _logits_and_features,
    frechet_distance,
    load_classifier,
    precision_recall,
    reconstruction_quality,
    sample_quality,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def classifier(digits, tmp_path_factory):
    # The same folder as test_evaluate_cli's cache: the digits classifier trains once.
    cache = tmp_path_factory.getbasetemp() / "vaelab-cache"
    net, info = load_classifier(digits, cache_dir=cache)
    return net, info, cache


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.5
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(ref, rel=1e-8)


def test_classifier_is_cached_and_accurate(digits, classifier):
    net, info, cache = classifier
    # A small CNN on 8x8 digits: ~95% test accuracy is typical; 0.85 leaves room for seeds.
    assert info["test_accuracy"] > 0.85, info
    files = sorted(p.name for p in (cache / "classifiers").glob(f"{info['key']}.*"))
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "safetensors"]
    assert json.loads((cache / "classifiers" / files[0]).read_text()) == info
    again, info2 = load_classifier(digits, cache_dir=cache)  # from disk: no retraining
    assert info2 == info
    x = digits.test_x[:20]
    torch.testing.assert_close(_logits_and_features(again, x), _logits_and_features(net, x))


def test_self_comparison_is_perfect_and_noise_increases_the_distance(digits, classifier):
    net = classifier[0]
    x = digits.test_x.float() / 255
    same = sample_quality(net, x, digits.test_x)
    # FD(X, X) = 0 exactly in exact arithmetic; float64 eigen-solvers leave ~1e-10 of the
    # features' total variance.
    _, feats = _logits_and_features(net, digits.test_x)
    assert abs(same["frechet_distance"]) < 1e-6 * feats.var(0).sum().item()
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    assert same["class_entropy_samples"] == pytest.approx(same["class_entropy_test"])
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(x.shape, generator=gen)
    fds = [sample_quality(net, (x + s * eps).clamp(0, 1), digits.test_x)["frechet_distance"]
           for s in (0.05, 0.1, 0.2, 0.4, 0.8)]  # fmt: skip
    assert all(a < b for a, b in itertools.pairwise(fds)), fds
    assert fds[0] > 1e-3


def test_precision_and_recall_of_disjoint_and_nested_sets():
    torch.manual_seed(0)
    real = torch.randn(300, 4)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # Fakes collapsed onto one real point: all inside the real manifold (precision 1), but
    # they cover almost none of it (recall: only points whose own ball reaches that one).
    fake = real[:1].repeat(50, 1) + 1e-6 * torch.randn(50, 4)
    precision, recall = precision_recall(real, fake)
    assert precision == 1.0 and recall < 0.05


class _ConstantModel(torch.nn.Module):
    """Reconstructs every image as the constant grey ``c``."""

    def __init__(self, c):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c))

    def reconstruct(self, x):
        return torch.full_like(x, self.c.item())


def test_reconstruction_mse_and_psnr_closed_form(digits):
    x = digits.test_x[:50]
    out = reconstruction_quality(_ConstantModel(0.25), x)
    mse_i = ((x.double() / 255 - 0.25) ** 2).flatten(1).mean(1)
    assert out["mse"] == pytest.approx(mse_i.mean().item(), rel=1e-6)
    assert out["psnr_db"] == pytest.approx((10 * torch.log10(1 / mse_i)).mean().item(), rel=1e-6)
    assert out["images"] == 50


def test_damaged_classifier_cache_is_rebuilt_not_fatal(digits, classifier, tmp_path):
    """The cache is disposable: a truncated weights file warns and retrains (same seed, so
    the same accuracy), and the rebuilt entry loads again."""
    _, info, cache = classifier
    own = tmp_path / "cache"
    shutil.copytree(cache, own)
    weights = own / "classifiers" / f"{info['key']}.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged classifier cache"):
        _, rebuilt = load_classifier(digits, cache_dir=own)
    assert rebuilt["test_accuracy"] == pytest.approx(info["test_accuracy"])
    assert load_classifier(digits, cache_dir=own)[1] == rebuilt
