"""Reading a request's JSON fields and images, and writing images back, for the server.

Every check raises :class:`BadRequest` with a one-line reason naming the field; the server
turns it into a 4xx answer. Images travel as PNG data URLs at the run's own size
(``data:image/png;base64,...``); the page scales them up for display.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaelab.evaluation.plots import png_bytes

PNG_PREFIX = "data:image/png;base64,"


class BadRequest(Exception):
    """A malformed request: HTTP ``status`` (4xx) and a one-line reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    """Field ``key`` as a finite float in [lo, hi] (``default`` when absent)."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"field {key!r}: expected a number, got {value!r}"[:200])
    if not lo <= value <= hi:
        raise BadRequest(f"field {key!r}: expected a number in [{lo}, {hi}], got {value}")
    return float(value)


def integer(body: dict, key: str, default: int | None, lo: int, hi: int) -> int:
    """Field ``key`` as an int in [lo, hi]; required when ``default`` is None."""
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"field {key!r}: required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field {key!r}: expected an integer, got {value!r}"[:200])
    if not lo <= value <= hi:
        raise BadRequest(f"field {key!r}: expected an integer in [{lo}, {hi}], got {value}")
    return value


def optional_integer(body: dict, key: str, lo: int, hi: int) -> int | None:
    return None if body.get(key) is None else integer(body, key, None, lo, hi)


def integers(body: dict, key: str, most: int = 1024) -> list[int]:
    """A required list of at most ``most`` integers (their range is the caller's check)."""
    value = body.get(key)
    if not (isinstance(value, list) and len(value) <= most and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value)):  # fmt: skip
        raise BadRequest(f"field {key!r}: expected a list of integers, got {value!r}"[:200])
    return value


def choice(body: dict, key: str, default: str, valid: list[str]) -> str:
    value = body.get(key, default)
    if value not in valid:
        raise BadRequest(f"field {key!r}: expected one of {', '.join(valid)}, got {value!r}"[:200])
    return value


def vector(body: dict, key: str, size: int, bound: float = 1e4) -> torch.Tensor:
    """Field ``key`` as ``size`` finite numbers of magnitude <= ``bound``; float32 ``(size,)``."""
    value = body.get(key)
    ok = isinstance(value, list) and len(value) == size
    if ok:
        ok = all(
            not isinstance(v, bool) and isinstance(v, int | float) and abs(v) <= bound
            for v in value
        )  # abs(nan) <= bound is False, so NaN and inf are refused too
    if not ok:
        raise BadRequest(f"field {key!r}: expected a list of {size} finite numbers")
    return torch.tensor(value, dtype=torch.float32)


def png_image(image: torch.Tensor) -> bytes:
    """A float image ``(C, H, W)`` in [0, 1] as PNG bytes (grey or RGB, its exact size)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    array = array.permute(1, 2, 0).numpy()
    return png_bytes(Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array))


def png_data_url(image: torch.Tensor) -> str:
    """:func:`png_image` as a data URL, ready for an ``<img src>``."""
    return PNG_PREFIX + base64.b64encode(png_image(image)).decode("ascii")


def png_data_urls(images: torch.Tensor) -> list[str]:
    return [png_data_url(x) for x in images]


def image_field(body: dict, key: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """Field ``key``: a PNG data URL of exactly the run's width and height; uint8 ``(C, H, W)``
    (converted to grey or RGB as the run's images are)."""
    c, h, w = shape
    value = body.get(key)
    if not isinstance(value, str) or not value.startswith(PNG_PREFIX):
        raise BadRequest(f"field {key!r}: expected a PNG data URL ({PNG_PREFIX}...)")
    try:
        data = base64.b64decode(value[len(PNG_PREFIX) :], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise BadRequest(f"field {key!r}: expected a PNG, got {img.format}")
            if img.size != (w, h):
                raise BadRequest(
                    f"field {key!r}: image is {img.size[0]}x{img.size[1]}; this run's images "
                    f"are {w}x{h}"
                )
            array = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(f"field {key!r}: not a readable PNG ({exc})"[:200]) from None
    return torch.from_numpy(array.copy()).reshape(h, w, c).permute(2, 0, 1).contiguous()


def mask_field(body: dict, key: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """Field ``key``: a string of H*W characters ``0``/``1``, row by row, ``1`` = missing;
    a bool ``(C, H, W)`` mask (the same pixels in every channel)."""
    c, h, w = shape
    value = body.get(key)
    if not isinstance(value, str) or len(value) != h * w or set(value) - {"0", "1"}:
        raise BadRequest(f"field {key!r}: expected {h * w} characters 0/1 (1 = missing pixel)")
    flat = torch.tensor([ch == "1" for ch in value], dtype=torch.bool)
    return flat.reshape(1, h, w).expand(c, h, w).clone()


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body: not valid JSON ({exc})"[:200]) from None
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    return body
