"""Folders of image files (PNG, JPEG, BMP, GIF, WebP), read with Pillow.

Two layouts: one sub-folder per class (labels = index of the sub-folder among the sorted
sub-folder names; a class takes the images at any depth below its folder, as torchvision's
ImageFolder does, and the number each class got is printed), or images directly in the
folder (unlabelled). Entries whose names start with a dot are ignored; other files without
an image extension are skipped with one warning, and so are image files that cannot be
decoded or are over the pixel cap (one warning with the count and reasons); only a class
or a folder left with no image at all is an error. Transparent pixels are laid on
``LoadOptions.background`` (white by default). Everything is listed in sorted order, so
the result does not depend on the file system.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from vaelab.data.arrays import one_line
from vaelab.data.imagedata import ImageData, LoadOptions, assemble
from vaelab.data.transforms import crop_box
from vaelab.errors import VaelabError

Background = tuple[int, int, int]
WHITE: Background = (255, 255, 255)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# Pixel cap per image. Below Pillow's own limit (~89 MP) so that a small compressed file that
# expands to gigabytes is refused before it is decoded; tests lower it to exercise the check.
MAX_PIXELS = 64_000_000

_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_GRAY = ("1", "L")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


class SkippedImage(VaelabError):
    """An image file that cannot be used: ``kind`` says why ("unreadable", "too large")."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def load_folder(
    root: Path,
    options: LoadOptions,
) -> ImageData:
    """Load every image under ``root`` into ``(N, C, H, W)`` uint8, C = 1 if all are gray.

    Images must share one size unless ``resize = (H, W)`` is given (then each is resized,
    bilinear and antialiased, as it is read). The test set is a seeded ``test_fraction``.
    """
    real_root = Path(os.path.realpath(root))
    skipped: list[Path] = []
    files, folders = _list(root, real_root, skipped)
    if files:
        for folder in folders:
            if _list(folder, real_root, [])[0]:
                raise VaelabError(
                    f"{root}: holds images both directly and in sub-folder {folder.name!r};"
                    " expected one layout (all images in one folder, or one sub-folder per class)"
                )
        labels, class_names = None, None
    else:
        labels, class_names = [], tuple(folder.name for folder in folders)
        for index, folder in enumerate(folders):
            members = _walk(folder, real_root, skipped)
            if not members:
                raise VaelabError(f"{folder}: class folder holds no images; {_EXPECTED}")
            files.extend(members)
            labels.extend([index] * len(members))
    if not files:
        raise VaelabError(f"{root}: no images found; {_EXPECTED}")
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} entries that are not image files"
            f" (e.g. {skipped[0]}); expected {', '.join(IMAGE_EXTENSIONS)}",
            stacklevel=3,
        )
    # Each image is cropped as it is read, before its own resize (sizes may differ), so
    # assemble() must not crop again.
    crop = options.center_crop
    x, kept = _stack(files, options.resize, root, options.background, crop)
    y = None if labels is None else np.asarray(labels, dtype=np.int64)[kept]
    if class_names is not None:
        _check_classes(root, folders, y)
    return assemble(
        str(root),
        (x, y),
        None,
        replace(options, center_crop=None),
        class_names,
    )


_EXPECTED = (
    f"expected files ending in {', '.join(IMAGE_EXTENSIONS)} directly inside,"
    " or in one sub-folder per class"
)


def _walk(folder: Path, real_root: Path, skipped: list[Path]) -> list[Path]:
    """Image files at any depth below ``folder``, sorted by path; a folder reached twice
    (a symlink loop inside the tree) is read once."""
    found, seen, pending = [], set(), [folder]
    while pending:
        directory = pending.pop()
        real = os.path.realpath(directory)
        if real in seen:
            continue
        seen.add(real)
        files, folders = _list(directory, real_root, skipped)
        found.extend(files)
        pending.extend(folders)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _check_classes(root: Path, folders: list[Path], y: np.ndarray) -> None:
    """Each class keeps an image after unreadable ones are skipped; say how many it got."""
    counts = np.bincount(y, minlength=len(folders))
    for folder, count in zip(folders, counts, strict=True):
        if count == 0:
            raise VaelabError(f"{folder}: class folder holds no readable images; {_EXPECTED}")
    listed = ", ".join(f"{f.name} {c}" for f, c in zip(folders[:30], counts[:30], strict=False))
    more = f", and {len(folders) - 30} more" if len(folders) > 30 else ""
    print(
        f"{root}: {len(folders)} classes (images at any depth in each class folder): "
        f"{listed}{more}",
        file=sys.stderr,
    )


