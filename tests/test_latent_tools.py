"""The tools on the sphere and on categorical latents (the ``latent_space`` capability):
the latents they decode stay on S^{D-1}; a categorical group's traversal shows its classes."""

import torch

from conftest import recording_decodes
from vaelab.config import ModelConfig
from vaelab.evaluation.explore import category_sweep, interpolate, traverse
from vaelab.evaluation.generate import near_images
from vaelab.models.gumbel import GumbelOptions, GumbelVAE
from vaelab.models.svae import SVAE


def test_sphere_tools_decode_points_on_the_sphere():
    torch.manual_seed(0)
    model = SVAE.from_config(ModelConfig(model="svae", latent_dim=5, hidden=(16,)), (1, 4, 4))
    seen = recording_decodes(model)
    x = (torch.rand(2, 1, 4, 4) * 255).to(torch.uint8)
    for method in ("linear", "spherical"):
        interpolate(model, x[0], x[1], steps=7, method=method)
    traverse(model, x[0], dims=[0, 3], steps=5, span=3.0)
    near_images(model, x[0], n=6, spread=1.0)
    near_images(model, x[0], n=6, spread=2.5)
    assert len(seen) == 5
    for z in seen:
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(z.shape[:-1]))
    # the linear row is the chord projected: the same great circle as the spherical one
    lin, sph = seen[0], seen[1]
    normal = torch.linalg.svd(torch.cat([lin, sph]))[1]
    assert normal[2] < 1e-5  # all 14 points in one 2-D plane through the origin


def test_categorical_traversal_sweeps_a_groups_classes():
    torch.manual_seed(1)
    opts = GumbelOptions(categories=4, cat_vars=2, joint=True)
    model = GumbelVAE.from_config(
        ModelConfig(model="gumbel", latent_dim=3, hidden=(16,), options=opts), (1, 4, 4)
    )
    mu = torch.cat([torch.tensor([0.1, 0.2, 0.3]), torch.eye(4)[2], torch.eye(4)[1]])
    z = category_sweep(model, mu, d=8, steps=4)  # d = 8: the second group
    assert torch.equal(z[:, 7:], torch.eye(4))
    assert torch.equal(z[:, :7], mu[:7].expand(4, 7))
    seen = recording_decodes(model)
    x = (torch.rand(1, 4, 4) * 255).to(torch.uint8)
    traverse(model, x, dims=[0, 5], steps=7)
    rows = seen[0].reshape(2, 7, -1)
    groups = rows[1, :, 3:7]
    assert torch.equal(groups.sum(-1), torch.ones(7)) and set(groups.argmax(-1).tolist()) == {
        0, 1, 2, 3,
    }  # fmt: skip
    assert (rows[0, :, 0].diff() > 0).all()  # a Gaussian dimension moves as in a VAE
