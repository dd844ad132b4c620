"""Autoencoder vs VAE: the same bodies, a 2-D latent, the same data; compare the spaces.

A plain autoencoder places each image at a point and nothing constrains the space
between those points: decodings of points drawn uniformly over the bounding box of
its codes often land in holes and come out malformed. The VAE's KL term packs the
posteriors against N(0, I), so the same experiment on its space mostly decodes to
plausible images. The comparison is quantified as the share of ``points`` uniform
draws over each space's box whose decodings are judged well-formed (see
:data:`JUDGES`): by the dataset's classifier (vaelab.evaluation.quality) where the data
has labels, else by the decoder's own reconstruction error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from vaelab.config import Config, with_overrides
from vaelab.data import ImageData
from vaelab.data.prepare import eval_images, to_unit, train_images
from vaelab.errors import VaelabError, unknown_name
from vaelab.evaluation.explore import box_grid, decode_mean, latent_means, uniform_box
from vaelab.evaluation.html_report import RUN_DRAWINGS
from vaelab.evaluation.plots import image_panel, latent_scatter
from vaelab.evaluation.quality import load_classifier
from vaelab.training.loop import fit
from vaelab.training.record import Run


def train_pair(
    out: Path, config: Config | None = None, data: ImageData | None = None, **overrides: Any
) -> tuple[Path, Path]:
    """Train ``out/ae`` and ``out/vae`` from one config (2-D latent), differing only in
    ``model``; returns the two run folders."""
    config = with_overrides(config or Config(), {"latent_dim": 2, **overrides}, "ae-vs-vae")
    runs = []
    for name in ("ae", "vae"):
        cfg = with_overrides(config, {"model": name}, "ae-vs-vae")
        runs.append(fit(cfg, out / name, data=data, drawings=RUN_DRAWINGS))
    return runs[0], runs[1]


def _min_sq_dist(x: torch.Tensor, ref: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Mean squared pixel distance from each row of ``x`` (N, P) to its nearest row of
    ``ref`` (M, P), via |a|^2 - 2 a.b + |b|^2 in chunks; ``(N,)``."""
    ref_sq = ref.square().sum(1)
    out = []
    for i in range(0, len(x), chunk):
        a = x[i : i + chunk]
        d = a.square().sum(1, keepdim=True) - 2 * a @ ref.T + ref_sq
        out.append(d.min(1).values.clamp_min(0) / x.shape[1])
    return torch.cat(out)


def judge_by_reconstruction(
    run: Run, decodings: torch.Tensor, data: ImageData, reference: int = 20000
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Well-formed iff the decoding is as close to some training image (mean squared pixel
    error to its nearest neighbour among the first ``reference`` training images) as the
    model's own reconstructions of test images are to their inputs (95th percentile of
    their mean squared error). The threshold is each model's own, so a blurrier decoder
    is not penalised for blur, only for producing images unlike any in the data."""
    model, cfg = run.model, run.config  # images prepared as the run was trained
    test = to_unit(eval_images(data.test_x[:2000], cfg.data.binarize, cfg.train.seed)).flatten(1)
    recon = decode_mean(model, latent_means(model, eval_images(
        data.test_x[:2000], cfg.data.binarize, cfg.train.seed))).flatten(1)  # fmt: skip
    threshold = torch.quantile((recon - test).square().mean(1), 0.95)
    ref = to_unit(train_images(data.train_x, cfg.data.binarize, cfg.train.seed, reference))
    dist = _min_sq_dist(decodings.flatten(1).float(), ref.flatten(1))
    return dist <= threshold, {"threshold_mse": float(threshold)}


def judge_by_classifier(
    run: Run, decodings: torch.Tensor, data: ImageData, reference: int = 5000, k: int = 3
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Well-formed iff the decoding's features in the dataset's classifier
    (:func:`vaelab.evaluation.quality.load_classifier`, trained once and cached) fall inside
    the real-data manifold: the union of balls around the features of ``reference`` test
    images, each with radius the distance to its k-th nearest real neighbour (k = 3). The
    share is the k-NN *precision* of Kynkaanniemi et al. (2019), per point."""
    net, info = load_classifier(data)  # trains on first use: must run with gradients on
    with torch.no_grad():
        real = torch.cat([net.features(to_unit(x)) for x in data.test_x[:reference].split(1000)])
        fake = torch.cat([net.features(x.float()) for x in decodings.split(1000)])
    real, fake = real.double(), fake.double()
    radii = torch.cat(
        [torch.cdist(c, real).kthvalue(k + 1, dim=1).values for c in real.split(1024)]
    )
    ok = torch.cat([(torch.cdist(c, real) <= radii).any(1) for c in fake.split(1024)])
    return ok, {"classifier_test_accuracy": info["test_accuracy"], "k": k,
                "reference": len(real)}  # fmt: skip