def _list(directory: Path, real_root: Path, skipped: list[Path]) -> tuple[list[Path], list[Path]]:
    """Sorted (image files, sub-folders) of ``directory``; other entries go to ``skipped``."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as err:
        reason = one_line(err.strerror or err)
        raise VaelabError(f"{directory}: cannot list folder ({reason})") from None
    files, folders = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = directory / entry.name
        if entry.is_symlink():
            # A link out of the tree could expose any file the user can read; refuse it.
            target = Path(os.path.realpath(path))
            if target != real_root and real_root not in target.parents:
                raise VaelabError(f"{path}: symlink to {target}, outside {real_root}; refused")
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir:
            folders.append(path)
        elif is_file and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
        else:
            skipped.append(path)
    return files, folders


def _stack(
    files: list[Path], resize: tuple[int, int] | None, root: Path, background: Background,
    crop: tuple[int, int] | str | None = None,
) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """Read ``files`` into one uint8 ``(N, C, H, W)`` array (gray images join RGB ones as
    RGB) and the indices of the files kept: unreadable or over-large ones are skipped with
    one warning giving their count and reasons; none left is an error."""
    arrays, kept, skipped = [], [], []
    for index, path in enumerate(files):
        try:
            arr = read_image(path, resize, background, crop)
        except SkippedImage as err:
            skipped.append(err)
            continue
        if arrays and arr.shape[:2] != arrays[0].shape[:2]:
            (h0, w0), (h, w) = arrays[0].shape[:2], arr.shape[:2]
            raise VaelabError(
                f"{root}: images differ in size: {files[kept[0]]} is {h0}x{w0} but {path} is "
                f"{h}x{w} (HxW); pass --resize HxW"
            )
        arrays.append(arr)
        kept.append(index)
    if skipped:
        kinds = Counter(err.kind for err in skipped)
        why = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        if not arrays:
            raise VaelabError(
                f"{root}: none of its {len(files)} image files can be used ({why}), e.g. "
                f"{skipped[0]}"
            )
        warnings.warn(
            f"{root}: skipped {len(skipped)} of {len(files)} image files ({why}), e.g. "
            f"{skipped[0]}",
            stacklevel=4,
        )
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)), kept
    return np.stack(arrays)[:, None], kept


def read_image(
    path: Path, resize: tuple[int, int] | None = None, background: Background = WHITE,
    crop: tuple[int, int] | str | None = None,
) -> np.ndarray:  # fmt: skip
    """Decode one image file to uint8 ``(H, W)`` if its pixels are gray, else ``(H, W, 3)``.

    Colour modes (P, CMYK...) become RGB; an image with transparency (an alpha channel, or
    a palette/colour key marked transparent) is laid on ``background`` (R, G, B), out =
    a * pixel + (1 - a) * background; 16-bit gray is scaled to 8 bits; an RGB image whose
    three planes are equal counts as gray. ``crop`` (``"square"`` or ``(h, w)``) keeps the
    centre first; ``resize = (H, W)`` resizes, bilinear with antialiasing. A file that
    cannot be used raises :class:`SkippedImage`.
    """
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice that; either way we refuse the file.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise SkippedImage(_bomb(path, f"{height}x{width} pixels"), "too large")
                if crop is not None:
                    top, left, h, w = crop_box(height, width, crop, str(path))
                    im = im.crop((left, top, left + w, top + h))
                return _pixels(im, resize, background)
        except VaelabError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise SkippedImage(_bomb(path, one_line(err)), "too large") from None
        except Exception as err:
            # Pillow's decoders report damaged files as OSError, SyntaxError, ValueError,
            # EOFError, struct.error... depending on the format; to the user all are one error.
            raise SkippedImage(
                f"{path}: cannot read image ({type(err).__name__}: {one_line(err)})", "unreadable"
            ) from None


def _bomb(path: Path, what: str) -> str:
    return (
        f"{path}: image too large ({what}); expected at most {MAX_PIXELS} pixels"
        " (possible decompression bomb)"
    )


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA or "transparency" in im.info


def _pixels(
    im: Image.Image, resize: tuple[int, int] | None, background: Background = WHITE
) -> np.ndarray:
    if im.mode in _WIDE_GRAY:
        wide = np.asarray(im).astype(np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise ValueError(f"{im.mode} pixels outside 0..65535")
        # Pillow has no 16-to-8-bit conversion that scales (convert("L") clips at 255).
        # 32-bit "I" images may hold 8-bit levels; the I;16 modes are 16-bit by definition.
        if im.mode.startswith("I;16") or wide.max() > 255:
            wide = (wide + 128) // 257
        im = Image.fromarray(wide.astype(np.uint8))
    elif _has_alpha(im):
        # Dropping alpha would turn a dark icon on a transparent ground into a black tile.
        rgba = im.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, (*background, 255))
        im = Image.alpha_composite(ground, rgba).convert("RGB")
    else:
        im = im.convert("L" if im.mode in _GRAY else "RGB")
    if resize is not None:
        im = im.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im)
    if arr.ndim == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        arr = arr[..., 0]
    return np.array(arr, dtype=np.uint8)
