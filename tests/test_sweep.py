"""vaelab sweep: one run per value, the rate–distortion points are the runs' own test
terms, and a sweep killed part-way trains only what is missing when run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vaelab
from conftest import small_config
from vaelab.errors import VaelabError
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.folder import read_metrics
from vaelab.training.tracking import STATUS

pytestmark = pytest.mark.usefixtures("single_thread")
FLAGS = {"dataset": "digits", "hidden": "64", "latent_dim": 4, "batch_size": 64,
         "progress": False, "report": False}  # fmt: skip


def test_points_are_the_runs_metrics_and_rate_falls_with_beta(tmp_path):
    out = tmp_path / "sweep"
    result = vaelab.sweep(small_config(epochs=3), out, values=[0.25, 1, 4])
    assert result["trained"] == [str(out / f"beta-{v}") for v in ("0.25", "1", "4")]
    rows = {Path(r["run"]).name: r for r in vaelab.runs([out])}
    assert {r["status"] for r in rows.values()} == {"finished"}
    assert {name: r["beta"] for name, r in rows.items()} == {
        "beta-0.25": 0.25, "beta-1": 1.0, "beta-4": 4.0}  # fmt: skip
    for point in result["points"]:
        last = read_metrics(Path(point["run"]))[-1]
        assert point["rate"] == last["test_kl"] and point["distortion"] == -last["test_recon"]
        assert point["elbo"] == last["test_elbo"]
        # ELBO = -(R + D); each image's terms are float32 (eps 6e-8) before the float64 sums
        assert point["rate"] + point["distortion"] == pytest.approx(-point["elbo"], rel=1e-6)
    # beta weighs the rate: the optimum moves to lower rate as beta grows (Alemi et al. 2018)
    rates = [p["rate"] for p in result["points"]]
    assert rates[0] > rates[1] > rates[2]
    assert json.loads((out / "rate_distortion.json").read_text())["points"] == result["points"]
    assert (out / "rate_distortion.png").stat().st_size > 10_000
    # Run again: everything is there, nothing is trained.
    again = vaelab.sweep(small_config(epochs=3), out, values=[0.25, 1, 4])
    assert again["trained"] == [] and len(again["skipped"]) == 3


def test_a_killed_sweep_resumes_and_trains_only_what_is_missing(tmp_path):
    out = tmp_path / "sweep"
    values = ["0.5", "1", "2"]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FLAGS.items()]
    cmd = [sys.executable, "-m", "vaelab", "sweep", *flags, "--epochs", "40",
           "--values", ",".join(values), "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "beta-0.5" / STATUS
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if first.is_file() and json.loads(first.read_text() or "{}").get("status") == "finished":
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # kill -9: no handler, no clean-up
    proc.wait()
    # A kill between a run folder's mkdir and its first file leaves a folder with no run yet.
    before = {p.name: (vaelab.runs([p]) or [{"status": "not started"}])[0]["status"]
              for p in out.glob("beta-*")}  # fmt: skip
    assert before["beta-0.5"] == "finished" and before.get("beta-2") != "finished"
    stamp = (out / "beta-0.5" / CHECKPOINT).stat().st_mtime_ns
    result = vaelab.sweep(small_config(epochs=40), out, values=[0.5, 1, 2])
    done = [str(out / f"beta-{v}") for v in values if before.get(f"beta-{v}") == "finished"]
    assert result["skipped"] == done
    assert result["trained"] == [str(out / f"beta-{v}") for v in values
                                 if str(out / f"beta-{v}") not in done]  # fmt: skip
    assert (out / "beta-0.5" / CHECKPOINT).stat().st_mtime_ns == stamp  # untouched
    rows = vaelab.runs([out])
    assert [r["status"] for r in rows] == ["finished"] * 3
    assert [r["epochs_done"] for r in rows] == [40] * 3


def test_bad_sweeps_are_refused_before_any_work(tmp_path):
    out = tmp_path / "s"
    with pytest.raises(VaelabError, match="--option hidden: not a numeric option"):
        vaelab.sweep(small_config(), out, option="hidden", values=[1, 2])
    with pytest.raises(VaelabError, match="--option: unknown config field 'betta'"):
        vaelab.sweep(small_config(), out, option="betta", values=[1, 2])
    with pytest.raises(VaelabError, match="--latent-dim: must be at least 1"):
        vaelab.sweep(small_config(), out, option="latent_dim", values=[2, 0])
    assert not out.exists()
    vaelab.sweep(small_config(epochs=1), out, values=[1])
    with pytest.raises(VaelabError, match="holds a sweep of other settings"):
        vaelab.sweep(small_config(epochs=1, seed=3), out, values=[1])
