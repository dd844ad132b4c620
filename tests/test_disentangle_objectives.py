"""The disentanglement objectives (issue 21 item 2): beta-TCVAE's decomposition against a
closed form, its log q(z) estimators against the full-dataset one, FactorVAE's
discriminator (trained, resumed bit for bit), the annealed capacity C(t), DIP-VAE's
regulariser, and the command line."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
from torch.distributions import Normal

import vaelab
from conftest import small_config
from single_thread import one_thread
from vaelab.models.terms import Terms
from vaelab.objectives.factorvae import FactorTerm, FactorVAEOptions, permute_dims
from vaelab.objectives.latent_terms import (
    AnnealedOptions,
    CapacityTerm,
    DIPOptions,
    DIPTerm,
    dip_covariance,
    dip_regulariser,
)
from vaelab.objectives.tcvae import decomposition, log_qz
from vaelab.training.checkpoint import CHECKPOINT, load_checkpoint
from vaelab.training.loop import fit


def gaussian_terms(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> Terms:
    """Terms of a Gaussian q(z|x) = N(mean, std^2) and p(z) = N(0, I) at draws z (K, B, D)."""
    return Terms(
        log_px_z=torch.zeros(z.shape[:2], dtype=z.dtype),
        log_pz=Normal(0.0, 1.0).log_prob(z).sum(-1),
        log_qz_x=Normal(mean, std).log_prob(z).sum(-1),
        extras={"z": z, "q_mean": mean, "q_std": std},
    )


@pytest.mark.parametrize("sampling", ["mws", "mss"])
def test_tc_decomposition_matches_the_linear_gaussian_closed_form(sampling):
    """x ~ N(0, Sx), q(z|x) = N(Ax, diag s^2), p(z) = N(0, I): q(z) = N(0, C), C = A Sx A^T +
    diag s^2, so MI = (log det C - sum log s^2)/2, TC = (sum log C_dd - log det C)/2 and
    dim-wise KL = sum (C_dd - 1 - log C_dd)/2, summing to the mean KL. The estimators, from a
    batch of B = 3000 of a data set of N = 10^7 (the population), must agree within 4
    standard errors of their Monte Carlo means plus 0.01 nats for the log's (Jensen) bias of
    a 3000-term kernel estimate (about 1/B relative variance; measured under 0.005 here)."""
    torch.manual_seed(0)
    d, b = 3, 3000
    a = torch.tensor([[1.0, 0.5, 0.0], [0.3, 0.8, 0.4], [0.0, -0.6, 0.9]], dtype=torch.float64)
    sx = torch.tensor([[1.0, 0.4, 0.1], [0.4, 1.0, 0.2], [0.1, 0.2, 1.0]], dtype=torch.float64)
    s = torch.tensor([0.5, 0.7, 0.6], dtype=torch.float64)
    x = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64), sx).sample((b,))
    mean = x @ a.T
    std = s.expand(b, d)
    z = (mean + std * torch.randn(b, d, dtype=torch.float64))[None]
    c = a @ sx @ a.T + torch.diag(s**2)
    logdet, cd = torch.logdet(c), torch.diagonal(c)
    truth = {
        "mi": 0.5 * (logdet - (s**2).log().sum()),
        "tc": 0.5 * (cd.log().sum() - logdet),
        "dim_kl": 0.5 * (cd - 1 - cd.log()).sum(),
    }
    terms = gaussian_terms(z, mean, std)
    n = 10**7
    mi, tc, dim_kl = decomposition(terms, n, sampling)
    joint, marginals = log_qz(z, mean, std, n, sampling)
    per_image = {
        "mi": terms.log_qz_x - joint,
        "tc": joint - marginals,
        "dim_kl": marginals - terms.log_pz,
    }
    for name, est in (("mi", mi), ("tc", tc), ("dim_kl", dim_kl)):
        se = per_image[name].std() / math.sqrt(b)
        assert abs(est - truth[name]) < 4 * se + 0.01, (name, float(est), float(truth[name]))
    kl = 0.5 * (s**2 + (a @ sx @ a.T).diagonal() - 1 - (s**2).log()).sum()  # mean KL, closed form
    assert abs(sum(truth.values()) - kl) < 1e-12  # the decomposition itself
    total = (terms.log_qz_x - terms.log_pz).squeeze(0)
    assert abs(mi + tc + dim_kl - kl) < 4 * total.std() / math.sqrt(b) + 0.01


def small_dataset(n: int = 7, d: int = 3):
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    std = 0.3 + torch.rand(n, d, generator=g, dtype=torch.float64)
    z = mean + std * torch.randn(n, d, generator=g, dtype=torch.float64)  # z_i ~ q(z|x_i)
    q = Normal(mean[None], std[None]).log_prob(z[:, None])  # (i, n, D)
    full = torch.logsumexp(q.sum(-1), 1) - math.log(n)  # log q(z_i) over the whole set
    full_d = (torch.logsumexp(q, 1) - math.log(n)).sum(-1)  # log prod_d q(z_id)
    return mean, std, z, full, full_d


def test_minibatch_weighted_log_qz_is_the_full_dataset_one_in_expectation():
    """float64, N = 7: with the whole set as the batch, MWS's log q(z) and log prod q(z_d) are
    the full-dataset values exactly; with batches of 4, exp of the estimate averaged over
    every batch that holds x_i (all 20 choices of the other 3) is q(z_i) exactly (the
    weights 1/N and (N-1)/(N(B-1)) make it unbiased). Chen et al.'s code's weight 1/(NB)
    would be off by log N in the first check."""
    n = 7
    mean, std, z, full, full_d = small_dataset(n)
    joint, marg = log_qz(z[None], mean, std, n, "mws")
    torch.testing.assert_close(joint[0], full, rtol=0, atol=1e-12)
    torch.testing.assert_close(marg[0], full_d, rtol=0, atol=1e-12)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        dens = []
        for rest in itertools.combinations(others, 3):
            idx = torch.tensor([i, *rest])
            j, _ = log_qz(z[idx][None], mean[idx], std[idx], n, "mws")
            dens.append(j[0, 0].exp())
        assert torch.stack(dens).mean().log().item() == pytest.approx(full[i].item(), abs=1e-12)
    # The stratified weights differ (one neighbour stands for the rest of the set), but are
    # a density estimate too: they agree with the full one to within the set's spread.
    joint_s, _ = log_qz(z[None], mean, std, n, "mss")
    assert (joint_s[0] - full).abs().max() < 1.0


def test_factorvae_discriminator_learns_dependent_latents():
    """z = (u, u + 0.1 e): the discriminator's cross-entropy starts at log 2 and, trained by
    its own optimizer, falls well below it; the TC estimate (mean logit difference) heads
    for the true TC, 0.5 log(1.01 / 0.01) = 2.31 nats (at least a third of it after 300
    steps); the model's latents get the gradient of gamma * TC only."""
    torch.manual_seed(0)
    term = FactorTerm(FactorVAEOptions(disc_hidden=64, disc_layers=2, disc_lr=1e-3), 2)
    (opt,) = term.side_optimizers()
    for _ in range(300):
        u = torch.randn(256, 1)
        z = torch.cat([u, u + 0.1 * torch.randn(256, 1)], 1)[None]
        value, stats = term(Terms(z[..., 0], z[..., 0], z[..., 0], extras={"z": z}), 1.0)
        value.backward()
        opt.step()
        opt.zero_grad()
    assert stats["disc_loss"] < math.log(2) - 0.15
    assert stats["tc"] > 2.31 / 3
    assert stats["disc_accuracy"] > 0.7
    # z's gradient is gamma * d TC / dz alone: D's loss, on detached z, sends none.
    zz = z.clone().requires_grad_(True)
    value, _ = term(Terms(zz[..., 0], zz[..., 0], zz[..., 0], extras={"z": zz}), 1.0)
    (grad_z,) = torch.autograd.grad(value, [zz])
    frozen_tc = term.gamma * (term.disc(zz[0]) @ torch.tensor([1.0, -1.0])).mean()
    want_z = torch.autograd.grad(frozen_tc, zz)[0]
    torch.testing.assert_close(grad_z, want_z)
    # D's weights get the gradient of its cross-entropy alone (on z detached, class 0, and
    # the permuted z, class 1), none of the model's gamma * TC: against two plain passes.
    params = list(term.disc.parameters())
    torch.manual_seed(1)
    value, _ = term(Terms(zz[..., 0], zz[..., 0], zz[..., 0], extras={"z": zz}), 1.0)
    got = torch.autograd.grad(value, params)
    torch.manual_seed(1)
    real = zz[0].detach()
    both = term.disc(torch.cat([real, permute_dims(real)]))
    target = torch.cat([torch.zeros(256), torch.ones(256)]).long()
    want = torch.autograd.grad(torch.nn.functional.cross_entropy(both, target), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


FACTOR = {"objective": "factorvae", "disc_hidden": 32, "disc_layers": 2, "latent_dim": 4}


def test_factorvae_discriminator_and_its_adam_resume_bit_for_bit(tmp_path):
    """2 epochs == 1 epoch + --resume for 1: the model, its optimizer, the discriminator's
    weights and its Adam moments and step counts (objective/parts.0.*), bit for bit; the
    discriminator's parameters are not in the model's optimizer."""
    with one_thread():
        full = fit(small_config(epochs=2, **FACTOR), tmp_path / "full")
        half = fit(small_config(epochs=1, **FACTOR), tmp_path / "half")
        fit(small_config(epochs=2, **FACTOR), half, resume=True)
    a, b = (load_checkpoint(r / CHECKPOINT).tensors for r in (full, half))
    disc = [k for k in a if k.startswith("objective/parts.0.disc.")]
    assert len(disc) == 6  # three Linear layers' weight and bias
    assert int(a["objective/parts.0.adam_step_0"]) == 52  # one discriminator step per step
    assert a["objective/parts.0.adam_m_0"].abs().sum() > 0
    keys = [k for k in a if k.startswith(("model/", "objective/", "optim/"))]
    assert set(keys) <= set(b)
    for key in keys:
        assert torch.equal(a[key], b[key]), key
    n_params = len(list(vaelab.load(full).parameters()))
    assert {int(k.split("/")[1]) for k in a if k.startswith("optim/")} == set(range(n_params))
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert {"train_tc", "train_disc_loss", "train_disc_accuracy"} <= set(rows[-1])


def test_annealed_capacity_follows_the_linear_ramp():
    """C(t) = C_max min(1, t/T) at the t-th training call (0.5 nats a step here, flat at 5
    from t = 10); the value is gamma |KL - C(t)| with the batch's mean KL; eval calls do
    not advance t."""
    term = CapacityTerm(AnnealedOptions(capacity_max=5.0, capacity_steps=10, capacity_gamma=2.0))
    kl = torch.tensor([1.0, 2.0])  # mean 1.5
    terms = Terms(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), kl=kl)
    seen = []
    for _ in range(14):
        value, stats = term(terms, 1.0)
        seen.append(float(stats["capacity"]))
        assert float(value) == pytest.approx(2.0 * abs(1.5 - seen[-1]))
    assert seen == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5, 5, 5])
    term.eval()
    term(terms, 1.0)
    assert int(term.step) == 14


