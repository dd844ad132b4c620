"""dSprites, rendered from its published definition (Matthey et al. 2017).

The definition (deepmind/dsprites-dataset README): one white sprite on black, 64x64 binary
images, every combination of six factors exactly once, in the order

    color (1) x shape (3: square, ellipse, heart) x scale (6, linear in [0.5, 1])
    x orientation (40, in [0, 2 pi)) x posX (32, in [0, 1]) x posY (32, in [0, 1])

with posY varying fastest, so image ``index = classes . [737280, 245760, 40960, 1024, 32,
1]``: 737,280 images. The pixels here are vaelab's own rendering of that definition, not
DeepMind's file (which loads with the same factors: ``--dataset dsprites_ndarray_...npz``).

Geometry (vaelab's choices where the README is silent): at scale 1 the square's half-side
is ``size * 10/64`` pixels, the ellipse's semi-axes are 1.2 and 0.6 times that, and the
heart (the curve (u^2 + v^2 - 1)^3 = u^2 v^3, centred on its centre of mass, point down)
spans 2.3 half-sides; each shape is scaled by ``scale`` and rotated counter-clockwise
by ``orientation`` about its centre of mass. A pixel is on when more than half of its 4x4
sub-samples fall inside the shape. posX = 0..1 moves the centre right and posY = 0..1 moves
it down, one pixel per step (32 steps across the middle of a 64-pixel image), so positions
are exact translations: each (shape, scale, orientation) is drawn once and shifted.

``dsprites-small`` is the same definition at 32x32 with 10 orientations and 16 x 16
positions (46,080 images), quick enough for tests and a CPU demo. ``dsprites-colour`` gives
the color factor 4 values (white, red, green, blue sprites on black, RGB) at 32x32 with 8 x 8
positions two pixels apart (46,080 images); the masks are rendered and cached once, the
colours applied at load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
SHAPES = ("square", "ellipse", "heart")
RENDER_VERSION = 1  # bump when the rendering changes: old caches are then ignored
SUPERSAMPLE = 4
COLOURS = ((255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255))  # the color factor's RGB


@dataclass(frozen=True)
class SpriteSpec:
    """The factor grid of a dSprites-like set: image side, orientation and position counts,
    pixels between positions (``step``) and colours (1: white, grey images; more: RGB,
    the first ``colors`` of :data:`COLOURS`)."""

    size: int = 64
    scales: int = 6
    orientations: int = 40
    positions: int = 32
    step: int = 1
    colors: int = 1

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return (self.colors, len(SHAPES), self.scales, self.orientations, self.positions,
                self.positions)  # fmt: skip

    @property
    def count(self) -> int:
        return int(np.prod(self.factor_sizes))

    def factor_values(self) -> tuple[np.ndarray, ...]:
        """The value of each class of each factor, as in the official ``latents_values``
        (color 1; shape 1, 2, 3; scale; orientation in radians; positions in [0, 1])."""
        return (
            np.arange(1.0, self.colors + 1),
            np.arange(1.0, len(SHAPES) + 1),
            np.linspace(0.5, 1.0, self.scales),
            np.linspace(0.0, 2 * np.pi, self.orientations, endpoint=False),
            np.linspace(0.0, 1.0, self.positions),
            np.linspace(0.0, 1.0, self.positions),
        )

    def key(self) -> str:
        """The cache key of the shape masks (colours are applied at load)."""
        grid = f"sc{self.scales}-or{self.orientations}-p{self.positions}"
        step = f"-s{self.step}" if self.step != 1 else ""
        return f"v{RENDER_VERSION}-{self.size}px-{grid}{step}"


DSPRITES = SpriteSpec()
DSPRITES_SMALL = SpriteSpec(size=32, scales=6, orientations=10, positions=16)
DSPRITES_COLOUR = SpriteSpec(size=32, scales=6, orientations=10, positions=8, step=2, colors=4)


def all_classes(sizes: tuple[int, ...]) -> np.ndarray:
    """Every combination of factor classes ``(prod(sizes), F)`` int64, the last varying
    fastest (the dSprites order)."""
    grids = np.meshgrid(*(np.arange(s) for s in sizes), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) in half-side units (v down) lie inside the unrotated shape."""
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "ellipse":
        return (u / 1.2) ** 2 + (v / 0.6) ** 2 <= 1.0
    # heart: (a^2 + b^2 - 1)^3 <= a^2 b^3 with b up; centred on its centre of mass (below).
    a, b = u / HEART_SCALE, -(v / HEART_SCALE) + HEART_CENTROID
    return (a * a + b * b - 1.0) ** 3 - a * a * b**3 <= 0.0


