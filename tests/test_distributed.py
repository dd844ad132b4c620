"""DistributedDataParallel under torchrun: 2 gloo processes on CPU vs one process.

The equality test launches the real command line, ``python -m torch.distributed.run
--standalone --nproc_per_node 2 -m vaelab train ...``. The VAE/resume test needs three
launches, so it forks 2 ranks from this process with the environment torchrun would set
(RANK, WORLD_SIZE, MASTER_ADDR/PORT) and runs ``vaelab.cli.main(["train", ...])`` in each:
the same code path without paying torch's import three more times. Data: digits (8x8,
1,617 training images: 26 global batches of 64, the last of 17 images split 9/8 between
the ranks, which exercises the uneven-shard loss weighting).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import small_config
from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.distributed import World, check_batch
from vaelab.training.loop import fit

FLAGS = {"dataset": "digits", "hidden": "32", "latent_dim": 4, "batch_size": 64,
         "progress": False, "report": False, "device": "cpu"}  # fmt: skip


def torchrun(out: Path, *, resume: bool = False, **options) -> None:
    args = [f"--{k.replace('_', '-')}={v}" for k, v in {**FLAGS, **options}.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "vaelab", "train", "--out", str(out), *args]  # fmt: skip
    if resume:
        cmd.append("--resume")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _rank(rank: int, argv: list[str], port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)  # as torchrun's OMP_NUM_THREADS=1; also keeps fork safe
    if main(argv) != 0:
        raise SystemExit(2)


def forked(out: Path, *, resume: bool = False, **options) -> None:
    """2 ranks forked from this process, each running ``vaelab train`` (see docstring)."""
    args = [f"--{k.replace('_', '-')}={v}" for k, v in {**FLAGS, **options}.items()]
    argv = ["train", "--out", str(out), *args, *(["--resume"] if resume else [])]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.start_processes(
        _rank, args=(argv, port), nprocs=2, join=True, start_method="fork"
    )


def single(out: Path, **options):
    return fit(small_config(**{**FLAGS, **options}), out)


def tensors(run: Path, prefix: str = "model/") -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run / "checkpoint.safetensors")
    return {k: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_equal_one_process(tmp_path):
    """One epoch, global batch 64: 2 ranks x 32 == 1 process x 64. The autoencoder has no
    sampling, so the gradient all-reduce is the only difference; it sums the same numbers
    in another order. Tolerance 1e-6 on weights of size ~0.5: Adam moves each weight by at
    most lr = 1e-3 per step, so 1e-6 is 0.1% of one step, while float32 rounding of the
    reordered sums gives ~3e-8 here. Control: batch 32 in one process (a different
    update) lands > 1e-4 away, so the test can fail."""
    torchrun(tmp_path / "ddp", model="ae", epochs=1)
    one = tensors(single(tmp_path / "one", model="ae", epochs=1))
    ddp = tensors(tmp_path / "ddp")
    assert ddp.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], rtol=0, atol=1e-6, msg=name)
    print("max |2 ranks - 1 process|:", max((ddp[k] - one[k]).abs().max().item() for k in one))
    other = tensors(single(tmp_path / "b32", model="ae", epochs=1, batch_size=32))
    assert max((other[k] - one[k]).abs().max().item() for k in one) > 1e-4
    assert [r["step"] for r in metrics(tmp_path / "ddp")] == [26]  # 26 global steps
    assert not list((tmp_path / "ddp").glob(".checkpoint.safetensors.tmp-*"))


def test_vae_under_torchrun_tracks_one_process_and_resumes_exactly(tmp_path):
    """A VAE with dynamic binarization: the ranks draw their own noise (seed + rank), so
    the runs are not equal, but the per-epoch train and test bounds must agree closely:
    they average ~1,600 images' worth of noise, whose standard error is < 0.3 nats here
    (bounds ~ -40 nats), so 3% is a loose, safe margin that a wrong gradient scaling or a
    rank training on the wrong shard would break within two epochs. Then resume under
    torchrun: 1 epoch + --resume to 2 epochs equals 2 epochs straight, bit for bit
    (every rank's RNG state travels in the checkpoint)."""
    opts = {"model": "vae", "binarize": "dynamic", "epochs": 2}
    one = metrics(single(tmp_path / "one", **opts))  # first: the forks inherit its imports
    forked(tmp_path / "straight", **opts)
    two = metrics(tmp_path / "straight")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [26, 52]
    for a, b in zip(one, two, strict=True):
        for key in ("train_bound", "test_elbo"):
            assert abs(a[key] - b[key]) < 0.03 * abs(a[key]), (key, a[key], b[key])
            print(f"epoch {a['epoch']} {key}: 1 process {a[key]:.3f}, 2 ranks {b[key]:.3f}")
    assert two[1]["test_elbo"] > two[0]["test_elbo"]  # learning, not just agreeing

    forked(tmp_path / "halves", **{**opts, "epochs": 1})
    forked(tmp_path / "halves", resume=True, **opts)
    a, b = tensors(tmp_path / "straight", ""), tensors(tmp_path / "halves", "")
    assert a.keys() == b.keys() and "rng/torch/1" in a
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_global_batch_must_split_evenly():
    """--batch-size is the global batch; 2 ranks cannot share 63 images per step evenly."""
    assert check_batch(World(rank=1, size=2), 64) == 32
    with pytest.raises(VaelabError, match="--batch-size 63: the global batch must be divisible"):
        check_batch(World(rank=0, size=2), 63)
    # An uneven last batch of 17: ranks take 9 and 8 images. DDP averages the ranks'
    # gradients of their own means, (1/2) sum_r w_r (1/n_r) sum_i g_i; the weights w_r make
    # every image count 1/17, as in one process.
    idx = torch.arange(17)
    shares = [World(rank=r, size=2).shard(idx) for r in (0, 1)]
    assert [len(s) for s, _ in shares] == [9, 8]
    assert torch.cat([s for s, _ in shares]).sort().values.equal(idx)
    for s, w in shares:
        assert w / (2 * len(s)) == pytest.approx(1 / 17)
    assert World(size=2).steps_per_epoch(1617, 64) == 26
    assert World(size=2).steps_per_epoch(1601, 64) == 25  # a 1-image tail is dropped


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_benchmark_skips_cleanly_without_cuda(tmp_path, capsys, monkeypatch):
    """benchmarks/gpu_throughput.py --device cuda exits 0 and writes nothing here."""
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "gpu_throughput.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as `python benchmarks/...` does
    spec = importlib.util.spec_from_file_location("gpu_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu.json"
    argv = ["--device", "cuda", "--precisions", "fp32,bf16,fp16", "--out", str(out)]
    assert module.main(argv) == 0
    assert "CUDA is not available" in capsys.readouterr().out
    assert not out.exists()


def test_learned_prior_under_ddp_trains_through_the_lazy_terms(tmp_path):
    """A mixture prior's parameters are reached only through log p(z), which the model's
    Terms compute when the IWAE objective asks for it. DDP wraps the model *and* its
    objective (LossModule), so its unused-parameter search starts from the loss and sees
    the prior used: training runs (a DDP wrapper around the bare model raised "marked as
    ready twice" here) and the prior moves as much as in one process (Adam steps of ~lr:
    26 steps move a component mean by up to ~0.026; both runs must move it by > 1e-3)."""
    opts = {"model": "vae", "prior": "mixture", "prior_components": 3, "objective": "iwae",
            "samples": 2, "epochs": 1}  # fmt: skip
    one = tensors(single(tmp_path / "one", **{**opts, "epochs": 0}))  # the initial weights
    forked(tmp_path / "ddp", **opts)
    ddp = tensors(tmp_path / "ddp")
    moved = (ddp["model/prior.means"] - one["model/prior.means"]).abs().max().item()
    assert moved > 1e-3, moved