def test_annealed_step_counter_is_checkpointed(tmp_path):
    """The annealed objective's t is the run's step count, saved and resumed."""
    opts = {"objective": "annealed", "capacity_steps": 40, "capacity_max": 8.0}
    with one_thread():
        run = fit(small_config(epochs=1, **opts), tmp_path / "a")
        fit(small_config(epochs=2, **opts), run, resume=True)
    assert int(load_checkpoint(run / CHECKPOINT).tensors["objective/parts.0.step"]) == 52
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # epoch 2 averages C over steps 26..51: 8 * mean(min(1, t/40))
    want = sum(8.0 * min(1.0, t / 40) for t in range(26, 52)) / 26
    assert rows[-1]["train_capacity"] == pytest.approx(want, rel=1e-5)


def test_a_capacity_ramp_longer_than_the_run_is_announced(tmp_path, recwarn):
    """An annealed run of 26 steps with a 40-step ramp says so, with the C it reaches
    (8 nats x 26/40 = 5.2); a 20-step ramp ends inside the run and is not announced."""
    with one_thread():
        fit(small_config(epochs=1, objective="annealed", capacity_steps=40, capacity_max=8.0),
            tmp_path / "long")  # fmt: skip
        notes = [str(w.message) for w in recwarn if "--capacity-steps" in str(w.message)]
        assert len(notes) == 1 and "26 steps" in notes[0] and "only 5.2 of" in notes[0]
        recwarn.clear()
        fit(small_config(epochs=1, objective="annealed", capacity_steps=20), tmp_path / "short")
    assert not [w for w in recwarn if "--capacity-steps" in str(w.message)]


