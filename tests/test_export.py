"""vaelab export --onnx: onnxruntime reproduces PyTorch's encoder and decoder (every body,
the 8-bit likelihoods' parameters) at batch sizes other than the exported one; models
whose parts are no such networks are refused, naming the part."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

import vaelab
from conftest import small_config
from vaelab.cli import main
from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError
from vaelab.training.loop import fit

pytestmark = pytest.mark.usefixtures("single_thread")

CASES = {  # one run per registry body, and the discrete likelihoods on a conv body
    "mlp": {"arch": "mlp"},
    "conv": {"arch": "conv", "hidden": "8,16"},
    "resnet": {"arch": "resnet", "hidden": "8,16"},
    "dlogistic": {"arch": "conv", "hidden": "8,16", "likelihood": "dlogistic"},
    "dmol": {"arch": "conv", "hidden": "8,16", "likelihood": "dmol", "mixtures": 3},
}


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", CASES)
def test_onnx_outputs_equal_pytorch(case, tmp_path):
    run = fit(small_config(epochs=1, **CASES[case]), tmp_path / "run")
    folder = tmp_path / "onnx"
    result = vaelab.export(run, folder, limit=50)
    model = vaelab.load(run)
    data = vaelab.api.load_test_images(run)
    x = to_unit(data.test_x[100:103])  # 3 images: not the batch of 2 it was exported with
    with torch.no_grad():
        z = model.latent_mean(x)
        params = model.decode(z)
        want = {"codes": model.encoder(x), "params": params,
                "mean": model.likelihood.mean(params)}  # fmt: skip
    (codes,) = _session(folder / "encoder.onnx").run(None, {"x": x.numpy()})
    got_params, got_mean = _session(folder / "decoder.onnx").run(None, {"z": z.numpy()})
    # float32 throughout; the graphs differ from PyTorch's kernels only in the order of
    # the sums (a few hundred terms: relative error ~ 1e-6), so 1e-4 relative, 1e-5 absolute.
    tol = {"rtol": 1e-4, "atol": 1e-5}
    np.testing.assert_allclose(codes, want["codes"].numpy(), **tol)
    np.testing.assert_allclose(got_params, want["params"].numpy(), **tol)
    np.testing.assert_allclose(got_mean, want["mean"].numpy(), **tol)
    assert got_params.shape == (3, model.likelihood.n_params, *data.image_shape)
    assert max(result["max_abs_diff"].values()) < 1e-4
    description = json.loads((folder / "model.json").read_text())
    assert description["decoder"]["n_params"] == model.likelihood.n_params
    assert description["decoder"]["discrete_8bit"] == (case in ("dlogistic", "dmol"))
    assert description["encoder"]["input_shape"] == ["batch", *data.image_shape]


def test_unexportable_models_say_which_part_and_why(tmp_path, capsys):
    for name, flags, part in (
        ("cvae", {"model": "cvae"}, "encoder and decoder: both also take the class label"),
        ("hvae", {"model": "hvae", "z1_dim": 2, "z1_hidden": "8"}, "decoder: HVAE.decode"),
    ):
        run = fit(small_config(epochs=0, **flags), tmp_path / name)
        with pytest.raises(VaelabError, match=part):
            vaelab.export(run, tmp_path / f"{name}-onnx")
        assert not (tmp_path / f"{name}-onnx").exists()
    code = main(["export", str(tmp_path / "cvae"), "--onnx", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "class label" in err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    code = main(["export", str(tmp_path / "cvae"), "--onnx", str(tmp_path / "x")])
    assert code == 2 and "exists; pass --overwrite" in capsys.readouterr().err
