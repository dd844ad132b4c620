"""Property: for ANY input file, load_dataset returns a valid ImageData or raises VaelabError.

Inputs are valid IDX / npz / image files, optionally mutated byte-wise (set, truncate,
insert, delete; biased to the headers, where parsers decide sizes), plus plain random bytes.
benchmarks/fuzz_loaders.py imports this module and runs the same checks for longer.
"""

import gzip
import io
import struct
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaelab.data import ImageData, folder, load_dataset
from vaelab.errors import VaelabError

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A case: (files to write, relative path to load, keyword options for load_dataset).
Case = tuple[dict[str, bytes], str, dict]


def check_case(case: Case) -> str:
    """Write the case's files to a fresh folder and load; return "ok" or "error".

    Anything but a valid ImageData or a one-line VaelabError fails the property.
    """
    files, target, options = case
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped-file and Pillow warnings are allowed
        root = Path(tmp)
        for name, blob in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(blob)
        # A mutated header can declare a huge image; keep the pixel cap small so the
        # fuzzer spends its time on parsing, not on decoding megapixels.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(folder, "MAX_PIXELS", 1 << 20)
            try:
                data = load_dataset(str(root / target), **options)
            except VaelabError as err:
                assert str(err) and "\n" not in str(err), repr(str(err))
                return "error"
    assert_valid(data)
    return "ok"


def assert_valid(data: ImageData) -> None:
    """The ImageData contract, checked directly."""
    assert isinstance(data, ImageData)
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert x.dtype.is_floating_point is False and str(x.dtype) == "torch.uint8"
        assert x.dim() == 4 and x.shape[1] in (1, 3) and x.shape[0] > 0 and x.is_contiguous()
        assert x.shape[1:] == data.train_x.shape[1:]
        if y is not None:
            assert str(y.dtype) == "torch.int64" and y.shape == x.shape[:1]
            assert int(y.min()) >= 0 and int(y.max()) < data.num_classes


@st.composite
def mutated(draw, blob: bytes) -> bytes:
    out = bytearray(blob)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        if not out:
            break
        reach = draw(st.sampled_from([min(len(out), 40), len(out)]))
        pos = draw(st.integers(0, reach - 1))
        kind = draw(st.sampled_from(["set", "set", "truncate", "insert", "delete"]))
        if kind == "set":
            out[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del out[pos : pos + draw(st.integers(1, 8))]
    return bytes(out)


def _rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


_IDX_SIZES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


@st.composite
def idx_file(draw, ndim: int, count: int | None = None) -> bytes:
    """An IDX file, usually uint8 of ``ndim`` dims (the first ``count`` when given), maybe
    gzipped, maybe mutated."""
    code = draw(st.sampled_from([0x08] * 6 + [0x09, 0x0B, 0x0C, 0x0D, 0x0E]))
    ndim = draw(st.sampled_from([ndim] * 4 + [1, 2, 4]))
    dims = draw(
        st.lists(st.sampled_from([1, 2, 3, 4, 5, 6] * 3 + [0]), min_size=ndim, max_size=ndim)
    )
    if count is not None and draw(st.integers(0, 3)):
        dims[0] = count
    count = int(np.prod(dims)) * _IDX_SIZES[code]
    raw = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims) + _rng(draw).bytes(count)
    blob = draw(mutated(raw))
    if draw(st.booleans()):
        blob = gzip.compress(blob, mtime=0)
        if draw(st.booleans()):
            blob = draw(mutated(blob))
    return blob


@st.composite
def idx_cases(draw) -> Case:
    if draw(st.integers(0, 9)) == 0:
        return {"x-images-idx3-ubyte": draw(st.binary(max_size=64))}, "x-images-idx3-ubyte", {}
    gz = ".gz" if draw(st.booleans()) else ""
    files = {}
    for prefix in draw(st.sampled_from([["train"], ["train", "t10k"], ["a"], ["train", "b"]])):
        n = draw(st.integers(2, 6))
        files[f"{prefix}-images-idx3-ubyte{gz}"] = draw(idx_file(3, n))
        if draw(st.booleans()):
            files[f"{prefix}-labels-idx1-ubyte{gz}"] = draw(idx_file(1, n))
    target = draw(st.sampled_from([".", next(iter(files))]))
    return files, target, {"resize": draw(st.sampled_from([None, (3, 4)]))}


# dtype -> value scale that makes it a valid image array
_NPZ_VALID = {"uint8": 255.0, "float32": 1.0, "float64": 255.0, "bool": 1.0, "int64": 255.0}
# One defect each; a case carries at most one, so that the valid path stays reachable.
_NPZ_DEFECTS = [
    *["none"] * 8, "rank", "channels", "empty", "nan", "negative", "too_big",
    "complex", "strings", "labels_short", "labels_float", "names_short", "objects",
    "alias_clash", "test_labels_only", "test_size",
]  # fmt: skip


def _array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, scale: float):
    if dtype == "bool":
        return rng.random(shape) > 0.5
    values = rng.random(shape) * scale
    if dtype[0] in "fc":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


