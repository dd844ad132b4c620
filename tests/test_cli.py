"""The command line, end to end in subprocesses, and its one-line errors for bad input."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vaelab.cli import main


def vaelab(*args, check=True, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "vaelab", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def test_help_lists_every_command_and_option_defaults():
    out = vaelab("--help").stdout
    for cmd in ("train", "sample", "reconstruct", "similar", "evaluate"):
        assert cmd in out
    train_help = vaelab("train", "--help").stdout
    assert "--latent-dim" in train_help and "(default: 20)" in train_help


def test_train_then_every_generating_command(tmp_path):
    run = tmp_path / "run"
    vaelab("train", "--dataset", "digits", "--epochs", "2", "--hidden", "32",
           "--latent-dim", "4", "--out", run, "--progress", "false")  # fmt: skip
    assert (run / "checkpoint.safetensors").is_file()
    vaelab("sample", run, "-n", "9", "--temperature", "0.7", "--npy", tmp_path / "s.npy")
    assert np.load(tmp_path / "s.npy").shape == (9, 1, 8, 8)
    vaelab("reconstruct", run, "-n", "8")
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    vaelab("similar", run, "--image", tmp_path / "in.png", "-n", "4")
    vaelab("similar", run, "--index", "3", "-n", "4", "--spread", "0.5")
    for name in ("sample.png", "reconstruct.png", "similar.png", "similar-2.png"):
        assert Image.open(run / "outputs" / name).size[0] > 8  # a grid, numbered not replaced
    out = vaelab("evaluate", run, "--samples", "20", "--limit", "50").stdout
    assert "NLL, K=20" in out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["images"] == 50 and result["samples"] == 20
    # An explicit --out is never replaced silently.
    again = vaelab("sample", run, "--out", run / "outputs" / "sample.png", check=False)
    assert again.returncode == 2 and "exists" in again.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = vaelab("train", "--dataset", "no-such-set", check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "fashion-mnist" in proc.stderr  # lists the valid names
    assert not (tmp_path / "runs").exists()  # no empty run folder left behind


def _idx(path, magic, dims, payload):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + payload)
    return path


@pytest.fixture
def bad_inputs(tmp_path):
    good = np.zeros((4, 3, 3), np.uint8)
    paths = {
        "truncated": _idx(tmp_path / "t-images-idx3-ubyte", 0x803, (4, 3, 3), b"\0" * 10),
        "magic": _idx(tmp_path / "m-images-idx3-ubyte", 0x12340803, (4, 3, 3), good.tobytes()),
        "npz": tmp_path / "x.npz",
        "empty": tmp_path / "empty",
        "mixed": tmp_path / "mixed",
        "gz": tmp_path / "c-images-idx3-ubyte.gz",
    }
    np.savez(paths["npz"], pictures=good)
    paths["empty"].mkdir()
    (paths["mixed"] / "a").mkdir(parents=True)
    Image.new("L", (4, 4)).save(paths["mixed"] / "a" / "1.png")
    Image.new("L", (5, 4)).save(paths["mixed"] / "a" / "2.png")
    paths["gz"].write_bytes(gzip.compress(b"\0\0\x08\x03")[:-6])
    return paths


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "{truncated}"], "t-images-idx3-ubyte"),
        (["--dataset", "{magic}"], "magic"),
        (["--dataset", "{npz}"], "images"),
        (["--dataset", "{empty}"], "empty"),
        (["--dataset", "{mixed}"], "--resize"),
        (["--dataset", "{gz}"], "c-images-idx3-ubyte.gz"),
        (["--dataset", "digits", "--likelihood", "poisson"], "bernoulli"),
        (["--dataset", "digits", "--arch", "rnn"], "conv"),
        (["--dataset", "digits", "--model", "gan"], "vae"),
        (["--dataset", "digits", "--latent-dim", "0"], "--latent-dim"),
        (["--dataset", "digits", "--batch-size", "0"], "--batch-size"),
        (["--dataset", "digits", "--epochs", "two"], "epochs"),
        (["--config", "missing.yaml"], "missing.yaml"),
    ],
)  # fmt: skip
def test_bad_training_input(bad_inputs, tmp_path, capsys, args, expected):
    args = [a.format(**bad_inputs) for a in args]
    code = main(["train", *args, "--out", str(tmp_path / "out"), "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert expected in err, err


def test_run_folder_errors(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--epochs", "1", "--hidden", "16",
            "--latent-dim", "2", "--progress", "false", "--report", "false",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(base) == 0
    assert main(base) == 2 and "--resume" in capsys.readouterr().err  # exists
    assert main([*base, "--resume", "--arch", "conv"]) == 2
    assert "--arch mlp" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err
