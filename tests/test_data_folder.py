"""Folders of images: layouts, colour detection, resizing and every refusal."""

import os
import struct
import warnings
import zlib

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


def _huge_png(path, width=100_000, height=100_000):
    """A PNG whose header claims ``width x height`` gray pixels (10 G here), with a tiny body:
    what a decompression bomb looks like before it is decoded."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_unreadable_and_huge_files_skipped_with_one_count(tmp_path):
    _classes(tmp_path)
    good = (tmp_path / "dog" / "1.png").read_bytes()
    (tmp_path / "dog" / "broken.png").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "dog" / "text.jpg").write_bytes(b"not an image at all")
    _huge_png(tmp_path / "cat" / "huge.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(tmp_path))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert "skipped 3 of 8 image files (1 too large, 2 unreadable)" in messages[0]
    x, y = _all(data)
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1]  # the five good images, labels kept
    assert ((x[:, 0, 0, 0] >= 40) == (y == 1)).all()


def test_nothing_readable_is_an_error(tmp_path):
    _huge_png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    _error(tmp_path, "none of its 2 image files", "1 too large, 1 unreadable")
    _classes(tmp_path / "c")
    for old in (tmp_path / "c" / "dog").iterdir():
        old.write_bytes(b"")  # every dog unreadable: that class is empty
    with pytest.warns(UserWarning, match="skipped 2 of 5 image files"):
        _error(tmp_path / "c", "dog", "no readable images")


def test_class_folders_take_images_at_any_depth(tmp_path, capsys):
    _save(_gray(1), tmp_path / "cat" / "0.png")
    _save(_gray(2), tmp_path / "cat" / "tabby" / "1.png")
    _save(_gray(3), tmp_path / "cat" / "tabby" / "old" / "2.png")
    _save(_gray(41), tmp_path / "dog" / "pug" / "0.png")
    _save(_gray(42), tmp_path / "dog" / "pug" / "1.png")
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "tabby" / "loop")  # read once, not forever
    data = load_dataset(str(tmp_path), test_fraction=0.4)
    assert data.class_names == ("cat", "dog")
    x, y = _all(data)
    assert sorted(zip(y.tolist(), x[:, 0, 0, 0].tolist(), strict=True)) == [
        (0, 1), (0, 2), (0, 3), (1, 41), (1, 42)
    ]  # fmt: skip
    assert "2 classes (images at any depth in each class folder): cat 3, dog 2" in (
        capsys.readouterr().err
    )


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
    _error(tmp_path, "0.png", "5 too large", "decompression bomb")


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


def _icon(path):
    """A 4x4 RGBA icon: transparent ground, one opaque dark pixel, one half-transparent red."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[1, 1] = (10, 10, 10, 255)
    rgba[2, 2] = (200, 50, 0, 128)
    return _save(Image.fromarray(rgba, "RGBA"), path)


@pytest.mark.parametrize(
    ("background", "ground"),
    [(None, (255, 255, 255)), ("black", (0, 0, 0)), ("10,20,30", (10, 20, 30))],
)
def test_transparent_pixels_laid_on_the_background(tmp_path, background, ground):
    for i in range(2):
        _icon(tmp_path / f"{i}.png")
    kwargs = {} if background is None else {"background": background}
    x = _all_x(load_dataset(str(tmp_path), **kwargs))[0].permute(1, 2, 0).int()
    assert x.shape == (4, 4, 3)
    assert x[0, 0].tolist() == list(ground)  # fully transparent: the background itself
    assert x[1, 1].tolist() == [10, 10, 10]  # opaque: the pixel itself
    # Half transparent: the "over" operator, a * pixel + (1 - a) * ground with a = 128/255,
    # in float64 here; Pillow rounds in integers, hence the 1-level tolerance.
    a = 128 / 255
    expected = [a * p + (1 - a) * g for p, g in zip((200, 50, 0), ground, strict=True)]
    assert np.allclose(x[2, 2].tolist(), expected, atol=1.0), (x[2, 2], expected)


def test_gray_alpha_and_palette_transparency(tmp_path):
    la = np.zeros((3, 3, 2), np.uint8)
    la[0, 0] = (50, 255)
    _save(Image.fromarray(la, "LA"), tmp_path / "la" / "0.png")
    _save(Image.fromarray(la, "LA"), tmp_path / "la" / "1.png")
    x = _all_x(load_dataset(str(tmp_path / "la")))
    assert x.shape[1] == 1  # gray on a white ground stays gray
    assert x[0, 0, 0, 0] == 50 and x[0, 0, 1, 1] == 255
    pal = Image.new("P", (3, 3), 1)
    pal.putpalette([0, 0, 0, 90, 90, 90] + [0] * 762)
    pal.putpixel((0, 0), 0)
    for i in range(2):
        _save(pal, tmp_path / "p" / f"{i}.png", transparency=1)  # index 1 is transparent
    x = _all_x(load_dataset(str(tmp_path / "p"), background="black"))
    assert x[0, 0].tolist() == [[0, 0, 0]] * 3  # index 0 black, the rest transparent on black
    x = _all_x(load_dataset(str(tmp_path / "p")))
    assert x[0, 0, 0].tolist() == [0, 255, 255]


@pytest.mark.parametrize("bad", ["purple", "1,2", "0,0,256", "whte"])
def test_bad_background_named(tmp_path, bad):
    _icon(tmp_path / "0.png")
    _icon(tmp_path / "1.png")
    message = _error(tmp_path, "--background", background=bad)
    assert ("did you mean 'white'" in message) == (bad == "whte")


def _all_x(data):
    return torch.cat([data.train_x, data.test_x])
