"""What the command line says besides results: warnings as one line in vaelab's voice,
and --compile declined where it does not pay."""

import subprocess
import sys
import warnings

import torch

from vaelab.cli.common import one_line_warnings
from vaelab.config import Config, with_overrides
from vaelab.models import build_model
from vaelab.training.options import compile_declined
from vaelab.training.step import Stepper, make_optimizer


def test_warnings_become_one_line_each(capsys):
    with one_line_warnings("train"):
        warnings.warn("first line\nsecond line", stacklevel=1)
        warnings.warn(
            "Palette images with Transparency expressed in bytes should be converted to RGBA "
            "images",
            UserWarning,
            stacklevel=1,
        )
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "vaelab train: warning: first line",
        "vaelab train: warning: Pillow dropped a palette image's transparency (transparent "
        "pixels keep their palette colour)",
    ]


def test_cli_warning_has_no_source_line_and_conv_compile_is_declined(tmp_path):
    # A CPU machine: --precision bf16 falls back to fp32 with a warning, and --compile on a
    # convolutional body is declined. Python's default display would add the file name,
    # line number, category and the source line of warnings.warn(...).
    proc = subprocess.run(
        [sys.executable, "-m", "vaelab", "train", "--dataset", "digits", "--arch", "conv",
         "--compile", "true", "--precision", "bf16", "--epochs", "0", "--report", "false",
         "--device", "cpu", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "vaelab train: warning: --precision bf16 needs CUDA; training in fp32" in lines
    assert any(
        line.startswith("vaelab train: warning: --compile: declined, a convolutional model")
        for line in lines
    )
    assert not any("UserWarning" in line or "warnings.warn" in line for line in lines)


def _stepper(arch: str, compile_: bool) -> Stepper:
    config = with_overrides(
        Config(), {"arch": arch, "hidden": "8,8" if arch == "conv" else "16",
                   "latent_dim": 2, "compile": compile_}, "test"
    )  # fmt: skip
    model = build_model(config.model, (1, 8, 8))
    optimizer = make_optimizer(model, config)
    return Stepper(model, optimizer, config, torch.device("cpu"))


def test_compile_declined_for_conv_on_cpu_only():
    conv = build_model(with_overrides(Config(), {"arch": "conv"}, "t").model, (1, 8, 8))
    mlp = build_model(Config().model, (1, 8, 8))
    assert compile_declined(conv, torch.device("cpu"))
    assert compile_declined(conv, torch.device("meta")) is None  # not CPU: left to the user
    assert compile_declined(mlp, torch.device("cpu")) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conv_step = _stepper("conv", True)
        mlp_step = _stepper("mlp", True)
    assert conv_step.loss_fn is conv_step.model  # eager
    assert mlp_step.loss_fn is not mlp_step.model  # torch.compile's wrapper (compiles lazily)
    ours = [str(w.message).split(",")[0] for w in caught if "--compile" in str(w.message)]
    assert ours == ["--compile: declined"]
