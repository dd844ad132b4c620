"""CVAE and M2: the class-enumerated bounds, q(y|x), hidden labels, class names, samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from conftest import small_config
from single_thread import one_thread
from vaelab.config import ModelConfig
from vaelab.data import load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation.sample_labels import class_grid, resolve_label
from vaelab.likelihoods import LIKELIHOODS
from vaelab.models import CVAE, M2
from vaelab.models.m2 import DEFAULT_ALPHA_PER_IMAGE
from vaelab.objectives import ClassLoss, Objective, build_objective
from vaelab.objectives import m2 as m2_objective
from vaelab.training.labels import hide_labels, labelled_stream, prepare_labels
from vaelab.training.loop import fit
from vaelab.training.step import LossModule

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _tiny(cls, digits):
    torch.manual_seed(0)
    cfg = ModelConfig(model=cls.__name__.lower(), hidden=(16,), latent_dim=2)
    return cls.from_config(cfg, digits.image_shape).eval()


def test_m2_unlabelled_bound_is_q_weighted_class_bounds_plus_entropy(digits):
    """U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)), with each L(x, y) computed class by class.

    The KL part is analytic, so it must agree to float precision; the reconstruction part
    is a K-sample Monte Carlo mean on both sides, so they agree within 5 standard errors."""
    model = _tiny(M2, digits)
    x = digits.test_x[:4].float() / 255
    k = 4000
    torch.manual_seed(1)
    u = model(x, k)
    q = model.class_log_probs(x).exp()
    entropy = -(q * q.log()).sum(-1)
    log_c = math.log(10)
    kl_sum, recon_sum, var = torch.zeros(4), torch.zeros(4), torch.zeros(4)
    std_normal = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    for c in range(10):
        y = torch.full((4,), c)
        qz = model.encode(x, y)
        kl_c = kl_divergence(qz, std_normal)  # brute force: torch's own closed form
        t = model(x, k, y=y)  # labelled bound of class c: recon - (KL + log C)
        torch.testing.assert_close(t.kl, kl_c + log_c, rtol=1e-5, atol=1e-5)
        kl_sum += q[:, c] * (kl_c + log_c)
        recon_sum += q[:, c] * t.log_px_z.mean(0)
        var += (q[:, c] * t.log_px_z.std(0)).square() / k
    torch.testing.assert_close(u.kl, kl_sum - entropy, rtol=1e-5, atol=1e-5)
    recon_u = u.log_px_z.mean(0)
    se = (var + u.log_px_z.var(0) / k).sqrt()
    assert ((recon_u - recon_sum).abs() < 5 * se).all(), (recon_u, recon_sum, se)
    # The whole bound: U = sum_y q (recon_y - KL_y - log C) + H.
    bound = recon_u - u.kl
    assert ((bound - (recon_sum - kl_sum + entropy)).abs() < 5 * se).all()


@pytest.mark.parametrize("cls", [M2, CVAE])
def test_class_posterior_sums_to_one(cls, digits):
    model = _tiny(cls, digits)
    x = digits.test_x[:16].float() / 255
    p = model.class_log_probs(x).exp()
    assert p.shape == (16, 10) and (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(16))


def _linear_gaussian_cvae(a: float = 2.0, s: float = 0.5, b: tuple = (-1.0, 1.0)):
    """A CVAE on 1-pixel images whose every part is exact: z ~ N(0, 1), y uniform over 2
    classes, x | z, y ~ N(a z + b_y, s^2), so p(x|y) = N(b_y, a^2 + s^2), and the encoder
    is the true posterior q(z|x,y) = N(a (x - b_y) / v, s^2 / v) with v = a^2 + s^2."""
    from torch import nn

    from vaelab.latents import NormalFamily
    from vaelab.latents.priors import build_prior
    from vaelab.likelihoods import GaussianFixed

    v = a * a + s * s
    head, dec = nn.Linear(3, 2), nn.Linear(3, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[a / v, -a * b[0] / v, -a * b[1] / v], [0, 0, 0]]))
        head.bias.copy_(torch.tensor([0.0, math.log(s * s / v)]))
        dec.weight.copy_(torch.tensor([[a, b[0], b[1]]]))
        dec.bias.zero_()
    decoder = nn.Sequential(dec, nn.Unflatten(1, (1, 1, 1, 1)))
    model = CVAE(nn.Identity(), nn.Flatten(), head, decoder, build_prior("normal", 1),
                 GaussianFixed((1, 1, 1), s), (1, 1, 1), 2, NormalFamily())  # fmt: skip

    def log_px(x: torch.Tensor) -> torch.Tensor:
        per_class = torch.stack([Normal(bb, math.sqrt(v)).log_prob(x) for bb in b], -1)
        return torch.logsumexp(per_class, -1) - math.log(2)

    return model.double(), log_px


def test_cvae_label_free_bound_is_not_above_log_px_on_an_exact_toy():
    """With the exact posterior every class ELBO estimate averages log p(x|y), and the
    label-free bound sum_y w [ELBO_y + log p(y)] + H(w) is <= log p(x) for any w chosen
    independently of the values it weighs. Weights r = softmax of the *same* noisy class
    ELBOs made the estimate logsumexp_y of them, whose mean (Jensen) was ~0.09 nats above
    log p(x) at each of these x (over 20 standard errors; log p(0.3) = -1.768). Over 8000
    one-sample estimates at each x the mean must not exceed log p(x) by more than 3
    standard errors (SE ~ 0.006); after the fix it lies ~0.08 below."""
    model, log_px = _linear_gaussian_cvae()
    x = torch.tensor([-1.5, 0.3, 1.0], dtype=torch.float64).repeat(8000).view(-1, 1, 1, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        t = model(x, 1)
    est = (t.log_px_z.mean(0) - t.kl).view(8000, 3)
    mean, se = est.mean(0), est.std(0) / math.sqrt(8000)
    exact = log_px(x[:3].flatten())
    assert (mean <= exact + 3 * se).all(), (mean, exact, se)
    # ... and it is a useful bound: within 0.2 nats (the cost of noisy weights here).
    assert (mean > exact - 0.2).all(), (mean, exact)


def test_m2_objective_adds_weighted_class_loss(digits):
    """The m2 Objective = -(bound) + weight x mean -log q(y|x): over the batch's own known
    labels without a labelled batch, over the labelled batch the loop feeds otherwise; each
    against log q(y|x) read off the model's classifier and the bound of the same draws."""
    model = _tiny(M2, digits)
    x = digits.train_x[:32].float() / 255
    y = digits.train_y[:32].clone()
    y[16:] = -1
    objective = Objective("m2", terms=(ClassLoss(0.7),))
    torch.manual_seed(4)
    loss, stats = objective(model, x, 1.0, y=y)
    torch.manual_seed(4)
    terms = model(x, 1, y=y)
    log_q = model.class_log_probs(x)
    ce = -log_q[torch.arange(16), y[:16]].mean()  # batch labels: no labelled batch given
    bound = terms.log_px_z.mean(0) - terms.kl
    torch.testing.assert_close(loss, -bound.mean() + 0.7 * ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["class_loss"], ce.detach(), rtol=1e-5, atol=1e-5)
    xl, yl = digits.train_x[100:110].float() / 255, digits.train_y[100:110]
    torch.manual_seed(4)
    loss, stats = objective(model, x, 1.0, y=y, labelled=(xl, yl))
    ce = -model.class_log_probs(xl)[torch.arange(10), yl].mean()
    torch.testing.assert_close(loss, -bound.mean() + 0.7 * ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["class_loss"], ce.detach(), rtol=1e-5, atol=1e-5)


