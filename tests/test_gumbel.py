"""Gumbel-softmax latents: relaxed draws tend to one-hot draws of Categorical(pi) as tau
falls, the categorical KL against enumeration, the annealing schedule, and the discrete
model's importance-sampled log p(x) against the exact sum over every class."""

import itertools
import math

import torch
import torch.nn.functional as F

from vaelab.config import ModelConfig
from vaelab.latents.gumbel import categorical_kl_uniform, gumbel_softmax, temperature_at
from vaelab.models.gumbel import GumbelOptions, GumbelVAE


def test_relaxed_draws_converge_to_one_hot_as_temperature_falls():
    """E[max_c y_c] rises to 1 as tau -> 0 (at tau = 0.01 above 0.995), and the argmax of
    the relaxed draw is a Categorical(pi) draw at any tau (the Gumbel-max trick): class
    frequencies over 50,000 draws within 4 standard errors of pi."""
    torch.manual_seed(0)
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = pi.log()
    peaks = []
    for tau in (5.0, 1.0, 0.3, 0.1, 0.01):
        y = gumbel_softmax(logits, tau, 50_000)
        peaks.append(y.max(-1).values.mean().item())
        freq = F.one_hot(y.argmax(-1), 4).float().mean(0)
        se = (pi * (1 - pi) / 50_000).sqrt()
        assert ((freq - pi).abs() < 4 * se).all(), (tau, freq)
    assert all(a < b for a, b in itertools.pairwise(peaks)), peaks
    assert peaks[-1] > 0.995 and peaks[0] < 0.5


def test_categorical_kl_against_enumeration():
    """KL(prod_v Cat(pi_v) || U(C)^V) by summing q(y) log(q(y) / p(y)) over all C^V joint
    classes (V = 3 groups of C = 4)."""
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, dtype=torch.float64) * 2
    pi = F.softmax(logits, -1)
    for b in range(2):
        kl = 0.0
        for ys in itertools.product(range(4), repeat=3):
            q = math.prod(pi[b, v, y].item() for v, y in enumerate(ys))
            kl += q * math.log(q / 4**-3)
        assert abs(categorical_kl_uniform(logits)[b].item() - kl) < 1e-12


def test_temperature_schedule_and_its_clock():
    assert temperature_at(0, 1.0, 0.5, 1e-3) == 1.0
    assert abs(temperature_at(100, 1.0, 0.5, 1e-3) - math.exp(-0.1)) < 1e-15
    assert temperature_at(10**6, 1.0, 0.5, 1e-3) == 0.5
    opts = GumbelOptions(tau_rate=0.1, categories=3)
    model = GumbelVAE.from_config(ModelConfig(model="gumbel", hidden=(8,), options=opts),
                                  (1, 2, 2))  # fmt: skip
    x = torch.rand(3, 1, 2, 2).round()
    model.train()
    for _ in range(5):
        model(x, 1)
    assert int(model.step) == 5 and abs(model.tau - max(0.5, math.exp(-0.5))) < 1e-12
    model.eval()
    model(x, 1)  # evaluation does not move the clock, and draws exact one-hot groups
    assert int(model.step) == 5
    z = model.encode(x).sample((7,))
    groups = z.unflatten(-1, (-1, 3))  # --cat-vars 0 alone: --latent-dim groups of 3 classes
    assert groups.shape[-2] == ModelConfig().latent_dim
    assert set(z.unique().tolist()) <= {0.0, 1.0} and (groups.sum(-1) == 1).all()
    assert "step" in model.state_dict()  # resume continues the schedule


def test_importance_sampled_log_px_matches_exact_sum_over_classes():
    """Two groups of 3 classes, no Gaussian part: p(x) = 9^-1 sum_y p(x|y) exactly; the mean
    of the model's one-hot log weights (4,000 draws) estimates it without bias (4 SE)."""
    torch.manual_seed(2)
    opts = GumbelOptions(categories=3, cat_vars=2)
    model = GumbelVAE.from_config(ModelConfig(model="gumbel", hidden=(8,), options=opts),
                                  (1, 3, 3)).double()  # fmt: skip
    model.train()  # log_weights must use one-hot draws whatever the mode
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64).round()
    exact = []
    for b in range(2):
        terms = []
        for y1, y2 in itertools.product(range(3), repeat=2):
            z = torch.cat([F.one_hot(torch.tensor(y1), 3), F.one_hot(torch.tensor(y2), 3)]).double()
            terms.append(model.likelihood.log_prob(x[b : b + 1], model.decode(z[None, None]))[0, 0])
        exact.append(torch.logsumexp(torch.stack(terms), 0) - math.log(9))
    with torch.no_grad():
        w = model.log_weights(x, 4000).exp()
    est, se = w.mean(0), w.std(0) / math.sqrt(4000)
    for b in range(2):
        assert abs(est[b] - exact[b].exp()) < 4 * se[b] + 1e-15, (est[b], exact[b].exp())


def test_capacity_objective_limits_and_schedule():
    """With gamma = 1 and both targets 0 (step 0) the capacity loss is the negative ELBO (KLs
    are >= 0, so |KL - 0| = KL); the targets rise linearly to their final values, the
    categorical one capped at V log C (here 2 log 3 < 5 nats); other models are refused."""
    import pytest

    from vaelab.errors import VaelabError
    from vaelab.models.terms import Terms
    from vaelab.objectives import elbo, get_objective

    opts = GumbelOptions(categories=3, cat_vars=2, joint=True, capacity_gamma=1.0,
                         capacity_steps=10, cont_capacity=4.0, disc_capacity=5.0)  # fmt: skip
    model = GumbelVAE.from_config(ModelConfig(model="gumbel", latent_dim=2, hidden=(8,),
                                              options=opts), (1, 2, 2))  # fmt: skip
    x = torch.rand(5, 1, 2, 2).round()
    model.eval()
    t = model(x, 3)
    cap = get_objective("capacity")
    torch.testing.assert_close(cap(t)[0], elbo(t)[0])
    model.step.fill_(5)
    torch.testing.assert_close(model.capacity(), torch.tensor([2.0, math.log(3), 1.0]))
    model.step.fill_(100)
    torch.testing.assert_close(model.capacity(), torch.tensor([4.0, 2 * math.log(3), 1.0]))
    with pytest.raises(VaelabError, match="capacity"):
        cap(Terms(t.log_px_z, t.log_pz, t.log_qz_x, kl=t.kl))
