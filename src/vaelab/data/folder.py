"""Folders of image files (PNG, JPEG, BMP, GIF, WebP), read with Pillow.

Two layouts: one sub-folder per class (labels = index of the sub-folder among the sorted
sub-folder names), or images directly in the folder (unlabelled). Entries whose names start
with a dot are ignored; other files without an image extension are skipped with one warning.
Everything is listed in sorted order, so the result does not depend on the file system.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from vaelab.data.arrays import one_line
from vaelab.data.imagedata import ImageData, LoadOptions, assemble
from vaelab.errors import VaelabError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# Pixel cap per image. Below Pillow's own limit (~89 MP) so that a small compressed file that
# expands to gigabytes is refused before it is decoded; tests lower it to exercise the check.
MAX_PIXELS = 64_000_000

_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_GRAY = ("1", "L", "LA", "La")


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
            members, nested = _list(folder, real_root, skipped)
            skipped.extend(nested)
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
    x = _stack(files, options.resize, root)
    y = None if labels is None else np.asarray(labels, dtype=np.int64)
    return assemble(
        str(root),
        (x, y),
        None,
        options,
        class_names,
    )


_EXPECTED = (
    f"expected files ending in {', '.join(IMAGE_EXTENSIONS)} directly inside,"
    " or in one sub-folder per class"
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


def _stack(files: list[Path], resize: tuple[int, int] | None, root: Path) -> np.ndarray:
    """Read ``files`` into one uint8 ``(N, C, H, W)`` array; gray images join RGB ones as RGB."""
    arrays = []
    for path in files:
        arr = read_image(path, resize)
        if arrays and arr.shape[:2] != arrays[0].shape[:2]:
            (h0, w0), (h, w) = arrays[0].shape[:2], arr.shape[:2]
            raise VaelabError(
                f"{root}: images differ in size: {files[0]} is {h0}x{w0} but {path} is {h}x{w}"
                " (HxW); pass --resize HxW"
            )
        arrays.append(arr)
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
    return np.stack(arrays)[:, None]


def read_image(path: Path, resize: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to uint8 ``(H, W)`` if its pixels are gray, else ``(H, W, 3)``.

    Colour modes (RGBA, P, CMYK...) become RGB, alpha dropped; 16-bit gray is scaled to 8 bits;
    an RGB image whose three planes are equal counts as gray. ``resize = (H, W)`` resizes,
    bilinear with antialiasing.
    """
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice that; either way we refuse the file.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise VaelabError(_bomb(path, f"{height}x{width} pixels"))
                return _pixels(im, resize)
        except VaelabError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise VaelabError(_bomb(path, one_line(err))) from None
        except Exception as err:
            # Pillow's decoders report damaged files as OSError, SyntaxError, ValueError,
            # EOFError, struct.error... depending on the format; to the user all are one error.
            raise VaelabError(
                f"{path}: cannot read image ({type(err).__name__}: {one_line(err)})"
            ) from None


def _bomb(path: Path, what: str) -> str:
    return (
        f"{path}: image too large ({what}); expected at most {MAX_PIXELS} pixels"
        " (possible decompression bomb)"
    )


def _pixels(im: Image.Image, resize: tuple[int, int] | None) -> np.ndarray:
    if im.mode in _WIDE_GRAY:
        wide = np.asarray(im).astype(np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise ValueError(f"{im.mode} pixels outside 0..65535")
        # Pillow has no 16-to-8-bit conversion that scales (convert("L") clips at 255).
        # 32-bit "I" images may hold 8-bit levels; the I;16 modes are 16-bit by definition.
        if im.mode.startswith("I;16") or wide.max() > 255:
            wide = (wide + 128) // 257
        im = Image.fromarray(wide.astype(np.uint8))
    else:
        im = im.convert("L" if im.mode in _GRAY else "RGB")
    if resize is not None:
        im = im.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im)
    if arr.ndim == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        arr = arr[..., 0]
    return np.array(arr, dtype=np.uint8)
