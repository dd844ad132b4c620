"""What only a GPU run would show, checked on CPU: the fp16 loss scaler in checkpoints, the
CUDA generator of the training device, and host syncs in the training step.

CPU autocast and ``torch.amp.GradScaler("cpu")`` run the same code paths as CUDA's
(``vaelab.training.step.CPU_AMP`` switches them on for tests); ``torch.cuda`` is mocked
where a test needs a second GPU.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import vaelab
from conftest import small_config
from vaelab.api import tasks as api_tasks
from vaelab.data import dataset_for
from vaelab.errors import VaelabError
from vaelab.evaluation.completion import Completion
from vaelab.models import build_model
from vaelab.training import session as session_module
from vaelab.training import step as step_module
from vaelab.training.checkpoint import CHECKPOINT, TrainState, load_checkpoint
from vaelab.training.distributed import World
from vaelab.training.labels import LabelledStream
from vaelab.training.loop import fit, train_step
from vaelab.training.session import build_session, check_config, save


def weights(run):
    return load_checkpoint(run / CHECKPOINT).model_state()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch, precision):
    # fp16: the loss scaler backs off from 2^16 in the first steps (the VAE's summed loss
    # times 2^16 overflows fp16 gradients) and then grows every 2000 good steps; a resume
    # that restarts it at 2^16 skips its first steps again and drifts from the straight run.
    monkeypatch.setattr(step_module, "CPU_AMP", True)
    # sigma 0.01: a sharp Gaussian whose gradients times 2^16 overflow fp16 (backs off).
    cfg = dict(precision=precision, device="cpu", hidden="32", likelihood="gaussian-fixed",
               sigma=0.01)  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fit(check_config(small_config(epochs=2, **cfg)), straight)
    fit(check_config(small_config(epochs=1, **cfg)), resumed)
    fit(check_config(small_config(epochs=2, **cfg)), resumed, resume=True)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = load_checkpoint(straight / CHECKPOINT).meta
    if precision == "fp16":  # the scaler ran, backed off, and is what was saved
        assert meta["scaler"]["scale"] < 2.0**16
        assert load_checkpoint(straight / CHECKPOINT).state.skipped_steps > 0
    else:
        assert meta["scaler"] is None


class FakeCuda:
    """Two GPUs' generators, told apart by their state; records which one was asked."""

    def __init__(self):
        self.asked, self.set = [], []

    def get_rng_state(self, device="cuda"):
        index = torch.device(device).index or 0 if device != "cuda" else 0
        self.asked.append(index)
        return torch.full((16,), 10 + index, dtype=torch.uint8)

    def set_rng_state(self, state, device="cuda"):
        self.set.append((torch.device(device).index, int(state[0])))


def test_checkpoint_saves_and_restores_the_training_gpus_generator(tmp_path, monkeypatch):
    fake = FakeCuda()
    for name in ("get_rng_state", "set_rng_state"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    model = nn.Linear(2, 2)
    session = SimpleNamespace(
        out=tmp_path, model=model, optimizer=torch.optim.Adam(model.parameters()),
        state=TrainState(), info={}, objective=None, ema=None,
        stepper=SimpleNamespace(scaler=None), world=World(device=torch.device("cuda", 1)),
    )  # fmt: skip
    save(session)  # --device cuda:1 in one process: the current device stays cuda:0
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert int(ckpt.tensors["rng/cuda"][0]) == 11  # cuda:1's state, not cuda:0's (10)
    ckpt.restore_training(session.optimizer, torch.device("cuda", 1))
    assert fake.set == [(1, 11)]


class HostReads(TorchDispatchMode):
    """Counts what blocks the host on CUDA: a tensor's value read on the host (``.item()``,
    ``bool()``, ``if tensor``: ``_local_scalar_dense``) and tensors built from Python data
    (``torch.tensor(x, device=...)``: ``lift_fresh``, a blocking host-to-device copy)."""

    def __init__(self):
        super().__init__()
        self.reads = self.built = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        if func in (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default):
            self.built += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "options",
    [
        dict(skip_threshold=1e6, clip_grad=1e6, warmup_epochs=1.0),
        dict(estimator="score-baseline"),
        dict(model="m2", labels_per_class=10, binarize="dynamic"),
    ],
    ids=["skip-threshold", "score-baseline", "m2"],
)
def test_a_training_step_reads_the_device_once(options, monkeypatch):
    # The step's one intended sync is the decision to apply it (every rank at once); the
    # beta of the warm-up, --skip-threshold, the score baseline's first update and M2's
    # labelled batch must not add any. (F.one_hot reads its input's min and max on the
    # host on CPU only; on CUDA it scatters and asserts on the device: the CUDA way here.)
    def one_hot(y, num_classes):
        return torch.zeros(*y.shape, num_classes, dtype=torch.long).scatter_(-1, y[..., None], 1)

    monkeypatch.setattr(torch.nn.functional, "one_hot", one_hot)
    config = check_config(small_config(device="cpu", **options))
    s = build_session(config, dataset_for(config), World())
    perm = torch.randperm(len(s.train_x))
    for b in range(3):
        batch = s.batch(perm, b)
        with HostReads() as reads:
            train_step(s, *batch)
        assert (reads.reads, reads.built) == (1, 0), (b, reads.reads, reads.built)


