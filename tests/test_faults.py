"""Faults and hostile files: kill -9 and --resume, NaN steps, a full disk, damaged or
crafted checkpoints. Every run is a real training run on digits (8x8 images)."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vaelab
from conftest import small_config
from vaelab.cli import main
from vaelab.data import load_dataset
from vaelab.errors import VaelabError
from vaelab.training import step
from vaelab.training.checkpoint import CHECKPOINT, load_checkpoint
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit

TRAIN = ["--dataset=digits", "--hidden=32", "--latent-dim=4", "--epochs=2", "--batch-size=16",
         "--checkpoint-every=3", "--binarize=dynamic", "--progress=false", "--report=false",
         "--device=cpu"]  # fmt: skip


def _train_child(argv: list[str]) -> None:
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the reference process
    raise SystemExit(main(argv))


def forked_train(out: Path, *extra: str) -> mp.Process:
    """``vaelab train`` in a child forked from this process (vaelab already imported, so
    no second of import per launch); it is as killable by SIGKILL as any process."""
    proc = mp.get_context("fork").Process(
        target=_train_child, args=(["train", f"--out={out}", *TRAIN, *extra],)
    )
    proc.start()
    return proc


def saved_step(run: Path, seen: dict) -> int:
    """Step of the checkpoint on disk (-1: none); re-read only when the file changes."""
    try:
        stamp = (run / CHECKPOINT).stat().st_mtime_ns
    except FileNotFoundError:
        return -1
    if seen.get("stamp") != stamp:
        seen.update(stamp=stamp, step=load_checkpoint(run / CHECKPOINT).state.step)
    return seen["step"]


def every_checkpoint_loads(run: Path) -> int:
    """Load each *.safetensors file in ``run``; a temp file must not look like one."""
    files = sorted(run.glob("*.safetensors"))
    assert [f.name for f in files] == [CHECKPOINT]
    for f in files:
        load_checkpoint(f)  # raises on a half-written or damaged file
    return len(list(run.glob(f".{CHECKPOINT}.tmp-*")))


def test_kill_9_and_resume_is_bit_for_bit(tmp_path):
    """2 epochs x 102 steps, a checkpoint every 3 steps. The interrupted run is killed
    with SIGKILL 5 times, each once the checkpoint on disk has passed a target step
    (spread over the run) plus a random 0-30 ms, so kills land in steps, in checkpoint
    writes (a temp file left behind) and at epoch ends; each time every checkpoint file
    must load, and --resume continues. The final weights, optimizer state and RNG equal
    those of an uninterrupted ``python -m vaelab train`` subprocess, bit for bit
    (dynamic binarization and reparameterization noise included)."""
    cmd = [sys.executable, "-m", "vaelab", "train", f"--out={tmp_path / 'straight'}", *TRAIN]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run, rng, kills, seen = tmp_path / "killed", random.Random(5), [], {}
    load_dataset("digits")  # imports scikit-learn here once, not in every child
    for i, target in enumerate((15, 50, 95, 130, 170)):
        proc = forked_train(run, *(["--resume"] if i else []))
        deadline = time.monotonic() + 60
        while saved_step(run, seen) < target:
            assert proc.is_alive(), f"training ended early (exit {proc.exitcode})"
            assert time.monotonic() < deadline, "training too slow to reach the target"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        temps = every_checkpoint_loads(run)
        kills.append((target, saved_step(run, seen), temps))
    final = forked_train(run, "--resume")
    final.join(timeout=120)
    assert final.exitcode == 0
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()[-2000:]
    assert every_checkpoint_loads(run) == 0  # resume swept the killed writers' temp files
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)
    b = load_checkpoint(run / CHECKPOINT)
    assert a.state.step == b.state.step == 2 * 102
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert [r["step"] for r in read_metrics(run)] == [102, 204]
    print("kills (target step, checkpoint step after the kill, temp files left):", kills)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def poisoned(monkeypatch, bad: set[int], where: str) -> dict:
    """Make calls number ``bad`` of the objective non-finite: the loss (``where="loss"``)
    or only its gradient (a finite loss whose backward yields NaN)."""
    calls = {"n": 0}

    class NaNGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    real = step.LossModule.forward

    def patched(self, *args, **kwargs):
        calls["n"] += 1
        loss, stats = real(self, *args, **kwargs)
        if calls["n"] in bad:
            loss = loss * float("inf") if where == "loss" else NaNGrad.apply(loss)
        return loss, stats

    monkeypatch.setattr(step.LossModule, "forward", patched)
    return calls


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_steps_are_skipped_then_stop(tmp_path, monkeypatch, where, digits):
    """Isolated bad steps are skipped (weights stay finite) and counted in metrics.jsonl;
    max_bad_steps in a row stop training with a clear error and the last good checkpoint
    intact. Without a gradient check a NaN gradient would make every weight NaN."""
    cfg = small_config(epochs=2, batch_size=64, checkpoint_every=5, max_bad_steps=3)
    poisoned(monkeypatch, {3, 4, 10, 30, 31}, where)
    run = fit(cfg, tmp_path / "skips", data=digits)
    rows = read_metrics(run)
    assert [r["skipped_steps"] for r in rows] == [3, 5]  # 26 steps per epoch
    for v in vaelab.load(run).state_dict().values():
        assert torch.isfinite(v).all()

    poisoned(monkeypatch, set(range(33, 1000)), where)
    with pytest.raises(VaelabError, match="stopped at step 35: 3 consecutive steps"):
        fit(cfg, tmp_path / "stops", data=digits)
    ckpt = load_checkpoint(tmp_path / "stops" / CHECKPOINT)
    assert ckpt.state.step == 30 and ckpt.state.skipped_steps == 0
    assert all(torch.isfinite(v).all() for v in ckpt.tensors.values() if v.is_floating_point())


@pytest.fixture
def tiny_disk(tmp_path):
    """A 100 kB tmpfs: room for one checkpoint of the model below (65 kB) but not for it
    and its temporary successor at once (needs root to mount; skipped otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mnt)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_keeps_previous_checkpoint(tiny_disk, capsys):
    """A real ENOSPC while writing the second checkpoint: exit 2, one clear line, and the
    first checkpoint (step 4) still loads."""
    run = tiny_disk / "run"
    argv = ["train", f"--out={run}", "--dataset=digits", "--hidden=32", "--latent-dim=4",
            "--batch-size=64", "--epochs=1", "--checkpoint-every=4", "--progress=false",
            "--report=false"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert "previous file is intact" in err[0]
    assert load_checkpoint(run / CHECKPOINT).state.step == 4
    assert not list(run.glob(".*tmp-*"))  # the failed temporary file was removed


def test_disk_full_simulated(tmp_path, monkeypatch, digits):
    """Portable variant (no root): the second checkpoint's fsync reports ENOSPC, as a
    filesystem with delayed allocation does when the disk fills."""
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(VaelabError, match=r"No space left on device.*previous file is intact"):
        fit(small_config(epochs=1, checkpoint_every=4), tmp_path / "run", data=digits)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT).state.step == 4


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, digits) -> Path:
    out = tmp_path_factory.mktemp("faults") / "good"
    return fit(small_config(epochs=1, hidden="32"), out, data=digits)


