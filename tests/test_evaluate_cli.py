"""vaelab evaluate (health, reconstruction, sample quality), sample --sampler, and compare."""

import json
import shutil
import subprocess
import sys

import pytest

from vaelab.cli import main


@pytest.fixture(scope="module")
def evaluated(digits_run, tmp_path_factory):
    """Two copies of the digits run, each evaluated once through the CLI."""
    root = tmp_path_factory.mktemp("eval")
    runs = []
    for name in ("a", "b"):
        run = root / name
        shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("gmm-*", "evaluation*"))
        runs.append(run)
    mp = pytest.MonkeyPatch()
    # Shared with test_quality: the digits classifier trains once per session.
    mp.setenv("VAELAB_CACHE", str(tmp_path_factory.getbasetemp() / "vaelab-cache"))
    args = ["--samples", "20", "--sampler", "prior", "--sampler", "gmm", "--components", "4",
            "--quality-samples", "150"]  # fmt: skip
    assert main(["evaluate", str(runs[0]), *args]) == 0
    # Another seed: the same model and images with fresh importance samples.
    assert main(["evaluate", str(runs[1]), "--samples", "20", "--no-quality", "--seed", "1"]) == 0
    mp.undo()
    return runs


def test_evaluate_writes_health_reconstruction_and_quality(evaluated, capsys):
    result = json.loads((evaluated[0] / "evaluation.json").read_text())
    assert result["health"]["latent_dim"] == 8 and 0 < result["health"]["active_units"] <= 8
    assert len(result["health"]["kl_per_dim"]) == 8
    # The per-dimension KLs of a factorised Gaussian sum to the model's analytic KL.
    assert sum(result["health"]["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-4)
    assert 0 < result["reconstruction"]["mse"] < 0.25
    q = result["quality"]
    assert set(q) == {"prior", "gmm"} and q["prior"]["samples"] == 150
    for s in q.values():
        assert s["frechet_distance"] > 0 and 0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1
    assert result["classifier"]["test_accuracy"] > 0.8
    assert list(evaluated[0].glob("gmm-4-*.npz"))
    other = json.loads((evaluated[1] / "evaluation.json").read_text())
    assert "quality" not in other and "health" in other


def test_compare_prints_and_saves_table_and_chart(evaluated, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["compare", *map(str, evaluated), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| run | NLL (nats)" in printed and "FD gmm" in printed
    table = json.loads(out.with_suffix(".json").read_text())
    assert [r[0] for r in table["rows"]] == ["a", "b"]
    nll = table["header"].index("NLL (nats)")
    ev = json.loads((evaluated[0] / "evaluation.json").read_text())
    assert table["rows"][0][nll] == ev["nll_nats"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.with_suffix(".md").is_file()
    # Paired to the first run over the same images: the difference of the two means exactly
    # (up to the 1e-4 rounding of the stored values), and a paired SE far below either SE,
    # since only the K=20 noise differs while image difficulty (the SE's bulk) is shared.
    first, second = (json.loads((r / "evaluation.json").read_text()) for r in evaluated)
    d = table["header"].index("dNLL vs first")
    assert table["rows"][0][d] == 0 and table["rows"][0][d + 1] == 0
    assert table["rows"][1][d] == pytest.approx(second["nll_nats"] - first["nll_nats"], abs=1e-4)
    assert 0 < table["rows"][1][d + 1] < first["nll_nats_se"] / 5
    assert main(["compare", *map(str, evaluated), "--out", str(out)]) == 2  # never overwrite
    # Different images (a --limit) cannot pair: the paired columns stay empty.
    other = tmp_path / "first100.json"
    args = ["--samples", "5", "--limit", "100", "--no-quality", "--json", str(other)]
    copy = shutil.copytree(evaluated[0], tmp_path / "a")  # evaluate adds to the run folder
    assert main(["evaluate", str(copy), *args]) == 0
    # (evaluate also kept this one as the run's newest record: name the full-set file)
    full = str(copy / "evaluation.json")
    assert main(["compare", full, str(other), "--out", str(tmp_path / "c2.png")]) == 0
    rows = json.loads((tmp_path / "c2.json").read_text())["rows"]
    assert rows[1][0] == tmp_path.name and rows[1][d] is None and rows[1][d + 1] is None


def test_sample_with_gmm_sampler_and_errors(evaluated, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["sample", str(evaluated[0]), "--sampler", "gmm", "--components", "4",
                 "-n", "9", "--out", str(out)]) == 0  # fmt: skip
    assert out.read_bytes()[:4] == b"\x89PNG"
    proc = subprocess.run([sys.executable, "-m", "vaelab", "compare", str(tmp_path / "none")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "no such run folder" in proc.stderr
    assert "Traceback" not in proc.stderr
