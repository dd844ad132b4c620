"""What the user sees: where command outputs go, what each PNG records about its making,
titles that fit, traversal ticks on their tiles, the evaluation in the report."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from vaelab.evaluation.html_report import _metrics_table
from vaelab.evaluation.plots import grid_array, save_figure, traversal_figure


def vaelab(*args):
    proc = subprocess.run([sys.executable, "-m", "vaelab", *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def test_command_pictures_go_to_outputs_and_record_their_command(digits_run, tmp_path):
    run = shutil.copytree(digits_run, tmp_path / "run")
    training_samples = (run / "samples.png").read_bytes()
    vaelab("sample", run, "-n", "4", "--temperature", "0.5")
    vaelab("sample", run, "-n", "4")
    outputs = run / "outputs"
    assert sorted(p.name for p in outputs.iterdir()) == ["sample-2.png", "sample.png"]
    assert (run / "samples.png").read_bytes() == training_samples  # training's, untouched
    with Image.open(outputs / "sample.png") as img:
        assert img.text["Command"] == f"vaelab sample {run} -n 4 --temperature 0.5"
        assert img.text["Software"].startswith("vaelab ")
    with Image.open(run / "samples.png") as img:  # training's picture names its command too
        assert img.text["Command"].startswith("python ")  # made by fit() in this test process


def test_evaluate_json_keeps_the_runs_record_for_compare_and_the_report(digits_run, tmp_path):
    # Before: with --json the run folder got nothing, so compare said "no evaluation".
    run = shutil.copytree(digits_run, tmp_path / "run")
    out = tmp_path / "elsewhere" / "e.json"
    vaelab("evaluate", run, "--json", out, "--samples", "5", "--limit", "40", "--no-quality")
    mine, kept = json.loads(out.read_text()), json.loads((run / "evaluation.json").read_text())
    assert mine == kept and kept["images"] == 40 and kept["samples"] == 5
    table = vaelab("compare", run, "--out", tmp_path / "c.png").stdout
    assert f"{kept['nll_nats']:.2f}" in table
    page = (run / "report.html").read_text()  # refreshed by evaluate
    assert '<section id="evaluation">' in page
    assert f"<th>NLL (nats)</th><td>{kept['nll_nats']:.2f}</td>" in page
    assert f"<th>bits/dim</th><td>{kept['bits_per_dim']:.4f}</td>" in page


def test_traversal_ticks_sit_on_the_centres_of_their_tiles():
    # Reference: the tiles' pixel columns and rows found in the drawn grid itself (black
    # tiles on white padding), not the formula the figure uses.
    rows, cols, h, w = 3, 5, 8, 6
    images = torch.zeros(rows * cols, 1, h, w)
    fig = traversal_figure(images, ["a", "b", "c"], np.linspace(-1, 1, cols).tolist(), "t")
    ax = fig.axes[0]
    dark = grid_array(images, cols) < 128
    col_runs = np.flatnonzero(dark.any(0))
    row_runs = np.flatnonzero(dark.any(1))
    centres_x = [col_runs[i * w : (i + 1) * w].mean() for i in range(cols)]
    centres_y = [row_runs[i * h : (i + 1) * h].mean() for i in range(rows)]
    np.testing.assert_allclose(ax.get_xticks(), centres_x)
    np.testing.assert_allclose(ax.get_yticks(), centres_y)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["-1", "-0.5", "+0", "+0.5", "+1"]
    third = traversal_figure(torch.zeros(4, 1, h, w), ["a"], np.linspace(-1, 1, 4).tolist(), "t")
    assert [t.get_text() for t in third.axes[0].get_xticklabels()][1] == "-0.333"


def test_long_titles_are_wrapped_inside_the_figure(tmp_path):
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1])
    long = "fashion-mnist: latent means of 10000 test images on their first two principal axes"
    ax.set_title(long)
    fig.suptitle(long + " and a suptitle that is longer still than the axes title above")
    save_figure(fig, tmp_path / "t.png")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for text in (ax.title, fig._suptitle):
        box = text.get_window_extent(renderer)
        assert "\n" in text.get_text()
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # nothing clipped at the edges
    assert " ".join(ax.title.get_text().split()) == long  # every word kept


def test_metrics_table_of_100_epochs_scrolls_under_a_fixed_header():
    row = {"epoch": 1, "train_bound": -30.0, "test_elbo": -29.5, "test_recon": -25.0,
           "test_kl": 4.5, "beta": 1.0, "lr": 1e-3, "seconds": 4.2,
           "images_per_s": 14000}  # fmt: skip
    page = _metrics_table([{**row, "epoch": i + 1} for i in range(100)])
    assert page.startswith('<div class="scroll"><table>') and page.count("<tr>") == 101
    assert "100 epochs" in page
    assert not _metrics_table([row] * 5).startswith("<div")  # short runs: a plain table


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_steps_show_progress_on_a_terminal_only(digits_run, monkeypatch):
    from vaelab.api import load, load_test_images
    from vaelab.evaluation.nll import log_likelihood
    from vaelab.evaluation.samplers import fit_gmm

    model = load(digits_run)
    x = load_test_images(digits_run).test_x[:40]
    latents = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    for stream, shown in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        log_likelihood(model, x, samples=8, batch_size=16)
        fit_gmm(latents, components=2)
        text = stream.getvalue()
        assert ("importance sampling, K=8" in text) is shown
        assert ("fitting a 2-component GMM" in text) is shown


def test_gmm_fit_step_by_step_equals_one_scikit_learn_fit():
    # Reference: scikit-learn's own fit (max_iter 100, tol 1e-3) on the same data and seed;
    # the stepwise fit runs the same EM iterations, so only float rounding may differ.
    from sklearn.mixture import GaussianMixture as SkGMM

    from vaelab.evaluation.samplers import fit_gmm

    gen = np.random.default_rng(3)
    data = np.concatenate([gen.normal(-3, 1, (400, 3)), gen.normal(2, 0.5, (300, 3)),
                           gen.normal((0, 4, 0), 0.7, (300, 3))])  # fmt: skip
    ref = SkGMM(3, covariance_type="full", reg_covar=1e-6, random_state=0).fit(data)
    mine = fit_gmm(torch.tensor(data), components=3, seed=0)
    np.testing.assert_allclose(mine.weights, ref.weights_, rtol=1e-9)
    np.testing.assert_allclose(mine.means, ref.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mine.covariances, ref.covariances_, rtol=1e-9, atol=1e-12)
