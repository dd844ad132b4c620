"""ONNX export of a trained model's two networks (``vaelab export RUN --onnx DIR``):

    encoder.onnx   image x (B, C, H, W) float32 in [0, 1]  ->  posterior parameters
                   (B, P): the family's raw parameters (Normal: [μ, log σ²], P = 2D);
                   an autoencoder's code z (B, D)
    decoder.onnx   z (B, D)  ->  likelihood parameters (B, n_params, C, H, W) and the
                   mean image E[x|z] (B, C, H, W) in [0, 1]
    model.json     shapes, input scaling, the posterior family, the likelihood and how
                   to read its parameters

The batch size is dynamic (``torch.export`` Dim). Each file is checked with onnxruntime
against PyTorch on the run's test images (and their posterior means for the decoder):
the largest absolute difference is returned. A model whose parts are not one network from
x to q's parameters and one from z to p(x|z)'s (labels as a second input, a top-down
sampler over latent groups, two stochastic layers) is refused, naming the part and why.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaelab.errors import VaelabError
from vaelab.nn.conv import NarrowConvTranspose2d

ENCODER, DECODER, DESCRIPTION = "encoder.onnx", "decoder.onnx", "model.json"
OPSET = 18


class DecoderGraph(nn.Module):
    """z (B, D) -> (likelihood parameters, mean image): the decoder body and the
    likelihood's mean, as one graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.model.decode(z)
        return params, self.model.likelihood.mean(params)


def why_not(model: nn.Module) -> str | None:
    """Why ``model``'s parts cannot be exported as the two plain graphs (None: they can):
    what its family declares (``Model.export_refusal``), not its name."""
    return model.export_refusal


def plain_layers(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose :class:`NarrowConvTranspose2d` layers (the same function
    as ``nn.ConvTranspose2d`` through PyTorch's native CPU kernel, which ``torch.export``
    cannot trace with a symbolic batch size) are plain ``nn.ConvTranspose2d``."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) is NarrowConvTranspose2d:
            module.__class__ = nn.ConvTranspose2d  # same parameters and state-dict keys
    return model


def _export(module: nn.Module, example: torch.Tensor, path: Path, names: list[str]) -> None:
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs its registry's misses (torchvision ops) and deprecations of its own
    # internals: noise for the user, silenced here only.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), input_names=[names[0]], output_names=names[1:],
                dynamic_shapes=({0: batch},), dynamo=True, opset_version=OPSET, verbose=False,
                optimize=True, external_data=False,
            )  # fmt: skip
    finally:
        quiet.setLevel(level)


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime  # optional extra (vaelab[onnx]); checked by check_onnx

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def check_onnx() -> None:
    """The export needs onnx, onnxscript (torch's exporter) and onnxruntime (the check)."""
    import importlib.util

    for package in ("onnx", "onnxscript", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise VaelabError(
                f"--onnx: the {package} package is not installed; pip install 'vaelab[onnx]'"
            )


@torch.no_grad()
def export_onnx(
    model: nn.Module, image_shape: tuple[int, int, int], x: torch.Tensor, folder: Path,
    describe: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Write encoder.onnx, decoder.onnx and model.json of ``model`` into ``folder`` (which
    exists) and check them with onnxruntime on images ``x`` (N, C, H, W) float in [0, 1]:
    returns the description with ``max_abs_diff`` per output."""
    reason = why_not(model)
    if reason:
        raise VaelabError(f"export: cannot export this model's {reason}")
    model = plain_layers(model).float().cpu().eval()
    x = x.float().cpu()
    codes = model.encoder(x)
    z = model.latent_mean(x)
    _export(model.encoder, x[:2], folder / ENCODER, ["x", "posterior_params"])
    graph = DecoderGraph(model).eval()
    _export(graph, z[:2], folder / DECODER, ["z", "likelihood_params", "mean"])
    (got_codes,) = _run(folder / ENCODER, {"x": x.numpy()})
    got_params, got_mean = _run(folder / DECODER, {"z": z.numpy()})
    params, mean = graph(z)
    diff = {
        "posterior_params": float(np.abs(got_codes - codes.numpy()).max()),
        "likelihood_params": float(np.abs(got_params - params.numpy()).max()),
        "mean": float(np.abs(got_mean - mean.numpy()).max()),
    }
    likelihood = model.likelihood
    family = model.family if model.has_posterior else None
    description = {
        **describe,
        "format": "vaelab-onnx-1",
        "opset": OPSET,
        "encoder": {
            "file": ENCODER, "input": "x", "input_shape": ["batch", *image_shape],
            "input_scaling": "float32 in [0, 1]: uint8 pixel / 255 (binarized runs: 0 or 1)",
            "output": "posterior_params", "output_shape": ["batch", int(codes.shape[-1])],
            "posterior": (type(family).__name__ if model.has_posterior
                          else "none: the output is the code z"),
            "layout": ("first half mean, second half log-variance"
                       if type(family).__name__ == "NormalFamily"
                       and model.has_posterior else None),
        },
        "decoder": {
            "file": DECODER, "input": "z", "input_shape": ["batch", int(z.shape[-1])],
            "outputs": {"likelihood_params": ["batch", *params.shape[1:]],
                        "mean": ["batch", *mean.shape[1:]]},
            "likelihood": type(likelihood).__name__,
            "n_params": int(params.shape[1]),
            "discrete_8bit": bool(getattr(likelihood, "discrete", False)),
        },
        "checked_on_images": len(x),
        "max_abs_diff": diff,
    }  # fmt: skip
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
    return description