def test_m2_beta_weighs_only_the_latent_kl(digits):
    """-(beta-bound) = -(recon - beta KL_z + sum_y w log p(y) + H(w)): for the same draws,
    loss(beta) - loss(1) = (beta - 1) * mean_b sum_y w(y|x) KL(q(z|x,y) || N(0, I)), with
    w one-hot for a labelled image and q(y|x) for a hidden one. KL_y comes from torch's
    closed form class by class. The old objective scaled log p(y) and H(q(y|x)) too: it
    missed by (1 - beta) * mean(log C - H) (~1 nat here). Float32 sums: 1e-4."""
    model = _tiny(M2, digits)
    x = digits.train_x[:8].float() / 255
    y = digits.train_y[:8].clone()
    y[4:] = -1
    terms = model(x, 2, y=y)
    loss_1, _ = m2_objective(terms, 1.0)
    loss_b, stats = m2_objective(terms, 0.25)
    q = model.class_log_probs(x).exp()
    w = torch.where((y >= 0)[:, None], F.one_hot(y.clamp(min=0), 10).float(), q)
    std_normal = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    kl_y = torch.stack(
        [kl_divergence(model.encode(x, torch.full((8,), c)), std_normal) for c in range(10)], -1
    )
    want = (0.25 - 1.0) * (w * kl_y).sum(-1).mean()
    torch.testing.assert_close(loss_b - loss_1, want, rtol=0, atol=1e-4)
    # The reported bound is the beta = 1 bound either way.
    torch.testing.assert_close(stats["bound"], (terms.log_px_z.mean(0) - terms.kl).mean())