def whitened(b: int, d: int) -> torch.Tensor:
    """b points whose (1/b) covariance is exactly the identity (float64)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / b)
    return torch.linalg.solve_triangular(chol, x.T, upper=False).T


def test_dip_regulariser_is_zero_at_identity_covariance_and_positive_otherwise():
    """DIP-I: means with covariance I give 0; with covariance [[2, .5], [.5, 1]] the closed
    form l_od (2 x .5^2) + l_d (2 - 1)^2. DIP-II adds E[diag sigma^2]: means of covariance
    0.75 I and sigma^2 = 0.25 give 0, sigma^2 = 1 gives l_d x D x 0.75^2."""
    mu = whitened(500, 2)
    assert float(dip_regulariser(dip_covariance(mu, None), 10.0, 100.0)) == pytest.approx(
        0.0, abs=1e-20
    )
    target = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    mu2 = mu @ torch.linalg.cholesky(target).T
    got = float(dip_regulariser(dip_covariance(mu2, None), 10.0, 100.0))
    assert got == pytest.approx(10.0 * 2 * 0.25 + 100.0 * 1.0, rel=1e-10)
    mu3 = mu * math.sqrt(0.75)
    half = torch.full_like(mu3, 0.5)
    term = DIPTerm(DIPOptions(dip_kind="ii", lambda_od=3.0))
    extras = {"q_mean": mu3, "q_std": half}
    zero = torch.zeros(1, 500, dtype=torch.float64)
    value, _ = term(Terms(zero, zero, zero, extras=extras), 1.0)
    assert float(value) == pytest.approx(0.0, abs=1e-20)
    extras["q_std"] = torch.ones_like(mu3)
    value, _ = term(Terms(zero, zero, zero, extras=extras), 1.0)
    assert float(value) == pytest.approx(3.0 * 2 * 0.75**2, rel=1e-10)  # lambda_d = lambda_od
    term_i = DIPTerm(DIPOptions(dip_kind="i", lambda_od=3.0))  # lambda_d = 10 lambda_od
    value, _ = term_i(Terms(zero, zero, zero, extras=extras), 1.0)
    assert float(value) == pytest.approx(30.0 * 2 * 0.25**2, rel=1e-10)


def vaelab_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaelab", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_cli_btcvae_records_its_terms_and_refuses_mistakes(tmp_path):
    """vaelab train --objective btcvae --tc-beta 6 trains and writes MI, TC and dim-wise KL
    to metrics.jsonl and btcvae: to config.yaml; another objective's flag, a model without
    one posterior and --beta with annealed are one-line errors, nothing created."""
    base = ["train", "--dataset", "digits", "--latent-dim", "4", "--hidden", "32",
            "--epochs", "1", "--report", "false"]  # fmt: skip
    ok = vaelab_cli(*base, "--objective", "btcvae", "--tc-beta", "6", "--tc-sampling", "mss",
                    "--out", "r", cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_mi", "train_tc", "train_dim_kl"} <= set(row)
    assert "tc_sampling: mss" in (tmp_path / "r" / "config.yaml").read_text()
    for extra, needle in [
        (["--objective", "elbo", "--tc-beta", "6"], "--tc-beta"),
        (["--objective", "btcvae", "--model", "ae"], "--objective btcvae"),
        (["--objective", "annealed", "--beta", "4"], "--beta"),
        (["--objective", "btcvae", "--tc-sampling", "xyz"], "--tc-sampling"),
        (["--objective", "factorvae", "--estimator", "score"], "reparam"),
    ]:
        bad = vaelab_cli(*base, *extra, "--out", "bad", cwd=tmp_path)
        assert bad.returncode != 0 and needle in bad.stderr, (extra, bad.stderr)
        assert "Traceback" not in bad.stderr
        assert not (tmp_path / "bad").exists()


def test_objective_terms_survive_a_mid_epoch_resume(tmp_path, monkeypatch):
    """The epoch means of beta-TCVAE's MI, TC and dim-wise KL in metrics.jsonl are the
    same whether the epoch ran through or was cut after step 15 and resumed from the
    checkpoint at step 10 (--checkpoint-every): the mid-epoch tally carries them."""
    from vaelab.training import loop

    opts = {"objective": "btcvae", "checkpoint_every": 10}
    with one_thread():
        full = fit(small_config(epochs=1, **opts), tmp_path / "full")
        real_step = loop.train_step

        def dies_at_15(s, *args, **kwargs):
            if s.state.step == 15:
                raise RuntimeError("killed")
            return real_step(s, *args, **kwargs)

        monkeypatch.setattr(loop, "train_step", dies_at_15)
        with pytest.raises(RuntimeError, match="killed"):
            fit(small_config(epochs=1, **opts), tmp_path / "cut")
        monkeypatch.setattr(loop, "train_step", real_step)
        fit(small_config(epochs=1, **opts), tmp_path / "cut", resume=True)
    a, b = (json.loads((r / "metrics.jsonl").read_text()) for r in (full, tmp_path / "cut"))
    for key in ("train_mi", "train_tc", "train_dim_kl", "train_loss"):
        assert a[key] == b[key], key
