"""CIFAR-10's official binary version: ``cifar-10-batches-bin`` folders and ``.bin`` files.

Each ``.bin`` file is a run of 3,073-byte records: one label byte (0..9), then the 32x32
image as 1,024 red, 1,024 green and 1,024 blue bytes, rows top to bottom. The folder holds
``data_batch_1.bin`` .. ``data_batch_5.bin`` (50,000 training images) and
``test_batch.bin`` (10,000). ``--dataset cifar10`` looks for that folder in the vaelab
cache, else for the archive ``cifar-10-binary.tar.gz`` there (copied by hand, offline),
and otherwise downloads it (sha256-checked); it extracts just those six files;
``--dataset PATH`` reads a folder of that layout, or one ``.bin`` file (then a seeded
``--test-fraction`` is the test set).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from vaelab.data.arrays import one_line
from vaelab.data.download import download as download_file
from vaelab.data.imagedata import ImageData, LoadOptions, assemble
from vaelab.errors import VaelabError

SIDE, CHANNELS = 32, 3
RECORD = 1 + CHANNELS * SIDE * SIDE  # 3073 bytes
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
FOLDER = "cifar-10-batches-bin"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
OFFICIAL_ARCHIVE = "cifar-10-binary.tar.gz"  # the file's name as published
# sha256 of the archive as published (170,052,171 bytes; md5 c32a1d4ab5d03f1284b67883e8d87530).
CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def read_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one ``.bin`` file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise VaelabError(f"{path}: cannot read ({one_line(err)})") from None
    if not raw:
        raise VaelabError(f"{path}: empty; expected CIFAR-10 records of {RECORD} bytes")
    if len(raw) % RECORD:
        hint = (
            " (3074-byte records: CIFAR-100's layout, which vaelab does not read)"
            if len(raw) % (RECORD + 1) == 0
            else " (truncated, or not a CIFAR-10 .bin file)"
        )
        raise VaelabError(
            f"{path}: {len(raw)} bytes is not a whole number of {RECORD}-byte CIFAR-10"
            f" records (1 label byte + 3x32x32 pixels){hint}"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise VaelabError(
            f"{path}: record {bad} has label {labels[bad]}; expected 0..9 (CIFAR-10 records"
            f" of {RECORD} bytes)"
        )
    images = records[:, 1:].reshape(-1, CHANNELS, SIDE, SIDE).copy()
    return images, labels


def is_cifar_dir(path: Path) -> bool:
    """Whether ``path`` looks like an extracted ``cifar-10-batches-bin`` folder."""
    return any((path / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))


def load_cifar_dir(path: Path, options: LoadOptions, name: str | None = None) -> ImageData:
    """CIFAR-10 from a ``cifar-10-batches-bin`` folder: all six files must be there."""
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (path / f).is_file()]
    if missing:
        raise VaelabError(
            f"{path}: no {missing[0]}; expected a cifar-10-batches-bin folder holding"
            " data_batch_1.bin .. data_batch_5.bin and test_batch.bin"
        )
    parts = [read_bin(path / f) for f in TRAIN_FILES]
    train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return assemble(name or str(path), train, read_bin(path / TEST_FILE), options, CIFAR10_CLASSES)


def load_cifar_file(path: Path, options: LoadOptions) -> ImageData:
    """One CIFAR-10 ``.bin`` file; a seeded ``test_fraction`` of it is the test set."""
    return assemble(str(path), read_bin(path), None, options, CIFAR10_CLASSES)


def fetch_cifar10(cache: Path, download: bool) -> Path:
    """The cached ``cifar-10-batches-bin`` folder, downloaded and extracted if needed."""
    folder = cache / FOLDER
    if all((folder / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
        return folder
    # A copy placed by hand under its official name is used as it is; a download is saved
    # as ".tgz": under ".tar.gz" download() would hash the gunzipped stream, and the
    # published sha256 is the archive's own.
    official, archive = cache / OFFICIAL_ARCHIVE, cache / "cifar-10-binary.tgz"
    if official.is_file():
        archive = official
    elif not archive.is_file():
        if not download:
            raise VaelabError(
                f"cifar10: {folder} not found; copy the extracted cifar-10-batches-bin"
                f" folder there or {OFFICIAL_ARCHIVE} into {cache}, pass --dataset PATH to"
                " the folder, or allow downloading"
            )
        download_file(CIFAR10_URL, archive, CIFAR10_SHA256)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).name in (*TRAIN_FILES, TEST_FILE):
                    data = tar.extractfile(member)
                    # A name of this process's own: another process extracting into the
                    # same cache at once never writes into this file.
                    tmp = folder / f".{Path(member.name).name}.tmp-{os.getpid()}"
                    tmp.write_bytes(data.read())
                    tmp.replace(folder / Path(member.name).name)
    except (OSError, tarfile.TarError, EOFError) as err:
        raise VaelabError(
            f"{archive}: cannot extract ({one_line(err)}); delete it and retry"
        ) from None
    return folder
