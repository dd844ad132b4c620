"""``emoji``: colour images rendered from Debian's ``fonts-noto-color-emoji``.

Every emoji the font draws as one glyph (5,419 with Debian's 2023 font: ~1,400 single
code points and ~4,000 sequences: skin tones, ZWJ families and professions, flags) is
rendered with Pillow at the font's bitmap size (``ImageFont.truetype(path, 109)``,
``embedded_color=True``), cropped to its drawn box, centred on a transparent square,
laid on white and resized (Lanczos) to the chosen size, 32x32 unless ``--resize`` says
otherwise. The label is the
Unicode block of the first code point (``EMOJI_CLASSES``). The split is fixed: a seeded
10% of the emoji is the test set whatever ``--seed`` and ``--test-fraction`` are, so
bits/dim are comparable across runs; it splits emoji, not images, so the five skin tones
of one emoji all fall on the same side (no test image has a recoloured twin in training).
Rendering takes about 20 seconds (one line says so first, and a progress bar runs on a
terminal); the result is cached as uint8 ``.npz`` in the vaelab cache, keyed by the size and
the font file's size and mtime.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vaelab.data.transforms import split_indices
from vaelab.errors import VaelabError

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # the size of the font's only bitmap strike
SPLIT_SEED, TEST_FRACTION = 20260, 0.1
RENDER_VERSION = 1  # bump when rendering changes: old caches are then ignored

# (first code point, last code point, class name); first match wins, else "Other".
BLOCKS = (
    (0x1F600, 0x1F64F, "Emoticons"),
    (0x1F300, 0x1F5FF, "Pictographs"),
    (0x1F680, 0x1F6FF, "Transport and map"),
    (0x1F900, 0x1F9FF, "Supplemental pictographs"),
    (0x1FA70, 0x1FAFF, "Pictographs extended-A"),
    (0x1F1E6, 0x1F1FF, "Flags"),
    (0x2600, 0x26FF, "Miscellaneous symbols"),
    (0x2700, 0x27BF, "Dingbats"),
)
EMOJI_CLASSES = (*(name for _, _, name in BLOCKS), "Other")


def font_path() -> Path:
    """$VAELAB_EMOJI_FONT if set, else Debian's NotoColorEmoji.ttf."""
    return Path(os.environ.get("VAELAB_EMOJI_FONT") or FONT_PATH)


def block_label(codepoint: int) -> int:
    """Index into ``EMOJI_CLASSES`` of the Unicode block holding ``codepoint``."""
    for i, (first, last, _) in enumerate(BLOCKS):
        if first <= codepoint <= last:
            return i
    return len(BLOCKS)


