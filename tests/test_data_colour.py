"""Colour data: emoji rendered from the Noto font, CIFAR-10 binaries, --center-crop.

References: the colours of well-known emoji (a yellow face, a red apple, France's flag),
the CIFAR-10 binary layout as its readme states it (label byte, then R, G, B planes,
row-major), and hand-built pixel grids for the crop. Nothing reaches the network.
"""

import io
import tarfile
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from vaelab.cli import main
from vaelab.data import cifar, emoji, load_dataset
from vaelab.errors import VaelabError

needs_font = pytest.mark.skipif(
    not emoji.FONT_PATH.is_file(), reason="apt-get install fonts-noto-color-emoji"
)
PLAIN_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
FACE, APPLE, FRANCE = "\U0001f600", "\U0001f34e", "\U0001f1eb\U0001f1f7"
THUMBS = ["\U0001f44d", *(f"\U0001f44d{chr(0x1F3FB + i)}" for i in range(5))]


def _train(args, tmp_path, capsys):
    code = main(["train", *args, "--out", str(tmp_path / "out"), "--progress", "false"])
    return code, capsys.readouterr().err.strip()


@needs_font
def test_rendered_emoji_have_their_colours_on_white():
    x, y, kept = emoji.render(emoji.FONT_PATH, (32, 32), [FACE, APPLE, FRANCE])
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.uint8 and kept == [FACE, APPLE, FRANCE]
    face, apple, flag = x.astype(int)
    r, g, b = np.median(face[:, 12:20, 12:20].reshape(3, -1), axis=1)
    assert r > 200 and g > 150 and b < 120, (r, g, b)  # yellow, so RGB is not BGR
    assert (face[:, 0, 0] == 255).all()  # a round face leaves white corners
    red = (apple[0] > 150) & (apple[1] < 100) & (apple[2] < 100)
    assert red.mean() > 0.25
    rows = flag[:, 12:20]  # mid-height band of the tricolour: blue, white, red
    left, right = rows[:, :, 2:8].mean((1, 2)), rows[:, :, 24:30].mean((1, 2))
    assert left[2] > left[0] + 60 and right[0] > right[2] + 60, (left, right)
    assert list(y) == [emoji.EMOJI_CLASSES.index(n) for n in ("Emoticons", "Pictographs", "Flags")]


def test_split_keeps_skin_tone_variants_together_and_is_fixed():
    texts = [*THUMBS, *(chr(0x1F600 + i) for i in range(60))]
    mask = emoji.test_mask(texts)
    assert len(set(mask[: len(THUMBS)])) == 1  # all six thumbs on one side
    assert 3 <= mask.sum() <= 12  # ~10% of 61 emoji
    assert (emoji.test_mask(list(reversed(texts))) == mask[::-1]).all()  # not order-bound


@needs_font
def test_builtin_emoji_renders_once_then_reads_the_cache(tmp_path, monkeypatch):
    subset = [*THUMBS, *(chr(0x1F600 + i) for i in range(40)), APPLE, FRANCE]
    monkeypatch.setattr(emoji, "emoji_sequences", lambda path: subset)
    data = load_dataset("emoji", cache_dir=tmp_path)
    n = len(data.train_x) + len(data.test_x)
    assert n == len(subset) and data.image_shape == (3, 32, 32)
    assert data.class_names == emoji.EMOJI_CLASSES and data.train_y is not None
    assert len(list((tmp_path / "emoji").glob("emoji-*.npz"))) == 1

    def no_render(*args):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(emoji, "render", no_render)
    again = load_dataset("emoji", cache_dir=tmp_path, seed=7, test_fraction=0.5)
    assert torch.equal(again.test_x, data.test_x)  # fixed split, whatever --seed says
    monkeypatch.undo()
    monkeypatch.setattr(emoji, "emoji_sequences", lambda path: subset)
    small = load_dataset("emoji", cache_dir=tmp_path, resize=(16, 24))  # rendered at size
    assert small.image_shape == (3, 16, 24)


