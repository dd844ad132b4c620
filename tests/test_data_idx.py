"""IDX files and directories: format, round trips, and one clear error per defect."""

import gzip
import struct

import numpy as np
import pytest
import torch

from vaelab.data import load_dataset, read_idx, write_idx
from vaelab.errors import VaelabError


def _images(n=12, h=5, w=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)


def test_reads_hand_built_bytes_big_endian(tmp_path):
    # Pins the format independently of write_idx: magic, big-endian dims, big-endian int16 data.
    data = (
        bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 2, 3) + struct.pack(">6h", 1, -2, 3, 256, 5, -6)
    )
    path = tmp_path / "small.idx"
    path.write_bytes(data)
    arr = read_idx(path)
    assert arr.dtype == np.int16 and arr.dtype.isnative
    assert arr.tolist() == [[1, -2, 3], [256, 5, -6]]


@pytest.mark.parametrize("name", ["x-images-idx3-ubyte", "x-images-idx3-ubyte.gz"])
def test_round_trip_raw_and_gz(tmp_path, name):
    arr = _images()
    write_idx(tmp_path / name, arr)
    if name.endswith(".gz"):
        assert (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = _images()
    (tmp_path / "plain-name").write_bytes(gzip.compress(_raw_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-name"), arr)


def _raw_bytes(arr):
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _expect_error(path, *words):
    with pytest.raises(VaelabError) as info:
        read_idx(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    for word in words:
        assert word in message
    return message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "absent-images-idx3-ubyte", "no such file")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    data = _raw_bytes(_images())[:-7]
    path = tmp_path / ("t.gz" if gz else "t.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    _expect_error(path, "truncated")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "t.idx"
    path.write_bytes(_raw_bytes(_images()) + b"\0")
    _expect_error(path, "trailing")


def test_truncated_header(tmp_path):
    path = tmp_path / "t.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + b"\0\0\0\x05")
    _expect_error(path, "header")


@pytest.mark.parametrize(
    "content", [b"\x01\x00\x08\x03" + bytes(40), b"PK\x03\x04" + bytes(40), b"", b"\x00\x00"]
)
def test_wrong_magic(tmp_path, content):
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    _expect_error(path, "not an IDX file")


def test_bad_dtype_code(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 1) + b"\0")
    _expect_error(path, "0x0a")


def test_corrupt_gzip(tmp_path):
    blob = bytearray(gzip.compress(_raw_bytes(_images(n=50))))
    blob[len(blob) // 2] ^= 0xFF
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(blob))
    _expect_error(path, "gzip")


def test_lying_header_does_not_allocate(tmp_path):
    # 4G x 4G x 4G items: must be refused from the file size, not by trying to allocate.
    path = tmp_path / "huge.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1))
    _expect_error(path, "truncated")
    path.write_bytes(gzip.compress(path.read_bytes()))
    _expect_error(path, "truncated")


def _mnist_dir(tmp_path, n_train=20, n_test=6, gz=True):
    suffix = ".gz" if gz else ""
    rng = np.random.default_rng(1)
    parts = {"train": n_train, "t10k": n_test}
    for prefix, n in parts.items():
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", _images(n, 6, 6, seed=n))
        write_idx(
            tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 3, n).astype(np.uint8)
        )
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_uses_t10k_as_test_split(tmp_path, gz):
    data = load_dataset(str(_mnist_dir(tmp_path, gz=gz)))
    assert data.train_x.shape == (20, 1, 6, 6) and data.test_x.shape == (6, 1, 6, 6)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    np.testing.assert_array_equal(data.train_x[:, 0].numpy(), _images(20, 6, 6, seed=20))
    assert data.class_names is None and data.num_classes == 3


def test_idx_directory_without_test_files_splits(tmp_path):
    _mnist_dir(tmp_path)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).unlink()
    data = load_dataset(str(tmp_path), test_fraction=0.25, seed=3)
    assert len(data.train_x) == 15 and len(data.test_x) == 5


def test_idx_directory_accepts_any_prefix(tmp_path):
    write_idx(tmp_path / "emnist-images-idx3-ubyte", _images(10))
    data = load_dataset(str(tmp_path), test_fraction=0.2)
    assert data.train_y is None and len(data.train_x) == 8 and len(data.test_x) == 2


def test_idx_directory_count_mismatch_names_files(tmp_path):
    _mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(VaelabError, match=r"train-images-idx3-ubyte\.gz has 20 images") as info:
        load_dataset(str(tmp_path))
    assert "train-labels-idx1-ubyte.gz has 19 labels" in str(info.value)


def test_idx_directory_labels_on_one_split_only(tmp_path):
    _mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(VaelabError, match="labels"):
        load_dataset(str(tmp_path))


def test_idx_directory_two_training_sets_refused(tmp_path):
    _mnist_dir(tmp_path)
    write_idx(tmp_path / "extra-images-idx3-ubyte", _images(3))
    with pytest.raises(VaelabError, match="extra-images-idx3-ubyte"):
        load_dataset(str(tmp_path))


def test_single_idx_file_finds_its_labels(tmp_path):
    _mnist_dir(tmp_path)
    data = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"), test_fraction=0.5)
    assert len(data.train_x) == 10 and data.train_y is not None


def test_labels_file_given_as_images(tmp_path):
    _mnist_dir(tmp_path)
    with pytest.raises(VaelabError, match="1-D"):
        load_dataset(str(tmp_path / "train-labels-idx1-ubyte.gz"))


def test_float_idx_images_are_scaled(tmp_path):
    arr = np.linspace(0, 1, 2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    write_idx(tmp_path / "f.idx", arr)
    data = load_dataset(str(tmp_path / "f.idx"), test_fraction=0.5)
    both = torch.cat([data.train_x, data.test_x]).flatten()
    assert both.max() == 255 and both.min() == 0
