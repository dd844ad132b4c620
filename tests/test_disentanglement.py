"""The disentanglement metrics on representations whose answers are known.

A grid of 4 independent factors (3 x 4 x 5 x 6 values, 360 combinations, each image once
per combination, 4 copies) stands in for dSprites. The representations:

* ``factors``: the standardised factor values, plus two near-constant dimensions;
* ``monotone``: the same, permuted and each passed through a different monotone map;
* ``mixed``: each pair of factors rotated by 45 degrees (the worst rotation: every
  dimension tells equally about two factors);
* ``noise``: independent of the factors;
* ``merged``: factor classes 2 and 3 summed into one dimension (0..4 + 0..5: neither
  recoverable from the sum).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaelab.data.dsprites import all_classes
from vaelab.evaluation.disentanglement import (
    beta_vae_score,
    dci,
    dci_from_importance,
    factor_vae_score,
    mig,
    sap,
    score,
)
from vaelab.evaluation.mutual_info import (
    binned_mi_matrix,
    discrete_entropy,
    exact_mi_matrix,
    mig_from_mi,
)

SIZES = (3, 4, 5, 6)
FACTORS = np.tile(all_classes(SIZES), (4, 1))
VOTES = {"train": 800, "test": 400, "batch": 32}


def _representations() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    f = FACTORS.astype(np.float64)
    z = (f - f.mean(0)) / f.std(0)
    quiet = 0.01 * rng.normal(size=(len(f), 2))
    c = math.sqrt(0.5)
    mix = np.array([[c, c, 0, 0], [c, -c, 0, 0], [0, 0, c, c], [0, 0, c, -c]])
    return {
        "factors": np.c_[z, quiet],
        "monotone": np.c_[np.exp(z[:, 2]), z[:, 0] ** 3, quiet, np.tanh(z[:, 3]), 5 * z[:, 1]],
        "mixed": np.c_[z @ mix.T, quiet],
        "noise": rng.normal(size=(len(f), 6)),
        "merged": np.c_[z[:, 0], z[:, 1], (f[:, 2] + f[:, 3]) / 3, quiet, quiet[:, :1]],
    }


REPS = _representations()
STD = 0.02  # posterior std for the exact MIG: well below the 0.29 spacing of a 6-value factor


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, float]]:
    out = {}
    for name, codes in REPS.items():
        r = score(codes, FACTORS, np.full_like(codes, STD), seeds=(0,), votes=(800, 400),
                  batch=32, mig_samples=2000)  # fmt: skip
        out[name] = {k: v["mean"] for k, v in r["summary"].items()}
    return out


TOP = ("beta_vae_score", "factor_vae_score", "mig_exact", "mig_binned", "sap",
       "dci_disentanglement", "dci_completeness", "dci_informativeness")  # fmt: skip


@pytest.mark.parametrize("name", ["factors", "monotone"])
def test_the_factors_score_at_the_top(scores: dict, name: str) -> None:
    # Each factor is one dimension, exactly (up to a monotone map): every metric's maximum,
    # less the exact MIG's overlap of Gaussians of std 0.02 (MI within a few % of H).
    for metric in TOP:
        assert scores[name][metric] > 0.93, (name, metric, scores[name][metric])


def test_noise_scores_at_the_bottom(scores: dict) -> None:
    s = scores["noise"]
    # The vote classifiers guess among 4 factors: chance is 1/4.
    assert s["beta_vae_score"] < 0.4 and s["factor_vae_score"] < 0.4
    for metric in ("mig_exact", "mig_binned", "sap", "dci_disentanglement", "dci_completeness"):
        assert s[metric] < 0.1, (metric, s[metric])


def test_the_worst_rotation_scores_low(scores: dict) -> None:
    s = scores["mixed"]
    # Each dimension holds half of two factors: MIG's gap between the two best dimensions
    # is small, and SAP's too.
    for metric in ("mig_exact", "mig_binned", "sap"):
        assert s[metric] < 0.3, (metric, s[metric])
    # DCI: each used code splits its importance evenly over 2 of the 4 factors, so
    # D = 1 - log_4(2) = 0.5; each factor over 2 of the 6 codes, C = 1 - log_6(2).
    assert s["dci_disentanglement"] == pytest.approx(0.5, abs=0.05)
    assert s["dci_completeness"] == pytest.approx(1 - math.log(2) / math.log(6), abs=0.05)
    # FactorVAE's vote ties between the two mixed dimensions: about half the votes lost.
    assert s["factor_vae_score"] < 0.75
    # while the information is all there (an invertible map of the factors)
    assert s["dci_informativeness"] > 0.9


def test_a_generic_rotation_fools_the_vote_scores_only() -> None:
    # A random rotation keeps one most-aligned dimension per factor: the beta-VAE and
    # FactorVAE scores (which ask only which factor was fixed) stay high, MIG does not.
    codes = REPS["factors"][:, :4] @ np.linalg.qr(np.random.default_rng(3).normal(size=(4, 4)))[0]
    assert factor_vae_score(codes, FACTORS, **VOTES)["score"] > 0.8
    assert mig(codes, FACTORS, bins=20)["binned"]["score"] < 0.5


def test_merging_two_factors_loses_them(scores: dict) -> None:
    s, top = scores["merged"], scores["factors"]
    # Factors 2 and 3 share one dimension: for each, the best dimension tells only part
    # of it, so MIG loses a share of 2 of the 4 gaps; DCI's completeness and informativeness
    # fall (the merged code predicts neither exactly); FactorVAE's vote for them picks the
    # merged dimension either way: about 1/4 of the votes are lost.
    assert s["mig_exact"] < top["mig_exact"] - 0.15
    assert s["mig_binned"] < top["mig_binned"] - 0.15
    assert s["sap"] < top["sap"] - 0.15
    assert s["dci_disentanglement"] < top["dci_disentanglement"] - 0.1
    assert s["dci_informativeness"] < top["dci_informativeness"] - 0.1
    assert s["factor_vae_score"] < 0.85


def test_exact_mi_against_quadrature() -> None:
    # Two factors (2 x 3 values), one latent dimension z = v0 + 0.5 v1 + N(0, 0.3^2) per
    # image: q(z) and q(z | v) are finite Gaussian mixtures whose entropies a float64
    # quadrature on a fine grid gives to 1e-6; the estimator must agree within its Monte
    # Carlo error (about 0.02 nats at 20,000 draws).
    f = np.tile(all_classes((2, 3)), (5, 1))
    mu = (f[:, 0] + 0.5 * f[:, 1]).astype(np.float64)[:, None]
    std = np.full_like(mu, 0.3)
    grid = np.linspace(-3, 5, 40001)

    def entropy(centres: np.ndarray) -> float:
        dens = np.exp(-0.5 * ((grid[:, None] - centres[None]) / 0.3) ** 2).mean(1)
        dens /= 0.3 * math.sqrt(2 * math.pi)
        return float(-np.trapezoid(dens * np.log(np.maximum(dens, 1e-300)), grid))

    h = entropy(mu[:, 0])
    exact = np.zeros(2)
    for k in range(2):
        cond = sum((f[:, k] == v).mean() * entropy(mu[f[:, k] == v, 0]) for v in np.unique(f[:, k]))
        exact[k] = h - cond
    est = exact_mi_matrix(mu, std, f, samples=20000, seed=0)["mi"][0]
    assert np.allclose(est, exact, atol=0.03), (est, exact)


def test_binned_mi_against_enumeration() -> None:
    # Codes that fall on 4 distinct values (4 bins) against a factor: the binned MI is the
    # discrete MI of the 4 x 2 table, enumerated here by hand: p(code, v) = 1/8 each for
    # codes {0,1} with v = 0 and codes {2,3} with v = 1, twice each -> I = log 2 exactly.
    codes = np.array([0, 1, 2, 3, 0, 1, 2, 3], dtype=float)[:, None]
    v = np.array([0, 0, 1, 1, 0, 0, 1, 1])[:, None]
    assert binned_mi_matrix(codes, v, bins=4)[0, 0] == pytest.approx(math.log(2))
    # a code that splits v = 0 from v = 1 only half of the time: I = log 2 - H(1/2, 1/2) / 2
    v2 = np.array([0, 1, 1, 1, 0, 0, 1, 0])[:, None]
    joint = np.array([[2, 0], [1, 1], [0, 2], [1, 1]]) / 8
    p = joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)
    nz = joint > 0
    hand = float((joint[nz] * np.log(joint[nz] / p[nz])).sum())
    assert binned_mi_matrix(codes, v2, bins=4)[0, 0] == pytest.approx(hand)
    assert discrete_entropy(np.array([0, 0, 1, 2])) == pytest.approx(1.5 * math.log(2))


def test_mig_from_mi_by_hand() -> None:
    mi = np.array([[0.9, 0.1], [0.3, 0.5], [0.0, 0.2]])
    h = np.array([1.0, 0.6])
    score_, gaps = mig_from_mi(mi, h)
    assert gaps == pytest.approx([0.6, 0.5])
    assert score_ == pytest.approx(0.55)


def test_dci_against_a_hand_computed_importance_matrix() -> None:
    # R: code 0 serves factor 0 only, code 1 splits evenly between factors 0 and 1, code 2
    # is unused. D = sum_j rho_j (1 - H_2(P_j)): rho = (1/3, 2/3, 0) of total 3 (weights
    # 1 and 2), 1 - H_2 = (1, 0) -> D = 1/3. C: factor 0 gets (1, 1, 0) -> 1 - log3(2),
    # factor 1 gets (0, 1, 0) -> 1; C = (2 - log 2 / log 3) / 2.
    r = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    d, c = dci_from_importance(r)
    assert d == pytest.approx(1 / 3)
    assert c == pytest.approx((2 - math.log(2) / math.log(3)) / 2)
    assert dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dci_from_importance(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_dci_lasso_importances_find_the_linear_code() -> None:
    codes = REPS["factors"]
    out = dci(codes, FACTORS, importance="lasso")
    r = np.asarray(out["importance"])
    assert (r[:4].argmax(1) == np.arange(4)).all()
    assert out["disentanglement"] > 0.9


def test_total_correlation_of_a_correlated_gaussian() -> None:
    # Means from N(0, S) with correlation 0.8, posterior std 0.3: q(z) ~ N(0, S + 0.3^2 I),
    # whose TC is -0.5 log det(corr) = -0.5 log(1 - rho^2), rho = 0.8 / 1.09.
    rng = np.random.default_rng(1)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    mu = rng.multivariate_normal(np.zeros(2), cov, size=4000)
    rho = 0.8 / (1 + 0.3**2)
    expected = -0.5 * math.log(1 - rho**2)
    f = rng.integers(0, 2, size=(4000, 1))
    tc = exact_mi_matrix(mu, np.full_like(mu, 0.3), f, samples=4000)["total_correlation"]
    # the mixture of 4,000 components is Gaussian only up to sampling noise: 10% tolerance
    assert tc == pytest.approx(expected, rel=0.1)


def test_sap_and_votes_are_seeded() -> None:
    a = sap(REPS["merged"], FACTORS, seed=4)
    assert a == sap(REPS["merged"], FACTORS, seed=4)
    b1 = beta_vae_score(REPS["noise"], FACTORS, seed=1, **VOTES)
    assert b1 == beta_vae_score(REPS["noise"], FACTORS, seed=1, **VOTES)


def test_score_reports_spread_over_seeds() -> None:
    r = score(REPS["noise"], FACTORS, metrics=("factor_vae", "sap"), seeds=(0, 1, 2),
              votes=(200, 100), batch=16)  # fmt: skip
    s = r["summary"]["factor_vae_score"]
    values = [run["factor_vae"]["score"] for run in r["runs"]]
    assert s["n"] == 3 and s["mean"] == pytest.approx(np.mean(values))
    assert s["se"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(3))
    assert s["std"] > 0  # different votes per seed


def test_an_image_index_holds_every_factor_and_is_flagged() -> None:
    """Known answers: a dimension that gives each of the N images its own value (1 apart,
    std 0.02: no overlap) carries I(z; x) = log N and I(z; v_k) = H(v_k) for every factor;
    a dimension holding one factor's V evenly spaced values carries log V. Monte Carlo error
    of each entropy at these draw counts is below 0.02 nats (sd of the Gaussian log-density
    0.71 / sqrt(>= 333 draws)), so 0.06 is 3 of them. Only the index is flagged."""
    n = len(FACTORS)
    index = np.random.default_rng(3).permutation(n).astype(np.float64)
    codes = np.c_[index, REPS["factors"][:, :4]]
    out = mig(codes, FACTORS, np.full_like(codes, STD), samples=2000)
    info, h = np.asarray(out["exact"]["info_x"]), np.asarray(out["factor_entropy"])
    assert info[0] == pytest.approx(math.log(n), abs=0.06)
    assert info[1:] == pytest.approx(np.log(SIZES), abs=0.06)
    assert np.asarray(out["exact"]["mi"])[0] == pytest.approx(h, abs=0.06)
    assert out["exact"]["index_dims"] == [0]
    assert mig(REPS["factors"], FACTORS, np.full_like(REPS["factors"], STD))["exact"][
        "index_dims"
    ] == []  # fmt: skip


def test_one_seed_has_no_spread() -> None:
    """With one seed the spread over seeds is unknown: None (JSON null), not 0."""
    r = score(REPS["noise"], FACTORS, metrics=("sap",), seeds=(0,))
    assert r["summary"]["sap"]["n"] == 1
    assert r["summary"]["sap"]["std"] is None and r["summary"]["sap"]["se"] is None


def test_the_index_warning_is_one_line_naming_the_dimension(capsys) -> None:
    from vaelab.cli.present import disentanglement as present
    from vaelab.evaluation.disentangle_run import index_warnings

    n = len(FACTORS)
    codes = np.c_[REPS["factors"][:, :4], np.random.default_rng(3).permutation(n) * 1.0]
    r = score(codes, FACTORS, np.full_like(codes, STD), metrics=("mig",), seeds=(0,))
    said = index_warnings(r)
    assert len(said) == 1 and said[0].startswith("z4 (") and "\n" not in said[0]
    assert f"log {n} = {math.log(n):.1f} nats" in said[0]
    r.update(dataset="grid", factor_names=list("abcd"), omitted={}, warnings=said, files={})
    present({}, r, True)
    out = capsys.readouterr().out
    assert f"warning: {said[0]}" in out
    assert "mig_exact" in out and out.split("mig_exact")[1].split("\n")[0].split()[1:] == ["-", "-"]
