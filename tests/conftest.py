"""Shared fixtures: small real data and a tiny trained run, built once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from vaelab.config import Config, with_overrides

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def pytest_configure(config):
    # Classifiers and downloads the tests cause go to a throw-away cache, never the user's.
    os.environ["VAELAB_CACHE"] = tempfile.mkdtemp(prefix="vaelab-test-cache-")


def pytest_collection_modifyitems(config, items):
    # Tests marked ``cuda`` need a GPU: skipped here without one (benchmarks/gpu_check.py
    # runs them on a lent GPU).
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (benchmarks/gpu_check.py runs these on a GPU)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a whole test module (a module opts in with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``): see ``one_thread``."""
    from single_thread import one_thread

    with one_thread():
        yield


def recording_decodes(model) -> list:
    """Wrap ``model.decode`` so every z it is called with is kept (the returned list)."""
    seen = []
    decode = model.decode

    def record(z, *args):
        seen.append(z.detach().clone())
        return decode(z, *args)

    model.decode = record
    return seen


def small_config(**overrides) -> Config:
    """A digits (8x8, 1,797 real images) VAE that trains in about a second."""
    base = {"dataset": "digits", "hidden": "64", "latent_dim": 4, "epochs": 2,
            "batch_size": 64, "progress": False, "report": False}  # fmt: skip
    base.update(overrides)
    return with_overrides(Config(), base, "test")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A VAE trained for 15 epochs on digits; shared by read-only tests."""
    from vaelab.evaluation.html_report import RUN_DRAWINGS
    from vaelab.training.loop import fit

    out = tmp_path_factory.mktemp("runs") / "digits"
    torch.manual_seed(0)
    config = small_config(epochs=15, report=True, hidden="128", latent_dim=8)
    return fit(config, out, drawings=RUN_DRAWINGS)  # the pictures vaelab train draws
