"""NPZ archives: every accepted layout and value range, and the errors for the rest."""

import numpy as np
import pytest
import torch

from vaelab.data import load_dataset
from vaelab.errors import VaelabError

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, size=(10, 5, 4), dtype=np.uint8)  # (N, H, W)
RGB = RNG.integers(0, 256, size=(10, 3, 5, 4), dtype=np.uint8)  # (N, C, H, W)


def _save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (GRAY, GRAY[:, None]),
        (GRAY[..., None], GRAY[:, None]),  # (N, H, W, 1)
        (GRAY[:, None], GRAY[:, None]),  # (N, 1, H, W)
        (RGB.transpose(0, 2, 3, 1), RGB),  # (N, H, W, 3)
        (RGB, RGB),  # (N, 3, H, W)
        (GRAY > 127, (GRAY > 127).astype(np.uint8)[:, None] * 255),  # bool
        (GRAY / 255.0, GRAY[:, None]),  # float in [0, 1]
        (GRAY.astype(np.float32), GRAY[:, None]),  # float in [0, 255]
        (GRAY.astype(np.int64), GRAY[:, None]),  # integers in 0..255
    ],
    ids=["NHW", "NHW1", "N1HW", "NHW3", "N3HW", "bool", "float01", "float255", "int64"],
)
def test_accepted_layouts(tmp_path, stored, expected):
    path = _save(tmp_path, images=stored, test_images=stored[:2])
    data = load_dataset(str(path))
    assert data.train_x.dtype == torch.uint8 and data.train_x.is_contiguous()
    assert data.train_x.shape == expected.shape
    np.testing.assert_array_equal(data.train_x.numpy(), expected)
    assert data.image_shape == expected.shape[1:]


def test_float_rounds_not_truncates(tmp_path):
    path = _save(tmp_path, images=np.full((4, 2, 2), 0.5), test_images=np.full((1, 2, 2), 0.999))
    data = load_dataset(str(path))
    assert data.train_x.unique().tolist() == [128] and data.test_x.unique().tolist() == [255]


def test_aliases_labels_and_class_names(tmp_path):
    labels = np.arange(10) % 3
    path = _save(tmp_path, x=GRAY, y=labels, class_names=np.array(["a", "b", "c"]))
    data = load_dataset(str(path), test_fraction=0.3, seed=1)
    assert data.class_names == ("a", "b", "c") and data.num_classes == 3
    # Each image keeps its label through the split.
    images, targets = torch.cat([data.train_x, data.test_x]), torch.cat([data.train_y, data.test_y])
    for x, y in zip(images, targets, strict=True):
        (index,) = np.flatnonzero((x[0].numpy() == GRAY).all(axis=(1, 2)))
        assert labels[index] == y


def test_own_test_split_is_used(tmp_path):
    path = _save(tmp_path, images=GRAY, labels=np.zeros(10, np.int32), test_images=GRAY[:3],
                 test_labels=np.ones(3, np.uint8))  # fmt: skip
    data = load_dataset(str(path))
    assert len(data.train_x) == 10 and data.test_y.tolist() == [1, 1, 1]


def test_gray_train_rgb_test_becomes_rgb(tmp_path):
    data = load_dataset(str(_save(tmp_path, images=GRAY, test_images=RGB)))
    assert data.image_shape == (3, 5, 4)
    assert (data.train_x[:, 0] == data.train_x[:, 2]).all()


def _error(path, **kwargs):
    with pytest.raises(VaelabError) as info:
        load_dataset(str(path), **kwargs)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    return message


def test_missing_images_array(tmp_path):
    assert "'images'" in _error(_save(tmp_path, pictures=GRAY))


def test_label_count_mismatch(tmp_path):
    images = np.zeros((100, 4, 4), np.uint8)
    assert "has 100 images but 99 labels" in _error(
        _save(tmp_path, images=images, labels=np.zeros(99, int))
    )


def test_object_array_refused(tmp_path):
    objects = np.empty(3, dtype=object)
    objects[:] = [np.zeros((2, 2)), "x", None]
    assert "objects" in _error(_save(tmp_path, images=objects))


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"images": np.zeros((3, 4))}, "shape"),
        ({"images": np.zeros((3, 2, 4, 4))}, "shape"),  # 2 channels
        ({"images": np.zeros((0, 4, 4))}, "no images"),
        ({"images": np.full((3, 4, 4), np.nan)}, "NaN"),
        ({"images": np.full((3, 4, 4), -1.0)}, "negative"),
        ({"images": np.full((3, 4, 4), 300.0)}, "300"),
        ({"images": np.full((3, 4, 4), 256, np.int32)}, "0..255"),
        ({"images": np.zeros((3, 4, 4), np.complex64)}, "complex"),
        ({"images": np.zeros((3, 4, 4)), "labels": np.zeros(3)}, "integer"),
        ({"images": np.zeros((3, 4, 4)), "labels": np.zeros((3, 1), int)}, "1-D"),
        ({"images": np.zeros((3, 4, 4)), "labels": -np.ones(3, int)}, "-1"),
        ({"images": np.zeros((3, 4, 4)), "x": np.zeros((3, 4, 4))}, "both"),
        ({"images": np.zeros((3, 4, 4)), "test_labels": np.zeros(3, int)}, "test_images"),
        ({"images": np.zeros((3, 4, 4)), "test_images": np.zeros((2, 5, 5))}, "--resize"),
        (
            {
                "images": np.zeros((3, 4, 4)),
                "labels": np.zeros(3, int),
                "test_images": np.zeros((2, 4, 4)),
            },
            "labels",
        ),
        (
            {"images": np.zeros((3, 4, 4)), "labels": np.arange(3), "class_names": np.array(["a"])},
            "class name",
        ),
    ],
)
def test_bad_arrays(tmp_path, arrays, words):
    assert words in _error(_save(tmp_path, **arrays))


def test_mismatched_test_sizes_fixed_by_resize(tmp_path):
    path = _save(tmp_path, images=np.zeros((3, 4, 4)), test_images=np.zeros((2, 5, 5)))
    assert load_dataset(str(path), resize=(6, 6)).image_shape == (1, 6, 6)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x93NUMPY\x01\x00", b"hello"])
def test_not_an_archive(tmp_path, content):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    _error(path)


def test_single_npy_saved_as_npz(tmp_path):
    path = tmp_path / "data.npz"
    with open(path, "wb") as f:
        np.save(f, GRAY)
    assert ".npy" in _error(path)
