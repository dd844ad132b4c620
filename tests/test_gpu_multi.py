"""Multi-GPU setups checked on CPU: the device of a torchrun process that sees one GPU
(torch.cuda mocked), CIFAR-10 fetched by rank 0 before the others read it (two gloo
processes forked from this one, as tests/test_distributed.py does), and the CIFAR-10
archive under its official name in an offline cache."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist

from vaelab.cli import main
from vaelab.data import cifar, load_dataset
from vaelab.errors import VaelabError
from vaelab.training import distributed


def cifar_archive(root: Path, per_file: int = 3) -> bytes:
    """A tar.gz of a cifar-10-batches-bin folder of ``per_file`` records per file."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([*cifar.TRAIN_FILES, cifar.TEST_FILE]):
        recs = [bytes([(i + k) % 10]) + rng.integers(0, 256, 3072, np.uint8).tobytes()
                for k in range(per_file)]  # fmt: skip
        (folder / name).write_bytes(b"".join(recs))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    return buf.getvalue()


def test_offline_cache_accepts_the_archive_under_its_official_name(tmp_path):
    cache = tmp_path / "cache"
    (cache / "cifar10").mkdir(parents=True)  # the dataset's folder in the vaelab cache
    (cache / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(cifar_archive(tmp_path / "src"))
    data = load_dataset("cifar10", cache_dir=cache, download=False)
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    with pytest.raises(VaelabError, match=r"cifar-10-binary\.tar\.gz"):
        load_dataset("cifar10", cache_dir=tmp_path / "empty", download=False)


@pytest.mark.parametrize(("visible", "local", "expected"), [(1, 1, 0), (2, 1, 1), (4, 3, 3)])
def test_torchrun_process_takes_the_gpu_it_can_see(monkeypatch, visible, local, expected):
    # With CUDA_VISIBLE_DEVICES set per process each rank sees one GPU, cuda:0; with all
    # of them visible, rank r takes cuda:LOCAL_RANK.
    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(local))
    monkeypatch.setenv("LOCAL_RANK", str(local))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)  # no process group to join
    monkeypatch.setattr(tdist, "get_world_size", lambda: 2)
    monkeypatch.setattr(tdist, "get_rank", lambda: local)
    world = distributed.setup("cuda")
    assert world.device == torch.device("cuda", expected) and chosen == [world.device]


def test_torchrun_rank_beyond_the_visible_gpus_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(VaelabError, match="LOCAL_RANK 3 but this process sees 2 GPUs"):
        distributed.local_cuda(3)


def _rank(rank: int, argv: list[str], port: int, log: str, archive: bytes) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)

    def slow_download(url, dest, sha256):  # the network: slow enough for ranks to overlap
        with open(log, "a") as fh:
            fh.write(f"download {rank} start\n")
        time.sleep(1.0)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(archive)
        with open(log, "a") as fh:
            fh.write(f"download {rank} end\n")
        return dest

    cifar.download_file = slow_download  # this forked process's own module
    if main(argv) != 0:
        raise SystemExit(2)


def test_rank_zero_fetches_cifar10_while_the_others_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "downloads.log"
    argv = ["train", "--dataset", "cifar10", "--out", str(tmp_path / "run"), "--hidden", "16",
            "--latent-dim", "2", "--batch-size", "6", "--epochs", "1", "--device", "cpu",
            "--progress", "false", "--report", "false",
            "--likelihood", "gaussian-fixed"]  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    archive = cifar_archive(tmp_path / "src")
    torch.multiprocessing.start_processes(
        _rank, args=(argv, port, str(log), archive), nprocs=2, join=True, start_method="fork"
    )
    assert log.read_text().splitlines() == ["download 0 start", "download 0 end"]
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()
    assert not list((tmp_path / "cache" / "cifar-10-batches-bin").glob(".*"))  # no temp left