def test_labelled_batch_indices_are_copied_without_blocking(monkeypatch):
    # M2's labelled batch on CUDA: the indices drawn on the CPU go over from pinned memory
    # with non_blocking (a pageable .to(device) blocks the host until the copy is done).
    seen, empty = [], torch.empty

    def fake_empty(*args, pin_memory=False, **kwargs):
        seen.append(("pinned", pin_memory))
        return empty(*args, **kwargs)

    class CudaLike(torch.Tensor):  # a CPU tensor that says it lives on cuda
        @property
        def device(self):
            return torch.device("cuda")

    def fake_to(self, device, non_blocking=False):
        seen.append(("to", torch.device(device).type, non_blocking))
        return self

    x = torch.zeros(5, 1, 2, 2, dtype=torch.uint8).as_subclass(CudaLike)
    monkeypatch.setattr(torch, "empty", fake_empty)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    stream = LabelledStream(x, torch.arange(5), dynamic=False, batch=3)
    stream()
    assert seen == [("pinned", True), ("to", "cuda", True)]


def test_loss_readout_shows_a_landed_copy_without_waiting(monkeypatch):
    # On CUDA the bar shows the last loss whose copy has landed; while a copy is in flight
    # (event not done) it neither waits nor starts another.
    readout = step_module.LossReadout(torch.device("cpu"))
    assert readout(torch.tensor(1.0)) is None
    assert readout(torch.tensor(2.0)) == 1.0
    readout.event = SimpleNamespace(query=lambda: False, record=lambda: None)
    assert readout(torch.tensor(3.0)) == 1.0 and float(readout.host) == 2.0


def test_bf16_on_a_gpu_without_it_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100-SXM2-16GB")
    with pytest.raises(VaelabError, match=r"Tesla V100.* no bfloat16 support.*fp16 or fp32"):
        step_module.mixed_precision(torch.device("cuda"), "bf16")


def test_images_larger_than_the_gpus_free_memory_are_one_line(monkeypatch):
    # 1,797 digits of 8x8 bytes = 115 kB against a GPU with 100 kB free: refused before
    # anything is pinned or copied (a raw CUDA out-of-memory error otherwise).
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100_000, 16 * 2**30))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pytest.fail("pinned"))
    config = check_config(small_config(device="cpu"))
    world = World(device=torch.device("cuda", 0))
    with pytest.raises(VaelabError, match=r"--dataset digits: its \d+ training images take"):
        session_module._device_images(config, dataset_for(config), world)


def test_cpu_runs_never_touch_cuda_generators(tmp_path, monkeypatch):
    # fork_rng() without devices= saves every visible GPU's generator, creating a CUDA
    # context on each, in a --device cpu run too: here any such read fails.
    run = fit(check_config(small_config(epochs=1, device="cpu")), tmp_path / "run")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    def touched(*args, **kwargs):
        raise AssertionError("a CPU run read a CUDA generator")

    monkeypatch.setattr(torch.cuda, "get_rng_state", touched)
    vaelab.report(run, tmp_path / "report.html")


def test_complete_returns_cpu_tensors(monkeypatch):
    # Like every other API function, whatever device the chains ran on.
    images, decoded = MagicMock(), MagicMock()
    on_gpu = Completion(images=images, decoded=decoded, acceptance=None)
    monkeypatch.setattr(api_tasks, "run_chains", lambda *a, **k: on_gpu)
    model = build_model(small_config().model, (1, 8, 8))
    out = vaelab.complete(model, torch.rand(1, 1, 8, 8), mask="left-half", details=True)
    assert out.images is images.cpu.return_value and out.decoded is decoded.cpu.return_value


def test_deterministic_sets_the_flags_while_training_and_restores_them(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen, build = [], session_module.build_session

    def spy(*args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(),
                     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                     os.environ.get("CUBLAS_WORKSPACE_CONFIG")))  # fmt: skip
        return build(*args, **kwargs)

    monkeypatch.setattr(session_module, "build_session", spy)
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    fit(check_config(small_config(epochs=1, device="cpu", deterministic=True)), tmp_path / "d")
    assert seen == [(True, True, False, ":4096:8")]
    assert not torch.are_deterministic_algorithms_enabled()
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == cudnn
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
