"""The in-memory dataset every loader returns, and the one function that builds it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaelab.data.transforms import (
    center_crop,
    check_background,
    check_center_crop,
    check_options,
    resize_images,
    split_indices,
    to_channels,
)
from vaelab.errors import VaelabError


@dataclass(frozen=True)
class ImageData:
    """A whole image dataset held in memory as uint8 tensors.

    ``train_x`` is ``(N, C, H, W)`` and ``test_x`` ``(M, C, H, W)``, C in {1, 3}, both
    contiguous uint8 in 0..255 (scale or binarize inside the training step). Labels, when
    known, are int64 ``(N,)`` / ``(M,)`` class indices; ``class_names[i]`` names class ``i``.

    Ground-truth factors, when known (dSprites, an NPZ with ``factors``), are int64
    ``(N, F)`` / ``(M, F)`` class indices per factor; ``factor_names[f]`` names factor f and
    ``factor_values[f][k]`` is the value of its class k (e.g. the scale 0.5), when known.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor | None
    class_names: tuple[str, ...] | None
    train_factors: torch.Tensor | None = None
    test_factors: torch.Tensor | None = None
    factor_names: tuple[str, ...] | None = None
    factor_values: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        # Loaders validate user input with VaelabError; failing here means a loader bug.
        for part, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
                raise ValueError(f"{part}_x must be uint8 (N, 1|3, H, W), got {x.dtype} {x.shape}")
            if not x.is_contiguous() or x.shape[0] == 0:
                raise ValueError(f"{part}_x must be contiguous and non-empty")
            if y is not None and (y.dtype != torch.int64 or y.shape != x.shape[:1]):
                raise ValueError(f"{part}_y must be int64 of shape ({x.shape[0]},)")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError("train_x and test_x must share (C, H, W)")
        if (self.train_y is None) != (self.test_y is None):
            raise ValueError("train_y and test_y must both be set or both be None")
        self._check_factors()

    def _check_factors(self) -> None:
        f_train, f_test = self.train_factors, self.test_factors
        if f_train is None and f_test is None:
            return
        if f_train is None or f_test is None or self.factor_names is None:
            raise ValueError("train_factors, test_factors and factor_names go together")
        for part, x, f in (("train", self.train_x, f_train), ("test", self.test_x, f_test)):
            if f.dtype != torch.int64 or f.dim() != 2 or f.shape[0] != x.shape[0]:
                raise ValueError(f"{part}_factors must be int64 ({x.shape[0]}, F), got {f.shape}")
            if f.shape[1] != len(self.factor_names):
                raise ValueError(f"{part}_factors must have one column per factor name")
        if self.factor_values is not None and len(self.factor_values) != len(self.factor_names):
            raise ValueError("factor_values must hold one tuple per factor")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def has_factors(self) -> bool:
        """Whether ground-truth factors are known for every image."""
        return self.train_factors is not None

    @property
    def factor_sizes(self) -> tuple[int, ...] | None:
        """Classes per factor: ``len(factor_values[f])`` when known, else max class + 1."""
        if self.train_factors is None or self.test_factors is None:
            return None
        if self.factor_values is not None:
            return tuple(len(v) for v in self.factor_values)
        top = torch.maximum(self.train_factors.max(0).values, self.test_factors.max(0).values)
        return tuple(int(t) + 1 for t in top)

    @property
    def num_classes(self) -> int | None:
        """``len(class_names)`` when known, else ``max label + 1``; None when unlabelled."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.train_y is None or self.test_y is None:
            return None
        return int(max(self.train_y.max(), self.test_y.max())) + 1


@dataclass(frozen=True)
class LoadOptions:
    """What every loader does to its images after reading them (``--resize``,
    ``--channels``, ``--test-fraction``, ``--seed``; ``--background``: the (R, G, B) that
    transparent pixels are laid on); checked by :meth:`checked`."""

    resize: tuple[int, int] | None = None
    channels: int | None = None
    test_fraction: float = 0.1
    seed: int = 0
    background: tuple[int, int, int] | str = (255, 255, 255)
    center_crop: tuple[int, int] | str | None = None  # --center-crop, applied before resize

    def checked(self) -> LoadOptions:
        """The same options normalized, or a VaelabError naming the flag."""
        return LoadOptions(
            *check_options(self.resize, self.channels, self.test_fraction, self.seed),
            background=check_background(self.background),
            center_crop=check_center_crop(self.center_crop),
        )


def assemble(
    name: str,
    train: tuple[np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray | None] | None,
    options: LoadOptions,
    class_names: tuple[str, ...] | None = None,
    factors: Factors | None = None,
) -> ImageData:
    """Build an :class:`ImageData` from checked arrays (see :mod:`vaelab.data.arrays`).

    ``train``/``test`` are ``(images (N, C, H, W) uint8, labels (N,) int64 or None)``. Without
    ``test`` a seeded ``test_fraction`` of ``train`` becomes the test set. Then images are
    converted to ``channels`` (default: 3 if either part is RGB, else 1), cropped to their
    centre (``center_crop``) and resized to ``resize = (H, W)`` (``options``).
    ``factors`` (see :class:`Factors`) follow their images through the split.
    """
    checked = options.checked()
    resize, channels = checked.resize, checked.channels
    test_fraction, seed = checked.test_fraction, checked.seed
    train_x, train_y = _tensor(train[0]), _tensor(train[1])
    f_train = _tensor(factors.train) if factors is not None else None
    f_test = _tensor(factors.test) if factors is not None else None
    if test is None:
        train_idx, test_idx = split_indices(len(train_x), test_fraction, seed, name)
        test_x, test_y = train_x[test_idx], None if train_y is None else train_y[test_idx]
        train_x, train_y = train_x[train_idx], None if train_y is None else train_y[train_idx]
        if f_train is not None:
            f_train, f_test = f_train[train_idx], f_train[test_idx]
    else:
        test_x, test_y = _tensor(test[0]), _tensor(test[1])
    if (train_y is None) != (test_y is None):
        have, lack = ("train", "test") if test_y is None else ("test", "train")
        raise VaelabError(f"{name}: the {have} images have labels but the {lack} images do not")
    if class_names is not None:
        top = max(int(train_y.max()), int(test_y.max())) if train_y is not None else -1
        if top >= len(class_names):
            raise VaelabError(
                f"{name}: label {top} has no class name; expected labels below {len(class_names)}"
            )
    target = channels or max(train_x.shape[1], test_x.shape[1])
    train_x, test_x = to_channels(train_x, target), to_channels(test_x, target)
    if checked.center_crop is not None:
        train_x = center_crop(train_x, checked.center_crop, name)
        test_x = center_crop(test_x, checked.center_crop, name)
    if resize is not None:
        train_x, test_x = resize_images(train_x, resize), resize_images(test_x, resize)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise VaelabError(
            f"{name}: train images are {_hw(train_x)} but test images are {_hw(test_x)} (HxW);"
            " pass --resize HxW"
        )
    if factors is None:
        return ImageData(name, train_x, train_y, test_x, test_y, class_names)
    if f_test is None:
        raise VaelabError(f"{name}: the train images have factors but the test images do not")
    return ImageData(
        name, train_x, train_y, test_x, test_y, class_names,
        f_train.contiguous(), f_test.contiguous(), factors.names, factors.values,
    )  # fmt: skip


@dataclass(frozen=True)
class Factors:
    """Per-image ground-truth factors for :func:`assemble`: class indices int64 ``(N, F)``
    for the train images (and ``(M, F)`` for the test images when those are given apart),
    the factor names and, when known, each factor's class values."""

    train: np.ndarray
    test: np.ndarray | None
    names: tuple[str, ...]
    values: tuple[tuple[float, ...], ...] | None = None


def _tensor(arr: np.ndarray | None) -> torch.Tensor | None:
    # from_numpy shares memory; a read-only array (np.frombuffer on bytes) must be copied first.
    if arr is None:
        return None
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr))


def _hw(x: torch.Tensor) -> str:
    return f"{x.shape[2]}x{x.shape[3]}"
