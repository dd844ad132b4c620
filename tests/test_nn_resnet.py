"""--arch resnet: shapes at odd sizes and channel counts, gradients reach every weight,
and a short run on real images (digits) improves its test ELBO well past the untrained
model's."""

import pytest
import torch

from conftest import small_config
from single_thread import one_thread
from vaelab import load
from vaelab.data import load_dataset
from vaelab.evaluation import nll
from vaelab.models import build_model
from vaelab.nn import build_bodies
from vaelab.nn.resnet import ResBlock
from vaelab.training.loop import fit


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 20, 24), (3, 7, 13)])
@pytest.mark.parametrize("blocks", [1, 3])
def test_shapes_and_block_count(shape, blocks):
    enc, dec = build_bodies("resnet", shape, (8, 16), 5, 10, n_params=4, blocks=blocks)
    assert enc(torch.rand(2, *shape)).shape == (2, 10)
    assert dec(torch.randn(2, 5)).shape == (2, 4, *shape)
    for body in (enc, dec):  # `blocks` residual blocks at each of the two resolutions
        assert sum(isinstance(m, ResBlock) for m in body.modules()) == 2 * blocks


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    cfg = small_config(arch="resnet", hidden="8,16", blocks=2, likelihood="dlogistic")
    model = build_model(cfg.model, (3, 20, 24))
    x = torch.randint(0, 256, (4, 3, 20, 24)) / 255
    terms = model(x, 2)
    (-(terms.log_px_z.mean() - terms.kl_per_image().mean())).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name  # no dead branch: blocks start small, not zero


def test_residual_blocks_start_close_to_identity():
    torch.manual_seed(0)
    block = ResBlock(16)
    x = torch.randn(8, 16, 6, 6)
    change = (block(x) - x).norm() / x.norm()
    assert 0 < change < 0.2  # a tenth-scale last conv: a deep stack starts near identity


def test_short_training_run_beats_the_untrained_bound_on_digits(tmp_path):
    """digits (real 8x8 scans, 17 grey levels), dlogistic, 3 epochs of 26 steps. The
    untrained model's test ELBO is about -219 nats (7.0 bits/dim); 3 epochs reach about
    -186. Requiring 20 nats (0.45 bits/dim) of improvement leaves margin for seeds while a
    body that does not learn (broken skips, a dead decoder) stays near its start."""
    cfg = small_config(arch="resnet", hidden="16,32", blocks=1, likelihood="dlogistic", epochs=3)
    data = load_dataset("digits")
    with one_thread():
        torch.manual_seed(0)
        before = nll.test_bound(build_model(cfg.model, data.image_shape), data.test_x)["elbo"]
        torch.manual_seed(0)
        run = fit(cfg, tmp_path / "run", data=data)
        after = nll.test_bound(load(run), data.test_x)["elbo"]
    assert after > before + 20, (before, after)
