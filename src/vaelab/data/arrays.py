"""Validation shared by every loader: numpy arrays in, checked uint8 images and int64 labels out.

Every check raises :class:`~vaelab.errors.VaelabError` with one line that names the source
(a file, or a file and the array inside it) and what was expected.
"""

from __future__ import annotations

import numpy as np

from vaelab.errors import VaelabError

# Labels index one-hot vectors and embedding tables downstream; anything this large is a
# corrupt file, not a real class count.
MAX_LABEL = 2**20

_LAYOUTS = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3"


def one_line(text: object) -> str:
    """Collapse ``text`` (an exception message, a file name) to a single line."""
    return " ".join(str(text).split()) or type(text).__name__


def as_images(arr: np.ndarray, source: str) -> np.ndarray:
    """Check an image array and return it as contiguous uint8 ``(N, C, H, W)``, C in {1, 3}.

    Accepted layouts are ``(N, H, W)``, ``(N, H, W, C)`` and ``(N, C, H, W)``; when both the
    second and the last axis could hold channels, channels-last is assumed (numpy and Pillow
    write images that way). Accepted values: uint8 as is; bool as {0, 255}; other integers in
    0..255 as is; floats in [0, 1] scaled by 255, else floats in [0, 255], rounded.
    """
    shape = tuple(arr.shape)
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and shape[3] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    elif not (arr.ndim == 4 and shape[1] in (1, 3)):
        raise VaelabError(f"{source} has shape {shape}; expected {_LAYOUTS}")
    if arr.shape[0] == 0:
        raise VaelabError(f"{source} has no images (shape {shape}); expected at least one")
    if arr.shape[2] == 0 or arr.shape[3] == 0:
        raise VaelabError(f"{source} has empty images (shape {shape}); expected H, W >= 1")
    return np.ascontiguousarray(_to_uint8(arr, source))


def _to_uint8(arr: np.ndarray, source: str) -> np.ndarray:
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "b":
        return arr.astype(np.uint8) * np.uint8(255)
    if kind in "iu":
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 255:
            raise VaelabError(
                f"{source} holds integers in {low}..{high}; expected pixel values in 0..255"
            )
        return arr.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(arr).all():
            raise VaelabError(f"{source} holds NaN or infinite values; expected finite pixels")
        low, high = float(arr.min()), float(arr.max())
        if low < 0:
            raise VaelabError(
                f"{source} holds negative values ({low:g}); expected [0, 1] or [0, 255]"
            )
        if high > 255:
            raise VaelabError(f"{source} holds values up to {high:g}; expected [0, 1] or [0, 255]")
        # Values all within [0, 1] are taken as intensities, anything larger as 0..255 levels.
        scaled = arr.astype(np.float64) * 255.0 if high <= 1.0 else arr.astype(np.float64)
        return np.rint(scaled).astype(np.uint8)
    raise VaelabError(
        f"{source} has dtype {arr.dtype}; expected uint8, bool, integers in 0..255 or floats"
    )


def as_labels(arr: np.ndarray, source: str) -> np.ndarray:
    """Check a label array and return it as contiguous int64 ``(N,)`` in 0..MAX_LABEL."""
    if arr.ndim != 1:
        raise VaelabError(f"{source} has shape {tuple(arr.shape)}; expected 1-D labels (N,)")
    if arr.dtype.kind not in "iu":
        raise VaelabError(f"{source} has dtype {arr.dtype}; expected integer class labels")
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > MAX_LABEL:
            raise VaelabError(
                f"{source} holds labels in {low}..{high}; expected class indices 0..{MAX_LABEL}"
            )
    return np.ascontiguousarray(arr.astype(np.int64))


def check_count(images: np.ndarray, labels: np.ndarray | None, source: str) -> None:
    """Raise unless ``labels`` (when given) has one entry per image; ``source`` names both."""
    if labels is not None and len(labels) != len(images):
        raise VaelabError(f"{source} has {len(images)} images but {len(labels)} labels")
