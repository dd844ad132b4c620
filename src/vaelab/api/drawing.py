"""The picture commands as Python functions: ``vaelab.sample(run, 64)`` and so on.

Each takes a run folder, a :class:`~vaelab.training.record.Run` or a model from
``vaelab.load``, plus
the command's options, and returns what the command draws (float images in [0, 1] on the
CPU, or figures); with ``out`` it also writes the PNG the command writes. ``vaelab CMD``
calls these functions (vaelab/cli), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import vaelab.evaluation.pictures as pictures
from vaelab.api import as_run, load_test_images, prepared_test_images, refuse_codes
from vaelab.api.codes import code_prior
from vaelab.data import folder
from vaelab.data.prepare import binarize_fixed
from vaelab.data.transforms import check_background
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.html_report import write_report
from vaelab.evaluation.pictures import test_image
from vaelab.evaluation.plots import save_figure
from vaelab.evaluation.vq import sample_images
from vaelab.training.record import Run, RunLike, target


def read_image(
    path: str | Path, shape: Sequence[int], flag: str = "--image",
    background: object = "white",
) -> torch.Tensor:  # fmt: skip
    """An image file as uint8 ``(C, H, W)`` in the model's channels and size ``shape``,
    decoded as a training image folder is (:func:`vaelab.data.folder.read_image`:
    transparency laid on ``background``, 16-bit gray scaled), then made gray (ITU-R 601
    luma, as Pillow's "L") or RGB to match ``C``."""
    c, h, w = shape
    path = Path(path)
    if not path.is_file():
        raise VaelabError(f"{flag} {path}: no such file")
    try:
        array = folder.read_image(path, (h, w), check_background(background))
    except folder.SkippedImage as exc:
        raise VaelabError(f"{flag} {exc}") from None
    x = torch.from_numpy(array.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    if c == 3 and len(x) == 1:
        x = x.expand(3, -1, -1)
    elif c == 1 and len(x) == 3:  # Pillow's L: (19595 R + 38470 G + 7471 B + 2^15) >> 16
        weights = torch.tensor([19595, 38470, 7471]).view(3, 1, 1)
        x = ((x.long() * weights).sum(0, keepdim=True) + 32768) >> 16
    return x.to(torch.uint8).contiguous()


def input_image(run: Run, spec: int | str | Path, flag: str, seed: int) -> torch.Tensor:
    """``spec`` as uint8 ``(C, H, W)``: a test-set index if it is an integer (or a string of
    one), else an image file, binarized with ``seed`` where the run binarizes."""
    try:
        index = int(spec)
    except ValueError:
        x = read_image(spec, run.image_shape, flag, run.config.data.background)
        if run.config.data.binarize != "none":
            x = binarize_fixed(x.unsqueeze(0), seed)[0]
        return x
    return test_image(prepared_test_images(run), index, flag)


def sample(
    run: RunLike, n: int = 64, *, temperature: float = 1.0,
    group_temperature: Sequence[float] | None = None, sampler: str = "prior",
    components: int = 10, label: int | str | None = None, seed: int = 0,
    device: str = "cpu", out: str | Path | None = None, npy: str | Path | None = None,
    overwrite: bool = False,
) -> torch.Tensor:  # fmt: skip
    """``n`` images ``(n, C, H, W)``: z from ``sampler`` (the prior, or a GMM fitted to the
    training latents) scaled by ``temperature``, decoded to the means of p(x|z); ``label``
    (cvae/m2; 'all' = one row per class) or ``group_temperature`` (deep) instead. ``out``:
    the PNG grid; ``npy``: the array, float32 ``(n, C, H, W)``. A bare model will do for
    what needs nothing of its run (the prior, a label, group temperatures)."""
    npy = target(npy, overwrite, "npy") if npy is not None else None  # before any work
    if not (isinstance(run, torch.nn.Module) and sampler == "prior"):
        run = as_run(run, device)
    if (run if isinstance(run, torch.nn.Module) else run.model).discrete_codes:
        grid = _code_samples(as_run(run, device), n, temperature, seed)
    else:
        grid = pictures.samples(run, n, sampler=sampler, temperature=temperature,
                   group_temperature=group_temperature, label=label, components=components,
                   seed=seed)  # fmt: skip
    if out is not None:
        grid.save(target(out, overwrite))
    if npy is not None:
        import numpy as np

        np.save(npy, grid.images.numpy())
    return grid.images


def _code_samples(run: Run, n: int, temperature: float, seed: int) -> pictures.Grid:
    """A VQ-VAE's samples: code grids from its trained prior (RUN/prior), decoded."""
    at_least("-n", n)
    if not temperature > 0:
        raise VaelabError(f"--temperature: must be > 0, got {temperature}")
    prior = code_prior(run, "sample")
    return pictures.Grid(sample_images(run.model, prior, n, temperature, seed))


def reconstruct(
    run: RunLike, n: int = 16, start: int = 0, *, device: str = "cpu",
    out: str | Path | None = None, overwrite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Test images ``start .. start+n`` and their reconstructions (decoded means at
    z = E_q[z|x]), both ``(n, C, H, W)``; the PNG has rows of 16 inputs above theirs."""
    at_least("-n", n)
    run = as_run(run, device)
    grid = pictures.reconstructions(run.model, prepared_test_images(run)[start : start + n])
    if out is not None:
        grid.save(target(out, overwrite))
    return grid.parts["inputs"], grid.parts["reconstructions"]


def similar(
    run: RunLike, image: int | str | Path = 0, n: int = 15, spread: float = 1.0, *,
    seed: int = 0, device: str = "cpu", out: str | Path | None = None, overwrite: bool = False,
) -> torch.Tensor:  # fmt: skip
    """``(1 + n, C, H, W)``: the input (a test index or an image file) then ``n`` decodings
    of z = mu + spread * sigma * eps around its posterior q(z|x) (``n`` and ``spread``
    checked by :func:`vaelab.evaluation.generate.near_images`, before any draw)."""
    run = as_run(run, device)
    flag = "--index" if isinstance(image, int) else "--image"
    grid = pictures.similar_images(
        run.model, input_image(run, image, flag, seed), n, spread, seed=seed
    )
    if out is not None:
        grid.save(target(out, overwrite))
    return grid.images


def interpolate(
    run: RunLike, source: int | str | Path, target_image: int | str | Path, steps: int = 10,
    method: str = "both", *, seed: int = 0, device: str = "cpu",
    out: str | Path | None = None, overwrite: bool = False,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Per method (``linear``, ``spherical`` or ``both``) a row ``(steps + 2, C, H, W)``:
    the source, ``steps`` decodings along the latent path, the target. The ends are test
    indices or image files."""
    run = as_run(run, device)
    x0 = input_image(run, source, "--from", seed)
    x1 = input_image(run, target_image, "--to", seed)
    grid = pictures.interpolation(run.model, x0, x1, steps, method)
    if out is not None:
        grid.save(target(out, overwrite))
    return grid.parts


def traverse(
    run: RunLike, index: int = 0, dims: int = 8, steps: int = 9, span: float = 3.0, *,
    device: str = "cpu", out: str | Path | None = None, overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Decodings ``(dims * steps, C, H, W)`` around test image ``index``'s posterior mean,
    one row per latent dimension (those with the most KL, or variance for an AE), offsets
    linspace(-span, span, steps) prior stds: ``{grid, dims, names, offsets, kind}``."""
    at_least("--dims", dims)
    run = as_run(run, device)
    refuse_codes(
        run.model,
        "traverse",
        "has no latent dimensions with a prior scale to step "
        "along; change codes in the explorer (vaelab serve) or use interpolate",
    )
    fig, shown = pictures.traversal(run.model, prepared_test_images(run), index, dims, steps, span)
    if out is not None:
        save_figure(fig, target(out, overwrite))
    return shown


def latent_plot(
    run: RunLike, method: str = "pca", limit: int | None = None, grid: int = 20, *,
    seed: int = 0, device: str = "cpu", out: str | Path | None = None,
    manifold_out: str | Path | None = None, overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The test set's latent means scattered (projected by ``method`` above 2-D):
    ``{figure, coords (N, 2), labels, manifold}``; ``manifold`` is the decoded
    ``grid x grid`` prior-quantile figure of a 2-D VAE (None otherwise)."""
    at_least("--limit", limit)
    at_least("--grid", grid)
    run = as_run(run, device)
    fig, coords, labels = pictures.latent_plot(run, load_test_images(run), method, limit, seed)
    manifold = None
    # An AE has no p(z); a conditional model's decodings depend on a label the grid lacks.
    if pictures.has_manifold(run.model):  # 2-D, or the sphere S^1 / S^2
        manifold = pictures.manifold(run.model, grid)
    if out is not None:
        save_figure(fig, target(out, overwrite))
    if manifold is not None and manifold_out is not None:
        save_figure(manifold, target(manifold_out, overwrite))
    return {"figure": fig, "coords": coords, "labels": labels, "manifold": manifold}


def report(
    run: str | Path | Run, out: str | Path | None = None, *, seed: int = 0,
    device: str = "cpu", overwrite: bool = True,
) -> Path:  # fmt: skip
    """Write the run's self-contained HTML report (default RUN/report.html, replaced as
    training replaces it); returns its path."""
    run = as_run(run, device)
    if run.folder is None:
        raise VaelabError("report: needs a run folder (a Run from open_run, or its path)")
    if out is not None:
        out = target(out, overwrite)
    return write_report(run, out, seed=seed)
