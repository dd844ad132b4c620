"""Learned priors: mixture densities against torch.distributions, the VampPrior's reduction
to N(0, I), and a VampPrior run that saves and reloads through safetensors."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vaelab.latents import NormalFamily
from vaelab.latents.priors import (
    MixturePrior,
    StandardNormalPrior,
    VampPrior,
    build_prior,
    diag_normal_mixture_log_prob,
)


def torch_mixture(mu, logvar, logits):
    comp = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    return MixtureSameFamily(Categorical(logits=logits), comp)


def test_mixture_prior_log_prob_matches_mixture_same_family():
    torch.manual_seed(0)
    prior = MixturePrior(5, components=7).double()
    with torch.no_grad():  # away from the initial values so every parameter matters
        prior.logvars.normal_(0.0, 0.5)
        prior.logits.normal_(0.0, 1.0)
    z = 2.0 * torch.randn(3, 11, 5, dtype=torch.float64)  # (K, B, D), some far from all modes
    ref = torch_mixture(prior.means, prior.logvars, prior.logits).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), ref, rtol=1e-10, atol=1e-9)
    assert prior.analytic_kl(NormalFamily().dist(torch.zeros(2, 10))) is None


def test_mixture_prior_samples_have_the_mixture_moments():
    torch.manual_seed(1)
    prior = MixturePrior(2, components=3).double()
    ref = torch_mixture(prior.means, prior.logvars, prior.logits)
    s = prior.sample(200_000)
    # Mean of n draws: SE = std / sqrt(n) < 0.01 here; 5 SE bound.
    se = ref.variance.sqrt() / math.sqrt(len(s))
    assert ((s.mean(0) - ref.mean).abs() < 5 * se).all(), (s.mean(0), ref.mean)
    torch.testing.assert_close(s.var(0), ref.variance.detach(), rtol=0.02, atol=0)


def test_expanded_square_distance_is_exact_in_float64():
    torch.manual_seed(2)
    mu, logvar = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    logits = torch.randn(4, dtype=torch.float64)
    z = torch.randn(50, 3, dtype=torch.float64) * 3
    ours = diag_normal_mixture_log_prob(z, mu, logvar, torch.log_softmax(logits, 0))
    torch.testing.assert_close(ours, torch_mixture(mu, logvar, logits).log_prob(z))


def test_vamp_prior_with_a_constant_encoder_is_the_standard_normal():
    """An encoder that outputs mu = 0, log sigma^2 = 0 for every input makes each component
    q(z|u_n) = N(0, I); a uniform mixture of identical N(0, I) is N(0, I) itself, whatever
    the pseudo-inputs are. So log p(z) and the sample moments must be the standard prior's."""
    torch.manual_seed(3)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 6)).double()
    nn.init.zeros_(encoder[1].weight)
    nn.init.zeros_(encoder[1].bias)
    prior = VampPrior(3, components=9, image_shape=(1, 4, 4)).double()
    prior.bind(encoder, NormalFamily())
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z), StandardNormalPrior(3).double().log_prob(z))
    s = prior.sample(100_000)
    # Mean SE = 1/sqrt(n) ~ 0.003; var rel. SE = sqrt(2/n) ~ 0.45%: 5 SE bounds.
    assert s.mean(0).abs().max() < 0.016 and (s.var(0) - 1).abs().max() < 0.023


def test_vamp_prior_is_a_mixture_of_posteriors_at_its_pseudo_inputs():
    torch.manual_seed(4)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 6)).double()
    prior = VampPrior(3, components=5, image_shape=(1, 4, 4)).double()
    prior.bind(encoder, NormalFamily())
    u = prior.pseudo_inputs()
    assert u.min() >= 0 and u.max() <= 1
    mu, logvar = encoder(u).chunk(2, -1)
    z = torch.randn(7, 3, dtype=torch.float64)
    ref = torch_mixture(mu, logvar, torch.zeros(5, dtype=torch.float64)).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), ref)
    # The pseudo-inputs learn: log p(z) has a gradient with respect to them.
    prior.log_prob(z).sum().backward()
    assert prior.pseudo_logits.grad.abs().sum() > 0


def test_unbound_vamp_prior_and_bad_components_fail_clearly():
    with pytest.raises(RuntimeError, match="bind"):
        VampPrior(2, 3, (1, 2, 2)).log_prob(torch.zeros(1, 2))
    with pytest.raises(Exception, match="--prior-components"):
        build_prior("mixture", 2, components=0)
    # Options a prior does not take are ignored (the standard prior has no components).
    assert isinstance(build_prior("normal", 2, components=5), StandardNormalPrior)