# The heart curve's centre of mass is at b = HEART_CENTROID (its a-centroid is 0 by symmetry);
# HEART_SCALE makes its height about 2.3 half-sides, close to the square's rotated extent.
HEART_SCALE = 1.0
HEART_CENTROID = 0.2935  # from a 4000x4000 grid integration; checked in tests/test_dsprites.py


def sprite_patches(spec: SpriteSpec) -> tuple[np.ndarray, int]:
    """Every (shape, scale, orientation) drawn centred in a square patch: bool
    ``(3, scales, orientations, P, P)``, and P. The patch centre is the sprite's centre of
    mass; placed with its top-left at pixel ``c - P // 2`` it puts that centre on the corner
    between pixels c - 1 and c."""
    half = spec.size * 10.0 / 64.0
    patch = 2 * int(np.ceil(1.45 * half))  # the square's corners reach sqrt(2) half-sides
    s = SUPERSAMPLE
    # sub-sample centres relative to the patch centre, in pixels
    offs = (np.arange(patch * s) + 0.5) / s - patch / 2
    yy, xx = np.meshgrid(offs, offs, indexing="ij")
    out = np.zeros((len(SHAPES), spec.scales, spec.orientations, patch, patch), dtype=bool)
    _, _, scales, angles, _, _ = spec.factor_values()
    for i, shape in enumerate(SHAPES):
        for j, scale in enumerate(scales):
            r = half * scale
            for k, theta in enumerate(angles):
                # rotate the sample points by -theta (counter-clockwise on screen, y down)
                c, si = np.cos(theta), np.sin(theta)
                u = (c * xx - si * yy) / r
                v = (si * xx + c * yy) / r
                hit = _inside(shape, u, v).reshape(patch, s, patch, s).mean(axis=(1, 3))
                out[i, j, k] = hit > 0.5
    return out, patch


def render(spec: SpriteSpec = DSPRITES, progress: bool = True) -> np.ndarray:
    """The white sprite masks of one color, uint8 ``(spec.count // spec.colors, 1, size,
    size)`` in {0, 255}, in dSprites order.

    Positions are integer shifts of one drawing per (shape, scale, orientation): centre
    pixel ``size // 2 - positions * step // 2 + index * step`` for posX (columns) and posY
    (rows)."""
    from tqdm import tqdm  # a dependency of vaelab already; imported when rendering

    patches, patch = sprite_patches(spec)
    p, size = spec.positions, spec.size
    images = np.zeros((len(SHAPES), spec.scales, spec.orientations, p, p, size, size), np.uint8)
    start = size // 2 - p * spec.step // 2  # centre pixel of position 0
    bar = tqdm(total=p, desc=f"rendering dSprites {size}x{size}", unit="column",
               disable=not progress)  # fmt: skip
    values = patches.astype(np.uint8) * np.uint8(255)
    for ix in range(p):
        col = start + ix * spec.step - patch // 2
        for iy in range(p):
            row = start + iy * spec.step - patch // 2
            images[:, :, :, ix, iy, row : row + patch, col : col + patch] = values
        bar.update(1)
    bar.close()
    return images.reshape(-1, 1, size, size)


def load_sprites(spec: SpriteSpec, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, C, S, S) uint8, classes (N, 6) int64)``: the masks rendered once, then
    read from ``cache`` (bit-packed uint8, 1/8 of the pixels' bytes, written atomically);
    with several colours, one RGB copy per colour (the slowest factor)."""
    file = cache / f"dsprites-{spec.key()}.npz"
    shape = (spec.count // spec.colors, 1, spec.size, spec.size)
    images = None
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as saved:
                bits = saved["bits"]
            images = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape)
            images *= np.uint8(255)
        except (OSError, ValueError, KeyError):
            images = None  # a damaged cache is rendered again
    if images is None:
        images = render(spec)
        _save(file, _pack(images))
    if spec.colors > 1:
        on = images > 0
        images = np.concatenate([on * np.asarray(COLOURS[c], np.uint8)[None, :, None, None]
                                 for c in range(spec.colors)])  # fmt: skip
    return images, all_classes(spec.factor_sizes)


def _pack(images: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    # in chunks: a (N, ...) > 0 mask of the full set would be another 3 GB
    flat = images.reshape(len(images), -1)
    parts = [np.packbits(flat[i : i + chunk] > 0) for i in range(0, len(flat), chunk)]
    return np.concatenate(parts)


def _save(file: Path, bits: np.ndarray) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, bits=bits)
        os.replace(tmp, file)
    except OSError:
        pass  # a cache that cannot be written only costs a re-render next time
