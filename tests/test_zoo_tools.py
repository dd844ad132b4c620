"""The latent tools on categorical and spherical latents (issue 23, item 5): a categorical
group is one traversal row whose tiles are labelled with the class they decode; its KL per
coordinate sums to the closed form; on the sphere every decoded point has unit norm."""

import math

import torch
from torch.distributions import Categorical, Normal, kl_divergence

from vaelab.config import ModelConfig
from vaelab.evaluation.explore import interpolate, joint_kl_terms, kl_per_dim
from vaelab.evaluation.pictures import traversal
from vaelab.models.gumbel import GumbelOptions, GumbelVAE
from vaelab.models.svae import SVAE


def _joint(seed: int = 0) -> GumbelVAE:
    torch.manual_seed(seed)
    opts = GumbelOptions(categories=4, cat_vars=2, joint=True)
    cfg = ModelConfig(model="gumbel", latent_dim=3, hidden=(16,), options=opts)
    return GumbelVAE.from_config(cfg, (1, 4, 4))


def _recording(model):
    seen = []
    decode = model.decode

    def record(z, *args):
        seen.append(z.detach().clone())
        return decode(z, *args)

    model.decode = record
    return seen


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
    seen = _recording(model)
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
    seen = _recording(model)
    x = (torch.rand(2, 1, 4, 4) * 255).to(torch.uint8)
    interpolate(model, x[0], x[1], steps=9, method="spherical")
    z = seen[0].double()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(9, dtype=torch.double))
    angles = torch.arccos((z[:-1] * z[1:]).sum(-1).clamp(-1, 1))
    total = torch.arccos((z[0] * z[-1]).sum().clamp(-1, 1))
    # float32 latents: angles agree to ~1e-3 rad (arccos near 1 amplifies rounding)
    torch.testing.assert_close(angles, torch.full_like(angles, float(total) / 8), atol=2e-3, rtol=0)
    assert 0 < float(total) < math.pi
