"""MIWAE / PIWAE / CIWAE (Rainforth et al. 2018): limits and gradients, in float64.

Limits: MIWAE(1, K) is IWAE_K and MIWAE(M, 1) the M-sample ELBO; CIWAE_1 is the ELBO
estimate and CIWAE_0 the IWAE (compared with vaelab's existing ``iwae`` reduction).
Gradients: the written-out estimators, built from the per-draw gradients
grad log w_{m,k} (one autograd call per draw) and the self-normalised weights:
grad IWAE = sum_k w~_k grad log w_k, grad MIWAE = 1/M sum_m sum_k w~_{m,k} grad log w_{m,k},
grad ELBO_K = 1/K sum_k grad log w_k; PIWAE: IWAE_{MK}'s on the decoder, MIWAE's on the
encoder. Agreement to 1e-9 (float64 round-off of sums of a few hundred terms)."""

from __future__ import annotations

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.models import build_model
from vaelab.models.terms import Terms
from vaelab.objectives import Objective, iwae
from vaelab.objectives.iw import (
    CIWAEOptions,
    MIWAEOptions,
    PIWAEOptions,
    ciwae_bound,
    miwae_bound,
)


def log_w(shape, seed=0):
    return (
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    )


def test_limits():
    lw = log_w((6, 5))
    iw = -iwae(Terms(lw, torch.zeros_like(lw), torch.zeros_like(lw)))[0] * 1  # mean over B
    assert miwae_bound(lw, 1).mean().item() == pytest.approx(iw.item(), abs=1e-12)
    assert torch.allclose(miwae_bound(lw, 6), lw.mean(0))  # K = 1: the 6-sample ELBO
    assert torch.allclose(ciwae_bound(lw, 1.0), lw.mean(0))
    assert ciwae_bound(lw, 0.0).mean().item() == pytest.approx(iw.item(), abs=1e-12)
    # and in between, ordered: ELBO <= MIWAE(2, 3) <= IWAE_6 per image (Jensen)
    assert bool((lw.mean(0) <= miwae_bound(lw, 2) + 1e-12).all())
    assert bool((miwae_bound(lw, 2) <= miwae_bound(lw, 1) + 1e-12).all())


def setup(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(model="vae", arch="mlp", hidden=(6,), latent_dim=2)
    model = build_model(cfg, (1, 3, 3)).double()
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64).round()
    return model, x


def per_draw_grads(model, x, draws, seed, params):
    """log w ``(draws, B)`` at the draws the objective makes with ``seed``, and
    grad log w_{n,b} for each, flattened ``(draws, B, P)``."""
    torch.manual_seed(seed)
    lw = model(x, draws).log_w()
    grads = torch.empty(*lw.shape, sum(p.numel() for p in params), dtype=torch.float64)
    for n in range(lw.shape[0]):
        for b in range(lw.shape[1]):
            g = torch.autograd.grad(lw[n, b], params, retain_graph=True, allow_unused=True)
            grads[n, b] = torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                                     for gi, p in zip(g, params, strict=True)])  # fmt: skip
    return lw.detach(), grads


def flat_grad(model, loss, params):
    model.zero_grad()
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])  # fmt: skip


def snw(lw):  # self-normalised weights along dim 0
    return torch.softmax(lw, 0)


def test_miwae_gradient_is_the_written_out_estimator():
    model, x = setup()
    m, k = 3, 4
    params = list(model.parameters())
    lw, g = per_draw_grads(model, x, m * k, 7, params)
    w = torch.softmax(lw.reshape(m, k, -1), 1).reshape(m * k, -1)  # within each group
    want = -(w[..., None] * g).sum((0, 1)) / m / x.shape[0]
    torch.manual_seed(7)
    loss, _ = Objective("miwae", options=MIWAEOptions(miwae_m=m))(model, x, samples=k)
    assert torch.allclose(flat_grad(model, loss, params), want, atol=1e-9)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_ciwae_gradient_is_the_written_out_estimator(beta):
    model, x = setup(1)
    k = 5
    params = list(model.parameters())
    lw, g = per_draw_grads(model, x, k, 3, params)
    mix = beta / k + (1 - beta) * snw(lw)
    want = -(mix[..., None] * g).sum((0, 1)) / x.shape[0]
    torch.manual_seed(3)
    loss, _ = Objective("ciwae", options=CIWAEOptions(ciwae_beta=beta))(model, x, samples=k)
    assert torch.allclose(flat_grad(model, loss, params), want, atol=1e-9)


def test_piwae_puts_iwae_on_the_decoder_and_miwae_on_the_encoder():
    model, x = setup(2)
    m, k = 2, 3
    enc, dec = model.inference_parameters(), model.generative_parameters()
    params = dec + enc
    n_dec = sum(p.numel() for p in dec)
    lw, g = per_draw_grads(model, x, m * k, 5, params)
    w_iwae = snw(lw)
    w_miwae = torch.softmax(lw.reshape(m, k, -1), 1).reshape(m * k, -1) / m
    want_dec = -(w_iwae[..., None] * g[..., :n_dec]).sum((0, 1)) / x.shape[0]
    want_enc = -(w_miwae[..., None] * g[..., n_dec:]).sum((0, 1)) / x.shape[0]
    torch.manual_seed(5)
    loss, stats = Objective("piwae", options=PIWAEOptions(piwae_m=m))(model, x, samples=k)
    got = flat_grad(model, loss, params)
    assert torch.allclose(got[:n_dec], want_dec, atol=1e-9)
    assert torch.allclose(got[n_dec:], want_enc, atol=1e-9)
    # the reported value is -IWAE_{MK}, and it is not the encoder's gradient
    assert loss.item() == pytest.approx(-stats["bound"].item())
    assert not torch.allclose(want_enc, -(w_iwae[..., None] * g[..., n_dec:]).sum((0, 1)) / 4)