@pytest.mark.parametrize(
    ("prior", "model"), [("mixture", "vae"), ("vamp", "vae"), ("vamp", "hvae")]
)
def test_learned_prior_trains_saves_and_reloads(tmp_path, prior, model):
    from tests.conftest import small_config

    import vaelab
    from vaelab.training.loop import fit

    torch.manual_seed(0)
    family = {"z1_dim": 4} if model == "hvae" else {}  # an option of hvae only
    cfg = small_config(prior=prior, prior_components=6, epochs=1, model=model, **family)
    run = fit(cfg, tmp_path / prior)
    model = vaelab.load(run)
    names = list(model.state_dict())
    # The VampPrior holds its pseudo-inputs but not a second copy of the encoder.
    assert not any(n.startswith("prior.encoder") for n in names)
    assert (prior == "vamp") == ("prior.pseudo_logits" in names)
    x = torch.rand(3, 1, 8, 8)
    terms = model(x, 4)
    assert terms.kl is None and terms.log_pz.shape == (4, 3)
    assert torch.isfinite(terms.log_pz).all()
    images = model.sample(5)
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def _narrow_mixture(logvar: float, seed: int = 5):
    """Float32 inputs like a trained VampPrior's: 40 components with |mu| ~ 2.5 in 32
    dimensions, log-variances ``logvar`` +- 0.5, and z drawn near the components (where the
    density matters); plus the float64 reference on the *same* float32 values, summing the
    squared differences directly so that only the code's arithmetic is under test."""
    g = torch.Generator().manual_seed(seed)
    n, d = 40, 32
    mu = 2.5 * torch.randn(n, d, generator=g)
    lv = logvar + 0.5 * torch.randn(n, d, generator=g)
    log_w = torch.log_softmax(torch.randn(n, generator=g), 0)
    pick = torch.randint(0, n, (3, 60), generator=g)
    z = mu[pick] + torch.exp(0.5 * lv[pick]) * torch.randn(3, 60, d, generator=g)
    z64, mu64, lv64 = z.double(), mu.double(), lv.double()
    sq = ((z64.unsqueeze(-2) - mu64) ** 2 * torch.exp(-lv64)).sum(-1)
    log_norm = -0.5 * (lv64.sum(-1) + d * math.log(2 * math.pi))
    ref = torch.logsumexp(log_w.double() + log_norm - 0.5 * sq, -1)
    return (z, mu, lv, log_w), ref


@pytest.mark.parametrize("logvar", [-9.0, -16.0, -30.0])
def test_mixture_log_prob_is_accurate_in_float32_near_narrow_components(logvar):
    """The expanded square z^2/v - 2 z mu/v + mu^2/v lost 0.7 nats at log v = -9 and
    hundreds at -16 here (terms ~ mu^2/v ~ 1e7 cancel to ~1). Summing differences keeps the
    float32 error at rounding of D = 32 terms of a ~250-nat total: D * 6e-8 * 250 ~ 5e-4;
    the 2e-3 tolerance is that with room, and far below the old errors."""
    args, ref = _narrow_mixture(logvar)
    out = diag_normal_mixture_log_prob(*args)
    assert out.dtype == torch.float32 and out.shape == (3, 60)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-3)


def test_mixture_log_prob_stays_float32_under_bf16_autocast():
    """`--precision bf16` runs the model under autocast; a bf16 matmul (8 bits of mantissa)
    erred by ~8 nats at sigma 0.14 and by thousands at log v = -9. The reduction must run in
    float32 whatever the autocast state; the same 2e-3 float32 tolerance as above. The
    learned mixture prior goes through it the same way (its parameters are float32)."""
    for logvar in (2 * math.log(0.14), -9.0):
        args, ref = _narrow_mixture(logvar, seed=6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = diag_normal_mixture_log_prob(*args)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-3)
    prior = MixturePrior(32, components=40)
    z, mu = args[0], args[1]
    with torch.no_grad():
        prior.means.copy_(mu)
        prior.logvars.copy_(2 * math.log(0.14) + 0.5 * torch.randn(40, 32))
    want = torch_mixture(prior.means.double(), prior.components()[1].double(),
                         prior.logits.double()).log_prob(z.double())  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = prior.log_prob(z)
    torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=2e-3)


def test_mixture_log_prob_in_blocks_equals_one_block(monkeypatch):
    """Rows of z are processed in blocks to bound memory; the blocking must not change the
    result (a block of 7 rows against the whole), nor fail on an empty batch."""
    import vaelab.latents.priors as priors

    args, _ = _narrow_mixture(-4.0, seed=7)
    whole = diag_normal_mixture_log_prob(*args)
    monkeypatch.setattr(priors, "_BLOCK_ELEMENTS", 7 * 40 * 32)
    torch.testing.assert_close(diag_normal_mixture_log_prob(*args), whole, rtol=0, atol=0)
    assert diag_normal_mixture_log_prob(args[0][:0], *args[1:]).shape == (0, 60)


def test_vamp_prior_on_a_two_layer_vae_mixes_the_top_posteriors():
    """hvae + vamp: p(z2) = (1/N) sum_n q(z2 | z1 = E[z1 | u_n]), the top layer's posterior
    at each pseudo-input, against MixtureSameFamily built by hand from the networks
    (float64, 1e-10); the model's log p(z) term holds it; the pseudo-inputs learn through it."""
    from vaelab.config import ModelConfig
    from vaelab.models import HVAE

    torch.manual_seed(8)
    cfg = ModelConfig(model="hvae", prior="vamp", prior_components=5, hidden=(8,),
                      latent_dim=2, options=HVAE.options(z1_dim=3, z1_hidden=(6,)))  # fmt: skip
    model = HVAE.from_config(cfg, (1, 4, 4)).double()
    u = model.prior.pseudo_inputs()
    mu1 = model.encoder(u).chunk(2, -1)[0]  # E[z1 | u_n]
    mu2, logvar2 = model.up(mu1).chunk(2, -1)
    z2 = torch.randn(6, 2, dtype=torch.float64)
    want = torch_mixture(mu2, logvar2, torch.zeros(5, dtype=torch.float64)).log_prob(z2)
    torch.testing.assert_close(model.prior.log_prob(z2), want, rtol=1e-10, atol=1e-10)
    torch.manual_seed(9)
    terms = model(torch.rand(3, 1, 4, 4, dtype=torch.float64), 2)
    assert terms.log_pz.shape == (2, 3) and torch.isfinite(terms.log_pz).all()
    terms.log_pz.sum().backward()
    assert model.prior.pseudo_logits.grad.abs().sum() > 0
