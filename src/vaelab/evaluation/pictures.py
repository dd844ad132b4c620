"""One function per picture, shared by the CLI (vaelab.api.drawing), the HTML report and
the end of training, so a picture cannot be drawn two ways.

Each takes the model and, as explicit arguments, what else it needs (images as the model
sees them, uint8 ``(N, C, H, W)``), or the
:class:`~vaelab.training.record.Run` where the run's Config
or folder is needed (to prepare test or training images, to cache a sampler's fit); none
reads attributes off the model. Image grids come back as a :class:`Grid`
(rendered by :func:`vaelab.evaluation.plots.grid_image`, saved with the command line as PNG text),
charts as a matplotlib ``Figure``. The report puts several inputs in one picture by
stacking their grids (:func:`stack`): each row is exactly what the command draws for that
input with the same seed (tests/test_pictures.py compares the two tile for tile).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from vaelab.config import Config
from vaelab.data import ImageData, dataset_for
from vaelab.data.prepare import eval_images, to_unit, train_images
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.explore import (
    INTERPOLATIONS,
    category_group,
    dim_scores,
    embed,
    latent_means,
    prior_quantile_grid,
    sphere_grid,
    sphere_map,
    sweep_classes,
    top_dims,
    unit_scores,
)
from vaelab.evaluation.explore import interpolate as latent_path
from vaelab.evaluation.explore import traverse as vary
from vaelab.evaluation.generate import near_images
from vaelab.evaluation.generate import reconstruct as decode_means
from vaelab.evaluation.generate import sample as draw
from vaelab.evaluation.plots import (
    grid_image,
    image_panel,
    latent_figure,
    save_grid,
    traversal_figure,
)
from vaelab.evaluation.sample_labels import label_samples
from vaelab.evaluation.samplers import check_draw, prepare_sampler, sample_images
from vaelab.evaluation.vq import nearby_codes
from vaelab.training.record import Run

GMM_TRAINING_IMAGES = 20000  # training images whose latent means the gmm sampler is fitted on


@dataclass(frozen=True)
class Grid:
    """Images tiled row by row: ``images`` ``(N, C, H, W)`` floats in [0, 1] on the CPU,
    ``nrow`` per row (None: ceil(sqrt(N))), and ``parts``, what the tiles show by name
    (e.g. ``inputs`` and ``reconstructions``)."""

    images: torch.Tensor
    nrow: int | None = None
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def image(self) -> Image.Image:
        """The grid as a Pillow image (small images upscaled, nearest, to stay legible)."""
        return grid_image(self.images, self.nrow)

    def save(self, path: str | Path) -> Path:
        """Write the PNG, with the command line that made it as PNG text."""
        return save_grid(self.images, path, self.nrow)


def stack(grids: Sequence[Grid]) -> Grid:
    """Grids of the same width one above another."""
    widths = {g.nrow for g in grids}
    if len(widths) != 1:
        raise ValueError(f"stack: grids of one width only, got {sorted(map(str, widths))}")
    return Grid(torch.cat([g.images for g in grids]), widths.pop())


def test_image(images: torch.Tensor, index: int, flag: str = "--index") -> torch.Tensor:
    """``images[index]``, refusing an index outside the test set (the one index check)."""
    if not 0 <= index < len(images):
        raise VaelabError(f"{flag}: test index must be in [0, {len(images) - 1}], got {index}")
    return images[index]


def samples(
    run: Run | torch.nn.Module, n: int = 64, *, sampler: str = "prior", temperature: float = 1.0,
    group_temperature: Sequence[float] | None = None, label: int | str | None = None,
    components: int = 10, seed: int = 0,
) -> Grid:  # fmt: skip
    """``vaelab sample``: ``n`` decoded means of p(x|z) of ``run``'s model, z from
    ``sampler`` (the prior, or a Gaussian mixture fitted to the latent means of the run's
    training images and cached in its folder) scaled by ``temperature``; or ``label``
    (cvae/m2; 'all': one row per class) or ``group_temperature`` (deep) instead. A bare
    model (no run) draws from the prior only."""
    model, nrow = (run.model, None) if isinstance(run, Run) else (run, None)
    names = run.info.get("class_names") if isinstance(run, Run) else None
    if group_temperature is not None:
        if sampler != "prior" or label is not None:
            raise VaelabError("--group-temperature: draws every group from the prior; drop "
                              "--sampler and --label")  # fmt: skip
        images = draw(model, n, tuple(group_temperature), seed=seed)
    elif label is not None:
        if sampler != "prior":
            raise VaelabError("--label: draws z from the prior; drop --sampler")
        images, nrow = label_samples(model, n, label, temperature, seed, names)
    else:
        # samplers.sample_with's checks and steps, with the run's config and folder passed in
        check_draw(n, temperature)
        if not isinstance(run, Run) and sampler != "prior":
            raise VaelabError(f"--sampler {sampler}: fits the run's training latents; pass the "
                              "run folder or vaelab.open_run(folder)")  # fmt: skip
        options = (prepare_sampler(sampler, model, _training_images(run.config), components,
                                   run.folder) if isinstance(run, Run) else {})  # fmt: skip
        torch.manual_seed(seed)
        images = sample_images(model, n, sampler, temperature, **options)
    return Grid(images.cpu(), nrow)


def _training_images(config: Config) -> Callable[[], torch.Tensor]:
    """The run's training images as trained on, read only if a sampler must be fitted."""

    def read() -> torch.Tensor:
        data = dataset_for(config)
        return train_images(data.train_x, config.data.binarize, config.train.seed,
                            GMM_TRAINING_IMAGES)  # fmt: skip

    return read