JUDGES = {"classifier": judge_by_classifier, "reconstruction": judge_by_reconstruction}
JUDGE_TEXT = {
    "classifier": "classifier features inside the k-NN (k=3) manifold of the test images' "
    "features (per-point precision)",
    "reconstruction": "nearest training image within the 95th percentile of the model's own "
    "test reconstruction error (mean squared pixel error)",
}


def default_judge(data: ImageData) -> str:
    """The classifier needs labels; unlabelled data falls back to the decoder's own error."""
    labelled = data.train_y is not None and (data.num_classes or 0) >= 2
    return "classifier" if labelled else "reconstruction"


def box_coverage(codes: torch.Tensor, draws: torch.Tensor, k: int = 3) -> float:
    """Share of ``draws`` (N, 2) inside the k-NN manifold of the test ``codes`` (M, 2) in
    latent space: the union of balls around each code with radius the distance to its
    k-th nearest neighbouring code. 1 - coverage is the share of the box that is a hole."""
    codes, draws = codes.double(), draws.double()
    radii = torch.cat([torch.cdist(c, codes).kthvalue(k + 1, dim=1).values
                       for c in codes.split(1024)])  # fmt: skip
    inside = [(torch.cdist(c, codes) <= radii).any(1) for c in draws.split(1024)]
    return float(torch.cat(inside).double().mean())


def compare_latent_spaces(
    ae: Run, vae: Run, data: ImageData, points: int = 1000, grid: int = 15, seed: int = 0,
    judge: str | None = None,
) -> tuple[Figure, dict[str, Any]]:  # fmt: skip
    """Side-by-side latent spaces (top), decoded ``grid x grid`` tilings of each bounding
    box (bottom), and the share of ``points`` uniform draws per box judged well-formed
    (``judge``: a key of :data:`JUDGES`; default: the classifier where there are labels)."""
    judge = judge or default_judge(data)
    if judge not in JUDGES:
        raise unknown_name("--judge", judge, JUDGES)
    for name, run in (("--ae", ae), ("--vae", vae)):
        if run.model.latent_dim != 2:
            raise VaelabError(f"{name}: needs --latent-dim 2, not {run.model.latent_dim}")
    fig = Figure(figsize=(13, 13), layout="constrained")
    labels = data.test_y.numpy() if data.test_y is not None else None
    result: dict[str, Any] = {"dataset": data.name, "points": points, "judge": judge,
                              "criterion": JUDGE_TEXT[judge]}  # fmt: skip
    for col, (name, run) in enumerate((("autoencoder", ae), ("VAE", vae))):
        model, cfg = run.model, run.config
        x = eval_images(data.test_x, cfg.data.binarize, cfg.train.seed)
        z = latent_means(model, x).numpy()
        lo, hi = z.min(0), z.max(0)
        latent_scatter(
            fig.add_subplot(2, 2, col + 1), z, labels, data.class_names, "z",
            f"{name}: test-set latent {'codes' if col == 0 else 'means'}", size=2.0,
        )  # fmt: skip
        tiles = decode_mean(model, box_grid(lo, hi, grid))
        image_panel(
            fig.add_subplot(2, 2, col + 3), tiles, grid, (lo[0], hi[0], lo[1], hi[1]),
            f"{name}: decodings over the bounding box",
        )  # fmt: skip
        draws = uniform_box(lo, hi, points, seed)
        ok, extra = JUDGES[judge](run, decode_mean(model, draws), data)
        key = "ae" if col == 0 else "vae"
        result[key] = {"well_formed": float(ok.float().mean()),
                       "box_coverage": box_coverage(torch.as_tensor(z), draws),
                       "box_lo": lo.tolist(), "box_hi": hi.tolist(), **extra}  # fmt: skip
    ae_r, vae_r = result["ae"], result["vae"]
    fig.suptitle(
        f"{data.name}, {points} uniform points per bounding box: well-formed decodings "
        f"({judge}) AE {ae_r['well_formed']:.0%}, VAE {vae_r['well_formed']:.0%}; "
        f"box covered by the codes' 3-NN balls AE {ae_r['box_coverage']:.0%}, "
        f"VAE {vae_r['box_coverage']:.0%}"
    )
    return fig, result
