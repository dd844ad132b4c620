"""One function per picture (vaelab.evaluation.pictures): the report, the end of training and the
commands draw the same pictures.

Each test decodes the PNGs a user gets (report.html's embedded images, the run folder's,
the commands' --out files) and compares pixels exactly: the pictures come from the same
decoded means through the same rendering, so any difference, even one grey level, means
two drawing paths (or two seeds) have crept back in. The report stacks several inputs into
one picture; it is compared row by row (or tile by tile) with the command run on each.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import small_config

from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.evaluation.pictures import Grid, stack

SEED = 5  # not the run's training seed (0), so the report's --seed must reach every draw


def _report_images(page: Path) -> list[tuple[str, np.ndarray]]:
    """(caption, pixels) of every picture embedded in a report, in page order."""
    found = re.finditer(r'base64,([A-Za-z0-9+/=]+)" alt="[^"]*"><figcaption>([^<]*)<',
                        page.read_text())  # fmt: skip
    return [(m.group(2), np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1))))))
            for m in found]  # fmt: skip


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _cli(*args) -> None:
    assert main([str(a) for a in args]) == 0, args


class Tiles:
    """Cut a grid picture (1-pixel white gaps and border around h x w images, all upscaled
    by an integer factor) back into its images: ``tiles[r, c]``."""

    def __init__(self, pixels: np.ndarray, per_row: int, h: int = 8, w: int = 8):
        self.pixels, self.h, self.w = pixels, h, w
        self.scale, rest = divmod(pixels.shape[1], per_row * (w + 1) + 1)
        assert rest == 0 and self.scale >= 1, pixels.shape
        self.rows = (pixels.shape[0] // self.scale - 1) // (h + 1)

    def __getitem__(self, rc: tuple[int, int]) -> np.ndarray:
        r, c, s = *rc, self.scale
        top, left = s * (1 + r * (self.h + 1)), s * (1 + c * (self.w + 1))
        return self.pixels[top : top + s * self.h, left : left + s * self.w]

    def band(self, first: int, rows: int) -> np.ndarray:
        """Rows ``first .. first + rows - 1`` with their gaps and border: what a picture of
        just those rows looks like."""
        s, step = self.scale, self.scale * (self.h + 1)
        return self.pixels[first * step : (first + rows) * step + s]


def _index_of(tile: np.ndarray, inputs: Tiles, count: int) -> int:
    """The test image whose tile in ``inputs`` (every test image, in order) is ``tile``."""
    for j in range(count):
        r, c = divmod(j, 16)
        if np.array_equal(inputs[2 * r, c], tile):  # the reconstruct grid: input rows 0, 2, ...
            return j
    raise AssertionError("a report input is no test image")


def test_report_pictures_are_the_commands_pictures(digits_run, tmp_path):
    page = tmp_path / "r.html"
    _cli("report", digits_run, "--seed", SEED, "--out", page)
    images = _report_images(page)
    by_kind = {}
    for caption, pixels in images:
        by_kind.setdefault(caption.split(":")[0].split(" ")[0], []).append((caption, pixels))
    out = tmp_path / "cli"

    # samples: `vaelab sample -n 64 --seed S`, the same PNG pixel for pixel
    _cli("sample", digits_run, "-n", 64, "--seed", SEED, "--out", out / "s.png")
    assert np.array_equal(by_kind["64"][0][1], _png(out / "s.png"))
    with Image.open(out / "s.png") as img:  # the command's PNG keeps its provenance
        assert img.text["Software"].startswith("vaelab ") and img.text["Command"]

    # reconstructions: each (input, reconstruction) column of the report is the command's
    # for that test image (`vaelab reconstruct -n 180`: every digits test image)
    _cli("reconstruct", digits_run, "-n", 180, "--out", out / "rec.png")
    every = Tiles(_png(out / "rec.png"), 16)
    recon = Tiles(by_kind["rows"][0][1], 8)
    for r, c in [(r, c) for r in (0, 2) for c in range(8)]:
        j = _index_of(recon[r, c], every, 180)
        assert np.array_equal(recon[r + 1, c], every[2 * (j // 16) + 1, j % 16]), (r, c, j)

    # similar: row k is `vaelab similar --index I -n 11 --seed S` for its input (a 4 x 4 grid)
    near = Tiles(by_kind["first"][0][1], 12)
    assert near.rows == 4
    for k in range(near.rows):
        i = _index_of(near[k, 0], every, 180)
        _cli("similar", digits_run, "--index", i, "-n", 11, "--seed", SEED,
             "--out", out / f"sim{k}.png")  # fmt: skip
        cli = Tiles(_png(out / f"sim{k}.png"), 4)
        for t in range(12):
            assert np.array_equal(near[k, t], cli[divmod(t, 4)]), (k, t)

    # interpolations: rows 2k, 2k+1 are `vaelab interpolate --from A --to B` exactly
    paths = Tiles(by_kind["three"][0][1], 12)
    for k in range(3):
        a, b = _index_of(paths[2 * k, 0], every, 180), _index_of(paths[2 * k, 11], every, 180)
        _cli("interpolate", digits_run, "--from", a, "--to", b, "--steps", 10,
             "--out", out / f"int{k}.png")  # fmt: skip
        assert np.array_equal(paths.band(2 * k, 2), _png(out / f"int{k}.png")), k

    # traversals: `vaelab traverse --index I --dims 6`, the same figure
    assert len(by_kind["test"]) == 2
    for caption, pixels in by_kind["test"]:
        i = int(caption.split(":")[0].split()[-1])
        _cli("traverse", digits_run, "--index", i, "--dims", 6, "--out", out / f"t{i}.png")
        assert np.array_equal(pixels, _png(out / f"t{i}.png")), i

    # latent space: `vaelab latent-plot`, the same figure (title included)
    _cli("latent-plot", digits_run, "--out", out / "latent.png")
    assert np.array_equal(by_kind["digits"][0][1], _png(out / "latent.png"))


def test_report_manifold_is_latent_plots(tmp_path):
    from vaelab.api import load
    from vaelab.evaluation.pictures import manifold
    from vaelab.training.loop import fit

    torch.manual_seed(0)
    run = fit(small_config(latent_dim=2, epochs=1), tmp_path / "run")
    page = tmp_path / "r.html"
    _cli("report", run, "--out", page)
    drawn = [p for caption, p in _report_images(page) if caption.startswith("decodings at")]
    assert len(drawn) == 1
    _cli("latent-plot", run, "--grid", 15, "--out", tmp_path / "l.png")
    assert np.array_equal(drawn[0], _png(tmp_path / "l-manifold.png"))
    # One tile (--grid 1) is z = (0, 0), the prior's median, drawn over a unit square (it
    # raised IndexError: the tile size came from the gap to a second quantile).
    ax = manifold(load(run), 1).axes[0]
    assert ax.get_xlim() == (-0.5, 0.5) and ax.get_ylim() == (-0.5, 0.5)


def test_training_pictures_are_the_commands_pictures(digits_run, tmp_path):
    # What `vaelab train` leaves in the run folder is what the commands draw from its
    # checkpoint: reconstruct -n 32 and sample -n 64 --seed <the run's seed, 0>.
    _cli("reconstruct", digits_run, "-n", 32, "--out", tmp_path / "r.png")
    assert np.array_equal(_png(digits_run / "reconstructions.png"), _png(tmp_path / "r.png"))
    _cli("sample", digits_run, "-n", 64, "--seed", 0, "--out", tmp_path / "s.png")
    assert np.array_equal(_png(digits_run / "samples.png"), _png(tmp_path / "s.png"))


def test_stack_puts_grids_of_one_width_above_each_other():
    a, b = torch.zeros(4, 1, 2, 2), torch.ones(2, 1, 2, 2)
    stacked = stack([Grid(a, 2), Grid(b, 2)])
    # 3 rows of 2 tiles: 1-px border and gaps around 2 x 2 tiles, upscaled 28x (56 // 2)
    assert stacked.image().size == (28 * (2 * 3 + 1), 28 * (3 * 3 + 1))
    assert torch.equal(stacked.images, torch.cat([a, b]))
    with pytest.raises(ValueError, match="one width"):
        stack([Grid(a, 2), Grid(b, 3)])


def test_pictures_refuse_bad_sizes_in_the_commands_words(digits_run):
    from vaelab.api import load
    from vaelab.evaluation.pictures import manifold, similar_images, traversal

    model = load(digits_run)
    with pytest.raises(VaelabError, match="2-D latent"):
        manifold(model, 3)  # an 8-D latent has no quantile grid
    x = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(VaelabError, match="-n: must be at least 1"):
        similar_images(model, x[0], 0)
    with pytest.raises(VaelabError, match=r"--index: test index must be in \[0, 2\], got 3"):
        traversal(model, x, 3)