def reconstructions(model: torch.nn.Module, x: torch.Tensor, row: int = 16) -> Grid:
    """``vaelab reconstruct``: rows of up to ``row`` images ``x`` (uint8 ``(N, C, H, W)``)
    above their reconstructions, the decoded means at z = E_q[z|x]."""
    inputs, recon = to_unit(x).cpu(), decode_means(model, x).cpu()
    row = min(len(x), row)
    chunks = [t for i in range(0, len(x), row) for t in (inputs[i : i + row], recon[i : i + row])]
    return Grid(torch.cat(chunks), row, {"inputs": inputs, "reconstructions": recon})


def similar_images(
    model: torch.nn.Module, x: torch.Tensor, n: int = 15, spread: float = 1.0, *, seed: int = 0,
    nrow: int | None = None,
) -> Grid:  # fmt: skip
    """``vaelab similar``: uint8 image ``x`` ``(C, H, W)`` then ``n`` decodings of
    z = mu(x) + spread * sigma(x) * eps, eps drawn from ``seed`` (``n`` checked there)."""
    if model.discrete_codes:  # a VQ-VAE: nearby codes, not draws around a posterior
        near = nearby_codes(model, x, n, spread, seed)
    else:
        near = near_images(model, x, n, spread, seed=seed).cpu()
    return Grid(torch.cat([to_unit(x.unsqueeze(0)).cpu(), near]), nrow)


def interpolation(
    model: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor, steps: int = 10,
    method: str = "both",
) -> Grid:  # fmt: skip
    """``vaelab interpolate``: per method (``linear``, ``spherical`` or ``both``) a row of
    uint8 image ``x0``, ``steps`` decodings along the latent path, then ``x1``; ``parts``
    holds each method's row ``(steps + 2, C, H, W)``."""
    methods = list(INTERPOLATIONS) if method == "both" else [method]
    ends = to_unit(x0.unsqueeze(0)).cpu(), to_unit(x1.unsqueeze(0)).cpu()
    rows = {m: torch.cat([ends[0], latent_path(model, x0, x1, steps, m), ends[1]])
            for m in methods}  # fmt: skip
    return Grid(torch.cat(list(rows.values())), steps + 2, rows)


def traversal(
    model: torch.nn.Module, x: torch.Tensor, index: int, dims: int = 8, steps: int = 9,
    span: float = 3.0, *, scores: tuple[torch.Tensor, str] | None = None,
) -> tuple[Figure, dict[str, Any]]:  # fmt: skip
    """``vaelab traverse``: around test image ``x[index]``'s posterior mean, one row per
    latent dimension (the ``dims`` most used over all of ``x``: KL, or variance for an AE;
    ``scores`` reuses :func:`vaelab.evaluation.explore.dim_scores` of ``x``), offsets
    linspace(-span, span, steps) prior stds. A categorical group is one row (named ``cat
    g``, ranked by its summed score, ``dims`` its first coordinate) whose tiles show its
    classes, each tile labelled ``category k``. Returns the figure and ``{grid, dims,
    names, offsets, kind, columns}`` (``columns``: per row, None for an offset row, else
    its tiles' labels)."""
    at_least("--dims", dims)
    test_image(x, index)
    values, kind = scores if scores is not None else dim_scores(model, x)
    units = unit_scores(model, values)  # a categorical group: one row, its classes
    chosen = [d for d in top_dims(units, dims) if units[d] > -math.inf]
    offsets = torch.linspace(-span, span, max(steps, 2)).tolist()
    grid = vary(model, x[index], chosen, steps, span)
    names, tiles = [], {}
    for row, d in enumerate(chosen):
        group = category_group(model, d)
        if group is None:
            names.append(f"z{d} ({kind} {units[d]:.2f})")
            continue
        classes = sweep_classes(model, len(offsets))
        names.append(f"cat {group} ({kind} {units[d]:.2f})")
        tiles[row] = [f"category {k}" for k in classes]
    fig = traversal_figure(grid, names, offsets, f"Traversals around test image {index}", tiles)
    return fig, {"grid": grid, "dims": chosen, "names": names, "offsets": offsets, "kind": kind,
                 "columns": [tiles.get(r) for r in range(len(chosen))]}  # fmt: skip


