"""Model capability flags (``has_posterior``, ``has_prior``, ``any_estimator``,
``uses_labels``, ``semi_supervised``, ``on_images``) are what callers test instead of model
names, so each registry entry's flags must say what the model really does: checked here by
calling what a flag promises (or asserting the documented refusal) on every model."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Distribution

from conftest import small_config
from vaelab.errors import VaelabError
from vaelab.evaluation.chains import CHAINS
from vaelab.models import MODELS, build_model
from vaelab.objectives import build_objective

SMALL = {"hidden": "8", "latent_dim": 2}
FAMILY = {"hvae": {"z1_dim": 3, "z1_hidden": "8"},
          "deep": {"deep_widths": "8,8", "deep_groups": "1,1", "group_channels": 2}}  # fmt: skip


@pytest.mark.parametrize("name", list(MODELS))
def test_capability_flags_say_what_the_model_does(name):
    torch.manual_seed(0)
    cfg = small_config(model=name, **SMALL, **FAMILY.get(name, {}))
    model = build_model(cfg.model, (1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 5, -1 if model.semi_supervised else 2])
    labels = {"y": y} if model.uses_labels else {}
    terms = model(x, 2, **labels)
    k = 2 if model.has_posterior else 1  # a point code: one z per image, whatever K
    assert terms.log_px_z.shape == (k, 3) and torch.isfinite(terms.log_w()).all()
    if model.has_posterior:
        q = model.encode(x)
        assert isinstance(q, Distribution) and q.batch_shape == (3,)
    else:  # no method to refuse: the autoencoder does not inherit what it cannot do
        assert not hasattr(model, "encode") and not hasattr(model, "terms_at")
    if model.has_prior:
        assert model.sample(2).shape == (2, 1, 8, 8)
    else:
        assert not hasattr(model, "sample")
    assert model.semi_supervised == hasattr(model, "class_logits")
    assert model.has_classifier == hasattr(model, "classifier")
    if model.has_classifier:
        assert model.class_logits(x).shape == (3, model.num_classes)
    assert model.uses_labels == hasattr(model, "num_classes")
    assert model.latent_groups == hasattr(model, "group_kl")
    if model.latent_groups:
        assert len(model.group_kl(x)) == model.num_groups
    assert model.group_temperatures == hasattr(model, "temperatures")
    if model.group_temperatures:
        t = [1.0] * model.num_groups
        assert model.sample(2, t).shape == (2, 1, 8, 8)
    assert model.chain is None or model.chain in CHAINS
    assert model.on_images  # only M1+M2 (built on a trained run) models features
    assert isinstance(model.to_images(x), torch.Tensor)
    score = small_config(model=name, estimator="score", **SMALL, **FAMILY.get(name, {}))
    if model.any_estimator:  # the objective draws z from encode(x) and scores terms_at
        loss, _ = build_objective(score, model)(model, x, samples=2)
        loss.backward()
        enc = [p.grad for p in model.encoder.parameters()]
        assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in enc)
    else:
        with pytest.raises(VaelabError, match=f"--estimator score: --model {name}"):
            build_objective(score, model)


def test_no_code_outside_models_probes_a_model():
    # Callers read the contract's capabilities (models/base.py); a hasattr/getattr on a
    # model (`model`, `self.model`, `run.model`) outside models/ is a capability missing.
    import ast
    from pathlib import Path

    import vaelab

    root = Path(vaelab.__file__).parent
    probes = []
    for path in root.rglob("*.py"):
        if path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
                and node.args
            ):
                target = ast.unparse(node.args[0])
                if target == "model" or target.endswith(".model"):
                    probes.append(f"{path.relative_to(root)}:{node.lineno} {ast.unparse(node)}")
    assert probes == []
