"""A user-like folder of small colour icons with transparency, in class sub-folders.

What a new user points vaelab at: a few hundred PNGs of different sizes, RGBA with
transparent corners, some on coloured rounded-square "app icon" backgrounds, some bare, in
one folder per category. Deterministic (seeded numpy), built from two sources:

* emoji of Debian's ``fonts-noto-color-emoji`` (``faces``: U+1F600.., ``animals``:
  U+1F400.., ``food``: U+1F345..), rendered with Pillow, rotated by up to +-25 degrees and
  scaled to 40..96 px;
* drawn ``shapes`` (circles, squares, triangles, stars, rings) in saturated colours, with
  a dark outline, on a transparent ground.

    python benchmarks/icon_folder.py OUT [--per-class 100]     # OUT/faces/0000.png ...

then ``vaelab train --dataset OUT --resize 32x32 ...``. Used by benchmarks/collapse.py.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # the font's only bitmap strike
# class -> code point ranges drawn from (each a single-glyph emoji in Noto 2023)
EMOJI_CLASSES = {
    "faces": [(0x1F600, 0x1F637), (0x1F641, 0x1F644), (0x1F910, 0x1F917), (0x1F920, 0x1F92F)],
    "animals": [(0x1F400, 0x1F43C)],
    "food": [(0x1F345, 0x1F37F)],
}
PALETTE = [(230, 57, 70), (42, 157, 143), (38, 70, 173), (244, 162, 97), (131, 56, 236),
           (46, 196, 80), (250, 210, 40), (20, 20, 20)]  # fmt: skip


def _emoji(font: ImageFont.FreeTypeFont, codepoint: int) -> Image.Image:
    canvas = Image.new("RGBA", (2 * FONT_SIZE, 2 * FONT_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((FONT_SIZE // 4,) * 2, chr(codepoint), font=font,
                                embedded_color=True)  # fmt: skip
    box = canvas.getbbox(alpha_only=True)
    return canvas.crop(box) if box else canvas


def _on_background(glyph: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The glyph centred on a square: transparent (half the time) or a coloured rounded
    square with transparent corners; rotated and scaled to 40..96 px."""
    side = int(max(glyph.size) * rng.uniform(1.05, 1.4))
    icon = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    if rng.random() < 0.5:
        colour = PALETTE[rng.integers(len(PALETTE))]
        ImageDraw.Draw(icon).rounded_rectangle(
            (0, 0, side - 1, side - 1), radius=side // 5, fill=(*colour, 255)
        )
    icon.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    icon = icon.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BICUBIC)
    size = int(rng.integers(40, 97))
    return icon.resize((size, size), Image.Resampling.LANCZOS)


def _shape(rng: np.random.Generator) -> Image.Image:
    """A drawn shape in a saturated colour with a dark outline, transparent around it."""
    size = int(rng.integers(40, 97))
    scale = 4  # drawn large, then downsampled: smooth edges
    s = size * scale
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    fill = (*PALETTE[rng.integers(len(PALETTE) - 1)], 255)
    outline, width = (30, 30, 30, 255), max(1, s // 30)
    r = s * rng.uniform(0.3, 0.45)
    cx, cy = s / 2 + rng.uniform(-0.05, 0.05) * s, s / 2 + rng.uniform(-0.05, 0.05) * s
    kind = rng.integers(5)
    turn = rng.uniform(0, 2 * math.pi)
    if kind == 0:
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    elif kind == 1:
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=int(r * 0.4))
    else:
        n = {2: 4, 3: 3, 4: 10}[int(kind)]
        radii = [r if (kind != 4 or i % 2 == 0) else r * 0.45 for i in range(n)]
        angles = [turn + 2 * math.pi * i / n for i in range(n)]
        pts = [
            (cx + q * math.cos(a), cy + q * math.sin(a)) for q, a in zip(radii, angles, strict=True)
        ]
        d.polygon(pts, fill=fill, outline=outline, width=width)
    return im.resize((size, size), Image.Resampling.LANCZOS)


def make_folder(out: str | Path, per_class: int = 100, seed: int = 0) -> Path:
    """Write ``per_class`` RGBA PNGs into each of ``out``/{faces,animals,food,shapes}
    (400 by default); the same files for the same arguments. Returns ``out``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    font = ImageFont.truetype(str(FONT), FONT_SIZE)
    for name, ranges in EMOJI_CLASSES.items():
        points = [cp for lo, hi in ranges for cp in range(lo, hi + 1)]
        glyphs = {cp: _emoji(font, cp) for cp in points}
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cp = points[rng.integers(len(points))]
            _on_background(glyphs[cp], rng).save(folder / f"{i:04d}.png")
    folder = out / "shapes"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        _shape(rng).save(folder / f"{i:04d}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (class sub-folders are created)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_folder(args.out, args.per_class, args.seed))


if __name__ == "__main__":
    main()