def damaged_copy(good: Path, dest: Path, edit) -> Path:
    dest.mkdir()
    data = bytearray((good / CHECKPOINT).read_bytes())
    (dest / CHECKPOINT).write_bytes(bytes(edit(data)))
    return dest


def flip_tensor_byte(data: bytearray) -> bytearray:
    data[-100] ^= 0x01  # one bit of the last tensor's bytes
    return data


def edit_metadata(data: bytearray) -> bytearray:
    # The step count lives in the JSON header, not in a tensor: "step": 26 -> 27.
    old, new = b'\\"step\\": 26,', b'\\"step\\": 27,'
    at = data.index(old)
    data[at : at + len(old)] = new
    return data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (flip_tensor_byte, "checksum mismatch"),
        (edit_metadata, "checksum mismatch"),
        (lambda d: d[: len(d) // 2], "not a readable vaelab checkpoint"),
        (lambda d: d[:5], "not a readable vaelab checkpoint"),
    ],
    ids=["tensor-bit", "metadata", "truncated-half", "truncated-header"],
)
def test_damaged_checkpoint_is_refused(good_run, tmp_path, capsys, edit, message):
    """The sha256 recorded at write time covers tensors and metadata: any change is
    refused by the API, the CLI (exit 2, one line) and --resume."""
    vaelab.load(good_run)  # the undamaged original loads
    run = damaged_copy(good_run, tmp_path / "run", edit)
    with pytest.raises(VaelabError, match=message):
        vaelab.load(run)
    assert main(["sample", str(run), "-n", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and CHECKPOINT in err[0], err
    with pytest.raises(VaelabError, match=message):
        fit(small_config(epochs=2, hidden="32"), run, resume=True)


class PlantsAFile:
    """Unpickling this calls open(path, "w"): proof that something was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_is_never_executed(tmp_path, capsys):
    """A torch.save'd pickle whose loading would create a file, placed where the
    checkpoint belongs: `vaelab sample`, vaelab.load and --resume refuse it and the file
    is never created. Control: torch.load without weights_only does create it."""
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": PlantsAFile(marker)}, tmp_path / "payload.pt")
    torch.load(tmp_path / "payload.pt", weights_only=False)  # control: unpickling runs it
    assert marker.exists()
    marker.unlink()
    (run / CHECKPOINT).write_bytes((tmp_path / "payload.pt").read_bytes())

    assert main(["sample", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing was unpickled" in err[0], err
    with pytest.raises(VaelabError, match="not a readable vaelab checkpoint"):
        vaelab.load(run)
    with pytest.raises(VaelabError, match="not a readable vaelab checkpoint"):
        fit(small_config(epochs=2), run, resume=True)
    assert not marker.exists()
    done = subprocess.run([sys.executable, "-m", "vaelab", "sample", str(run)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert not marker.exists()
