"""MNIST-style IDX files, raw or gzipped, and directories of them.

IDX layout: magic ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes,
then exactly ``prod(sizes)`` big-endian items. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaelab.data.arrays import as_images, as_labels, one_line
from vaelab.data.imagedata import ImageData, LoadOptions, assemble
from vaelab.errors import VaelabError

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24
_IMAGES_RE = re.compile(r"(.+)-images-idx3-ubyte(\.gz)?")
# Split prefixes that name a held-out set; every other prefix is training data.
_TEST_PREFIXES = ("t10k", "test")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw, or gzip detected by its magic bytes) into a native-endian array.

    The result has the shape the header declares, e.g. ``(N, H, W)`` uint8 for images and
    ``(N,)`` uint8 for labels. Any defect raises VaelabError naming the file.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after the gzip stream
    except FileNotFoundError:
        raise VaelabError(f"{path}: no such file; expected an IDX file") from None
    except OSError as err:
        raise VaelabError(f"{path}: cannot open ({one_line(err.strerror or err)})") from None
    with raw:
        try:
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not gzipped:
                return _parse(raw, path, os.fstat(raw.fileno()).st_size)
            with gzip.GzipFile(fileobj=raw) as stream:
                return _parse(stream, path, None)
        except (OSError, EOFError, zlib.error) as err:
            what = "corrupt gzip data" if gzipped else "cannot read"
            raise VaelabError(f"{path}: {what} ({one_line(err)})") from None


def write_idx(path: str | Path, arr: np.ndarray) -> Path:
    """Write ``arr`` (any shape, a dtype IDX supports) as an IDX file, gzipped if ``.gz``."""
    path = Path(path)
    codes = {np.dtype(big).newbyteorder("="): code for code, big in _DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None or not 0 < arr.ndim < 256 or max(arr.shape, default=0) >= 2**32:
        raise VaelabError(f"{path}: cannot write dtype {arr.dtype} shape {arr.shape} as IDX")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
    try:
        path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    except OSError as err:
        raise VaelabError(f"{path}: cannot write ({one_line(err.strerror or err)})") from None
    return path


def _parse(stream: BinaryIO, path: Path, file_size: int | None) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] or magic[1]:
        raise VaelabError(
            f"{path}: not an IDX file (starts with 0x{magic.hex() or 'empty'}); expected magic"
            " 0x00 0x00 <type> <ndim>, an .npz file, or a folder of images"
        )
    code, ndim = magic[2], magic[3]
    if code not in _DTYPES:
        codes = " ".join(f"0x{c:02x}" for c in _DTYPES)
        raise VaelabError(f"{path}: unknown IDX data type code 0x{code:02x}; expected {codes}")
    if ndim == 0:
        raise VaelabError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    head = stream.read(4 * ndim)
    if len(head) < 4 * ndim:
        raise VaelabError(f"{path}: truncated IDX header; expected {ndim} dimension sizes")
    dims = struct.unpack(f">{ndim}I", head)
    if 0 in dims:  # no data (and other sizes may overflow a reshape): refuse in one line
        shape = "x".join(map(str, dims))
        raise VaelabError(f"{path}: IDX header declares {shape} items, none at all; expected "
                          "a non-empty array")  # fmt: skip
    dtype = np.dtype(_DTYPES[code])
    nbytes = math.prod(dims) * dtype.itemsize
    if file_size is not None:
        # A raw file's size is known up front: check it before allocating what the header claims.
        have = file_size - 4 - 4 * ndim
        if have != nbytes:
            _raise_length(path, dims, nbytes, have)
        payload = bytearray(nbytes)
        got = stream.readinto(payload)
        if got != nbytes:
            _raise_length(path, dims, nbytes, got)
    else:
        # Read at most one byte past the promise, so a lying header or a gzip bomb cannot make
        # us hold more than the declared payload.
        payload = bytearray()
        while len(payload) <= nbytes:
            chunk = stream.read(min(_CHUNK, nbytes + 1 - len(payload)))
            if not chunk:
                break
            payload += chunk
        if len(payload) != nbytes:
            _raise_length(path, dims, nbytes, len(payload))
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def _raise_length(path: Path, dims: tuple[int, ...], want: int, have: int) -> None:
    shape = "x".join(map(str, dims))
    problem = "truncated" if have < want else "trailing bytes after the data"
    raise VaelabError(
        f"{path}: {problem}: header declares {shape} items ({want} bytes) but the payload has"
        f" {have if have < want else 'more than that'}"
    )


def find_idx_images(directory: Path) -> dict[str, Path]:
    """Map split prefix (``train``, ``t10k``...) to its ``<prefix>-images-idx3-ubyte[.gz]``.

    When both the raw and the gzipped file exist, the raw one wins (it loads faster).
    """
    found: dict[str, Path] = {}
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError as err:
        raise VaelabError(f"{directory}: cannot list ({one_line(err.strerror or err)})") from None
    for name in names:
        match = _IMAGES_RE.fullmatch(name)
        if match and (match.group(1) not in found or not match.group(2)):
            found[match.group(1)] = directory / name
    return found


def _labels_for(images: Path) -> Path | None:
    match = _IMAGES_RE.fullmatch(images.name)
    if match is None:
        return None
    for suffix in ("", ".gz"):
        labels = images.parent / f"{match.group(1)}-labels-idx1-ubyte{suffix}"
        if labels.is_file():
            return labels
    return None


def read_pair(images: Path, labels: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and check an IDX images file and, when given, its labels file.

    Returns uint8 ``(N, C, H, W)`` images and int64 ``(N,)`` labels (or None).
    """
    arr = read_idx(images)
    if arr.ndim == 1:
        raise VaelabError(f"{images}: holds 1-D data (labels?); expected images (N, H, W)")
    x = as_images(arr, str(images))
    if labels is None:
        return x, None
    y = as_labels(read_idx(labels), str(labels))
    if len(y) != len(x):
        raise VaelabError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    return x, y


def load_idx_dir(
    directory: Path,
    options: LoadOptions,
) -> ImageData:
    """Load a directory of IDX files: one training prefix, optionally ``t10k``/``test`` too."""
    found = find_idx_images(directory)
    tests = [p for prefix, p in found.items() if prefix in _TEST_PREFIXES]
    trains = [p for prefix, p in found.items() if prefix not in _TEST_PREFIXES]
    if len(trains) != 1 or len(tests) > 1:
        listed = ", ".join(p.name for p in found.values()) or "none"
        raise VaelabError(
            f"{directory}: found IDX image files {listed}; expected one training set"
            " (e.g. train-images-idx3-ubyte.gz) and at most one t10k-/test- set"
        )
    train = read_pair(trains[0], _labels_for(trains[0]))
    test = read_pair(tests[0], _labels_for(tests[0])) if tests else None
    return assemble(
        str(directory),
        train,
        test,
        options,
    )


def load_idx_file(
    path: Path,
    options: LoadOptions,
) -> ImageData:
    """Load one IDX images file; a matching ``*-labels-idx1-ubyte[.gz]`` beside it gives labels.

    The test set is a seeded ``test_fraction`` of the file.
    """
    return assemble(
        str(path),
        read_pair(path, _labels_for(path)),
        None,
        options,
    )
