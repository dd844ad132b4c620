"""The deep hierarchical VAE (--model deep): exact log-densities on a linear-Gaussian
hierarchy, the importance-sampled log p(x) against its closed form, KL per group.

With the identity as activation every network of the model is affine. Setting the weights
that produce each log-variance to zero makes every variance a constant, and with a fixed-sigma
Gaussian likelihood (whose mean is the raw decoder output) the model is a linear-Gaussian
hierarchy:

    z_g = a_g + L_g z_<g + s_g eps_g        (prior; the top group has a = 0, s = 1)
    x   = b + W z + sigma eps               q: z_g = c_g + B_g z_<g + C_g x + r_g eps_g

The affine maps are read off the model by probing it at zero and at unit vectors (float64:
exact). The references are then joint multivariate normals built by matrix algebra, not by
the model's per-group sums: p(z) = N(M a, M S^2 M^T) with M = (I - L)^-1, p(x) = N(b + W m,
W Sigma W^T + sigma^2 I), q(z|x) likewise, and the exact posterior p(z|x) by Gaussian
conditioning, which gives the ELBO in closed form: log p(x) - KL(q(z|x) || p(z|x)).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from single_thread import one_thread
from vaelab.evaluation.nll import log_likelihood
from vaelab.likelihoods import GaussianFixed
from vaelab.models.deep import DeepVAE, GroupBlock

f64 = torch.float64
SHAPE, S = (1, 4, 4), 0.3  # image; likelihood sigma
D = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def linear_deep(groups: tuple[int, ...] = (1, 1, 2)) -> DeepVAE:
    """Three resolutions (sides 4, 2, 1), groups of one channel; (1, 1, 2): 22 latent dims."""
    torch.manual_seed(0)
    model = DeepVAE(SHAPE, GaussianFixed(SHAPE, S), (3, 3, 3), groups, 1, act=nn.Identity)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)
        for block in model.decoder:
            if isinstance(block, GroupBlock):
                for net, log_var in ((block.posterior, -1.0), (block.prior, -0.5)):
                    if net is not None:  # constant log-variances: a linear-Gaussian model
                        net[-1].weight[1:2].zero_()
                        net[-1].bias[1:2].fill_(log_var)
        model.likelihood.log_sigma.fill_(math.log(S))
    return model.eval()


def _flat(records, key: int) -> torch.Tensor:
    return torch.cat([r[key].flatten(1) for r in records], 1)


def _split(model: DeepVAE, z: torch.Tensor) -> list[torch.Tensor]:
    sizes = [math.prod(s) for s in model.group_shapes]
    return [
        part.reshape(-1, *s) for part, s in zip(z.split(sizes, 1), model.group_shapes, strict=True)
    ]


@torch.no_grad()
def reference(model: DeepVAE):
    """The affine maps of the model, probed, and functions giving the joint Gaussians."""
    dz = sum(math.prod(s) for s in model.group_shapes)
    probe = torch.cat([torch.zeros(1, dz, dtype=f64), torch.eye(dz, dtype=f64)])
    params, rec = model.top_down(len(probe), given=_split(model, probe))
    mu_p, lv_p = _flat(rec, 3), _flat(rec, 4)
    a, L = mu_p[0], (mu_p[1:] - mu_p[0]).T  # mu_p = a + L z
    b, W = params[0].flatten(), (params[1:].flatten(1) - params[0].flatten()).T
    assert torch.equal(lv_p, lv_p[:1].expand_as(lv_p))  # constant prior variances
    s2 = lv_p[0].exp()
    # q: mu_q = c + Bz z + Cx x, probed over z (x = 0) and over x (z = 0).
    x0 = torch.zeros(1 + D, *SHAPE, dtype=f64)
    _, rq = model.top_down(len(probe), [a.expand(len(probe), *a.shape[1:]) for a in
                                       model.encoder(torch.zeros(len(probe), *SHAPE, dtype=f64))],
                           given=_split(model, probe))  # fmt: skip
    mu_q, r2 = _flat(rq, 1), _flat(rq, 2)[0].exp()
    c, Bz = mu_q[0], (mu_q[1:] - mu_q[0]).T
    x0[1:] = torch.eye(D, dtype=f64).reshape(D, *SHAPE)
    _, rx = model.top_down(
        len(x0), model.encoder(x0), given=_split(model, torch.zeros(len(x0), dz, dtype=f64))
    )
    mu_qx = _flat(rx, 1)
    Cx = (mu_qx[1:] - mu_qx[0]).T
    # Causality: group g's prior and posterior read only the groups above it.
    sizes = [math.prod(s) for s in model.group_shapes]
    ends = torch.tensor(sizes).cumsum(0).tolist()
    for start, end in zip([0, *ends[:-1]], ends, strict=True):
        assert L[start:end, start:].abs().max() == 0 and Bz[start:end, start:].abs().max() == 0
    eye = torch.eye(dz, dtype=f64)
    M, Mq = torch.linalg.inv(eye - L), torch.linalg.inv(eye - Bz)
    m, cov = M @ a, M @ torch.diag(s2) @ M.T
    prior = MultivariateNormal(m, cov)
    p_x = MultivariateNormal(b + W @ m, W @ cov @ W.T + S**2 * torch.eye(D, dtype=f64))

    def q(x: torch.Tensor) -> MultivariateNormal:  # x (D,)
        return MultivariateNormal(Mq @ (c + Cx @ x), Mq @ torch.diag(r2) @ Mq.T)

    def posterior(x: torch.Tensor) -> MultivariateNormal:
        prec = torch.linalg.inv(cov) + W.T @ W / S**2
        sigma = torch.linalg.inv(prec)
        return MultivariateNormal(sigma @ (torch.linalg.solve(cov, m) + W.T @ (x - b) / S**2),
                                  sigma)  # fmt: skip

    return {"prior": prior, "p_x": p_x, "q": q, "posterior": posterior, "W": W, "b": b}


def fit_posterior(model: DeepVAE, x: torch.Tensor, steps: int = 300) -> None:
    """Adam on the ELBO over the inference networks only (the generative model, hence p(x),
    stays fixed), keeping each log-variance weight at zero: q stays linear-Gaussian but moves
    near the exact posterior, so the importance-sampled estimates are informative."""
    from vaelab.objectives import elbo

    inference = [*model.encoder.parameters()] + [
        p
        for blk in model.decoder
        if isinstance(blk, GroupBlock)
        for p in blk.posterior.parameters()
    ]
    opt = torch.optim.Adam(inference, lr=0.03)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        elbo(model(x, 4))[0].backward()
        opt.step()
        with torch.no_grad():
            for blk in model.decoder:
                if isinstance(blk, GroupBlock):
                    blk.posterior[-1].weight[1:2].zero_()
    model.eval()


def test_log_densities_match_the_joint_gaussians():
    """log p(x|z), sum_g log p(z_g|z_<g) and sum_g log q(z_g|x,z_<g) of the model at latents
    drawn from the reference q equal the joint multivariate normals' log-densities (float64,
    the same numbers by two routes: rtol 1e-9)."""
    model = linear_deep()
    ref = reference(model)
    torch.manual_seed(1)
    x = ref["p_x"].sample((6,))
    z = torch.stack([ref["q"](xi).sample() for xi in x])
    terms = model.score(x.reshape(-1, *SHAPE), _split(model, z))
    torch.testing.assert_close(terms.log_pz[0], ref["prior"].log_prob(z), rtol=1e-9, atol=1e-9)
    log_q = torch.stack([ref["q"](xi).log_prob(zi) for xi, zi in zip(x, z, strict=True)])
    torch.testing.assert_close(terms.log_qz_x[0], log_q, rtol=1e-9, atol=1e-9)
    log_px_z = Normal(z @ ref["W"].T + ref["b"], S).log_prob(x).sum(1)
    torch.testing.assert_close(terms.log_px_z[0], log_px_z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("groups", [(1, 1, 2), (0, 2, 2)])  # (0, ...): no group at the finest
def test_kl_per_group_adds_up_to_the_total_kl(groups):
    """By the chain rule of KL, E_q[sum_g KL(q(z_g|x,z_<g) || p(z_g|z_<g))] = KL(q(z|x) ||
    p(z)) of the joint Gaussians. The model's per-group KLs (closed form given the sampled
    z_<g, averaged over K = 400) are summed and averaged over 20 independent calls; they must
    match the closed form within 4 standard errors of that average (false alarm ~6e-5)."""
    model = linear_deep(groups)
    ref = reference(model)
    torch.manual_seed(2)
    x = ref["p_x"].sample((3,))
    with torch.no_grad():
        runs = torch.stack([model(x.reshape(-1, *SHAPE), 400).kl_groups for _ in range(20)])
    assert runs.shape == (20, 4, 3) and (runs >= 0).all()
    total = runs.sum(1)  # (20, B)
    exact = torch.stack([kl_divergence(ref["q"](xi), ref["prior"]) for xi in x])
    se = total.std(0) / math.sqrt(len(total))
    assert ((total.mean(0) - exact).abs() < 4 * se + 1e-9).all(), (total.mean(0), exact, se)


@pytest.fixture(scope="module")
def fitted():
    model = linear_deep()
    torch.manual_seed(1)
    x = on_8bit_grid(reference(model)["p_x"].sample((64,))).double() / 255
    fit_posterior(model, x.reshape(-1, *SHAPE))
    return model, reference(model)


def on_8bit_grid(x: torch.Tensor) -> torch.Tensor:
    """Real-valued draws as uint8 images (what vaelab evaluate scores)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def test_importance_sampled_log_px_is_above_the_elbo_and_tightens_with_k(fitted):
    """On 10 images (values on the 8-bit grid, as vaelab evaluate sees them), each scored 40,
    20, 20 and 4 times independently at K = 1, 10, 100, 1000 with vaelab's own log_likelihood
    (q fitted to KL(q || p(z|x)) ~ 5 nats; measured gaps -5.20, -2.64, -1.76, -1.26 nats):
    * at K = 1 the estimate's mean is the ELBO, log p(x) - KL(q(z|x) || p(z|x)) in closed form;
    * the mean rises with K (each step by more than 3 standard errors of the difference);
    * and stays below the exact log p(x) (one-sided, 3 SE), approaching it.
    Margins in standard errors of the means over the independent replicates."""
    model, ref = fitted
    torch.manual_seed(3)
    x = on_8bit_grid(ref["p_x"].sample((10,)))
    xf = x.double() / 255
    exact = ref["p_x"].log_prob(xf)
    bound = exact - torch.stack([kl_divergence(ref["q"](xi), ref["posterior"](xi)) for xi in xf])
    rows = x.reshape(-1, *SHAPE)
    means, ses = [], []
    for k, reps in ((1, 40), (10, 20), (100, 20), (1000, 4)):
        est = log_likelihood(model, rows.repeat(reps, 1, 1, 1), samples=k, batch_size=64,
                             chunk=250).reshape(reps, -1)  # fmt: skip
        gap = est - exact  # (reps, images): <= 0 in expectation
        means.append(gap.mean().item())
        ses.append(gap.std().item() / math.sqrt(gap.numel()))
        assert means[-1] < 3 * ses[-1], (k, means[-1], ses[-1])
        if k == 1:
            elbo_gap = (est - bound).mean().item()
            assert abs(elbo_gap) < 4 * ses[-1], (elbo_gap, ses[-1])
    print("mean log p_K(x) - log p(x) for K = 1, 10, 100, 1000:", means, ses)
    for i in range(3):
        assert means[i + 1] - means[i] > 3 * math.hypot(ses[i], ses[i + 1]), (means, ses)


