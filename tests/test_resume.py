"""--resume as a user meets it: changed options, a folder without a checkpoint, a finished
run, and Ctrl-C (a real SIGINT to a training process), all through the command line."""

import math
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import vaelab
from vaelab.cli import main
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.folder import read_metrics

BASE = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "2",
        "--batch-size", "64", "--progress", "false", "--report", "false"]  # fmt: skip


def train(out, *args):
    return main([*BASE, "--out", str(out), *map(str, args)])


def weights(run):
    return load_checkpoint(run / "checkpoint.safetensors").model_state()


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_applies_new_epochs_lr_and_schedule(tmp_path):
    run = tmp_path / "r"
    assert train(run, "--epochs", 2) == 0
    assert train(run, "--resume", "--epochs", 4, "--lr", "0.01", "--schedule", "cosine") == 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # The lr the optimizer actually held (metrics read it from the optimizer, not the config):
    # the old 1e-3 before, then cosine annealing of the new 0.01 over the new 4 epochs, as
    # if the run had started with them: lr_e = 0.01 (1 + cos(pi e / 4)) / 2 after epoch e.
    # Tolerance: torch steps the cosine by a recursion, the closed form differs by rounding.
    assert [r["lr"] for r in rows[:2]] == [1e-3, 1e-3]
    for r in rows[2:]:
        expected = 0.01 * (1 + math.cos(math.pi * r["epoch"] / 4)) / 2
        assert r["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15), r
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (saved["epochs"], saved["lr"], saved["schedule"]) == (4, 0.01, "cosine")


def test_python_resume_builds_on_the_runs_own_config(tmp_path):
    run = tmp_path / "r"
    assert train(run, "--epochs", 1, "--arch", "conv") == 0
    vaelab.train(out=run, resume=True, epochs=2, lr=3e-4)  # no config: the run's own
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["arch"] == "conv" and saved["train"]["lr"] == 3e-4
    assert [r["lr"] for r in read_metrics(run)] == [1e-3, 3e-4]


def test_resume_refuses_other_changes_naming_each_flag(tmp_path, capsys):
    run = tmp_path / "r"
    assert train(run, "--epochs", 1) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert train(run, "--resume", "--epochs", 3, "--batch-size", 32, "--seed", 5) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--batch-size 64 --seed 0, this command asks --batch-size 32 --seed 5" in err
    assert "--epochs" in err.split("only")[1]  # and it says what may change
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched


def test_resume_without_checkpoint_starts_from_scratch(tmp_path, capsys):
    # A job killed in its first epoch leaves config.yaml and run.json (and possibly a
    # metrics row) but no checkpoint; the requeued command, with --resume, must just train.
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    assert train(fresh, "--epochs", 2) == 0
    killed.mkdir()
    for name in ("config.yaml", "run.json"):
        (killed / name).write_bytes((fresh / name).read_bytes())
    (killed / "metrics.jsonl").write_text('{"epoch": 1, "step": 26, "lost": true}\n')
    capsys.readouterr()
    assert train(killed, "--epochs", 2, "--resume") == 0
    assert "starting the run from scratch" in capsys.readouterr().err
    assert same_weights(killed, fresh)  # the same run as one never interrupted
    assert [r["epoch"] for r in read_metrics(killed)] == [1, 2]  # the lost row is gone


def test_resume_of_a_folder_that_never_existed_is_refused(tmp_path, capsys):
    # A typo in --out (runs/demoo) once printed "starting the run from scratch" and trained
    # a new run; a folder that does not exist holds no run to continue.
    never = tmp_path / "demoo"
    assert train(never, "--epochs", 1, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--resume: {never} does not exist" in err, err
    assert "from scratch" not in err and not never.exists()


def test_resume_on_a_finished_run_says_how_to_train_further(tmp_path, capsys):
    run = tmp_path / "r"
    assert train(run, "--epochs", 2) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert train(run, "--resume") == 0
    err = capsys.readouterr().err
    assert "is finished (2 epochs" in err and f"--resume --out {run} --epochs N (N > 2)" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def _has_row(run):
    try:
        return bool(read_metrics(run))
    except ValueError:  # a line half written at the moment we read
        return False


def _interrupt_training(run):
    """Start a long training run in a subprocess, SIGINT it once it is in its second epoch."""
    cmd = [sys.executable, "-m", "vaelab", *BASE, "--epochs", "1000", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not _has_row(run):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_ctrl_c_writes_a_checkpoint_and_resume_is_exact(tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    code, err = _interrupt_training(run)
    assert code == 130, err
    state = load_checkpoint(run / "checkpoint.safetensors").state
    # Signalled once epoch 1's metrics were written: it stops at the end of epoch 1 (the
    # signal came before its checkpoint) or at a step of a later epoch.
    assert 1 <= state.epoch < 1000 and state.step >= 26
    assert f"(step {state.step})" in err, err  # says exactly where
    assert f"resume with: vaelab train --resume --out {run}" in err
    assert "Traceback" not in err
    # Resuming finishes the epoch it stopped in; the weights must equal those of one
    # uninterrupted run of as many epochs (bit for bit: the checkpoint holds the RNG and
    # the position in the epoch, and the step order is a function of (seed, epoch)).
    epochs = state.epoch + 1
    assert train(run, "--resume", "--epochs", epochs) == 0
    assert train(reference, "--epochs", epochs) == 0
    assert same_weights(run, reference)
    assert [r["epoch"] for r in read_metrics(run)] == list(range(1, epochs + 1))


def test_ctrl_c_before_the_run_folder_exists_says_what_to_do(tmp_path, capsys, monkeypatch):
    # Ctrl-C while the data is read once printed only "interrupted": no folder was left, and a
    # later --resume then trained a default run instead of the one asked for.
    import vaelab.training.session as session

    def stopped(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "dataset_for", stopped)
    run = tmp_path / "r"
    assert train(run, "--epochs", 2) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "nothing was written: run the same command again" in err
    assert "--resume" not in err and not run.exists()
