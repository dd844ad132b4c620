"""NumPy ``.npz`` archives of images.

Keys: ``images`` (or ``x``, or ``imgs`` as in DeepMind's dSprites archive) required;
``labels`` (or ``y``), ``test_images`` (or ``x_test``), ``test_labels`` (or ``y_test``) and
``class_names`` (1-D strings) optional; other keys are ignored. Layouts and value ranges are
those of :func:`vaelab.data.arrays.as_images`.

Ground-truth factors, optional: ``factors`` (or ``latents_classes``), non-negative integer
class indices ``(N, F)``, with ``test_factors`` ``(M, F)`` when ``test_images`` are given;
``factor_names`` (F strings; default ``factor0``...) and ``latents_values`` (``(N, F)``
floats, each class's value, as in the dSprites archive). The official dSprites archive
(``imgs``, ``latents_classes``, ``latents_values``) thus loads with its six factors named
as in its README (its ``metadata`` is a pickle and is not read).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from vaelab.data.arrays import as_images, as_labels, check_count, one_line
from vaelab.data.dsprites import FACTOR_NAMES
from vaelab.data.imagedata import Factors, ImageData, LoadOptions, assemble
from vaelab.errors import VaelabError

# role -> accepted key names, first preferred
_KEYS = {
    "images": ("images", "x", "imgs"),
    "labels": ("labels", "y"),
    "test_images": ("test_images", "x_test"),
    "test_labels": ("test_labels", "y_test"),
    "class_names": ("class_names",),
    "factors": ("factors", "latents_classes"),
    "test_factors": ("test_factors",),
    "factor_names": ("factor_names",),
    "factor_values": ("latents_values",),
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
                present = present[:1]
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
        str(path), train, test, options, _class_names(arrays, path),
        factors=_factors(arrays, path, len(train[0]), None if test is None else len(test[0])),
    )  # fmt: skip


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


def _factors(
    arrays: dict[str, np.ndarray], path: Path, n_train: int, n_test: int | None
) -> Factors | None:
    """The archive's ground-truth factors, checked, or None when it has none."""
    if "factors" not in arrays:
        for role in ("test_factors", "factor_names", "factor_values"):
            if role in arrays:
                raise VaelabError(f"{path}: has {_KEYS[role][0]!r} but no 'factors' array")
        return None
    train = _factor_array(arrays["factors"], f"{path} factors", n_train)
    test = None
    if n_test is not None:
        if "test_factors" not in arrays:
            raise VaelabError(f"{path}: has 'factors' and 'test_images' but no 'test_factors'")
        test = _factor_array(arrays["test_factors"], f"{path}['test_factors']", n_test)
        if test.shape[1] != train.shape[1]:
            raise VaelabError(
                f"{path}['test_factors'] has {test.shape[1]} columns; expected {train.shape[1]}"
            )
    width = train.shape[1]
    names = _names(arrays, path, width)
    return Factors(train, test, names, _values(arrays, path, train))


def _factor_array(arr: np.ndarray, source: str, count: int) -> np.ndarray:
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0 or arr.dtype.kind not in "iu":
        raise VaelabError(
            f"{source} has dtype {arr.dtype} shape {tuple(arr.shape)}; expected integer factor"
            " classes (N, F)"
        )
    if len(arr) != count:
        raise VaelabError(f"{source} has {len(arr)} rows; expected one per image ({count})")
    if arr.size and int(arr.min()) < 0:
        raise VaelabError(f"{source} holds negative classes; expected class indices 0, 1, ...")
    return np.ascontiguousarray(arr.astype(np.int64))


def _names(arrays: dict[str, np.ndarray], path: Path, width: int) -> tuple[str, ...]:
    names = arrays.get("factor_names")
    if names is None:
        # DeepMind's archive keeps its names in a pickled 'metadata'; its README gives them.
        official = "factor_values" in arrays and width == len(FACTOR_NAMES)
        return FACTOR_NAMES if official else tuple(f"factor{i}" for i in range(width))
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) != width:
        raise VaelabError(
            f"{path}['factor_names'] has dtype {names.dtype} shape {names.shape}; expected"
            f" {width} strings, one per factor column"
        )
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())


def _values(
    arrays: dict[str, np.ndarray], path: Path, classes: np.ndarray
) -> tuple[tuple[float, ...], ...] | None:
    """Each factor's value per class from ``latents_values`` (N, F): the value seen with
    class k (the first image of that class; the archive pairs them one to one)."""
    values = arrays.get("factor_values")
    if values is None:
        return None
    if values.shape != classes.shape or values.dtype.kind not in "fiu":
        raise VaelabError(
            f"{path}['latents_values'] has shape {values.shape}; expected numbers shaped like"
            f" the factor classes {classes.shape}"
        )
    out = []
    for f in range(classes.shape[1]):
        table = np.full(int(classes[:, f].max()) + 1, np.nan)
        table[classes[:, f]] = values[:, f]
        out.append(tuple(float(v) for v in table))
    return tuple(out)
