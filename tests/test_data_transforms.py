"""Option parsing and the shared transforms: --resize, channels, the seeded split."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data import ImageData, load_dataset, parse_resize
from vaelab.data.transforms import resize_images, split_indices, to_channels
from vaelab.errors import VaelabError


@pytest.mark.parametrize(
    ("text", "size"), [("32", (32, 32)), ("32x48", (32, 48)), (" 7 X 9 ", (7, 9)), ("1", (1, 1))]
)
def test_parse_resize(text, size):
    assert parse_resize(text) == size


@pytest.mark.parametrize("text", ["", "x", "32x", "0", "3x0", "-3", "2.5", "32x32x3", "99999", "a"])
def test_parse_resize_rejects(text):
    with pytest.raises(VaelabError, match="--resize"):
        parse_resize(text)


@pytest.mark.parametrize(
    ("option", "value", "flag"),
    [
        ("test_fraction", 0.0, "--test-fraction"),
        ("test_fraction", 1.0, "--test-fraction"),
        ("test_fraction", math.nan, "--test-fraction"),
        ("test_fraction", "0.1", "--test-fraction"),
        ("channels", 2, "--channels"),
        ("channels", True, "--channels"),
        ("resize", (0, 5), "--resize"),
        ("resize", (5,), "--resize"),
        ("resize", (5.0, 5.0), "--resize"),
        ("seed", -1, "--seed"),
        ("seed", 1.5, "--seed"),
    ],
)
def test_bad_options_name_the_flag(option, value, flag):
    with pytest.raises(VaelabError, match=flag):
        load_dataset("digits", **{option: value})


def _random_rgb(n=5, h=9, w=7):
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, h, w), np.uint8))


def test_to_gray_matches_pillow():
    x = _random_rgb()
    gray = to_channels(x, 1)
    for image, ours in zip(x, gray, strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).convert("L")
        np.testing.assert_array_equal(ours[0].numpy(), np.asarray(pil))


def test_to_rgb_repeats_and_is_contiguous():
    gray = to_channels(_random_rgb(), 1)
    rgb = to_channels(gray, 3)
    assert rgb.is_contiguous() and rgb.shape[1] == 3
    assert all(torch.equal(rgb[:, c], gray[:, 0]) for c in range(3))


@pytest.mark.parametrize("size", [(4, 3), (20, 11)])
def test_resize_close_to_pillow_antialiased(size):
    x = _random_rgb(n=2, h=16, w=12)
    ours = resize_images(x, size)
    assert ours.shape == (2, 3, *size) and ours.dtype == torch.uint8
    for image, resized in zip(x, ours, strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize(
            (size[1], size[0]), Image.Resampling.BILINEAR
        )
        diff = np.abs(resized.permute(1, 2, 0).numpy().astype(int) - np.asarray(pil).astype(int))
        assert diff.max() <= 1  # rounding differs in the last bit only


def test_split_is_a_seeded_partition():
    train, test = split_indices(50, 0.2, seed=3, source="x")
    again = split_indices(50, 0.2, seed=3, source="x")
    other = split_indices(50, 0.2, seed=4, source="x")
    assert len(test) == 10 and torch.equal(test, again[1]) and not torch.equal(test, other[1])
    assert sorted(torch.cat([train, test]).tolist()) == list(range(50))


def test_split_keeps_both_sides_non_empty():
    assert [len(p) for p in split_indices(3, 0.01, 0, "x")] == [2, 1]
    assert [len(p) for p in split_indices(3, 0.99, 0, "x")] == [1, 2]
    with pytest.raises(VaelabError, match="at least 2"):
        split_indices(1, 0.5, 0, "one.npz")


def test_image_data_rejects_inconsistent_parts():
    x = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError):
        ImageData("bad", x, None, torch.zeros((2, 3, 4, 4), dtype=torch.uint8), None, None)
    with pytest.raises(ValueError):
        ImageData("bad", x.float(), None, x, None, None)
    data = ImageData("ok", x, torch.tensor([0, 4]), x, torch.tensor([1, 1]), None)
    assert data.num_classes == 5 and data.image_shape == (1, 4, 4)
