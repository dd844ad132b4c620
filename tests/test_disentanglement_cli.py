"""``vaelab disentanglement`` and ``vaelab.disentanglement`` on a tiny trained run whose
data (an NPZ of sprites with its factors) has ground truth; labelled data without factors;
the one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import vaelab
from vaelab.data.dsprites import FACTOR_NAMES, SpriteSpec, all_classes, render

TINY = SpriteSpec(size=16, scales=2, orientations=2, positions=4)  # 192 images


def vaelab_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "vaelab", *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("disent")
    x = render(TINY, progress=False)
    np.savez(folder / "sprites.npz", images=np.tile(x, (3, 1, 1, 1)),
             factors=np.tile(all_classes(TINY.factor_sizes), (3, 1)),
             factor_names=np.array(FACTOR_NAMES))  # fmt: skip
    vaelab_cli("train", "--dataset", folder / "sprites.npz", "--epochs", "2", "--hidden", "64",
               "--latent-dim", "3", "--out", folder / "run", "--progress", "false",
               "--report", "false")  # fmt: skip
    return folder / "run"


def test_cli_writes_json_and_pictures(run):
    out = vaelab_cli("disentanglement", run, "--pool", "400", "--seeds", "2", "--votes", "100",
                     "--mig-samples", "300").stdout  # fmt: skip
    assert "mig_exact" in out and "dci_disentanglement" in out
    saved = json.loads((run / "outputs" / "disentanglement.json").read_text())
    assert saved["factor_names"] == ["shape", "scale", "orientation", "posX", "posY"]  # no color
    assert saved["seeds"] == [0, 1]
    s = saved["summary"]
    for name in ("beta_vae_score", "factor_vae_score", "mig_exact", "mig_binned", "sap",
                 "dci_disentanglement", "dci_completeness", "dci_informativeness",
                 "total_correlation"):  # fmt: skip
        assert s[name]["n"] == 2 and np.isfinite(s[name]["mean"])
    assert np.asarray(saved["runs"][0]["mig"]["exact"]["mi"]).shape == (3, 5)
    for picture in ("disentanglement-traverse.png", "disentanglement-mi.png"):
        assert (run / "outputs" / picture).stat().st_size > 1000
    assert len(saved["traversal"]["labels"]) == 3


def test_api_subset_of_metrics(run, tmp_path):
    result = vaelab.disentanglement(run, pool=300, seeds=1, metrics=["mig", "sap"],
                                    mig_samples=200, json_out=tmp_path / "d.json")  # fmt: skip
    assert set(result["summary"]) == {"mig_exact", "mig_binned", "sap", "total_correlation"}
    assert json.loads((tmp_path / "d.json").read_text())["summary"] == result["summary"]


def test_labelled_data_without_factors(tmp_path):
    # digits: one label column, not a factorial grid: the vote scores are left out, why said
    run = tmp_path / "digits"
    vaelab_cli("train", "--dataset", "digits", "--epochs", "1", "--hidden", "32",
               "--latent-dim", "2", "--out", run, "--progress", "false",
               "--report", "false")  # fmt: skip
    result = vaelab.disentanglement(run, pool=500, seeds=1, mig_samples=200)
    assert result["factor_names"] == ["label"]
    assert set(result["omitted"]) == {"beta_vae", "factor_vae"}
    assert "mig_exact" in result["summary"] and "dci_completeness" in result["summary"]


def test_bad_input_is_one_line(run):
    proc = vaelab_cli("disentanglement", run, "--metrics", "mig,bogus", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--metrics" in proc.stderr and "bogus" in proc.stderr
    proc = vaelab_cli("disentanglement", run, "--pool", "5", check=False)
    assert proc.returncode == 2 and "--pool" in proc.stderr


def test_evaluate_and_report_include_it(run):
    from vaelab.evaluation.html_report import write_report

    result = vaelab.evaluate(run, samples=2, limit=50, quality=False)
    d = result["disentanglement"]
    assert d["factor_names"][0] == "shape" and "mig_exact" in d["summary"]
    vaelab_cli("disentanglement", run, "--pool", "300", "--seeds", "1", "--votes", "50",
               "--mig-samples", "100", "--metrics", "mig")  # fmt: skip
    page = write_report(run).read_text()
    section = page.split('<section id="disentanglement">')[1]
    assert "mig_exact" in section and section.count("<img ") == 2


def test_autoencoder_codes_are_scored_without_the_gaussian_parts(tmp_path):
    config = {"dataset": "digits", "model": "ae", "hidden": "32", "latent_dim": 3,
              "epochs": 1, "progress": False, "report": False}  # fmt: skip
    run = vaelab.train(config, out=tmp_path / "ae")
    r = vaelab.disentanglement(run, pool=400, seeds=1, out=tmp_path / "t.png",
                               matrix_out=tmp_path / "m.png")  # fmt: skip
    assert "mig_binned" in r["summary"] and "mig_exact" not in r["summary"]
    assert {"mig_exact", "total_correlation", "traversal"} <= set(r["omitted"])
    assert (tmp_path / "m.png").is_file() and not (tmp_path / "t.png").exists()
