"""Encoder/decoder bodies give the right shapes for any image size, and the full model's
contract holds for every architecture, likelihood and model type."""

import pytest
import torch

from vaelab.config import Config, with_overrides
from vaelab.likelihoods import LIKELIHOODS
from vaelab.models import MODELS, build_model
from vaelab.nn import ARCHS, build_bodies


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 7, 13), (3, 32, 20)])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_bodies_round_trip_shapes(arch, shape):
    enc, dec = build_bodies(arch, shape, (8, 16), 5, 10, n_params=2)
    assert enc(torch.rand(4, *shape)).shape == (4, 10)
    assert dec(torch.randn(4, 5)).shape == (4, 2, *shape)


# --model deep has its own bottom-up/top-down bodies (--arch does not apply): one arch for it;
# --model vqvae keeps a spatial grid of codes, so it refuses --arch mlp (tests/test_vq.py).
CONTRACT_CASES = [
    (model, arch)
    for model in MODELS
    for arch in ARCHS
    if (model != "deep" or arch == "mlp") and (model != "vqvae" or arch != "mlp")
]


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize(("model", "arch"), CONTRACT_CASES)
def test_model_terms_contract(model, likelihood, arch):
    options = {"model": model, "likelihood": likelihood, "arch": arch, "hidden": "8",
               "latent_dim": 3}  # fmt: skip
    if model == "deep":
        options.update(deep_widths="8,8", deep_groups="1,1", group_channels=2)
    cfg = with_overrides(Config(), options, "t")
    m = build_model(cfg.model, (1, 8, 8))
    x = torch.rand(5, 1, 8, 8)  # label models (cvae, m2) without y: the label-free bound
    terms = m(x, 4)
    k = 4 if m.has_posterior else 1  # a point code (ae, vqvae): one deterministic z
    for t in (terms.log_px_z, terms.log_pz, terms.log_qz_x):
        assert t.shape == (k, 5) and torch.isfinite(t).all()
    assert terms.kl_per_image().shape == (5,)
    assert m.reconstruct(x).shape == x.shape
