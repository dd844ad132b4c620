"""The post-hoc MAF and two-stage samplers.

MAF: its log-density against the change of variables computed independently (log N(f(z))
+ log|det J_f(z)| with J from torch.autograd in float64, slogdet); the MADE's mask checked
by gradients (output d depends on inputs < d only, and on each of them); sampling inverts
the flow (f(sample) = u to 1e-9 in float64); a fit to a correlated Gaussian reaches its
entropy. Two-stage and MAF: fitted, cached (safetensors + JSON) and used by
``vaelab sample --sampler`` on a trained run, end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaelab.cli import main
from vaelab.evaluation.posthoc import MADE, MAF, TwoStage, fit_density


def test_made_mask_by_gradients():
    torch.manual_seed(0)
    made = MADE(5, hidden=16).double()
    z = torch.randn(5, dtype=torch.float64)
    for out in (0, 1):  # m and a
        jac = torch.autograd.functional.jacobian(lambda v, out=out: made(v[None])[out][0], z)
        assert torch.all(jac.triu() == 0)  # d m_d / d z_j = 0 for j >= d
        assert torch.all(jac.tril(-1)[1:, :].abs().sum(1) > 0)  # and each d > 0 sees z_<d


def test_maf_log_density_is_the_change_of_variables():
    torch.manual_seed(1)
    maf = MAF(4, layers=3, hidden=12).double()
    for p in maf.parameters():  # away from the identity: a non-trivial Jacobian
        p.data.normal_(0, 0.4)
    maf.shift.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    maf.scale.copy_(torch.tensor([1.5, 0.7, 1.0, 2.0]))
    z = torch.randn(6, 4, dtype=torch.float64)
    for zi, lp in zip(z, maf.log_prob(z), strict=True):
        jac = torch.autograd.functional.jacobian(lambda v: maf.to_base(v[None])[0][0], zi)
        u = maf.to_base(zi[None])[0][0]
        want = -0.5 * (u.square().sum() + 4 * math.log(2 * math.pi)) + torch.linalg.slogdet(jac)[1]
        assert lp.item() == pytest.approx(want.item(), abs=1e-10)
    x = maf.sample(50)  # the inverse: f(sample) is the base draw, so f^-1 is exact
    torch.manual_seed(2)
    u = torch.randn(50, 4, dtype=torch.float64)
    torch.manual_seed(2)
    assert torch.allclose(maf.to_base(maf.sample(50))[0], u, atol=1e-9)
    assert x.shape == (50, 4)


def test_maf_fit_reaches_a_gaussians_entropy():
    g = torch.Generator().manual_seed(3)
    cov = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    z = torch.randn(6000, 3, generator=g) @ torch.linalg.cholesky(cov).T
    maf = MAF(3, layers=3, hidden=32)
    fit = fit_density(maf, z, epochs=30)
    entropy = 0.5 * (3 * (1 + math.log(2 * math.pi)) + torch.logdet(cov).item())
    # held-out mean log p -> -H; 600 held-out codes give an SE of ~0.05 nats
    assert fit["held_out_log_p"] == pytest.approx(-entropy, abs=0.15)


def test_two_stage_samples_follow_the_codes_it_was_fitted_to():
    # Gaussian codes: the second stage fits them largely through its gamma (the ELBO's
    # optimum for a Gaussian is gamma = the variance, g constant), so its draws must carry
    # gamma's noise; decoding g(u) alone gave stds of ~0.3 of the codes' here.
    g = torch.Generator().manual_seed(4)
    cov = torch.tensor([[4.0, 1.2, 0.0], [1.2, 1.0, 0.0], [0.0, 0.0, 0.25]])
    z = torch.randn(6000, 3, generator=g) @ torch.linalg.cholesky(cov).T + 1.0
    torch.manual_seed(0)
    net = TwoStage(3)  # the sampler's defaults: 256 hidden units, 40 epochs
    fit_density(net, z)
    draws = net.eval().sample(20000)
    # 20,000 draws: the sample mean's SE is <= 0.015, a variance's <= 1%; the rest of the
    # tolerance is the fit's (40 epochs of the second stage; the mean-only draws of before
    # gave a variance of ~2.1 for the 4)
    torch.testing.assert_close(draws.mean(0), torch.ones(3), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.15, rtol=0.1)


def train_ae(run, objective: str):
    """A 1-epoch digits autoencoder run trained with ``objective`` (a point-code model)."""
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--model", "ae", "--objective",
            objective, "--progress", "false", "--report", "false", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    return run


@pytest.mark.parametrize("sampler", ["maf", "two-stage"])
def test_posthoc_samplers_end_to_end(tmp_path, sampler):
    run = train_ae(tmp_path / "run", "wae")
    out = tmp_path / "s.png"
    assert main(["sample", str(run), "--sampler", sampler, "-n", "8", "--out", str(out)]) == 0
    assert out.is_file()
    (info,) = run.glob(f"{sampler}-*.json")
    meta = json.loads(info.read_text())
    assert meta["sampler"] == sampler and math.isfinite(meta["fit"]["held_out_log_p"])
    assert info.with_suffix(".safetensors").is_file()
    mtime = info.stat().st_mtime_ns  # a second command reuses the fit
    assert main(["sample", str(run), "--sampler", sampler, "-n", "8", "--out", str(out),
                 "--overwrite"]) == 0  # fmt: skip
    assert info.stat().st_mtime_ns == mtime


def test_evaluate_says_why_a_point_code_model_has_no_bound(tmp_path, capsys):
    run = train_ae(tmp_path / "run", "rae")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--samples", "5", "--sampler", "maf"]) == 0
    out = capsys.readouterr().out
    assert "no likelihood bound" in out
    assert "NLL, K=" not in out and "test ELBO" not in out  # no numbers that mean nothing
    assert "maf" in out and "reconstruction MSE" in out
    assert main(["sample", str(run), "--out", str(tmp_path / "p.png")]) != 0  # no prior
    assert "use --sampler gmm, maf or two-stage" in capsys.readouterr().err
