"""--track: TensorBoard and MLflow, read back with their own readers and compared with
metrics.jsonl; tracking changes nothing in the training; a failing tracker costs a
warning, not the run; a missing extra is refused before any work."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import small_config
from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.training import trackers, tracking
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.folder import read_metrics
from vaelab.training.loop import fit

pytestmark = pytest.mark.usefixtures("single_thread")
EPOCHS, EVERY = 2, 7  # digits: 1,437 training images / 64 = 23 steps an epoch


def _checkpoint(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(run / CHECKPOINT), "pt") as f:
        meta = json.loads(next(iter(f.metadata().values())))
    return load_file(run / CHECKPOINT), meta


def _without_track(meta: dict) -> dict:
    meta = json.loads(json.dumps(meta))

    def strip(node):
        if isinstance(node, dict):
            for key in ("track", "track_every", "sha256", "digest"):
                node.pop(key, None)
            for value in node.values():
                strip(value)

    strip(meta)
    return meta


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    return fit(small_config(epochs=EPOCHS), tmp_path_factory.mktemp("plain") / "run")


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    config = small_config(epochs=EPOCHS, track="tensorboard", track_every=EVERY)
    return fit(config, tmp_path_factory.mktemp("tb") / "run")


def _same_training(a: Path, b: Path) -> None:
    """Every checkpoint tensor bit for bit (weights, Adam moments, RNG states) and the
    checkpoint's JSON apart from the tracking options (and the digest over them)."""
    (ta, ma), (tb, mb) = _checkpoint(a), _checkpoint(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert _without_track(ma) == _without_track(mb)
    timing = ("seconds", "images_per_s")
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in read_metrics(x)]
            for x in (a, b)]  # fmt: skip
    assert rows[0] == rows[1]


def test_tensorboard_scalars_equal_metrics_jsonl_and_training_is_unchanged(tb_run, plain_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_run / "tensorboard"), size_guidance={"scalars": 0, "images": 0,
                                                                       "tensors": 0})  # fmt: skip
    acc.Reload()
    rows = read_metrics(tb_run)
    assert len(rows) == EPOCHS
    for key in ("test_elbo", "test_recon", "test_kl", "train_loss", "lr", "beta", "train_kl"):
        events = acc.Scalars(f"epoch/{key}")
        assert [e.step for e in events] == [r["step"] for r in rows]
        # TensorBoard stores float32: equal to the JSON's float64 within float32 rounding.
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in rows], rtol=1e-6)
    steps = [e.step for e in acc.Scalars("step/loss")]
    assert steps == list(range(EVERY, rows[-1]["step"] + 1, EVERY))
    for key in ("step/bound", "step/recon", "step/kl", "step/lr", "step/beta",
                "step/skipped_steps"):  # fmt: skip
        assert [e.step for e in acc.Scalars(key)] == steps
    # loss = -bound for the plain ELBO at beta 1 (the objective's own definition)
    loss, bound = acc.Scalars("step/loss"), acc.Scalars("step/bound")
    np.testing.assert_allclose([e.value for e in loss], [-e.value for e in bound], rtol=1e-5)
    for tag in ("samples", "reconstructions"):
        images = acc.Images(tag)
        assert [i.step for i in images] == [r["step"] for r in rows]
        assert images[0].width > 8 and images[0].encoded_image_string[:4] == b"\x89PNG"
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"dataset": "digits"' in config_text and '"track_every": 7' in config_text
    _same_training(tb_run, plain_run)
    assert json.loads((tb_run / tracking.STATUS).read_text())["status"] == "finished"


def test_a_tracker_that_fails_mid_run_is_a_warning_and_the_run_finishes(
    tmp_path, monkeypatch, plain_run
):
    calls = []

    class Flaky:
        package = "json"  # any importable module: the check passes

        def start(self, config, out):
            calls.append("start")

        def scalars(self, values, step):
            calls.append(step)
            if len(calls) > 3:
                raise OSError(28, "No space left on device")

        def images(self, grids, step):
            pass

        def finish(self, out, status):
            calls.append("finish")

    monkeypatch.setitem(trackers.TRACKERS, "flaky", Flaky)
    monkeypatch.setitem(tracking.TRACKERS, "flaky", Flaky)
    with pytest.warns(RuntimeWarning, match="--track flaky: scalars failed.*No space left"):
        run = fit(small_config(epochs=EPOCHS, track="flaky", track_every=EVERY), tmp_path / "r")
    assert "finish" not in calls and len(calls) == 4  # dropped after the failure
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    assert json.loads((run / tracking.STATUS).read_text())["status"] == "finished"
    _same_training(run, plain_run)


def test_a_missing_extra_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))  # fmt: skip
    out = tmp_path / "run"
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--track", "mlflow",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'vaelab[mlflow]'" in err and len(err.splitlines()) == 1
    assert not out.exists()
    with pytest.raises(VaelabError, match=r"unknown 'tensorbord'.*did you mean 'tensorboard'"):
        fit(small_config(track="tensorbord"), tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_only_the_main_process_tracks(tmp_path, monkeypatch):
    made = []

    class Recorder:
        def __init__(self):
            made.append(self)

        def start(self, config, out): ...
        def finish(self, out, status): ...

    monkeypatch.setitem(tracking.TRACKERS, "tensorboard", Recorder)
    config = small_config(track="tensorboard")
    for is_main in (False, True):
        made.clear()
        out = tmp_path / str(is_main)
        out.mkdir()
        world = types.SimpleNamespace(is_main=is_main)
        with tracking.tracked(types.SimpleNamespace(config=config, out=out, world=world)):
            pass
        assert len(made) == is_main  # under torchrun, rank != 0 builds no tracker
        assert (out / tracking.STATUS).exists() == is_main


def test_mlflow_params_and_metrics_read_back_through_its_client(tmp_path, monkeypatch):
    import mlflow

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = fit(small_config(epochs=EPOCHS, track="mlflow", track_every=EVERY), tmp_path / "run")
    client = mlflow.tracking.MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("vaelab").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    params = found.data.params
    assert params["dataset"] == "digits" and json.loads(params["latent_dim"]) == 4
    assert json.loads(params["hidden"]) == [64] and json.loads(params["track"]) == ["mlflow"]
    rows = read_metrics(run)
    for key in ("test_elbo", "test_kl", "train_loss"):
        history = client.get_metric_history(found.info.run_id, f"epoch_{key}")
        assert [m.step for m in history] == [r["step"] for r in rows]
        assert [m.value for m in history] == pytest.approx([r[key] for r in rows], rel=1e-12)
    names = {a.path for a in client.list_artifacts(found.info.run_id, "run")}
    assert {"run/metrics.jsonl", f"run/{CHECKPOINT}", "run/config.yaml"} <= names
    assert {a.path for a in client.list_artifacts(found.info.run_id)} >= {"samples", "run"}


def test_under_torchrun_one_event_file_from_rank_0(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from test_distributed import torchrun  # the real command: 2 gloo processes

    out = tmp_path / "ddp"
    torchrun(out, epochs=2, track="tensorboard", track_every=5)
    (events,) = (out / "tensorboard").iterdir()  # rank 1 wrote none
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    rows = read_metrics(out)
    elbo = acc.Scalars("epoch/test_elbo")
    assert [e.step for e in elbo] == [r["step"] for r in rows]  # each epoch once
    np.testing.assert_allclose([e.value for e in elbo], [r["test_elbo"] for r in rows], rtol=1e-6)
    assert json.loads((out / tracking.STATUS).read_text())["status"] == "finished"
