"""Pictures: image grids (Pillow) and charts (matplotlib).

Charts are built on ``matplotlib.figure.Figure`` directly (it renders with Agg), never
through pyplot, so no global figure state or GUI backend is involved.
"""

from __future__ import annotations

import io
import math
import shlex
import sys
import textwrap
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, PngImagePlugin

from vaelab.version import __version__


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``(N, C, H, W)`` floats in [0, 1] into one uint8 ``(H', W', C)`` array.

    ``pad`` pixels of white separate the tiles so neighbouring images never merge.
    """
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[i]
    array = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if c == 1 else array


def grid_image(
    images: torch.Tensor, nrow: int | None = None, scale: int | None = None
) -> Image.Image:
    """A grid as a Pillow image; small images are upscaled (nearest) so a grid is legible."""
    img = Image.fromarray(grid_array(images, nrow))
    scale = scale or max(1, 56 // images.shape[-2])
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def made_by() -> dict[str, str]:
    """PNG text chunks saying what made a picture: the command line as typed (``vaelab
    sample RUN -n 9``, or ``python script.py ...`` from the Python API), vaelab's
    version and the time. Read them with ``PIL.Image.open(path).text``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    is_cli = argv0.name == "vaelab" or (argv0.name == "__main__.py" and argv0.parent.name
                                         == "vaelab")  # fmt: skip
    command = ["vaelab", *sys.argv[1:]] if is_cli else ["python", *sys.argv]
    return {
        "Software": f"vaelab {__version__}",
        "Command": shlex.join(command),
        "Creation Time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def fit_titles(fig: Figure) -> Figure:
    """Wrap any title or x label wider than the room it has (an axes title: its axes'
    width; an x label: the figure, about its axes' centre; the suptitle: the figure),
    which would otherwise overlap a neighbour or be clipped at the figure's edge, onto as
    many lines as it needs. Text sizes come from font metrics; axes positions from the
    layout engine, which runs once more here when the figure has one."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    if fig.get_layout_engine() is not None:
        fig.draw_without_rendering()  # places the axes where the saved picture has them
    width = fig.bbox.width
    pairs = []
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        centre = (box.x0 + box.x1) / 2
        pairs.append((ax.title, box.width))
        # An x label is centred under its axes and may run past them, not past the figure.
        pairs.append((ax.xaxis.label, 2 * min(centre, width - centre)))
    if fig._suptitle is not None:
        pairs.append((fig._suptitle, width))
    for text, room in pairs:
        content = text.get_text()
        need = text.get_window_extent(renderer).width if content else 0.0
        if need > 0.98 * room:
            chars = max(len(line) for line in content.splitlines())
            fits = max(12, int(0.9 * chars * room / need))  # characters per line, this font
            text.set_text(textwrap.fill(" ".join(content.split()), fits))
    return fig


def png_bytes(image: Image.Image | Figure) -> bytes:
    """PNG encoding of a Pillow image or a matplotlib Figure (for embedding in HTML)."""
    buf = io.BytesIO()
    if isinstance(image, Figure):
        fit_titles(image).savefig(buf, format="png", dpi=100)
    else:
        image.save(buf, format="png")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib ``Figure`` (made without pyplot: no global backend or state),
    titles wrapped to fit, with :func:`made_by` as PNG text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fit_titles(fig).savefig(path, dpi=dpi, metadata=made_by())
    return path


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None
) -> Path:
    """Write a PNG grid; small images are upscaled (nearest) so a grid is legible."""
    img = grid_image(images, nrow, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for key, value in made_by().items():
        info.add_text(key, value)
    img.save(path, pnginfo=info)
    return path


# (title, y label, train key, test key) of the training-curve panels.
CURVES = (
    ("ELBO", "nats per image", "train_bound", "test_elbo"),
    ("Reconstruction E_q log p(x|z)", "nats per image", "train_recon", "test_recon"),
    ("KL(q(z|x) || p(z))", "nats per image", "train_kl", "test_kl"),
)


def training_curves(rows: Sequence[dict[str, Any]]) -> Figure:
    """ELBO, reconstruction term and KL per epoch, train vs test (rows of metrics.jsonl)."""
    # A fixed layout: constrained layout doubles the draw time, and this runs every epoch.
    fig = Figure(figsize=(12, 3.6))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.83, wspace=0.28)
    epochs = [r["epoch"] for r in rows]
    for i, (title, ylabel, train_key, test_key) in enumerate(CURVES):
        ax = fig.add_subplot(1, 3, i + 1)
        ms = 3 if len(rows) <= 40 else 0  # past ~40 epochs markers merge into a thick line
        ax.plot(epochs, [r[train_key] for r in rows], "o-", color="C0", ms=ms, label="train")
        ax.plot(epochs, [r[test_key] for r in rows], "s-", color="C1", ms=ms, label="test")
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.2, 1.4, ...
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves (train: mean over the epoch's batches; test: after it)")
    return fig


def latent_scatter(
    ax: Any, coords: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str] | None,
    prefix: str = "z", title: str = "", size: float = 4.0,
) -> None:  # fmt: skip
    """Scatter 2-D points coloured by label (tab10 up to ten classes, else viridis),
    with a legend of class names where known."""
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, color="C0", alpha=0.6, label="test image")
    else:
        classes = np.unique(labels)
        cmap = "tab10" if len(classes) <= 10 else "viridis"
        colours = colormaps[cmap]
        for k, c in enumerate(classes):
            pts = coords[labels == c]
            name = class_names[c] if class_names and c < len(class_names) else str(c)
            colour = colours(k) if cmap == "tab10" else colours(k / max(1, len(classes) - 1))
            ax.scatter(pts[:, 0], pts[:, 1], s=size, color=colour, alpha=0.6, label=name)
    ax.set(title=title, xlabel=f"{prefix}1", ylabel=f"{prefix}2")
    ax.legend(markerscale=3, fontsize="small", loc="best", framealpha=0.8)


def latent_figure(
    coords: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str] | None,
    prefix: str, title: str,
) -> Figure:  # fmt: skip
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    latent_scatter(fig.add_subplot(), coords, labels, class_names, prefix, title)
    return fig


def image_panel(
    ax: Any, images: torch.Tensor, nrow: int, extent: Sequence[float] | None, title: str,
    xlabel: str = "z1", ylabel: str = "z2",
) -> None:  # fmt: skip
    """A decoded grid drawn on axes: tiles placed over ``extent`` (x0, x1, y0, y1)."""
    array = grid_array(images, nrow)
    ax.imshow(array, cmap="gray", vmin=0, vmax=255, extent=extent, aspect="auto",
              interpolation="nearest")  # fmt: skip
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)


def traversal_figure(
    images: torch.Tensor, row_labels: Sequence[str], offsets: Sequence[float], title: str,
    tile_labels: dict[int, Sequence[str]] | None = None,
) -> Figure:  # fmt: skip
    """A traversal grid (one row per latent dimension) with the rows named on the y axis
    and the offsets on the x axis; ``tile_labels[row]``: the rows whose columns are not
    offsets (a categorical group's classes), each tile labelled in its corner instead."""
    rows, cols = len(row_labels), len(offsets)
    tile_labels = tile_labels or {}
    h, w = images.shape[-2:]
    fig = Figure(figsize=(1.0 + 0.75 * cols * w / h, 0.9 + 0.75 * rows), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid_array(images, cols), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    # Tile i covers pixels pad + i (w + pad) ... + w - 1 of grid_array (pad = 1); imshow
    # centres pixel j on coordinate j, so the tile's centre is at pad + i (w + pad) + (w-1)/2.
    ax.set_xticks([1 + i * (w + 1) + (w - 1) / 2 for i in range(cols)],
                  [f"{o:+.3g}" for o in offsets])  # fmt: skip
    ax.set_yticks([1 + i * (h + 1) + (h - 1) / 2 for i in range(rows)], list(row_labels))
    for row, labels in tile_labels.items():
        for col, text in enumerate(labels):
            ax.text(1 + col * (w + 1) + 0.5, 1 + row * (h + 1) + 0.5, text, color="yellow",
                    fontsize=6, va="top", ha="left")  # fmt: skip
    xlabel = "offset from the image's mean, in prior standard deviations"
    if tile_labels:
        xlabel += "\n(categorical rows: the class on each tile, the other codes as the image's)"
    ax.set(title=title, xlabel=xlabel)
    return fig