@st.composite
def npz_cases(draw) -> Case:
    if draw(st.integers(0, 9)) == 0:
        return {"data.npz": draw(st.binary(max_size=300))}, "data.npz", {}
    rng = _rng(draw)
    n, h, w = draw(st.integers(2, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    c = draw(st.sampled_from([1, 3]))
    shape = draw(st.sampled_from([(n, h, w), (n, h, w, c), (n, c, h, w)]))
    dtype = draw(st.sampled_from(sorted(_NPZ_VALID)))
    defect = draw(st.sampled_from(_NPZ_DEFECTS))
    shape = {
        "rank": shape[:2], "channels": (n, 2, h, w), "empty": (0, *shape[1:]),
    }.get(defect, shape)  # fmt: skip
    dtype = {"complex": "complex64", "nan": "float32", "negative": "float32"}.get(defect, dtype)
    scale = {"nan": np.nan, "negative": -5.0, "too_big": 300.0}.get(
        defect, _NPZ_VALID.get(dtype, 255.0)
    )
    images = np.full(shape, "ab") if defect == "strings" else _array(rng, shape, dtype, scale)
    if defect == "objects":
        images = np.array([None, 1], dtype=object)  # savez pickles it; load must refuse
    arrays = {draw(st.sampled_from(["images", "x"])): images}
    if defect == "alias_clash":
        arrays["images" if "x" in arrays else "x"] = images
    top = draw(st.integers(1, 4))
    labelled = draw(st.booleans())
    if labelled or defect in ("labels_short", "labels_float"):
        length = n - 1 if defect == "labels_short" else n
        arrays["labels"] = _array(
            rng, (length,), "float32" if defect == "labels_float" else "int64", top
        )
    if draw(st.booleans()) or defect in ("test_labels_only", "test_size"):
        size = (h + 1, w) if defect == "test_size" else (h, w)
        if defect != "test_labels_only":
            arrays["test_images"] = _array(rng, (2, *size), "uint8", 255.0)
        if labelled or defect == "test_labels_only":
            arrays["test_labels"] = _array(rng, (2,), "int64", top)
    if draw(st.booleans()) or defect == "names_short":
        names = ["a", "b", "c", "d", "e"]
        arrays["class_names"] = np.array(names[:1] if defect == "names_short" else names)
    buffer = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **arrays)
    return {"data.npz": draw(mutated(buffer.getvalue()))}, "data.npz", {}


_FORMATS = {  # Pillow format -> (extension, modes it can save)
    "PNG": (".png", ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"]),
    "JPEG": (".jpg", ["L", "RGB"]),
    "BMP": (".bmp", ["1", "L", "P", "RGB"]),
    "GIF": (".gif", ["L", "P"]),
    "WEBP": (".webp", ["RGB", "RGBA"]),
}


@st.composite
def image_file(draw, size: tuple[int, int]) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(sorted(_FORMATS)))
    ext, modes = _FORMATS[fmt]
    pixels = _rng(draw).integers(0, 256, (*size, 3), dtype=np.uint8)
    if draw(st.booleans()):
        pixels[:] = pixels[..., :1]  # gray content stored in a colour mode
    image = Image.fromarray(pixels).convert(draw(st.sampled_from(modes)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    blob = buffer.getvalue()
    return ext, draw(mutated(blob)) if draw(st.integers(0, 2)) == 0 else blob


@st.composite
def folder_cases(draw) -> Case:
    same = draw(st.booleans())
    classes = draw(st.sampled_from([[""], ["a"], ["a", "b"]]))
    files = {}
    for label in classes:
        for i in range(draw(st.integers(1, 3))):
            size = (4, 5) if same else (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
            ext, blob = draw(image_file(size))
            files[f"{label}/{i}{ext}" if label else f"{i}{ext}"] = blob
    if draw(st.integers(0, 4)) == 0:
        files["notes.txt"] = b"not an image"
    if draw(st.integers(0, 9)) == 0:
        files[f"noise{draw(st.sampled_from(['.png', '.jpg', '.gif']))}"] = draw(
            st.binary(max_size=64)
        )
    options = {
        "resize": draw(st.sampled_from([None, None, (4, 4)])),
        "channels": draw(st.sampled_from([None, 1, 3])),
    }
    return files, ".", options


def fuzz(
    strategy: st.SearchStrategy, config: settings = SETTINGS, outcomes: Counter | None = None
) -> Counter:
    """Run check_case on every case ``strategy`` generates; return the outcome counts.

    Pass ``outcomes`` to keep the counts when a failing case makes this raise.
    """
    outcomes = Counter() if outcomes is None else outcomes

    @config
    @given(strategy)
    def run(case: Case) -> None:
        outcomes["tried"] += 1
        outcomes[check_case(case)] += 1

    run()
    return outcomes


STRATEGIES = {"idx": idx_cases(), "npz": npz_cases(), "folder": folder_cases()}


@pytest.mark.parametrize("loader", sorted(STRATEGIES))
def test_fuzz_loader(loader):
    outcomes = fuzz(STRATEGIES[loader])
    # A fuzzer that only ever reaches errors (or only successes) would test little.
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 5, dict(outcomes)