def latent_plot(
    run: Run, data: ImageData, method: str = "pca", limit: int | None = None, seed: int = 0
) -> tuple[Figure, np.ndarray, np.ndarray | None]:
    """``vaelab latent-plot``: the latent means of the first ``limit`` test images of
    ``data`` (default all; prepared as ``run`` was trained), one point each coloured by
    label, projected by ``method`` above 2-D (a latent on S^2 with ``pca``: the equal-area
    map :func:`vaelab.evaluation.explore.sphere_map` instead). Returns the figure, the
    plotted coordinates ``(N, 2)`` and the labels ``(N,)`` (None if unlabelled)."""
    cfg = run.config
    x = eval_images(data.test_x[:limit] if limit else data.test_x, cfg.data.binarize,
                    cfg.train.seed)  # fmt: skip
    z = latent_means(run.model, x)
    labels = data.test_y[: len(x)].numpy() if data.test_y is not None else None
    if method == "pca" and run.model.latent_space == "sphere" and z.shape[1] == 3:
        # S^2: a linear projection folds the back hemisphere onto the front; the equal-area
        # map (the manifold's axes) puts every point where its decoding's tile is
        coords = sphere_map(z)
        title = f"{data.name}: latent means of {len(x)} test images, equal-area map of S^2"
        fig = latent_figure(coords, labels, data.class_names, "z", title)
        fig.axes[0].set(xlabel="longitude phi (radians)", ylabel="height h = z3")
        return fig, coords, labels
    coords, prefix = embed(z, method, seed)
    how = "" if z.shape[1] <= 2 else f", {'PCA' if method == 'pca' else 't-SNE'} of {z.shape[1]}-D"
    title = f"{data.name}: latent means of {len(x)} test images{how}"
    return latent_figure(coords, labels, data.class_names, prefix, title), coords, labels


def has_manifold(model: torch.nn.Module) -> bool:
    """Whether :func:`manifold` draws this model: a 2-D latent with a prior (an AE has no
    p(z) to tile), or the circle S^1 / the sphere S^2; not a conditional model (its
    decodings need a label the grid lacks)."""
    if not model.has_prior or model.uses_labels:
        return False
    if model.latent_space == "sphere":
        return model.latent_dim in (2, 3)
    return model.latent_dim == 2 and model.latent_space == "euclidean"


def manifold(model: torch.nn.Module, n: int = 20) -> Figure:
    """``vaelab latent-plot``'s manifold.png (a 2-D latent with a prior): decodings over an
    ``n x n`` grid of the prior's quantiles, on labelled z axes. On the sphere: equal shares
    of the uniform prior (:func:`vaelab.evaluation.explore.sphere_grid`), a row of ``n``
    tiles around the circle S^1, an ``n x n`` longitude x height grid on S^2."""
    at_least("--grid", n)
    if model.latent_space == "sphere":
        return sphere_manifold(model, n)
    tiles, q = prior_quantile_grid(model, n)
    fig = Figure(figsize=(8, 8), layout="constrained")
    # Each tile spans half the gap to its neighbours (one tile: a unit square).
    dx, dy = ((a[1] - a[0]) / 2 if n > 1 else 0.5 for a in q)
    extent = (q[0][0] - dx, q[0][-1] + dx, q[1][0] - dy, q[1][-1] + dy)
    title = f"Decoded manifold: {n} x {n} quantiles of the prior (each tile 1/{n * n} of p(z))"
    image_panel(fig.add_subplot(), tiles, n, extent, title)
    return fig


def sphere_manifold(model: torch.nn.Module, n: int) -> Figure:
    """:func:`manifold` on S^1 or S^2 (decoded points all of unit norm)."""
    tiles, _ = sphere_grid(model, n)
    if model.latent_dim == 2:
        fig = Figure(figsize=(max(6.0, 0.6 * n), 2.2), layout="constrained")
        title = (f"Decoded circle: z = (cos phi, sin phi) at {n} equal arcs of the uniform prior "
                 f"(each tile 1/{n})")  # fmt: skip
        image_panel(fig.add_subplot(), tiles, n, (-math.pi, math.pi, 0.0, 1.0), title,
                    "longitude phi (radians)", "")  # fmt: skip
        fig.axes[0].set_yticks([])
        return fig
    fig = Figure(figsize=(9, 8), layout="constrained")
    title = (f"Decoded sphere S^2: {n} x {n} equal-area tiles of the uniform prior (each "
             f"1/{n * n} of p(z)): z = (sqrt(1-h^2) cos phi, sqrt(1-h^2) sin phi, h)")  # fmt: skip
    extent = (-math.pi, math.pi, -1.0, 1.0)
    image_panel(fig.add_subplot(), tiles, n, extent, title, "longitude phi (radians)",
                "height h = z3")  # fmt: skip
    return fig


def write_run_pictures(model: torch.nn.Module, data: ImageData, out: Path, config: Config) -> None:
    """What training leaves in run folder ``out``: reconstructions.png (the first 32 test
    images, as ``vaelab reconstruct RUN -n 32`` draws them) and, for a model with a prior,
    samples.png (as ``vaelab sample RUN -n 64 --seed <the run's seed>``)."""
    test = eval_images(data.test_x[:32], config.data.binarize, config.train.seed)
    reconstructions(model, test).save(out / "reconstructions.png")
    if model.has_prior:
        samples(Run(model, config, {}, out), 64, seed=config.train.seed).save(out / "samples.png")
