"""Option checks and the transforms every source shares: channels, resize, seeded split.

Images are uint8 tensors ``(N, C, H, W)`` throughout; nothing here changes their dtype.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from vaelab.errors import VaelabError, did_you_mean

# Larger sides only come from typos ("28x2800"); they would allocate gigabytes per image batch.
MAX_SIDE = 4096

# Bounded chunks keep the float copy that interpolation needs small on 60k-image sets.
_CHUNK = 4096

_RESIZE_RE = re.compile(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?")


def parse_resize(text: str) -> tuple[int, int]:
    """Parse ``--resize``: ``"32"`` gives ``(32, 32)``, ``"32x48"`` gives ``(H, W) = (32, 48)``."""
    match = _RESIZE_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise VaelabError(f"--resize: expected N or HxW (e.g. 32 or 32x32), got {text!r}")
    height = int(match.group(1))
    width = int(match.group(2)) if match.group(2) is not None else height
    return check_resize((height, width))


def check_resize(size: object) -> tuple[int, int]:
    """Return ``size`` as ``(H, W)`` if it holds two ints in 1..MAX_SIDE, else raise."""
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in size)
        and all(1 <= s <= MAX_SIDE for s in size)
    )
    if not ok:
        raise VaelabError(f"--resize: expected height and width in 1..{MAX_SIDE}, got {size!r}")
    return int(size[0]), int(size[1])


# --background names; anything else is "R,G,B" with each in 0..255.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}


def check_background(value: object) -> tuple[int, int, int]:
    """``--background``: a name of ``BACKGROUNDS``, ``"R,G,B"`` or an (R, G, B) sequence of
    ints in 0..255; the colour transparent pixels are laid on, as ``(R, G, B)``."""
    if isinstance(value, str):
        if value.strip().lower() in BACKGROUNDS:
            return BACKGROUNDS[value.strip().lower()]
        parts = value.split(",")
        value = [int(p) if p.strip().isdigit() else p for p in parts] if len(parts) == 3 else value
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    )
    if not ok:
        guess = did_you_mean(value, BACKGROUNDS) if isinstance(value, str) else None
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise VaelabError(
            f"--background: expected {', '.join(BACKGROUNDS)} or R,G,B with each in 0..255, "
            f"got {value!r}{hint}"
        )
    return int(value[0]), int(value[1]), int(value[2])


def check_center_crop(crop: object) -> tuple[int, int] | str | None:
    """``--center-crop``: None, ``"square"`` (the central square of side min(H, W)), or
    ``(H, W)`` / ``"HxW"`` / ``"S"`` (the central HxW window); returned normalized."""
    if crop is None:
        return None
    if isinstance(crop, str) and crop.strip().lower() == "square":
        return "square"
    if isinstance(crop, str):
        match = _RESIZE_RE.fullmatch(crop)
        if match is None:
            raise VaelabError(f"--center-crop: expected square, N or HxW, got {crop!r}")
        crop = (int(match.group(1)), int(match.group(2) or match.group(1)))
    try:
        return check_resize(crop)
    except VaelabError:
        raise VaelabError(f"--center-crop: expected square, N or HxW, got {crop!r}") from None


def crop_box(
    height: int, width: int, crop: tuple[int, int] | str, source: str
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the central window of an image of ``height`` x ``width``:
    ``"square"`` keeps min(H, W) on both sides (CelebA's 178x218 -> 178x178), ``(h, w)``
    keeps h x w; odd margins put the extra pixel at the bottom/right. A window larger than
    the image is an error naming ``source``."""
    h, w = (min(height, width),) * 2 if crop == "square" else crop
    if h > height or w > width:
        raise VaelabError(
            f"{source}: --center-crop {h}x{w} is larger than its {height}x{width} images"
        )
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop(x: torch.Tensor, crop: tuple[int, int] | str, source: str) -> torch.Tensor:
    """The central window (:func:`crop_box`) of ``(N, C, H, W)`` images."""
    top, left, h, w = crop_box(x.shape[2], x.shape[3], crop, source)
    return x[:, :, top : top + h, left : left + w].contiguous()


def check_channels(channels: object) -> int | None:
    """Return ``channels`` if it is None, 1 or 3, else raise naming --channels."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise VaelabError(f"--channels: expected 1 (grayscale) or 3 (RGB), got {channels!r}")
    return channels


def check_fraction(fraction: object) -> float:
    """Return ``fraction`` as a float in (0, 1), else raise naming --test-fraction."""
    ok = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not ok or not math.isfinite(fraction) or not 0 < fraction < 1:
        raise VaelabError(f"--test-fraction: expected a number between 0 and 1, got {fraction!r}")
    return float(fraction)


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is an int that torch accepts, else raise naming --seed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise VaelabError(f"--seed: expected an integer in 0..2**63-1, got {seed!r}")
    return seed


def check_options(
    resize: object, channels: object, test_fraction: object, seed: object
) -> tuple[tuple[int, int] | None, int | None, float, int]:
    """Check the options every loader takes; return them normalized, or raise naming the flag."""
    return (
        None if resize is None else check_resize(resize),
        check_channels(channels),
        check_fraction(test_fraction),
        check_seed(seed),
    )


def split_indices(n: int, fraction: float, seed: int, source: str) -> tuple[torch.Tensor, ...]:
    """Seeded random split of ``range(n)``: ``(train_idx, test_idx)``, each sorted, int64.

    The test part holds ``round(n * fraction)`` items, clamped so both parts are non-empty.
    """
    if n < 2:
        raise VaelabError(f"{source} has {n} image; expected at least 2 to split off a test set")
    n_test = min(max(round(n * fraction), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` uint8 images to ``channels`` (1 or 3); contiguous result.

    RGB to gray uses ITU-R 601-2 luma in the same fixed-point rounding as Pillow's
    ``convert("L")``, so images from a folder match whichever path converted them.
    Gray to RGB repeats the plane.
    """
    if x.shape[1] == channels:
        return x.contiguous()
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    out = torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=torch.uint8)
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
    for start in range(0, x.shape[0], _CHUNK):
        part = x[start : start + _CHUNK].to(torch.int32)
        luma = ((part * weights).sum(dim=1, keepdim=True) + 0x8000) >> 16
        out[start : start + _CHUNK] = luma.to(torch.uint8)
    return out


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` uint8 images to ``(N, C, *size)``: bilinear, antialiased.

    Antialiasing makes downscaling average over the source pixels (as Pillow does) instead of
    sampling them, which would alias thin strokes away.
    """
    if tuple(x.shape[2:]) == tuple(size):
        return x.contiguous()
    out = torch.empty((x.shape[0], x.shape[1], *size), dtype=torch.uint8)
    for start in range(0, x.shape[0], _CHUNK):
        part = x[start : start + _CHUNK].to(torch.float32)
        scaled = F.interpolate(part, size=size, mode="bilinear", antialias=True)
        out[start : start + _CHUNK] = scaled.round_().clamp_(0, 255).to(torch.uint8)
    return out
