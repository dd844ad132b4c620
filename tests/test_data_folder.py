"""Folders of images: layouts, colour detection, resizing and every refusal."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data import folder as folder_module
from vaelab.data import load_dataset
from vaelab.errors import VaelabError


def _gray(value, size=(6, 5)):
    """A (H, W) = size gray image whose pixels are all ``value``."""
    return Image.fromarray(np.full(size, value, np.uint8), "L")


def _save(img, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _classes(root, counts=(("cat", 3), ("dog", 2)), size=(6, 5)):
    for index, (name, n) in enumerate(counts):
        for i in range(n):
            _save(_gray(40 * index + i, size), root / name / f"{i}.png")
    return root


def _all(data):
    return torch.cat([data.train_x, data.test_x]), torch.cat([data.train_y, data.test_y])


def _error(root, *words, **kwargs):
    with pytest.raises(VaelabError) as info:
        load_dataset(str(root), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


def test_class_subfolders_give_labels_and_names(tmp_path):
    data = load_dataset(str(_classes(tmp_path)), test_fraction=0.4)
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    x, y = _all(data)
    assert x.shape == (5, 1, 6, 5) and x.dtype == torch.uint8
    # Pixel value encodes the class: 0..2 for cat, 40..41 for dog.
    assert ((x[:, 0, 0, 0] >= 40) == (y == 1)).all()
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1]


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(4):
        _save(_gray(i), tmp_path / f"img{i}.PNG")  # extension case does not matter
    data = load_dataset(str(tmp_path), test_fraction=0.25)
    assert data.train_y is None and data.class_names is None and data.num_classes is None
    assert len(data.train_x) == 3 and len(data.test_x) == 1


def test_rgb_detected_and_gray_lookalikes_kept_gray(tmp_path):
    _save(_gray(9).convert("RGB"), tmp_path / "gray_as_rgb.png")
    _save(_gray(9).convert("RGBA"), tmp_path / "gray_as_rgba.png")
    assert load_dataset(str(tmp_path), test_fraction=0.5).image_shape == (1, 6, 5)
    color = np.zeros((6, 5, 3), np.uint8)
    color[..., 0] = 200
    _save(Image.fromarray(color), tmp_path / "red.bmp")
    data = load_dataset(str(tmp_path))
    x = torch.cat([data.train_x, data.test_x])
    assert x.shape[1:] == (3, 6, 5)
    # The gray images were repeated, the red one kept its colour.
    assert sorted(x[:, :, 0, 0].tolist()) == [[9, 9, 9], [9, 9, 9], [200, 0, 0]]


def test_other_formats_and_modes(tmp_path):
    _save(_gray(100).convert("P"), tmp_path / "a.gif")
    _save(_gray(100), tmp_path / "b.jpg", quality=100)
    _save(_gray(100).convert("RGB"), tmp_path / "c.webp", lossless=True)
    _save(Image.fromarray(np.full((6, 5), 100 * 257, np.uint16)), tmp_path / "d.png")  # 16-bit
    _save(_gray(255).convert("1"), tmp_path / "e.png")
    data = load_dataset(str(tmp_path), test_fraction=0.2)
    x = torch.cat([data.train_x, data.test_x])
    assert x.shape == (5, 1, 6, 5)
    assert sorted(int(v) for v in x[:, 0, 0, 0]) == [100, 100, 100, 100, 255]


def test_resize_and_channels(tmp_path):
    _classes(tmp_path, size=(8, 8))
    _save(_gray(7, size=(16, 12)), tmp_path / "cat" / "big.png")
    data = load_dataset(str(tmp_path), resize=(4, 6), channels=3)
    assert data.image_shape == (3, 4, 6)
    x, _ = _all(data)
    assert (x[:, 0] == x[:, 1]).all()
    # A constant image stays constant through antialiased resizing.
    assert set(x.flatten().tolist()) == {0, 1, 2, 7, 40, 41}


def test_mixed_sizes_without_resize(tmp_path):
    _classes(tmp_path)
    _save(_gray(1, size=(9, 9)), tmp_path / "dog" / "odd.png")
    message = _error(tmp_path, "--resize", "6x5", "9x9")
    assert "0.png" in message and "odd.png" in message


def test_empty_folder(tmp_path):
    _error(tmp_path, str(tmp_path), "no images")


def test_class_folder_without_images(tmp_path):
    _classes(tmp_path)
    (tmp_path / "empty").mkdir()
    _error(tmp_path, "empty", "no images")


def test_images_at_both_levels_refused(tmp_path):
    _classes(tmp_path)
    _save(_gray(1), tmp_path / "stray.png")
    _error(tmp_path, "one layout")


def test_corrupt_png_named(tmp_path):
    _classes(tmp_path)
    good = (tmp_path / "dog" / "1.png").read_bytes()
    (tmp_path / "dog" / "broken.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "dog" / "text.jpg").write_bytes(b"not an image at all")
    _error(tmp_path, "broken.png", "cannot read image")
    (tmp_path / "dog" / "broken.png").unlink()
    _error(tmp_path, "text.jpg", "cannot read image")


def test_symlink_escaping_folder_refused(tmp_path):
    outside = _save(_gray(3), tmp_path / "outside" / "secret.png")
    root = _classes(tmp_path / "root")
    os.symlink(outside, root / "cat" / "link.png")
    _error(root, "link.png", "outside")
    os.unlink(root / "cat" / "link.png")
    os.symlink(tmp_path / "outside", root / "linked_class")
    _error(root, "linked_class", "outside")


def test_symlink_inside_folder_allowed(tmp_path):
    _classes(tmp_path)
    os.symlink(tmp_path / "cat" / "0.png", tmp_path / "dog" / "alias.png")
    assert len(_all(load_dataset(str(tmp_path)))[0]) == 6


def test_non_image_files_skipped_with_one_warning(tmp_path):
    _classes(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("hi")
    (tmp_path / "README").write_text("hi")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(tmp_path))
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(messages) == 1 and "2 entries" in messages[0]
    assert len(_all(data)[0]) == 5


def test_decompression_bomb_own_cap(tmp_path, monkeypatch):
    _classes(tmp_path)
    monkeypatch.setattr(folder_module, "MAX_PIXELS", 29)  # images are 6x5 = 30 pixels
    _error(tmp_path, "0.png", "too large", "decompression bomb")


def test_decompression_bomb_pillow_limit(tmp_path, monkeypatch):
    # Pillow's own check (a warning above its limit) must end as a VaelabError too.
    _classes(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    _error(tmp_path, "0.png", "too large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # over twice the limit: an exception
    _error(tmp_path, "0.png", "too large")


def test_listing_is_sorted_and_deterministic(tmp_path):
    for name in ("b.png", "a.png", "c.png", "A.png"):
        _save(_gray(ord(name[0])), tmp_path / name)
    first = load_dataset(str(tmp_path), test_fraction=0.25, seed=5)
    second = load_dataset(str(tmp_path), test_fraction=0.25, seed=5)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_x, second.test_x)
