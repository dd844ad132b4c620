"""Image datasets in memory: builtin names, IDX files, .npz archives and image folders.

``load_dataset(spec)`` returns an :class:`ImageData` whose images are uint8 ``(N, C, H, W)``
tensors; every bad input raises :class:`~vaelab.errors.VaelabError` with one line naming the
file or flag at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaelab.config import Config
from vaelab.data.builtin import BUILTIN, cache_root
from vaelab.data.cifar import is_cifar_dir, load_cifar_dir, load_cifar_file
from vaelab.data.folder import load_folder
from vaelab.data.idx import find_idx_images, load_idx_dir, load_idx_file, read_idx, write_idx
from vaelab.data.imagedata import ImageData, LoadOptions
from vaelab.data.npz import load_npz
from vaelab.data.transforms import parse_resize
from vaelab.errors import VaelabError, did_you_mean

__all__ = [
    "BUILTIN",
    "FILE_LOADERS",
    "ImageData",
    "LoadOptions",
    "cache_root",
    "check_dataset",
    "dataset_for",
    "load_dataset",
    "parse_resize",
    "read_idx",
    "write_idx",
]

# File suffix -> loader; any other file is read as IDX (raw or gzipped, sniffed by content).
FILE_LOADERS: dict[str, Callable[..., ImageData]] = {".npz": load_npz, ".bin": load_cifar_file}


def load_dataset(
    spec: str,
    *,
    resize: tuple[int, int] | None = None,
    channels: int | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    background: str | tuple[int, int, int] = "white",
    center_crop: str | tuple[int, int] | None = None,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """Load the dataset named or located by ``spec``.

    ``spec`` is a key of ``BUILTIN`` or a path: an .npz archive, a CIFAR-10 ``.bin`` file or
    ``cifar-10-batches-bin`` folder, an IDX file (raw or .gz), a
    directory of ``*-images-idx3-ubyte[.gz]`` files (with matching ``*-labels-idx1-ubyte``;
    ``t10k-``/``test-`` ones form the test set), or a folder of images (one sub-folder per
    class, or unlabelled images directly inside).

    ``resize = (H, W)`` resizes every image (bilinear, antialiased); ``channels`` forces 1
    (luma) or 3 (gray repeated), default: the data's own. Sources without a test split get a
    random ``test_fraction`` of their images as one, fixed by ``seed``. Transparent pixels
    are laid on ``background`` (``white``, ``black``, ``"R,G,B"``). ``center_crop``
    (``"square"`` or ``(H, W)``) keeps the centre of each image, before ``resize``.
    ``download`` and ``cache_dir`` apply to builtins that may fetch files (see :func:`cache_root`).
    Returns train images ``(N, C, H, W)`` and test images ``(M, C, H, W)``, uint8.
    """
    options = LoadOptions(
        resize, channels, test_fraction, seed, background, center_crop=center_crop
    ).checked()
    if not isinstance(spec, (str, Path)):
        raise VaelabError(f"dataset: expected a name or a path, got {type(spec).__name__}")
    if isinstance(spec, str) and spec in BUILTIN:
        return BUILTIN[spec](options, download=download, cache_dir=cache_dir)
    path = check_dataset(spec)
    if path.is_dir():
        loader = load_idx_dir if find_idx_images(path) else load_folder
        loader = load_cifar_dir if is_cifar_dir(path) else loader
        return loader(path, options)
    if not path.is_file():
        raise VaelabError(f"{path}: not a regular file or folder; expected a dataset file")
    return FILE_LOADERS.get(path.suffix.lower(), load_idx_file)(path, options)


def check_dataset(spec: str | Path) -> Path | None:
    """None for a builtin name, else the existing path ``spec`` names; otherwise a
    VaelabError listing the builtin names, with a "did you mean" for a near miss."""
    if isinstance(spec, str) and spec in BUILTIN:
        return None
    path = Path(spec).expanduser()
    try:
        exists = str(spec) != "" and path.exists()
    except (OSError, ValueError):  # a name too long for the OS, or holding a NUL byte
        exists = False
    if not exists:
        names = ", ".join(sorted(BUILTIN))
        guess = did_you_mean(spec, BUILTIN)
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise VaelabError(
            f"unknown dataset {str(spec)!r}: expected one of {names}, or the path of an .npz"
            f" file, an IDX file, or a folder of images (no such file or folder){hint}"
        )
    return path


def dataset_for(config: Config) -> ImageData:
    """The dataset a run's config names, loaded and split as training loaded it (the same
    resize, channels, test fraction, split seed, background and crop): both splits."""
    d = config.data
    resize = parse_resize(d.resize) if d.resize else None
    return load_dataset(
        d.dataset, resize=resize, channels=d.channels, test_fraction=d.test_fraction,
        seed=config.train.seed, background=d.background, center_crop=d.center_crop,
    )  # fmt: skip
