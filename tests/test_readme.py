"""README's Python examples run, so they cannot rot.

Each ```python block of README.md is executed, in order and in one namespace, in a temporary
folder. For speed every training run is shrunk (``_shrink``: the digits data set, 8x8, and
one epoch) — the API calls themselves are the README's, unchanged. The runs the examples
take as already made (``runs/vae``, ``runs/m2``...) are trained first, the way the README's
command-line sections make them; ``SUBSTITUTIONS`` lists the few textual edits (each must
still match the README, so an edited example cannot slip past unexercised).
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import pytest
import torch

from vaelab.config import with_overrides

pytestmark = pytest.mark.usefixtures("single_thread")  # two cores shared: no thread contention

README = Path(__file__).resolve().parents[1] / "README.md"

# (block number from 1, text in the README, what runs instead, why)
SUBSTITUTIONS = [
    (1, "samples=1000", "samples=100", "speed: 100 importance samples"),
    (4, "samples=1000", "samples=100", "speed: 100 importance samples"),
    (5, "n=8, steps=50", "n=8, steps=5", "speed: 5 Gibbs steps"),
    (5, "baseline=True", "baseline=True, baseline_steps=50", "speed: a 50-step baseline"),
    (5, 'mask="top-half"', 'mask="top-half", limit=8', "speed: 8 test images"),
    (6, "draws=100", "draws=5", "speed: 5 gradient draws instead of 100"),
    (
        9,
        'vaelab.serve("runs/demo", port=8000, host="127.0.0.1")',
        "served = vaelab.serve",
        "serving blocks until Ctrl-C; the function must exist",
    ),
    (9, "server.serve_forever()", "server.server_close()", "blocks; close the server instead"),
]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _shrink(fit):
    """``fit`` on digits (8x8, ~1,800 images) for one epoch, whatever the example asked:
    the README's runs take minutes on Fashion-MNIST or emoji."""

    def small_fit(config, out=None, **kwargs):
        epochs = 2 if kwargs.get("resume") else 1  # a resumed run trains on one more epoch
        overrides = {"epochs": epochs, "progress": False, "report": False}
        if config.data.dataset in ("fashion-mnist", "emoji", "cifar10", "mnist-5k"):
            overrides["dataset"] = "digits"
        if config.model.arch == "resnet":  # 8x8 images: one level of 32 channels
            overrides["hidden"] = "32"
        return fit(with_overrides(config, overrides, "test"), out, **kwargs)

    return small_fit


@pytest.fixture
def readme_folder(tmp_path, monkeypatch):
    loop = importlib.import_module("vaelab.training.loop")
    api = importlib.import_module("vaelab.api")
    small_fit = _shrink(loop.fit)
    monkeypatch.setattr(loop, "fit", small_fit)
    monkeypatch.setattr(api, "fit", small_fit)
    monkeypatch.setattr(
        importlib.import_module("vaelab.evaluation.aevae"), "fit", small_fit
    )  # train_pair
    monkeypatch.chdir(tmp_path)
    import vaelab

    # The runs the examples take as made earlier (README's command-line sections).
    torch.manual_seed(0)
    for name, options in {
        "vae": {}, "vamp": {"prior": "vamp"}, "cvae": {"model": "cvae"}, "m2": {"model": "m2"},
    }.items():  # fmt: skip
        vaelab.train({"dataset": "digits", "hidden": "64", **options}, out=f"runs/{name}")
    for name in ("fmnist", "demo"):  # plain VAEs too: copies save training them
        shutil.copytree("runs/vae", f"runs/{name}")
    from vaelab.cli import main

    for name in ("vae", "vamp"):  # compare reads the evaluation.json the CLI writes
        assert main(["evaluate", f"runs/{name}", "--samples", "10", "--no-quality"]) == 0
    icons = tmp_path / "icons"  # a folder data set for vaelab.data.load_dataset
    icons.mkdir()
    from PIL import Image

    for i in range(6):
        Image.new("RGBA", (40, 40), (40 * i, 0, 0, 255)).save(icons / f"{i}.png")
    return tmp_path


def test_the_readme_has_the_blocks_this_test_edits():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 9
    for number, old, _, why in SUBSTITUTIONS:
        assert old in blocks[number - 1], f"README block {number} changed ({why})"


def test_every_readme_python_example_runs(readme_folder):
    import vaelab

    blocks = python_blocks(README.read_text())
    data = vaelab.api.load_test_images("runs/vae")
    namespace: dict = {"x": data.test_x[:2].float() / 255}  # block 4's images
    for number, block in enumerate(blocks, start=1):
        for n, old, new, _ in SUBSTITUTIONS:
            if n == number:
                block = block.replace(old, new)
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"README python block {number} failed: {exc!r}") from exc
    # The shapes the examples' comments promise, on 8x8 digits.
    assert namespace["images"].shape == (2, 8, 1, 8, 8)  # complete: (B, 8, C, H, W)
    assert namespace["path"].shape == (10, 1, 8, 8)  # interpolate(steps=10)
    assert namespace["grid"].shape == (6 * 9, 1, 8, 8)  # traverse of the top 6 dims
    assert namespace["result"]["bits_per_dim"] > 0
    assert namespace["rae_images"].shape == (16, 1, 8, 8)  # Model families: post-hoc samples
    assert namespace["rae_scores"]["no_bound"].startswith("no likelihood bound")