def test_hide_labels_keeps_a_seeded_balanced_subset(digits):
    y = digits.train_y
    hidden = hide_labels(y, 5, seed=0)
    kept = hidden[hidden >= 0]
    assert torch.equal(torch.bincount(kept, minlength=10), torch.full((10,), 5))
    assert torch.equal(hidden[hidden >= 0], y[hidden >= 0])  # kept labels are the true ones
    assert torch.equal(hidden, hide_labels(y, 5, seed=0))
    assert not torch.equal(hidden, hide_labels(y, 5, seed=1))
    with pytest.raises(VaelabError, match="labels-per-class"):
        hide_labels(y, 10_000, seed=0)


def test_resolve_label_by_index_and_name(digits):
    model = _tiny(CVAE, digits)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker"]
    names = [*names, "Bag", "Ankle boot"]  # what the run's info holds (Run.info)
    assert resolve_label(model, "sneaker", names) == 7
    assert resolve_label(model, "ANKLE BOOT", names) == 9
    assert resolve_label(model, "3", names) == 3
    for bad in ("10", "-1", "shoe"):
        with pytest.raises(VaelabError, match="--label"):
            resolve_label(model, bad, names)


def test_labels_per_class_needs_m2():
    # An option of the m2 family: refused where the config is built, naming who takes it.
    with pytest.raises(VaelabError, match=r"labels_per_class: an option of --model m2 only "
                       r"\(this run: --model vae\)"):  # fmt: skip
        small_config(labels_per_class=5, epochs=0)


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    torch.manual_seed(0)
    cfg = small_config(model="cvae", epochs=20, hidden="128", latent_dim=4, batch_size=32)
    with one_thread():
        return fit(cfg, tmp_path_factory.mktemp("runs") / "cvae")


def test_cvae_samples_of_a_label_are_classified_as_it(cvae_run, digits):
    """A 3-nearest-neighbour classifier of the real digits (about 98% test accuracy) labels
    CVAE samples of class c as c far above chance (10%): the label controls the class."""
    from sklearn.neighbors import KNeighborsClassifier

    import vaelab

    model = vaelab.load(cvae_run)
    clf = KNeighborsClassifier(3).fit(
        digits.train_x.flatten(1).numpy() / 255, digits.train_y.numpy()
    )
    torch.manual_seed(0)
    y = torch.arange(10).repeat_interleave(30)
    images = model.sample(300, 1.0, y)
    acc = (clf.predict(images.flatten(1).numpy()) == y.numpy()).mean()
    assert acc > 0.6, acc
    grid = class_grid(model, 5, seed=0)  # rows are classes, columns share z
    assert grid.shape == (50, 1, 8, 8)
    rows = torch.arange(10).repeat_interleave(5).numpy()
    assert (clf.predict(grid.flatten(1).numpy()) == rows).mean() > 0.6


