"""vaelab runs: each run folder's status as the run really ended (finished, Ctrl-C,
an error, killed, still running), damaged files named but never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vaelab
from conftest import small_config
from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.evaluation.html_report import RUN_DRAWINGS
from vaelab.training import loop
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit
from vaelab.training.tracking import STATUS

pytestmark = pytest.mark.usefixtures("single_thread")


def _stop_at(monkeypatch, step: int, exc: BaseException) -> None:
    """Make the loop's ``step``-th training step raise ``exc`` (a Ctrl-C, a crash)."""
    real = loop.train_step

    def step_or_raise(s, *args):
        if s.state.step == step:
            raise exc
        return real(s, *args)

    monkeypatch.setattr(loop, "train_step", step_or_raise)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    fit(small_config(epochs=2, report=True), root / "finished", drawings=RUN_DRAWINGS)
    with pytest.MonkeyPatch.context() as mp:
        _stop_at(mp, 30, KeyboardInterrupt())  # in epoch 2 of 3
        with pytest.raises(KeyboardInterrupt):
            fit(small_config(epochs=3), root / "interrupted")
    with pytest.MonkeyPatch.context() as mp:
        _stop_at(mp, 5, RuntimeError("CUDA error: an illegal memory access"))
        with pytest.raises(RuntimeError):
            fit(small_config(epochs=2), root / "failed")
    # Killed outright (kill -9): status.json still says running, by a process now gone.
    killed = shutil.copytree(root / "interrupted", root / "killed")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    status = json.loads((killed / STATUS).read_text())
    (killed / STATUS).write_text(json.dumps({**status, "status": "running", "pid": int(dead)}))
    running = shutil.copytree(root / "interrupted", root / "running")
    (running / STATUS).write_text(json.dumps({**status, "status": "running", "pid": os.getpid()}))
    corrupt = shutil.copytree(root / "finished", root / "corrupt")
    (corrupt / "run.json").write_text('{"dataset": "dig')  # torn write
    with open(corrupt / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "st')  # a torn last line
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    (root / "old").mkdir()  # a run from before status.json: told by its epochs
    shutil.copytree(root / "finished", root / "old" / "done", ignore=shutil.ignore_patterns(STATUS))
    return root


def test_each_run_gets_the_status_of_how_it_ended(runs):
    rows = {Path(r["run"]).name: r for r in vaelab.runs([runs])}
    assert set(rows) == {
        "finished",
        "interrupted",
        "failed",
        "killed",
        "running",
        "corrupt",
        "done",
    }
    want = {"finished": "finished", "interrupted": "interrupted", "failed": "failed",
            "killed": "interrupted", "running": "running", "corrupt": "finished",
            "done": "finished"}  # fmt: skip
    assert {k: r["status"] for k, r in rows.items()} == want
    assert rows["finished"]["epochs"] == "2/2" and rows["interrupted"]["epochs"] == "1/3"
    assert rows["failed"]["epochs"] == "0/2"
    assert "CUDA error: an illegal memory access" in rows["failed"]["problem"]
    assert rows["corrupt"]["problem"] == "run.json: unreadable (JSONDecodeError)"
    # The torn metrics line is skipped; the run's dataset comes from its config instead.
    assert rows["corrupt"]["dataset"] == "digits" and rows["corrupt"]["epochs"] == "2/2"
    last = read_metrics(runs / "finished")[-1]
    assert rows["finished"]["test_elbo"] == last["test_elbo"]
    assert rows["finished"]["model"] == "vae/mlp" and rows["finished"]["likelihood"] == "bernoulli"
    assert rows["finished"]["seconds"] > 0


def test_the_table_from_the_command_line_json_csv_and_sort(runs, tmp_path, capsys):
    out = tmp_path / "rows.json"
    args = ["runs", str(runs), "--sort", "test_elbo", "--reverse", "--json", str(out),
            "--csv", str(tmp_path / "rows.csv"), "--html", str(tmp_path / "runs.html")]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Traceback" not in text and "failed" in text and "running" in text
    rows = json.loads(out.read_text())
    elbos = [r["test_elbo"] for r in rows if r["test_elbo"] is not None]
    assert elbos == sorted(elbos, reverse=True) and rows[-1]["test_elbo"] is None  # failed: none
    assert (tmp_path / "rows.csv").read_text().splitlines()[0].startswith("run,dataset,model")
    page = (tmp_path / "runs.html").read_text()
    # samples + reconstructions of the finished run and its two copies (corrupt, old/done)
    assert page.count("data:image/png;base64") == 6
    assert main(["runs", str(runs), "--json", str(out)]) == 2  # exists: not replaced
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere: no such folder" in err and "Traceback" not in err
    with pytest.raises(VaelabError, match="--sort: unknown column 'elbo'"):
        vaelab.runs([runs], sort="elbo")
