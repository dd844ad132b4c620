"""The HTML report, training curves and the exploration commands end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from tests.conftest import small_config

from vaelab.api import load, load_test_images, open_run
from vaelab.data.prepare import to_unit
from vaelab.evaluation.aevae import box_coverage, judge_by_classifier, judge_by_reconstruction
from vaelab.evaluation.html_report import CURVES_PNG, REPORT, SECTIONS, write_curves

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected into a copy of the page: records every image's naturalWidth and every error
# (script errors, failed resource loads, CSP violations, console.error) into the DOM,
# where --dump-dom shows it.
PROBE = """<script>
window.__errors = [];
addEventListener('error', e => __errors.push('error: ' + (e.message || e.target.src)), true);
addEventListener('securitypolicyviolation', e => __errors.push('csp: ' + e.blockedURI));
const __ce = console.error;
console.error = (...a) => { __errors.push('console: ' + a.join(' ')); __ce(...a); };
addEventListener('load', () => { const p = document.createElement('pre'); p.id = 'probe';
  p.textContent = JSON.stringify({widths: [...document.images].map(i => i.naturalWidth),
                                  errors: __errors});
  document.body.appendChild(p); });
</script>"""


def test_report_is_written_by_train_with_every_section(digits_run):
    page = (digits_run / REPORT).read_text()
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in page
    # Nothing outside the file: no URL other than data: in any src/href attribute.
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    # A VAE's report shows pictures in every picture section: curves 1, samples 1,
    # reconstructions 1, similar 1, interpolations 1, traversals 2, latent 1 (8-D: no manifold).
    assert len(re.findall(r"<img ", page)) == 8
    assert page.count("<tr>") == 1 + 15  # header + one row per epoch
    assert (digits_run / CURVES_PNG).is_file()


def test_training_curves_png_follows_metrics(digits_run, tmp_path):
    assert write_curves(tmp_path) is None  # no metrics.jsonl yet: nothing to draw
    with Image.open(digits_run / CURVES_PNG) as img:
        assert img.size == (1200, 360)  # 12 x 3.6 inches at 100 dpi
        assert len(np.unique(np.asarray(img.convert("L")))) > 20  # drawn, not blank


def _chromium_probe(page: Path, tmp: Path) -> tuple[dict, str]:
    html = page.read_text()
    # The probe is an inline script: the page's policy must let that one script run.
    html = html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';")
    html = html.replace("<head>", "<head>" + PROBE, 1)
    probe_page = tmp / "probe.html"
    probe_page.write_text(html)
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=10000", "--dump-dom", probe_page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no probe in chromium's DOM; stderr: {done.stderr[-2000:]}"
    text = found.group(1).replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(text), done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(digits_run, tmp_path):
    probe, stderr = _chromium_probe(digits_run / REPORT, tmp_path)
    assert len(probe["widths"]) == 8 and all(w > 0 for w in probe["widths"]), probe
    assert probe["errors"] == []
    assert "CONSOLE" not in stderr  # chromium logs page console messages as INFO:CONSOLE


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_chromium_probe_catches_a_broken_image(digits_run, tmp_path):
    """The probe must be able to fail: a truncated PNG decodes to width 0 and logs an error."""
    broken = tmp_path / "broken.html"
    page = (digits_run / REPORT).read_text()
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]{40}", "base64,iVBORw0KGgo", page, count=1))
    (tmp_path / "p").mkdir()
    probe, _ = _chromium_probe(broken, tmp_path / "p")
    assert probe["widths"][0] == 0 and probe["errors"]


def test_judge_accepts_data_and_rejects_noise(digits_run):
    run = open_run(digits_run)
    model = run.model
    data = load_test_images(run)
    real = to_unit(data.train_x[:50])
    ok, info = judge_by_reconstruction(run, real, data)
    assert ok.all()  # training images are their own nearest neighbours: distance 0
    noise = torch.rand(50, *model.image_shape, generator=torch.Generator().manual_seed(0))
    ok, _ = judge_by_reconstruction(run, noise, data)
    assert not ok.any() and info["threshold_mse"] > 0


def test_classifier_judge_is_per_point_knn_precision(digits_run):
    from vaelab.evaluation.quality import load_classifier, precision_recall

    run = open_run(digits_run)
    model = run.model
    data = load_test_images(run)
    ok, info = judge_by_classifier(run, to_unit(data.test_x[:40]), data)
    assert ok.all() and info["k"] == 3  # real test images are centres of the manifold balls
    torch.manual_seed(0)
    samples = model.sample(300)
    ok, _ = judge_by_classifier(run, samples, data)
    # Same manifold, same features: the share must equal issue 3's aggregate precision.
    net, _ = load_classifier(data)
    with torch.no_grad():
        real, fake = net.features(to_unit(data.test_x)), net.features(samples)
    precision, _ = precision_recall(real, fake, 3)
    assert ok.double().mean().item() == pytest.approx(precision, abs=1e-12)


def _cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``vaelab ARGS`` in-process (the subprocess path is tested once below)."""
    from vaelab.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_explore_commands(digits_run, tmp_path, capsys):
    code, _, err = _cli(capsys, "interpolate", digits_run, "--from", 0, "--to", 5,
                        "--steps", 6, "--out", tmp_path / "i.png")  # fmt: skip
    assert code == 0, err
    with Image.open(tmp_path / "i.png") as img:  # 2 rows x (6 + 2) tiles of 8 px, x7 scale
        assert img.size == (7 * (8 * 9 + 1), 7 * (2 * 9 + 1))  # 1-px gaps and border
    run = shutil.copytree(digits_run, tmp_path / "run")  # the fixture's folder stays as is
    code, out, err = _cli(capsys, "traverse", run, "--index", 1, 2, "--dims", 3)
    assert code == 0, err
    assert (run / "outputs" / "traverse-1.png").is_file()
    assert (run / "outputs" / "traverse-2.png").is_file()
    assert out.startswith("dimensions by KL: z")
    code, out, err = _cli(capsys, "latent-plot", digits_run, "--out", tmp_path / "l.png")
    assert code == 0 and "180 test images" in out, err
    code, _, err = _cli(capsys, "report", digits_run, "--out", tmp_path / "r.html")
    assert code == 0, err
    assert all(f'id="{k}"' in (tmp_path / "r.html").read_text() for k, _ in SECTIONS)
    code, _, err = _cli(capsys, "interpolate", digits_run, "--from", 0, "--to", 99999)
    assert code == 2 and err.count("\n") == 1 and "--to" in err