TINY = {"model": "deep", "deep_widths": "8,8", "deep_groups": "1,2", "group_channels": 2,
        "binarize": "dynamic"}  # fmt: skip


def test_resume_with_ema_is_bit_for_bit(tmp_path):
    """2 epochs == 1 epoch, then --resume for 1 more: weights, Adam state and the weight
    average (default --ema 0.999 for deep, with its step count) all equal."""
    from conftest import small_config
    from vaelab.training.checkpoint import load_checkpoint
    from vaelab.training.loop import fit

    full = fit(small_config(epochs=2, **TINY), tmp_path / "full")
    half = fit(small_config(epochs=1, **TINY), tmp_path / "half")
    resumed = fit(small_config(epochs=2, **TINY), half, resume=True)
    a, b = (load_checkpoint(r / "checkpoint.safetensors") for r in (full, resumed))
    assert any(k.startswith("ema/") for k in a.tensors) and a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:
        if key.startswith(("model/", "optim/", "ema/")):
            assert torch.equal(a.tensors[key], b.tensors[key]), key
    assert a.state.extra["ema_updates"] == b.state.extra["ema_updates"] == 52


def test_every_vae_command_works_on_a_deep_run(tmp_path, capsys):
    """train (with the report: samples, similar, interpolations, traversals, latent space),
    then sample with one temperature per group, evaluate, reconstruct, similar, interpolate
    and traverse through the CLI; every group at temperature 0 gives one deterministic image
    (the prior means) n times; a wrong temperature count is one line and exit 2."""
    import numpy as np

    from vaelab.cli import main

    run = tmp_path / "deep"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--batch-size", "64",
                 "--progress", "false", "--out", str(run), *flags]) == 0  # fmt: skip
    assert (run / "report.html").stat().st_size > 10_000
    # the heading names the hierarchy, not --arch/--latent-dim, which a deep run ignores
    assert "deep widths 8,8, latent groups 1,2 of 2 channels" in (run / "report.html").read_text()
    npy = tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "5", "--group-temperature", "0,0,0",
                 "--out", str(tmp_path / "s.png"), "--npy", str(npy)]) == 0  # fmt: skip
    images = np.load(npy)
    assert images.shape == (5, 1, 8, 8) and np.ptp(images, axis=0).max() == 0
    assert main(["sample", str(run), "--group-temperature", "1,1"]) == 2
    assert "expected 3 values >= 0 (one per latent group, top first)" in capsys.readouterr().err
    assert main(["sample", str(run), "--group-temperature", "1,0.5,0.8"]) == 0
    assert main(["evaluate", str(run), "--samples", "20", "--limit", "30", "--no-quality"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["images"] == 30 and math.isfinite(result["nll_nats"])
    assert result["health"]["latent_dim"] == 32  # the top group: 2 channels x 4 x 4
    assert len(result["kl_per_group"]) == 3 and min(result["kl_per_group"]) >= 0
    shown = capsys.readouterr().out.split("KL per group, top first")[1].split("\n")[0].split()
    assert [float(v) for v in shown] == [round(v, 2) for v in result["kl_per_group"]]
    for argv in (
        ["reconstruct", "-n", "8"],
        ["similar", "--index", "3", "-n", "4"],
        ["interpolate", "--from", "1", "--to", "2"],
        ["traverse", "--index", "0"],
    ):
        assert main([argv[0], str(run), *argv[1:]]) == 0, argv  # fmt: skip


def test_deep_under_ddp_tracks_one_process(tmp_path):
    """2 gloo ranks (forked as torchrun would start them) vs one process, 2 epochs with the
    weight average and a (never reached) --skip-threshold: the ranks draw their own noise,
    so the bounds agree only statistically; as in test_distributed's VAE test, 3% of ~40
    nats is many standard errors of a 1,600-image average, while a wrong gradient scale or
    a rank on the wrong shard breaks it."""
    from test_distributed import forked, metrics, single, tensors

    opts = {**TINY, "epochs": 2, "skip_threshold": 1e6}
    one = metrics(single(tmp_path / "one", **opts))
    forked(tmp_path / "ddp", **opts)
    two = metrics(tmp_path / "ddp")
    for a, b in zip(one, two, strict=True):
        assert a["skipped_steps"] == b["skipped_steps"] == 0 and b["grad_norm_max"] > 0
        for key in ("train_bound", "test_elbo"):
            assert abs(a[key] - b[key]) < 0.03 * abs(a[key]), (key, a[key], b[key])
    assert tensors(tmp_path / "ddp", "ema/").keys() == tensors(tmp_path / "one", "ema/").keys()