def test_cvae_log_likelihood_enumerates_the_classes(cvae_run, digits):
    """`vaelab evaluate` on a CVAE: log p(x) = log (1/C) sum_y p(x|y), each p(x|y)
    importance-sampled. The model hands nll all K*C weights, so their log-mean must equal
    logsumexp_y(logmeanexp_k log w_ky) - log C computed class by class from the same draws;
    and the estimate (K = 100 per class) must lie above the model's own bound on log p(x)
    (the class ELBOs weighted by r(y|x), its test_elbo), as an importance-sampled bound does. The
    gap is small here (~0.1 nats: a 4-latent CVAE's class bounds are nearly tight), so the
    bound is averaged over 100 draws too (its noise ~0.015 nats on 200 images)."""
    import vaelab
    from vaelab.evaluation.nll import test_bound
    from vaelab.objectives import logmeanexp

    model = vaelab.load(cvae_run)
    x = digits.test_x[:32].float() / 255
    with torch.no_grad():
        torch.manual_seed(0)
        flat = logmeanexp(model.log_weights(x, 5), 0)
        torch.manual_seed(0)
        t = model.class_terms(x, 5)
    per_class = logmeanexp(t["log_px_z"] + t["log_pz"] - t["log_qz_x"], 0)  # (B, C)
    brute = torch.logsumexp(per_class, -1) - math.log(10)
    torch.testing.assert_close(flat, brute, rtol=1e-5, atol=1e-4)
    with one_thread():
        result = vaelab.evaluate(cvae_run, samples=100, limit=200, quality=False)
        bound = test_bound(model, digits.test_x[:200], samples=100)["elbo"]
    assert math.isfinite(result["nll_nats"]) and result["nll_nats"] < -bound, (result, bound)
    assert result["health"]["active_units"] >= 1


def test_label_control_through_the_dataset_classifier(cvae_run, tmp_path, capsys):
    """`vaelab classify RUN --label-control 30`: 30 CVAE samples per digit, classified by
    the dataset's cached CNN (the sample-quality one). The 3-NN check above puts label
    control far above chance (10%); the CNN must agree (> 60%), and the asked-vs-seen
    confusion must count every sample once per asked label."""
    from vaelab.cli import main

    with one_thread():
        code = main(["classify", str(cvae_run), "--label-control", "30",
                     "--json", str(tmp_path / "c.json")])  # fmt: skip
    assert code == 0
    import json

    lc = json.loads((tmp_path / "c.json").read_text())["label_control"]
    assert lc["accuracy"] > 0.6 and lc["classifier_test_accuracy"] > 0.8, lc
    assert [sum(row) for row in lc["confusion"]] == [30] * 10
    out = capsys.readouterr().out
    assert "label control:" in out and (cvae_run / "outputs" / "label-control.png").is_file()
    # With --out, the label-control matrix goes beside it; an existing --json is refused.
    small = ["classify", str(cvae_run), "--label-control", "2", "--limit", "50"]
    with one_thread():
        code = main([*small, "--out", str(tmp_path / "cm.png"), "--json", str(tmp_path / "c.json")])
    assert code == 2 and "--json" in capsys.readouterr().err
    with one_thread():
        code = main([*small, "--out", str(tmp_path / "cm.png")])
    assert code == 0 and (tmp_path / "cm-label-control.png").is_file()


