"""Posterior collapse: the resnet bodies' initialisation and the warning during training.

Measured cause (benchmarks/README.md, "Posterior collapse on small colour sets"): with
PyTorch's default initialisation the resnet decoder's output barely moved with z (0.001
against a spread of 0.037 over pixels) and the encoder's gradient from the reconstruction
was a tenth of the KL's, so q(z|x) fell onto p(z) before the decoder learnt to use z.
"""

import warnings

import pytest
import torch

from conftest import small_config
from single_thread import one_thread
from vaelab.config import Config, resolve, with_overrides
from vaelab.models import build_model
from vaelab.training.collapse import KL_NEAR_ZERO, CollapseWatch
from vaelab.training.loop import fit


def _z_driven_spread(likelihood: str) -> float:
    """RMS change of the decoder's output between two draws of z ~ N(0, I), halved in
    variance: the part of the output that z moves."""
    cfg = resolve(with_overrides(Config(), {"arch": "resnet", "likelihood": likelihood,
                                            "latent_dim": 32}, "t"))  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model, (3, 32, 32))
    z1, z2 = torch.randn(2, 64, 32)
    with torch.no_grad():
        return ((model.decode(z1) - model.decode(z2)).pow(2).mean() / 2).sqrt().item()


@pytest.mark.parametrize("likelihood", ["dmol", "dlogistic"])
def test_resnet_decoder_output_moves_with_z_at_initialisation(likelihood):
    """He init: ~0.05 (measured); PyTorch's default init: ~0.001. 0.01 sits between, a
    factor of 5 from each."""
    with one_thread():
        assert _z_driven_spread(likelihood) > 0.01


def _rows(kls, warmup_epochs=0.0, steps_per_epoch=100, **overrides):
    config = with_overrides(Config(), {"warmup_epochs": warmup_epochs, **overrides}, "t")
    watch = CollapseWatch(config)
    said = []
    for epoch, kl in enumerate(kls, 1):
        beta = min(1.0, epoch / warmup_epochs) if warmup_epochs else 1.0
        row = {"epoch": epoch, "step": epoch * steps_per_epoch, "beta": beta, "test_kl": kl}
        said.append(watch.see(row))
    return said


def test_collapse_watch_warns_once_after_two_low_epochs_past_the_warmup():
    with pytest.warns(UserWarning, match="posterior collapse") as caught:
        said = _rows([30.0, 0.5, 0.4, 0.3, 0.2])
    assert said == [None, None, said[2], None, None] and said[2] is not None
    assert len(caught) == 1
    text = said[2]
    assert "0.40 nats per image at epoch 3" in text and "try --arch resnet" in text
    assert "\n" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails these
        assert _rows([0.5, 30.0, 0.5, 30.0]) == [None] * 4  # never two low epochs in a row
        assert _rows([0.1, 0.1, 0.1, 0.1], warmup_epochs=5) == [None] * 4  # still warming up
        assert _rows([KL_NEAR_ZERO, KL_NEAR_ZERO]) == [None, None]  # the threshold is strict


def test_collapse_watch_waits_while_a_capacity_ramp_asks_for_a_small_kl():
    """The annealed beta-VAE asks for KL = C(t) = 25 t / 1000 here: 0.375 nats after epoch 1
    (15 steps) and 0.75 after epoch 2, so a KL of 0.3 there is what was asked for, not a
    collapse; from epoch 3 (C = 1.125) two low epochs warn, naming the ramp's flag."""
    annealed = {"objective": "annealed", "capacity_max": 25.0, "capacity_steps": 1000}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _rows([0.3, 0.3, 0.3], steps_per_epoch=15, **annealed) == [None] * 3
    with pytest.warns(UserWarning, match="posterior collapse"):
        said = _rows([0.3, 0.3, 0.3, 0.3], steps_per_epoch=15, **annealed)
    assert said[:3] == [None] * 3 and "raise --capacity-max (now 25 nats" in said[3]


def test_training_warns_while_it_trains_when_the_kl_vanishes(tmp_path):
    """beta = 300 drives q(z|x) onto p(z) within the first epochs on digits: the warning
    comes from fit() itself (not evaluate), once; the default beta = 1 run stays silent."""
    torch.manual_seed(0)
    with one_thread():
        with pytest.warns(UserWarning, match="posterior collapse") as caught:
            fit(small_config(beta=300.0, epochs=4), tmp_path / "collapsed")
        said = [str(w.message) for w in caught if "posterior collapse" in str(w.message)]
        assert len(said) == 1 and "lower --beta (now 300" in said[0]
        with warnings.catch_warnings(record=True) as quiet:
            warnings.simplefilter("always")
            fit(small_config(epochs=4), tmp_path / "fine")
    assert not [w for w in quiet if "posterior collapse" in str(w.message)]