def emoji_sequences(path: Path) -> list[str]:
    """The strings the font draws as single glyphs: its mapped code points (above ASCII)
    and the ligature sequences of its GSUB table whose parts are all mapped."""
    from fontTools.ttLib import TTFont, TTLibError  # matplotlib's dependency, imported late

    try:
        font = TTFont(path, lazy=True)
        tables = set(font.keys())
        cmap = font.getBestCmap() or {}
    except (OSError, TTLibError, AssertionError, KeyError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VaelabError(
            f"{path}: not a readable font ({first}); expected a colour emoji font"
        ) from None
    if not tables & {"CBDT", "COLR", "sbix"}:
        raise VaelabError(
            f"{path}: has no colour glyphs (no CBDT, COLR or sbix table); expected a colour"
            " emoji font such as NotoColorEmoji.ttf"
        )
    names: dict[str, int] = {}
    for cp, glyph in sorted(cmap.items()):
        names.setdefault(glyph, cp)
    found = {(cp,) for cp in cmap if cp > 0x7F}
    if "GSUB" in tables:
        for lookup in font["GSUB"].table.LookupList.Lookup:
            for sub in lookup.SubTable:
                sub = getattr(sub, "ExtSubTable", sub)  # extension lookups wrap the real one
                for first, ligatures in getattr(sub, "ligatures", {}).items():
                    for lig in ligatures:
                        parts = [first, *lig.Component]
                        if all(p in names for p in parts):
                            found.add(tuple(names[p] for p in parts))
    return ["".join(map(chr, seq)) for seq in sorted(found)]


def render(
    path: Path, size: tuple[int, int], texts: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Render ``texts`` (default: :func:`emoji_sequences`) as RGB on white.

    Returns images ``(N, 3, H, W)`` uint8, labels ``(N,)`` int64 and the texts kept: those
    the font shapes into one glyph that draws something (others are skipped).
    """
    from PIL import Image, ImageDraw, ImageFont

    texts = emoji_sequences(path) if texts is None else texts
    try:
        font = ImageFont.truetype(str(path), FONT_SIZE)
    except OSError as err:
        raise VaelabError(f"{path}: Pillow cannot load it at size {FONT_SIZE} ({err})") from None
    height, width = size
    one = font.getlength("\U0001f600") if "\U0001f600" in texts else FONT_SIZE * 1.25
    print(
        f"emoji: rendering {len(texts)} emoji of {path.name} at {width}x{height} (once: the"
        " images are cached; about 20 s)",
        file=sys.stderr,
    )
    images, labels, kept = [], [], []
    bar = tqdm(texts, desc="rendering emoji", leave=False, disable=not sys.stderr.isatty())
    for text in bar:
        if font.getlength(text) > one * 1.01:  # not shaped into one glyph
            continue
        canvas = Image.new("RGBA", (2 * FONT_SIZE, 2 * FONT_SIZE), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((FONT_SIZE // 4,) * 2, text, font=font, embedded_color=True)
        box = canvas.getbbox(alpha_only=True)
        if box is None:
            continue
        glyph = canvas.crop(box)
        side = max(glyph.size)  # centre on a square so the aspect ratio survives
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
        white = Image.new("RGBA", square.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, square).convert("RGB")
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
        images.append(np.asarray(rgb).transpose(2, 0, 1))
        labels.append(block_label(ord(text[0])))
        kept.append(text)
    if not images:
        raise VaelabError(
            f"{path}: no emoji could be rendered; expected a colour emoji font"
        ) from None
    return np.stack(images), np.asarray(labels, dtype=np.int64), kept


def load_emoji(
    size: tuple[int, int], cache: Path
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_x, train_y, test_x, test_y)`` at ``size``; rendered once, then cached."""
    path = font_path()
    if not path.is_file():
        raise VaelabError(
            f"emoji: font {path} not found; apt-get install fonts-noto-color-emoji"
            " (or set VAELAB_EMOJI_FONT to a colour emoji font)"
        )
    stat = path.stat()
    key = f"v{RENDER_VERSION}-{size[0]}x{size[1]}-{stat.st_size}-{int(stat.st_mtime)}"
    file = cache / f"emoji-{key}.npz"
    if file.is_file():
        with np.load(file, allow_pickle=False) as saved:
            x, y, texts = saved["images"], saved["labels"], saved["texts"].tolist()
    else:
        x, y, texts = render(path, size)
        _save(file, x, y, texts)
    test = torch.from_numpy(test_mask(texts))
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return x[~test], y[~test], x[test], y[test]


def test_mask(texts: list[str]) -> np.ndarray:
    """Which of ``texts`` are test images: a seeded ``TEST_FRACTION`` of the emoji with
    their skin-tone modifiers (U+1F3FB..U+1F3FF) removed, so variants share a side."""
    bases = ["".join(ch for ch in t if not 0x1F3FB <= ord(ch) <= 0x1F3FF) for t in texts]
    groups = sorted(set(bases))
    _, test_idx = split_indices(len(groups), TEST_FRACTION, SPLIT_SEED, "emoji")
    test_groups = {groups[i] for i in test_idx.tolist()}
    return np.array([b in test_groups for b in bases], dtype=bool)


def _save(file: Path, x: np.ndarray, y: np.ndarray, texts: list[str]) -> None:
    """Write the cache atomically (a temporary file renamed), so a killed render leaves none;
    a cache that cannot be written only costs a re-render next time."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=x, labels=y, texts=np.asarray(texts))
        os.replace(tmp, file)
    except OSError:
        pass
