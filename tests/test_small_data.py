"""Small and odd datasets through the commands a user runs after training: a folder of a
few dozen images, a test set of one image, an unlabelled folder; and what evaluate and
training print about bits/dim (issue 24, items 1 and 5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from vaelab.cli import main
from vaelab.likelihoods import LIKELIHOODS, nll_meaning

pytestmark = pytest.mark.usefixtures("single_thread")

QUIET = ["--progress", "false", "--hidden", "16", "--latent-dim", "2", "--batch-size", "8"]


def folder(root, n, size=(8, 8), classes=0, seed=0):
    """``n`` random grey PNGs, directly in ``root`` or spread over ``classes`` folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        where = root / f"c{i % classes}" if classes else root
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(where / f"{i}.png")
    return root


def test_forty_images_train_and_report(tmp_path, capsys):
    # 40 images -> a test set of 4: the report's three interpolation pairs once indexed
    # past it (IndexError after the checkpoint was written, exit 1).
    data = folder(tmp_path / "icons", 40)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--out", str(run), *QUIET]) == 0
    page = (run / "report.html").read_text()
    assert "two pairs of test images" in page  # as many pairs as the 4 test images give
    assert (run / "checkpoint.safetensors").is_file()


def test_one_test_image_does_what_it_can(tmp_path, capsys):
    data = folder(tmp_path / "two", 2)  # 1 training image, 1 test image
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--out", str(run), *QUIET]) == 0
    err = capsys.readouterr().err
    assert "no interpolations (they need 2 test images; the test set has 1)" in err
    assert "interpolations need 2 test images" in (run / "report.html").read_text()
    assert main(["latent-plot", str(run)]) == 0  # PCA of one point: a second axis of 0
    assert main(["evaluate", str(run), "--samples", "3"]) == 0
    out, err = capsys.readouterr()
    # unlabelled: the sample-quality part is left out in one line, the rest is computed
    assert "sample-quality metrics left out" in err and len(err.strip().splitlines()) == 2
    assert "(one test image: no spread)" in out and "posterior collapse" not in out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["images"] == 1 and result["health"]["active_units"] is None


def test_small_labelled_folder_evaluates_with_whole_sentences(tmp_path, capsys):
    data = folder(tmp_path / "classes", 60, classes=3)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--out", str(run), *QUIET]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--samples", "2"]) == 0
    err = capsys.readouterr().err
    # the class-count line once (the report refresh read the folder a second time)
    assert err.count("3 classes (images at any depth") == 1, err
    result = json.loads((run / "evaluation.json").read_text())
    omitted = result["quality_omitted"]
    assert omitted is not None and not omitted.endswith("with fewer"), omitted


def test_bits_per_dim_says_what_it_is(tmp_path, capsys):
    # Bernoulli on grey levels: a cross-entropy. Printed with its standard error (once only
    # in the JSON) and a caveat; the JSON says bits_per_dim_comparable = false.
    run = tmp_path / "grey"
    args = ["--dataset", "digits", "--epochs", "1", *QUIET, "--progress", "true"]
    assert main(["train", *args, "--out", str(run), "--report", "false"]) == 0
    grey_epoch = capsys.readouterr().out
    assert "epoch 1:" in grey_epoch and "bits/dim" not in grey_epoch  # not meaningful here
    assert main(["evaluate", str(run), "--samples", "2", "--no-quality"]) == 0
    out = capsys.readouterr().out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["bits_per_dim_comparable"] is False
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("NLL (bits/dim)"))
    assert lines[at + 1].split()[-1] == f"{result['bits_per_dim_se']:.3f}"
    assert "standard error" in lines[at + 1]
    assert "cross-entropy" in lines[at + 2] and "not comparable" in lines[at + 2]
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "not comparable with published figures" in (tmp_path / "r.html").read_text()
    # an 8-bit likelihood: bits/dim of the -ELBO each epoch, and no caveat
    run8 = tmp_path / "eight"
    assert main(["train", *args, "--likelihood", "dlogistic", "--out", str(run8),
                 "--report", "false"]) == 0  # fmt: skip
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch 1"))
    elbo = float(line.split("test ELBO ")[1].split()[0])
    printed = float(line.split("-ELBO ")[1].split()[0])
    assert printed == pytest.approx(-elbo / (64 * math.log(2)), abs=6e-3)  # 8x8x1 dims
    assert main(["evaluate", str(run8), "--samples", "2", "--no-quality"]) == 0
    assert "not comparable" not in capsys.readouterr().out
    assert json.loads((run8 / "evaluation.json").read_text())["bits_per_dim_comparable"]


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_nll_meaning_follows_the_likelihood_and_binarization(name):
    # comparable exactly where -log P(x) of stored values: 8-bit models, binarized Bernoulli
    for binarize in ("none", "static", "dynamic"):
        got = nll_meaning(name, binarize)["bits_per_dim_comparable"]
        expected = name in ("dlogistic", "dmol") or (name == "bernoulli" and binarize != "none")
        assert got is expected, (name, binarize)


def test_fuzz_findings_are_one_line_errors(tmp_path):
    # found by benchmarks/fuzz.py: a YAML key that is a number or null, and an IDX header
    # with an empty dimension beside huge ones (numpy: "array is too big")
    import struct

    from vaelab.config import load_config
    from vaelab.data import load_dataset
    from vaelab.errors import VaelabError

    for text in ("1: 2\n", "~: 3\n"):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(VaelabError, match="unknown option") as err:
            load_config(path)
        assert "\n" not in str(err.value)
    idx = tmp_path / "x-images-idx3-ubyte"
    idx.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", 393216, 83886080, 2970657282, 0))
    with pytest.raises(VaelabError, match="none at all"):
        load_dataset(str(idx))