@pytest.mark.parametrize(
    ("font", "expected"),
    [
        ("missing.ttf", "apt-get install fonts-noto-color-emoji"),
        ("notafont.ttf", "not a readable font"),
        (str(PLAIN_FONT), "no colour glyphs"),
    ],
)
def test_bad_emoji_font_is_one_line(font, expected, tmp_path, capsys, monkeypatch):
    (tmp_path / "notafont.ttf").write_text("hello")
    path = font if font.startswith("/") else str(tmp_path / font)
    monkeypatch.setenv("VAELAB_EMOJI_FONT", path)
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    code, err = _train(["--dataset", "emoji"], tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert expected in err and Path(path).name in err, err
    assert not (tmp_path / "out").exists()


def _record(label: int, red: int, marker: int) -> bytes:
    """One record as CIFAR-10's readme lays it out: the label, then the red, green and blue
    planes of 1024 bytes each, row-major; red pixel (row 0, column 1) is ``marker``."""
    planes = np.stack([np.full((32, 32), v, np.uint8) for v in (red, 100, 50)])
    planes[0, 0, 1] = marker
    return bytes([label]) + planes.tobytes()


def _cifar_folder(root: Path, per_file: int = 3) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i, name in enumerate([*cifar.TRAIN_FILES, cifar.TEST_FILE]):
        recs = [_record((i + k) % 10, 10 * i + k, 7) for k in range(per_file)]
        (folder / name).write_bytes(b"".join(recs))
    return folder


def test_cifar_folder_is_recognised_with_labels_and_planes(tmp_path):
    data = load_dataset(_cifar_folder(tmp_path))
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    assert data.class_names[:3] == ("airplane", "automobile", "bird")
    assert data.train_y.tolist() == [(i + k) % 10 for i in range(5) for k in range(3)]
    assert data.test_y.tolist() == [5, 6, 7]
    first = data.train_x[4]  # data_batch_2, record 1: red 11
    assert first[0, 0, 1] == 7 and first[0, 1, 0] == 11  # row-major: (0, 1) is the marker
    assert first[1].unique().tolist() == [100] and first[2].unique().tolist() == [50]
    one = load_dataset(_cifar_folder(tmp_path / "b") / "test_batch.bin", test_fraction=0.34)
    assert len(one.train_x) + len(one.test_x) == 3


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", ["test_batch.bin", "3073-byte"]),
        ("cifar100", ["test_batch.bin", "3074-byte"]),
        ("missing", ["data_batch_3.bin", "data_batch_1.bin .. data_batch_5.bin"]),
        ("label", ["data_batch_1.bin", "label 12"]),
        ("empty", ["test_batch.bin", "empty"]),
    ],
)
def test_bad_cifar_input_is_one_line(damage, expected, tmp_path, capsys):
    folder = _cifar_folder(tmp_path)
    test_file = folder / cifar.TEST_FILE
    if damage == "truncate":
        test_file.write_bytes(test_file.read_bytes()[:-100])
    elif damage == "cifar100":  # coarse + fine label bytes
        test_file.write_bytes(b"".join(b"\1" + _record(2, 0, 0) for _ in range(2)))
    elif damage == "missing":
        (folder / "data_batch_3.bin").unlink()
    elif damage == "label":
        (folder / "data_batch_1.bin").write_bytes(_record(12, 0, 0))
    else:
        test_file.write_bytes(b"")
    code, err = _train(["--dataset", str(folder)], tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert all(e in err for e in expected), err


def test_cifar10_builtin_extracts_the_archive_without_network(tmp_path, monkeypatch):
    with pytest.raises(VaelabError, match="allow downloading"):
        load_dataset("cifar10", cache_dir=tmp_path, download=False)
    src = _cifar_folder(tmp_path / "src")
    calls = []

    def fake_download(url, dest, sha256):  # stands in for the sha256-checked download
        calls.append((url, sha256))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(src, arcname="cifar-10-batches-bin")
        dest.parent.mkdir(parents=True, exist_ok=True)  # as download() does
        dest.write_bytes(buf.getvalue())
        return dest

    monkeypatch.setattr(cifar, "download_file", fake_download)
    data = load_dataset("cifar10", cache_dir=tmp_path / "cache")
    assert calls == [(cifar.CIFAR10_URL, cifar.CIFAR10_SHA256)]
    assert data.name == "cifar10" and data.train_x.shape == (15, 3, 32, 32)
    load_dataset("cifar10", cache_dir=tmp_path / "cache")  # now from the extracted folder
    assert len(calls) == 1


def test_center_crop_then_resize(tmp_path):
    grid = np.arange(6 * 4, dtype=np.uint8).reshape(1, 6, 4) * 10  # (N, H, W), H=6 > W=4
    np.savez(tmp_path / "g.npz", images=np.repeat(grid, 2, axis=0))
    square = load_dataset(tmp_path / "g.npz", center_crop="square").train_x[0, 0]
    assert square.tolist() == (grid[0, 1:5] * 1).tolist()  # rows 1..4 of 0..5
    window = load_dataset(tmp_path / "g.npz", center_crop="2x2").train_x[0, 0]
    assert window.tolist() == grid[0, 2:4, 1:3].tolist()
    small = load_dataset(tmp_path / "g.npz", center_crop="square", resize=(2, 2)).train_x
    assert small.shape == (1, 1, 2, 2)
    # crop first: the 2x2 mean equals the cropped square's mean, not the whole image's
    assert abs(small.float().mean() - float(grid[0, 1:5].mean())) < 1.5


@pytest.mark.parametrize(("crop", "expected"), [("9x9", "larger than"), ("wide", "square")])
def test_bad_center_crop_is_one_line(crop, expected, tmp_path, capsys):
    np.savez(tmp_path / "g.npz", images=np.zeros((3, 6, 4), np.uint8))
    code, err = _train(["--dataset", str(tmp_path / "g.npz"), "--center-crop", crop], tmp_path,
                       capsys)  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1 and "--center-crop" in err, err
    assert expected in err, err


def test_folder_images_of_different_sizes_are_cropped_before_their_resize(tmp_path):
    """Each image has a white central square inside black margins (rows for the tall one,
    columns for the wide one): cropping first leaves pure white after any resize, while
    resizing first would mix the black margins in."""
    from PIL import Image

    tall = np.zeros((6, 4), np.uint8)
    tall[1:5] = 255
    wide = np.zeros((4, 8), np.uint8)
    wide[:, 2:6] = 255
    (tmp_path / "imgs").mkdir()
    Image.fromarray(tall).save(tmp_path / "imgs" / "a.png")
    Image.fromarray(wide).save(tmp_path / "imgs" / "b.png")
    data = load_dataset(tmp_path / "imgs", center_crop="square", resize=(3, 3))
    x = torch.cat([data.train_x, data.test_x])
    assert x.shape == (2, 1, 3, 3) and (x == 255).all(), x