def test_cli_ae_vs_vae_trains_both_and_quantifies(tmp_path, capsys):
    code, out, err = _cli(capsys, "ae-vs-vae", "--dataset", "digits", "--epochs", 2,
                          "--hidden", 64, "--points", 200, "--out", tmp_path / "cmp")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "cmp" / "ae-vs-vae.json").read_text())
    for key in ("ae", "vae"):
        assert 0.0 <= result[key]["well_formed"] <= 1.0 and 0 < result[key]["box_coverage"] <= 1
        assert load(tmp_path / "cmp" / key).latent_dim == 2
    assert result["judge"] == "classifier" and result["points"] == 200  # digits has labels
    assert f"VAE {result['vae']['well_formed']:.1%}" in out
    with Image.open(tmp_path / "cmp" / "ae-vs-vae.png") as img:
        assert img.size == (1300, 1300)


def test_cli_error_is_one_line_in_a_subprocess(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vaelab", "ae-vs-vae", "--ae", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--vae" in done.stderr


def test_report_of_a_2d_autoencoder_has_notes_and_manifold_only_for_vae(tmp_path):
    from vaelab.evaluation.html_report import write_report
    from vaelab.training.loop import fit

    run = fit(small_config(model="ae", latent_dim=2, epochs=1), tmp_path / "ae")
    page = write_report(run).read_text()
    assert "a plain autoencoder has no prior" in page
    # curves, reconstructions, interpolations, latent scatter; no manifold without a prior.
    assert len(re.findall(r"<img ", page)) == 4


def test_box_coverage_counts_points_near_the_codes():
    # Codes on a unit grid over [0, 9]^2: each code's 3rd nearest neighbour is 1 away.
    g = torch.arange(10.0)
    codes = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    near = torch.tensor([[0.5, 0.5], [4.2, 7.9], [9.0, 9.0]])
    far = torch.tensor([[20.0, 20.0], [-5.0, 3.0]])
    assert box_coverage(codes, near) == 1.0 and box_coverage(codes, far) == 0.0
    assert box_coverage(codes, torch.cat([near, far])) == pytest.approx(3 / 5)


def test_training_curves_tick_whole_epochs():
    # Two epochs used to be ticked 1.0, 1.2, ..., 2.0: epochs are counted, not measured.
    from vaelab.evaluation.plots import CURVES, training_curves

    keys = {k for _, _, train, test in CURVES for k in (train, test)}
    fig = training_curves([{"epoch": e, **dict.fromkeys(keys, -100.0 * e)} for e in (1, 2)])
    FigureCanvasAgg(fig).draw()  # tick positions are decided when drawn
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
