"""vaelab evaluate survives Ctrl-C: the partial sums on disk, and --resume to the numbers
an uninterrupted evaluation gives, bit for bit (issue 24, item 3)."""

from __future__ import annotations

import json
import shutil

import pytest
from tests.conftest import small_config

import vaelab
from vaelab.cli import main
from vaelab.errors import Interrupted, VaelabError
from vaelab.evaluation.resume import PARTIAL
from vaelab.models.vae import VAE
from vaelab.training.loop import fit

pytestmark = pytest.mark.usefixtures("single_thread")

# K = 600: three chunks of at most 256 samples per batch of 16 digits images, 12 batches
ARGS = ["--samples", "600", "--seed", "3", "--no-quality"]
TIMES = ("seconds_bound", "seconds_nll", "seconds_extras", "files")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fit(small_config(epochs=2), tmp_path_factory.mktemp("ev") / "run")


def stop_at(monkeypatch, call):
    """Ctrl-C (a KeyboardInterrupt, as SIGINT raises) inside the ``call``-th chunk of
    log weights: in the middle of a batch, whose work is lost."""
    real, calls = VAE.log_weights, []

    def log_weights(self, x, k):
        calls.append(k)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self, x, k)

    monkeypatch.setattr(VAE, "log_weights", log_weights)
    return calls


def numbers(result):
    return {k: v for k, v in result.items() if k not in TIMES}


def test_ctrl_c_then_resume_gives_the_uninterrupted_numbers(run, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    assert main(["evaluate", str(reference), *ARGS]) == 0
    expected = json.loads((reference / "evaluation.json").read_text())
    assert not (reference / PARTIAL).exists()  # removed once the evaluation is written

    work = tmp_path / "work"
    shutil.copytree(run, work)
    capsys.readouterr()
    stop_at(monkeypatch, 17)  # batch 6 of 12, its second chunk: 5 batches = 80 images saved
    assert main(["evaluate", str(work), *ARGS]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "interrupted after 80 of 180 images of the NLL" in err
    line = err.split("resume with: ")[1]
    assert line == f"vaelab evaluate {work} --samples 600 --seed 3 --no-quality --resume"
    assert (work / PARTIAL).is_file() and not (work / "evaluation.json").exists()
    monkeypatch.undo()
    # without --resume the saved work is not thrown away
    with pytest.raises(VaelabError, match=r"80 of 180 images done.*pass --resume"):
        vaelab.evaluate(work, samples=600, seed=3, quality=False)
    # another K would not give the same numbers: refused, naming it
    with pytest.raises(VaelabError, match=r"samples 600.*samples 500"):
        vaelab.evaluate(work, samples=500, seed=3, quality=False, resume=True)
    assert main(line.split()[1:]) == 0
    assert "resuming the evaluation" in capsys.readouterr().err
    got = json.loads((work / "evaluation.json").read_text())
    assert numbers(got) == numbers(expected)  # every value, bit for bit
    assert not (work / PARTIAL).exists()


def test_interrupted_twice_and_after_the_nll(run, tmp_path, monkeypatch):
    expected = vaelab.evaluate(run, samples=600, seed=5, quality=False)
    work = tmp_path / "work"
    shutil.copytree(run, work)
    for call in (4, 11):  # stopped, resumed, stopped again further on
        stop_at(monkeypatch, call)
        with pytest.raises(Interrupted):
            vaelab.evaluate(work, samples=600, seed=5, quality=False, resume=True)
        monkeypatch.undo()

    # the NLL done, Ctrl-C in what follows it: the resume keeps the NLL, redoes the rest
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vaelab.api, "extra_metrics", stopped)
    with pytest.raises(Interrupted, match="interrupted after the NLL"):
        vaelab.evaluate(work, samples=600, seed=5, quality=False, resume=True)
    monkeypatch.undo()
    got = vaelab.evaluate(work, samples=600, seed=5, quality=False, resume=True)
    assert numbers(got) == numbers(expected)
    assert got["log_px_per_image"] == expected["log_px_per_image"]


def test_a_damaged_partial_file_is_one_line(run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(run, work)
    (work / PARTIAL).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(VaelabError, match="not a readable partial evaluation"):
        vaelab.evaluate(work, samples=2, quality=False, resume=True)