@pytest.mark.parametrize("model", ["cvae", "m2"])
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_label_model_terms_contract(model, likelihood, arch):
    """The Terms contract with labels, with some hidden (-1) and with none (y=None)."""
    cfg = ModelConfig(model=model, likelihood=likelihood, arch=arch, hidden=(8,), latent_dim=3)
    m = (CVAE if model == "cvae" else M2).from_config(cfg, (1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    y = torch.tensor([0, 3, -1, 9, -1]) if model == "m2" else torch.tensor([0, 3, 1, 9, 2])
    for labels in (y, None):
        terms = m(x, 4, y=labels)
        for t in (terms.log_px_z, terms.log_pz, terms.log_qz_x):
            assert t.shape == (4, 5) and torch.isfinite(t).all()
        assert terms.kl_per_image().shape == (5,) and torch.isfinite(terms.kl).all()
    assert m.reconstruct(x).shape == x.shape
    assert m.sample(3, 1.0, 2).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("model", ["cvae", "m2"])
@pytest.mark.parametrize("likelihood", ["gaussian-fixed", "gaussian-learned"])
def test_label_models_score_gaussian_likelihoods_like_torch(model, likelihood):
    """With every label given, log p(x|z,y) of CVAE and M2 is N(x; decoder mean, sigma^2 I)
    summed over pixels, at z drawn from q(z|x,y) (the same draws, replayed by seed):
    against torch.distributions.Normal, with sigma 0.3 (fixed) or a learned 0.2."""
    cfg = ModelConfig(model=model, likelihood=likelihood, hidden=(8,), latent_dim=3,
                      sigma=0.3)  # fmt: skip
    torch.manual_seed(0)
    m = (CVAE if model == "cvae" else M2).from_config(cfg, (1, 8, 8)).double()
    sigma = 0.3
    if likelihood == "gaussian-learned":
        sigma = 0.2
        with torch.no_grad():
            m.likelihood.log_sigma_param.fill_(math.log(sigma))
    else:
        m.likelihood.log_sigma.fill_(math.log(sigma))  # float64 like the reference
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 9, 2])
    torch.manual_seed(1)
    terms = m(x, 4, y=y)
    torch.manual_seed(1)
    if model == "cvae":
        z = m.encode(x, y).rsample((4,))  # (K, B, D)
    else:  # M2 draws every class's z, then weighs the given class by 1
        z = m.encode_all(x).rsample((4,))[:, torch.arange(5), y]
    mean = m.decode(z, y)[..., 0, :, :, :]
    want = torch.distributions.Normal(mean, sigma).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(terms.log_px_z, want, rtol=1e-10, atol=1e-9)


def test_prepare_labels_sets_alpha_over_n_and_a_uniform_labelled_stream(digits):
    """alpha / N weights the class loss (default 10 * N: benchmarks/m2_curves.py shows the
    paper's 0.1 * N leaves q(y|x) unfitted after tens of epochs). The labelled stream draws
    uniformly from the kept images, so the class loss of a step is, in expectation, their
    mean -log q(y|x): the paper's E_labelled term, not over-weighted. The average of 400
    draws of 50 must match it within 5 Monte Carlo standard errors."""
    torch.manual_seed(0)
    cfg = small_config(model="m2", objective="m2", labels_per_class=5)
    model = M2.from_config(cfg.model, digits.image_shape)
    data = prepare_labels(model, cfg, digits)
    n = len(digits.train_x)
    objective = build_objective(cfg, model, n)
    (class_loss,) = objective.terms
    assert class_loss.weight == DEFAULT_ALPHA_PER_IMAGE == 10.0
    kept = torch.nonzero(data.train_y >= 0).flatten()
    stream = labelled_stream(model, cfg, data, torch.device("cpu"))
    assert len(kept) == 50 and torch.equal(stream.y, data.train_y[kept])
    per_image = F.cross_entropy(model.class_logits(digits.train_x[kept].float() / 255),
                                data.train_y[kept], reduction="none")  # fmt: skip
    unit = LossModule(model.train(), objective, 1, stream)  # the loop's unit feeds the stream
    x = digits.train_x[:8].float() / 255
    with torch.no_grad():
        draws = torch.stack([unit(x, torch.tensor(1.0))[1]["class_loss"] for _ in range(400)])
    se = per_image.std() / math.sqrt(50 * 400)
    assert abs(draws.mean() - per_image.mean()) < 5 * se, (draws.mean(), per_image.mean(), se)
    for alpha, weight in ((0.0, 0.0), (0.1 * n, 0.1)):
        cfg_a = small_config(model="m2", objective="m2", alpha=alpha)
        prepare_labels(model, cfg_a, digits)
        assert build_objective(cfg_a, model, n).terms[0].weight == pytest.approx(weight)
    with pytest.raises(VaelabError, match="--alpha: must be at least 0"):
        M2.check_config(small_config(model="m2", objective="m2", alpha=-1.0).model)
