"""The latent tools on categorical and spherical latents (issue 23, item 5): a categorical
group is one traversal row whose tiles are labelled with the class they decode; its KL per
coordinate sums to the closed form; on the sphere every decoded point has unit norm, the
spherical interpolation takes equal angles and the manifold tiles equal shares of U(S^2)."""

import math

import torch
from torch.distributions import Categorical, Normal, kl_divergence

from conftest import recording_decodes
from vaelab.config import ModelConfig
from vaelab.evaluation.explore import (
    interpolate,
    joint_kl_terms,
    kl_per_dim,
    sphere_grid,
    sphere_map,
)
from vaelab.evaluation.pictures import has_manifold, manifold, traversal
from vaelab.models.gumbel import GumbelOptions, GumbelVAE
from vaelab.models.svae import SVAE


def _joint(seed: int = 0) -> GumbelVAE:
    torch.manual_seed(seed)
    opts = GumbelOptions(categories=4, cat_vars=2, joint=True)
    cfg = ModelConfig(model="gumbel", latent_dim=3, hidden=(16,), options=opts)
    return GumbelVAE.from_config(cfg, (1, 4, 4))


def test_joint_kl_terms_match_torch_distributions_per_dimension_and_group():
    model = _joint().eval()
    x = torch.rand(5, 1, 4, 4)
    q = model.encode(x)
    terms = joint_kl_terms(q)  # (5, 3 + 2 * 4)
    std = (0.5 * q.logvar).exp()
    cont = kl_divergence(Normal(q.mu, std), Normal(0.0, 1.0))
    torch.testing.assert_close(terms[:, :3], cont)
    uniform = Categorical(probs=torch.full((4,), 0.25))
    groups = kl_divergence(Categorical(logits=q.logits), uniform)  # (5, 2)
    torch.testing.assert_close(terms[:, 3:].unflatten(-1, (2, 4)).sum(-1), groups)
    # and kl_per_dim (what traverse and the report rank by) is their mean over images
    xu8 = (x * 255).round().to(torch.uint8)
    q8 = model.encode(xu8.float() / 255)
    torch.testing.assert_close(kl_per_dim(model, xu8), joint_kl_terms(q8).mean(0))


def test_categorical_traversal_rows_are_groups_labelled_with_the_decoded_class():
    model = _joint(1)
    x = (torch.rand(6, 1, 4, 4) * 255).to(torch.uint8)
    seen = recording_decodes(model)
    fig, shown = traversal(model, x, 0, dims=20, steps=4)  # more rows asked than exist
    assert shown["kind"] == "KL"
    # 3 Gaussian dims + 2 groups: one row each, never two rows from one group
    assert len(shown["dims"]) == 5
    cats = [n for n in shown["names"] if n.startswith("cat ")]
    assert sorted(n.split(" (")[0] for n in cats) == ["cat 0", "cat 1"]
    z = seen[0].reshape(5, 4, -1)
    for row, (d, cols) in enumerate(zip(shown["dims"], shown["columns"], strict=True)):
        if d < 3:
            assert cols is None
            continue
        start = 3 + (d - 3) // 4 * 4
        decoded = z[row, :, start : start + 4].argmax(-1).tolist()
        assert cols == [f"category {k}" for k in decoded]  # the label is what is decoded
        assert decoded == [0, 1, 2, 3]  # steps = C: every class once
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("category 3") == 2  # each group's last tile is labelled


def test_sphere_spherical_interpolation_is_the_constant_speed_great_circle():
    torch.manual_seed(0)
    model = SVAE.from_config(ModelConfig(model="svae", latent_dim=5, hidden=(16,)), (1, 4, 4))
    seen = recording_decodes(model)
    x = (torch.rand(2, 1, 4, 4) * 255).to(torch.uint8)
    interpolate(model, x[0], x[1], steps=9, method="spherical")
    z = seen[0].double()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(9, dtype=torch.double))
    angles = torch.arccos((z[:-1] * z[1:]).sum(-1).clamp(-1, 1))
    total = torch.arccos((z[0] * z[-1]).sum().clamp(-1, 1))
    # float32 latents: angles agree to ~1e-3 rad (arccos near 1 amplifies rounding)
    torch.testing.assert_close(angles, torch.full_like(angles, float(total) / 8), atol=2e-3, rtol=0)
    assert 0 < float(total) < math.pi


def _sphere(d: int) -> SVAE:
    torch.manual_seed(0)
    return SVAE.from_config(ModelConfig(model="svae", latent_dim=d, hidden=(16,)), (1, 4, 4))


def test_sphere_manifold_decodes_equal_shares_of_the_uniform_prior_on_s2():
    model = _sphere(3)
    seen = recording_decodes(model)
    n = 6
    tiles, axes = sphere_grid(model, n)
    assert tiles.shape == (n * n, 1, 4, 4)
    z = seen[0].double()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(n * n, dtype=torch.double))
    # each tile's band of longitude x height holds 1/n^2 of U(S^2): 400,000 uniform draws
    # (normalised Gaussians), counted per band; binomial sd = sqrt(p (1 - p) / N) ~ 2.6e-4
    g = torch.Generator().manual_seed(0)
    u = torch.randn(400_000, 3, generator=g, dtype=torch.double)
    u = u / u.norm(dim=-1, keepdim=True)
    phi, h = torch.atan2(u[:, 1], u[:, 0]), u[:, 2]
    col = ((phi + math.pi) / (2 * math.pi) * n).long().clamp(max=n - 1)
    row = ((1 - h) / 2 * n).long().clamp(max=n - 1)  # row 0: the top (high z3)
    share = torch.bincount(row * n + col, minlength=n * n).double() / len(u)
    torch.testing.assert_close(share, torch.full_like(share, 1 / n**2), atol=2e-3, rtol=0)
    # and tile (row, col) decodes the centre of that band: the scatter's axes are the grid's
    centres = torch.from_numpy(sphere_map(z.float()))
    want_phi = torch.from_numpy(axes[0]).repeat(n)
    want_h = torch.from_numpy(axes[1]).flip(0).repeat_interleave(n)
    torch.testing.assert_close(centres[:, 0], want_phi, atol=1e-6, rtol=0)
    torch.testing.assert_close(centres[:, 1], want_h, atol=1e-6, rtol=0)


def test_sphere_manifold_on_the_circle_and_where_there_is_none():
    model = _sphere(2)
    seen = recording_decodes(model)
    fig = manifold(model, 8)
    z = seen[0].double()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(8, dtype=torch.double))
    steps = torch.arccos((z[:-1] * z[1:]).sum(-1).clamp(-1, 1))
    torch.testing.assert_close(steps, torch.full_like(steps, 2 * math.pi / 8))  # equal arcs
    assert "circle" in fig.axes[0].get_title()
    assert has_manifold(model) and has_manifold(_sphere(3)) and not has_manifold(_sphere(4))
    assert not has_manifold(_joint())  # a categorical latent: no flat grid to decode
