"""Mixed precision keeps the log-densities honest: under fp16/bf16 autocast the networks
compute in the low precision, but every distribution is built from float32 parameters, so
the noise, z and every log-likelihood, log-prior and log-posterior are float32 sums.

Checked on CPU bf16 autocast (the same autocast machinery as CUDA's). The exact checks
replay the networks' low-precision outputs in float32: given the same network outputs, the
density code must give the same float32 numbers bit for bit, whatever the autocast. The
tolerance check compares bf16 with float32 on the same weights at the same z.
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from conftest import small_config
from vaelab.latents.priors import build_prior
from vaelab.likelihoods import build_likelihood
from vaelab.models import build_model
from vaelab.models.deep import _split

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)
CASES = {
    "mlp-bernoulli-K5": dict(hidden="64", likelihood="bernoulli", binarize="dynamic"),
    "mlp-vamp": dict(hidden="64", prior="vamp", prior_components=6, binarize="dynamic"),
    "mlp-mixture-prior": dict(hidden="64", prior="mixture", binarize="dynamic"),
    "conv-dmol": dict(arch="conv", hidden="8,16", likelihood="dmol", mixtures=3),
    "mlp-gaussian-learned": dict(hidden="64", likelihood="gaussian-learned"),
    "gamma-posterior": dict(hidden="64", posterior="gamma", binarize="dynamic"),
}


def model_and_images(options):
    config = small_config(**options)
    torch.manual_seed(0)
    model = build_model(config.model, (1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    if config.data.binarize != "none":
        x = torch.bernoulli(x)
    return model, x


def terms_under(model, x, context, replay=None):
    """(log p(x|z), log p(z), log q(z|x)) at K = 5 seeded draws under ``context``; the
    encoder's and decoder's outputs in call order (replayed from ``replay`` if given)."""
    outputs, handles = [], []

    def hook(module, args, out):
        if replay is not None:
            return replay.pop(0).float()
        outputs.append(out.detach())

    for net in (model.encoder, model.decoder):
        handles.append(net.register_forward_hook(hook))
    try:
        torch.manual_seed(1)
        with context, torch.no_grad():
            t = model(x, 5)
            got = (t.log_px_z, t.log_pz, t.log_qz_x)
    finally:
        for h in handles:
            h.remove()
    return got, outputs


@pytest.mark.parametrize("case", CASES)
def test_densities_are_float32_sums_of_the_networks_outputs(case):
    model, x = model_and_images(CASES[case])
    amp, outputs = terms_under(model, x, BF16)
    assert any(o.dtype == torch.bfloat16 for o in outputs)  # the networks did run in bf16
    exact, _ = terms_under(model, x, nullcontext(), replay=list(outputs))
    for name, a, b in zip(("log p(x|z)", "log p(z)", "log q(z|x)"), amp, exact, strict=True):
        assert a.dtype == torch.float32, name
        assert torch.equal(a, b), (name, (a - b).abs().max())


def test_bernoulli_with_many_samples_is_exact_under_autocast():
    # The K > 1 path is a batched dot product: under autocast it ran in bf16, on a target
    # cast to bf16 (errors of nats per image at 784 pixels).
    torch.manual_seed(0)
    like = build_likelihood("bernoulli", (1, 28, 28), 1.0)
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    params = (4 * torch.randn(10, 4, 1, 1, 28, 28)).bfloat16()  # a bf16 decoder's logits
    with BF16:
        amp = like.log_prob(x, params)
    assert amp.dtype == torch.float32
    assert torch.equal(amp, like.log_prob(x, params.float()))


def test_vamp_prior_components_stay_float32_under_autocast():
    # Posterior log-variances of -9 (narrow components) rounded to bf16 cost up to 10 nats.
    torch.manual_seed(0)
    model, _ = model_and_images(CASES["mlp-vamp"])
    prior = model.prior
    z = torch.randn(5, 6, 4)
    with BF16:
        mu, logvar, _ = prior.components()
        amp = prior.log_prob(z)
    assert mu.dtype == logvar.dtype == torch.float32
    assert torch.equal(amp, prior.log_prob(z))


def test_standard_priors_are_exact_under_autocast():
    torch.manual_seed(0)
    z = torch.randn(5, 6, 4).abs() + 0.1
    for name in ("normal", "mixture", "gamma"):
        prior = build_prior(name, 4)
        with BF16:
            amp = prior.log_prob(z)
        assert amp.dtype == torch.float32 and torch.equal(amp, prior.log_prob(z)), name


def test_bf16_bernoulli_likelihood_is_within_the_logits_error_of_float32():
    # Same weights, same z: bf16 autocast perturbs only the decoder's logits l. log p(x|z) =
    # sum_i x_i l_i - softplus(l_i) has d/dl_i = x_i - sigmoid(l_i) in [-1, 1], so per image
    # |log p_bf16 - log p_fp32| <= sum_i |l_bf16,i - l_fp32,i| (plus float32 summation
    # error, < 1e-3 nats here): the density code may add no error of its own.
    model, x = model_and_images(CASES["mlp-bernoulli-K5"])
    z = torch.randn(5, len(x), model.latent_dim)
    with torch.no_grad():
        fp32 = model.decode(z)
        with BF16:
            bf16 = model.decode(z)
            amp = model.likelihood.log_prob(x, bf16)
        ref = model.likelihood.log_prob(x, fp32)
    bound = (bf16.float() - fp32).abs().flatten(-3).sum(-1).squeeze(-1)
    assert (bound > 0).all()  # bf16 did perturb the logits
    assert ((amp - ref).abs() <= bound + 1e-3).all()


def test_deep_model_terms_are_float32_and_near_fp32_under_bf16():
    # The deep hierarchy's KL per group and log p(x|z) are float32 under bf16; its
    # reparameterization noise is drawn in float32 (the same draw as in fp32), so bf16
    # moves the bound only through the networks' rounding: < 1% of |ELBO| here (bf16's
    # 2^-8 relative rounding through a few residual cells of an untrained model).
    config = small_config(model="deep", likelihood="dlogistic", deep_widths="8,8,8",
                          deep_groups="0,1,1", group_channels=2, dataset="digits")  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config.model, (1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    out = {}
    for name, context in (("fp32", nullcontext()), ("bf16", BF16)):
        torch.manual_seed(1)
        with context, torch.no_grad():
            t = model(x, 2)
            out[name] = (t.log_px_z, t.kl_per_image())
    for a in out["bf16"]:
        assert a.dtype == torch.float32
    # The group parameters (hence the noise drawn like them, and z) are float32.
    mu, logvar = _split(torch.zeros(2, 4, 2, 2, dtype=torch.bfloat16), 2)
    assert mu.dtype == logvar.dtype == torch.float32
    elbo32 = out["fp32"][0].mean(0) - out["fp32"][1]
    elbo16 = out["bf16"][0].mean(0) - out["bf16"][1]
    assert ((elbo16 - elbo32).abs() < 0.01 * elbo32.abs()).all()
