"""Disentanglement metrics of a representation against discrete ground-truth factors.

Inputs are arrays over a pool of N images: posterior means ``codes`` (N, D) (and standard
deviations for the exact MIG and the total correlation) and factor classes ``factors``
(N, F) int. Factors with a single value (dSprites' "color") are left out. Every metric
takes a seed; :func:`score` repeats them over seeds and reports mean, standard deviation
and standard error.

* beta-VAE score (Higgins et al. 2017): a vote fixes one factor k (the value of a random
  image), draws ``batch`` pairs of images sharing it, and averages |z(a) - z(b)| over the
  pairs; a linear classifier (sklearn logistic regression on standardised features)
  predicts k from that vector. The
  score is its accuracy on held-out votes.
* FactorVAE score (Kim & Mnih 2018): codes are divided by their standard deviation over the
  pool, dimensions whose standard deviation is below 5% of the largest are pruned
  (collapsed); a vote fixes factor k on ``batch`` images and records the dimension of least
  variance; a majority-vote classifier maps each dimension to a factor. Held-out accuracy.
* MIG (Chen et al. 2018): mean over factors of the gap between the two largest I(z_j; v_k),
  divided by H(v_k); both the paper's estimator from q(z|x) and the binned one (see
  :mod:`vaelab.evaluation.mutual_info`). The exact one also lists the "index" dimensions,
  whose I(z_j; x) is within ``INDEX_MARGIN`` nats of log N: they tell apart most of the
  N pooled images, so their MI with every factor is near its entropy.
* SAP (Kumar et al. 2018): a score per (dimension, factor) from one code dimension alone
  predicting the factor on held-out images; SAP = mean over factors of the gap between the
  two best dimensions. Here the one-dimensional predictor is a quantile-bin majority vote
  (max(20, 2 V) bins) and the score is its chance-corrected accuracy
  (acc - a0) / (1 - a0), a0 = the majority class's share; disentanglement_lib uses a linear
  SVM's raw accuracy for discrete factors, which cannot separate more than two ordered
  classes with one threshold per class.
* DCI (Eastwood & Williams 2018): an importance matrix R (D, F) from one random-forest
  classifier per factor (sklearn ``RandomForestClassifier``, 30 trees, all features tried
  at each split, leaves of at least 5; impurity importances, each factor's column sums to 1;
  the paper's random-forest variant), or ``|coef|`` of a lasso
  regression on the standardised class index (``importance="lasso"``). Disentanglement
  D = sum_j rho_j (1 - H_F(P_j.)), rho_j = sum_k R_jk / sum R; completeness
  C = mean_k (1 - H_D(P~_.k)); informativeness = held-out accuracy of the forests (R^2 of
  the lasso). Entropies use log base F (for D) and D (for C).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from vaelab.errors import VaelabError, unknown_name
from vaelab.evaluation.mutual_info import (
    binned_mi_matrix,
    discrete_entropy,
    exact_mi_matrix,
    mig_from_mi,
)


def _votes(
    factors: np.ndarray, count: int, batch: int, rng: np.random.Generator
) -> list[tuple[int, np.ndarray]]:
    """``count`` votes (factor k, ``batch`` image indices sharing factor k's value)."""
    by_value = [
        {v: np.flatnonzero(factors[:, k] == v) for v in np.unique(factors[:, k])}
        for k in range(factors.shape[1])
    ]
    out = []
    for _ in range(count):
        k = int(rng.integers(factors.shape[1]))
        anchor = int(rng.integers(len(factors)))
        rows = by_value[k][factors[anchor, k]]
        out.append((k, rows[rng.integers(len(rows), size=batch)]))
    return out


def beta_vae_score(
    codes: np.ndarray, factors: np.ndarray, *, batch: int = 64, train: int = 5000,
    test: int = 2000, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Higgins et al.'s score: held-out accuracy of a linear classifier of the fixed factor
    from the mean absolute code difference of ``batch`` pairs sharing it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for k, rows in _votes(factors, train + test, 2 * batch, rng):
        feats.append(np.abs(codes[rows[:batch]] - codes[rows[batch:]]).mean(0))
        labels.append(k)
    x, y = np.asarray(feats), np.asarray(labels)
    # standardised features: the same linear family, but lbfgs converges in a few dozen
    # iterations instead of thousands on raw mean differences of very different scales
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(x[:train], y[:train])
    return {
        "score": float(clf.score(x[train:], y[train:])),
        "train_accuracy": float(clf.score(x[:train], y[:train])),
    }


def factor_vae_score(
    codes: np.ndarray, factors: np.ndarray, *, batch: int = 64, train: int = 5000,
    test: int = 2000, seed: int = 0, prune: float = 0.05,
) -> dict[str, Any]:  # fmt: skip
    """Kim & Mnih's score: held-out accuracy of the majority vote from the least-varying
    (normalised) dimension to the fixed factor."""
    rng = np.random.default_rng(seed)
    scale = codes.std(0)
    active = np.flatnonzero(scale > prune * scale.max()) if scale.max() > 0 else np.array([])
    if len(active) == 0:
        return {"score": 0.0, "train_accuracy": 0.0, "active_dims": 0}
    z = codes[:, active] / scale[active]
    winners, labels = [], []
    for k, rows in _votes(factors, train + test, batch, rng):
        winners.append(int(np.argmin(z[rows].var(0))))
        labels.append(k)
    w, y = np.asarray(winners), np.asarray(labels)
    table = np.zeros((len(active), factors.shape[1]), dtype=np.int64)
    np.add.at(table, (w[:train], y[:train]), 1)
    guess = table.argmax(1)
    return {
        "score": float((guess[w[train:]] == y[train:]).mean()),
        "train_accuracy": float((guess[w[:train]] == y[:train]).mean()),
        "active_dims": len(active),
    }


INDEX_MARGIN = 1.0  # nats below log N: the dimension tells apart more than N / e images


def index_dims(info_x: np.ndarray, n: int) -> list[int]:
    """The dimensions whose I(z_j; x) over ``n`` images exceeds log n - INDEX_MARGIN."""
    return np.flatnonzero(np.asarray(info_x) > math.log(n) - INDEX_MARGIN).tolist()


def mig(
    codes: np.ndarray, factors: np.ndarray, std: np.ndarray | None = None, *,
    samples: int = 1000, bins: int = 20, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """MIG by the paper's estimator (needs ``std``) and the binned one; the MI matrices
    ``(D, F)`` in nats and the total correlation of q(z) (paper's estimator)."""
    h = np.array([discrete_entropy(factors[:, k]) for k in range(factors.shape[1])])
    binned = binned_mi_matrix(codes, factors, bins)
    out: dict[str, Any] = {"factor_entropy": h.tolist()}
    score, gaps = mig_from_mi(binned, h)
    out["binned"] = {"score": score, "per_factor": gaps.tolist(), "mi": binned.tolist(),
                     "bins": bins}  # fmt: skip
    if std is not None:
        exact = exact_mi_matrix(codes, std, factors, samples, seed)
        score, gaps = mig_from_mi(exact["mi"], h)
        out["exact"] = {"score": score, "per_factor": gaps.tolist(),
                        "mi": exact["mi"].tolist(), "samples": samples,
                        "info_x": exact["info_x"].tolist(),
                        "index_dims": index_dims(exact["info_x"], len(codes))}  # fmt: skip
        out["total_correlation"] = exact["total_correlation"]
    return out


def _split(n: int, rng: np.random.Generator, test_share: float = 0.2) -> tuple[np.ndarray, ...]:
    order = rng.permutation(n)
    cut = round(n * (1 - test_share))
    return order[:cut], order[cut:]


def _bin_predictor_score(z: np.ndarray, v: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    """Chance-corrected held-out accuracy of predicting ``v`` from the 1-D ``z`` by the
    majority class of its quantile bin (fitted on ``tr``)."""
    classes = np.unique(v[tr])
    bins = max(20, 2 * len(classes))
    edges = np.unique(np.quantile(z[tr], np.linspace(0, 1, bins + 1)[1:-1]))
    b_tr, b_te = np.searchsorted(edges, z[tr]), np.searchsorted(edges, z[te])
    table = np.zeros((len(edges) + 1, int(v.max()) + 1))
    np.add.at(table, (b_tr, v[tr]), 1)
    majority = np.bincount(v[tr]).argmax()
    guess = np.where(table.sum(1) > 0, table.argmax(1), majority)
    acc = float((guess[b_te] == v[te]).mean())
    base = float((v[te] == majority).mean())
    return (acc - base) / (1 - base) if base < 1 else 0.0


def sap(codes: np.ndarray, factors: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """SAP: mean over factors of the gap between the two best single-dimension scores."""
    rng = np.random.default_rng(seed)
    tr, te = _split(len(codes), rng)
    scores = np.array(
        [[_bin_predictor_score(codes[:, j], factors[:, k], tr, te)
          for k in range(factors.shape[1])] for j in range(codes.shape[1])]
    )  # fmt: skip
    top = -np.sort(-scores, axis=0)
    gaps = top[0] - (top[1] if len(top) > 1 else 0.0)
    return {"score": float(gaps.mean()), "per_factor": gaps.tolist(), "matrix": scores.tolist()}


def dci_from_importance(r: np.ndarray) -> tuple[float, float]:
    """Eastwood & Williams's disentanglement and completeness of an importance matrix
    ``r`` ``(D, F)`` (non-negative): D weights each code's 1 - H_F by its share of the total
    importance; C averages each factor's 1 - H_D. Codes with no importance weigh 0."""
    r = np.asarray(r, dtype=np.float64)
    d, f = r.shape

    def one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
        total = p.sum(1, keepdims=True)
        q = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
        logs = np.log(q, out=np.zeros_like(q), where=q > 0)
        return 1.0 + (q * logs).sum(1) / np.log(base) if base > 1 else np.ones(len(p))

    rho = r.sum(1) / r.sum() if r.sum() > 0 else np.zeros(d)
    disentanglement = float((rho * one_minus_entropy(r, f)).sum())
    completeness = float(one_minus_entropy(r.T, d).mean())
    return disentanglement, completeness


def dci(
    codes: np.ndarray, factors: np.ndarray, *, importance: str = "forest", seed: int = 0,
    trees: int = 30,
) -> dict[str, Any]:  # fmt: skip
    """DCI with random-forest (default) or lasso importances; see the module docstring."""
    if importance not in IMPORTANCES:
        raise unknown_name("--importance", importance, IMPORTANCES)
    rng = np.random.default_rng(seed)
    tr, te = _split(len(codes), rng)
    r = np.zeros((codes.shape[1], factors.shape[1]))
    informativeness = []
    for k in range(factors.shape[1]):
        r[:, k], info = IMPORTANCES[importance](codes, factors[:, k], tr, te, seed, trees)
        informativeness.append(info)
    d, c = dci_from_importance(r)
    return {
        "disentanglement": d, "completeness": c,
        "informativeness": float(np.mean(informativeness)),
        "informativeness_per_factor": informativeness, "importance": r.tolist(),
        "importance_method": importance,
    }  # fmt: skip


def _forest(
    z: np.ndarray, v: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int, trees: int
) -> tuple[np.ndarray, float]:
    from sklearn.ensemble import RandomForestClassifier

    # every feature at every split: sqrt(D) candidates would hand importance to noise
    # dimensions whenever the informative one is not drawn
    clf = RandomForestClassifier(
        trees, min_samples_leaf=5, max_features=None, random_state=seed, n_jobs=1
    )
    clf.fit(z[tr], v[tr])
    return clf.feature_importances_, float(clf.score(z[te], v[te]))


def _lasso(
    z: np.ndarray, v: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int, trees: int
) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import Lasso

    scale = z[tr].std(0)
    scale[scale == 0] = 1.0
    x = (z - z[tr].mean(0)) / scale
    t = (v - v[tr].mean()) / (v[tr].std() or 1.0)
    reg = Lasso(alpha=0.02, random_state=seed).fit(x[tr], t[tr])
    return np.abs(reg.coef_), float(reg.score(x[te], t[te]))


IMPORTANCES: dict[str, Callable[..., tuple[np.ndarray, float]]] = {
    "forest": _forest,
    "lasso": _lasso,
}
METRICS = ("beta_vae", "factor_vae", "mig", "sap", "dci")


def varying(factors: np.ndarray) -> np.ndarray:
    """Indices of the factor columns that take more than one value."""
    return np.flatnonzero([len(np.unique(factors[:, k])) > 1 for k in range(factors.shape[1])])


def score(
    codes: np.ndarray, factors: np.ndarray, std: np.ndarray | None = None, *,
    metrics: tuple[str, ...] = METRICS, seeds: tuple[int, ...] = (0, 1, 2),
    pool: int | None = None, batch: int = 64, votes: tuple[int, int] = (5000, 2000),
    mig_samples: int = 1000, bins: int = 20, importance: str = "forest",
) -> dict[str, Any]:  # fmt: skip
    """Every metric in ``metrics`` once per seed, each seed on its own random ``pool`` of the
    N images (all of them when None), and each number's mean, std and standard error over
    the seeds (``summary``); ``runs`` holds each seed's full output."""
    for name in metrics:
        if name not in METRICS:
            raise unknown_name("--metrics", name, METRICS)
    keep = varying(factors)
    if len(keep) == 0:
        raise VaelabError("disentanglement: every factor is constant; nothing to score")
    factors = factors[:, keep]
    per_seed = []
    for seed in seeds:
        rng = np.random.default_rng(10_007 + seed)
        rows = np.arange(len(codes))
        if pool is not None and pool < len(codes):
            rows = np.sort(rng.choice(len(codes), pool, replace=False))
        c, f = codes[rows], factors[rows]
        s = std[rows] if std is not None else None
        out: dict[str, Any] = {"seed": seed, "pool": len(rows)}
        kw = {"batch": batch, "train": votes[0], "test": votes[1], "seed": seed}
        if "beta_vae" in metrics:
            out["beta_vae"] = beta_vae_score(c, f, **kw)
        if "factor_vae" in metrics:
            out["factor_vae"] = factor_vae_score(c, f, **kw)
        if "mig" in metrics:
            out["mig"] = mig(c, f, s, samples=mig_samples, bins=bins, seed=seed)
        if "sap" in metrics:
            out["sap"] = sap(c, f, seed=seed)
        if "dci" in metrics:
            out["dci"] = dci(c, f, importance=importance, seed=seed)
        per_seed.append(out)
    return {"summary": summarize(per_seed), "runs": per_seed, "seeds": list(seeds),
            "factor_columns": keep.tolist()}  # fmt: skip


# (summary name, path into one seed's output)
HEADLINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("beta_vae_score", ("beta_vae", "score")),
    ("factor_vae_score", ("factor_vae", "score")),
    ("mig_exact", ("mig", "exact", "score")),
    ("mig_binned", ("mig", "binned", "score")),
    ("sap", ("sap", "score")),
    ("dci_disentanglement", ("dci", "disentanglement")),
    ("dci_completeness", ("dci", "completeness")),
    ("dci_informativeness", ("dci", "informativeness")),
    ("total_correlation", ("mig", "total_correlation")),
)


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation and standard error over seeds of each headline (the
    spread is None for one seed: it is unknown, not zero)."""
    out = {}
    for name, path in HEADLINES:
        values = []
        for run in per_seed:
            node: Any = run
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is not None:
                values.append(float(node))
        if values:
            v = np.asarray(values)
            sd = float(v.std(ddof=1)) if len(v) > 1 else None
            se = sd / math.sqrt(len(v)) if sd is not None else None
            out[name] = {"mean": float(v.mean()), "std": sd, "se": se, "n": len(v)}
    return out
