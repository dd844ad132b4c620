"""NumPy ``.npz`` archives of images.

Keys: ``images`` (or ``x``) required; ``labels`` (or ``y``), ``test_images`` (or ``x_test``),
``test_labels`` (or ``y_test``) and ``class_names`` (1-D strings) optional; other keys are
ignored. Layouts and value ranges are those of :func:`vaelab.data.arrays.as_images`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from vaelab.data.arrays import as_images, as_labels, check_count, one_line
from vaelab.data.imagedata import ImageData, LoadOptions, assemble
from vaelab.errors import VaelabError

# role -> accepted key names, first preferred
_KEYS = {
    "images": ("images", "x"),
    "labels": ("labels", "y"),
    "test_images": ("test_images", "x_test"),
    "test_labels": ("test_labels", "y_test"),
    "class_names": ("class_names",),
}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the arrays of ``path`` by role (keys of ``_KEYS``) without unpickling anything."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise VaelabError(f"{path}: holds a single .npy array; expected an .npz archive")
        with archive:
            arrays = {}
            for role, keys in _KEYS.items():
                present = [k for k in keys if k in archive.files]
                if len(present) > 1:
                    raise VaelabError(f"{path}: has both {present[0]!r} and {present[1]!r}")
                if present:
                    arrays[role] = _get(archive, present[0], path)
            return arrays
    except VaelabError:
        raise
    except FileNotFoundError:
        raise VaelabError(f"{path}: no such file; expected an .npz archive") from None
    except Exception as err:
        # A damaged archive surfaces from zipfile/zlib/numpy as any of a dozen exception types
        # (BadZipFile, ValueError, EOFError, struct.error, MemoryError...); all mean the same.
        raise VaelabError(f"{path}: not a readable .npz archive ({_describe(err)})") from None


def _get(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise VaelabError(
                f"{path}: array {key!r} holds Python objects; expected plain numeric arrays"
                " (object arrays are refused because loading them would unpickle code)"
            ) from None
        raise


def _describe(err: BaseException) -> str:
    if isinstance(err, zipfile.BadZipFile):
        return f"bad zip: {one_line(err)}"
    return f"{type(err).__name__}: {one_line(err)}"


def load_npz(
    path: Path,
    options: LoadOptions,
) -> ImageData:
    """Load an .npz archive; its ``test_images`` are the test set, else a seeded fraction."""
    arrays = read_npz(path)
    if "images" not in arrays:
        raise VaelabError(f"{path}: no 'images' (or 'x') array; expected one of shape (N, H, W)")
    if "test_labels" in arrays and "test_images" not in arrays:
        raise VaelabError(f"{path}: has 'test_labels' but no 'test_images'")
    train = _part(arrays, "images", "labels", path)
    test = _part(arrays, "test_images", "test_labels", path) if "test_images" in arrays else None
    return assemble(
        str(path),
        train,
        test,
        options,
        _class_names(arrays, path),
    )


def _part(
    arrays: dict[str, np.ndarray], images: str, labels: str, path: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    x = as_images(arrays[images], f"{path}[{images!r}]")
    y = as_labels(arrays[labels], f"{path}[{labels!r}]") if labels in arrays else None
    check_count(x, y, f"{path}[{images!r}]" if images != "images" else str(path))
    return x, y


def _class_names(arrays: dict[str, np.ndarray], path: Path) -> tuple[str, ...] | None:
    names = arrays.get("class_names")
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US" or names.size == 0:
        raise VaelabError(
            f"{path}['class_names'] has dtype {names.dtype} shape {names.shape};"
            " expected a non-empty 1-D array of strings"
        )
    if names.dtype.kind == "S":
        return tuple(n.decode("utf-8", "replace") for n in names.tolist())
    return tuple(str(n) for n in names.tolist())
