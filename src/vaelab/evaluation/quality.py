"""Sample and reconstruction quality, measured in a small classifier trained on the dataset.

A conv net is trained once per dataset on its training split (labels required) and
cached on disk (safetensors + JSON, keyed by dataset name, image shape and a hash of the
training images and labels). Generated samples and test images are embedded with its
penultimate layer (128 features), then:

* Frechet distance ||m1 - m2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussians fitted
  to the two feature sets. This is FID's formula in *this dataset's* classifier, not the
  Inception network: numbers are comparable between models on the same dataset only.
* precision / recall (Kynkaanniemi et al., 2019): the real manifold is the union of balls
  around each real feature, with radius the distance to its k-th nearest real neighbour
  (k = 3); precision is the share of samples inside it, recall the share of real images
  inside the samples' manifold.
* class entropy: the mean entropy of the classifier's prediction (low: confident,
  recognisable images), and the entropy of the mean prediction (high: classes covered).
* reconstruction: per-pixel MSE of E[x|z = E_q z] against the input, and PSNR = 10 log10(1 /
  MSE) per image (peak value 1), averaged.

Frechet distance and precision/recall are left out (None, with the reason) when they
cannot mean anything (:func:`quality_caveat`): a classifier below ``MIN_ACCURACY`` on its
own test split, or fewer than ``MIN_IMAGES`` images to compare.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn
from tqdm import tqdm

from vaelab.data import ImageData, cache_root
from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError
from vaelab.training.checkpoint import atomic_write_bytes

CLASSIFIER_VERSION = 2  # bump when the architecture or training recipe changes
FEATURES = 128
MIN_STEPS = 200
# This classifier reaches about 0.88 test accuracy on Fashion-MNIST and over 0.9 on digits
# and MNIST. Below 0.7 it mislabels nearly a third of real test images: its features do not
# yet separate the classes, and distances in them say more about it than about the samples
# (an image folder of 34 test images gave 0.35).
MIN_ACCURACY = 0.7
# The Frechet distance fits a FEATURES x FEATURES covariance to each set: from N images its
# rank is at most N - 1, so below FEATURES + 1 images it is singular and the distance is
# mostly estimation error; the k-NN radii of precision/recall are as unstable at such sizes.
MIN_IMAGES = FEATURES + 1


class Classifier(nn.Module):
    """conv3x3(16, stride 2)-conv3x3(32, stride 2)-fc(128)-fc(classes); ``features`` is the
    128-d penultimate layer. Strided convolutions instead of pooling keep a Fashion-MNIST
    epoch to tens of seconds on two CPU cores."""

    def __init__(self, image_shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        c, h, w = image_shape
        flat = 32 * math.ceil(h / 4) * math.ceil(w / 4)
        self.body = nn.Sequential(
            nn.Conv2d(c, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(flat, FEATURES), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _data_key(data: ImageData) -> str:
    h = hashlib.sha256()
    for t in (data.train_x, data.train_y, data.test_x, data.test_y):
        h.update(t.contiguous().numpy().tobytes())
    c, hh, w = data.image_shape
    name = Path(data.name).name.replace("/", "_")
    return f"{name}-{c}x{hh}x{w}-v{CLASSIFIER_VERSION}-{h.hexdigest()[:16]}"


@torch.enable_grad()  # callers may be under no_grad (e.g. vaelab classify --label-control)
def _train_classifier(data: ImageData, epochs: int, seed: int) -> tuple[Classifier, int]:
    """Adam with a one-cycle schedule, batch 128, for ``epochs`` passes but at least
    ``MIN_STEPS`` steps (a small set such as digits needs several hundred passes)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = Classifier(data.image_shape, data.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = max(epochs * math.ceil(len(data.train_x) / 128), MIN_STEPS)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    done = 0
    bar = tqdm(total=steps, desc="training the quality classifier", unit="step",
               disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True)  # fmt: skip
    while done < steps:
        for idx in torch.randperm(len(data.train_x), generator=gen).split(128)[: steps - done]:
            loss = nn.functional.cross_entropy(net(to_unit(data.train_x[idx])), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            bar.update()
    bar.close()
    return net.eval(), steps


@torch.inference_mode()
def _logits_and_features(net: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, feats = [], []
    for xb in x.split(1000):
        f = net.features(xb.float() if xb.is_floating_point() else to_unit(xb))
        feats.append(f.double())
        logits.append(net.head(f).double())
    return torch.cat(logits), torch.cat(feats)


def load_classifier(
    data: ImageData, epochs: int = 2, cache_dir: str | Path | None = None, seed: int = 0
) -> tuple[Classifier, dict[str, Any]]:
    """The dataset's classifier and its info (test accuracy, key), trained on first use."""
    if data.train_y is None or data.num_classes is None or data.num_classes < 2:
        raise VaelabError(
            f"{data.name}: sample-quality metrics need class labels; pass --no-quality"
        )
    key = f"{_data_key(data)}-e{epochs}"
    folder = cache_root(cache_dir) / "classifiers"
    weights, meta = folder / f"{key}.safetensors", folder / f"{key}.json"
    net = Classifier(data.image_shape, data.num_classes)
    if weights.is_file() and meta.is_file():
        try:
            net.load_state_dict(load_file(weights))
            return net.eval(), json.loads(meta.read_text())
        except Exception as exc:  # a cache: a damaged entry is rebuilt, not fatal
            warnings.warn(
                f"{weights}: damaged classifier cache ({type(exc).__name__}); retraining",
                stacklevel=2,
            )
            net = Classifier(data.image_shape, data.num_classes)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # Convolutions this small run several times faster on one CPU thread than on two
    # (measured: digits 0.6 s vs 3.5 s), and far faster on a busy machine.
    torch.set_num_threads(1)
    try:
        # devices=[]: the classifier trains on the CPU; without it fork_rng saves every
        # GPU's generator, creating a CUDA context on each, even in a CPU-only run.
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's random stream
            net, steps = _train_classifier(data, epochs, seed)
    finally:
        torch.set_num_threads(threads)
    logits, _ = _logits_and_features(net, data.test_x)
    info = {
        "key": key,
        "test_accuracy": (logits.argmax(1) == data.test_y).double().mean().item(),
        "epochs": epochs,
        "steps": steps,
        "train_seconds": time.perf_counter() - t0,
    }
    folder.mkdir(parents=True, exist_ok=True)
    # Written atomically, weights first: a half-written entry is never mistaken for a cache hit.
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(weights, st_save(state))
    atomic_write_bytes(meta, (json.dumps(info, indent=2) + "\n").encode())
    return net, info


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a (N, F)``, ``b (M, F)``.

    tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))), the symmetric PSD form, so only
    symmetric eigendecompositions are needed.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    lam, vec = np.linalg.eigh(s1)
    root1 = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * cross)


def _kth_radius(feats: torch.Tensor, k: int) -> torch.Tensor:
    radii = []
    for chunk in feats.split(1024):
        d = torch.cdist(chunk, feats)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at 0
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    inside = [(torch.cdist(chunk, centres) <= radii).any(1) for chunk in points.split(1024)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """k-NN manifold precision (fake inside real) and recall (real inside fake)."""
    real, fake = real.double(), fake.double()
    precision = _coverage(fake, real, _kth_radius(real, k))
    recall = _coverage(real, fake, _kth_radius(fake, k))
    return precision, recall


def _entropies(logits: torch.Tensor) -> tuple[float, float]:
    logp = torch.log_softmax(logits, 1)
    mean_entropy = -(logp.exp() * logp).sum(1).mean().item()
    pbar = logp.exp().mean(0)
    return mean_entropy, -(pbar * pbar.clamp_min(1e-30).log()).sum().item()


def quality_caveat(test_accuracy: float, images: int) -> str | None:
    """Why Frechet distance and precision/recall would not mean anything for a classifier
    of ``test_accuracy`` comparing ``images`` images per set; None when they do."""
    if test_accuracy < MIN_ACCURACY:
        return (
            f"the dataset's classifier reaches only {test_accuracy:.2f} test accuracy (below "
            f"{MIN_ACCURACY}): its features do not separate the classes"
        )
    if images < MIN_IMAGES:
        return (
            f"only {images} test images: the covariance of {FEATURES} classifier features "
            f"needs at least {MIN_IMAGES} images to be non-singular"
        )
    return None


def sample_quality(
    net: Classifier,
    samples: torch.Tensor,
    reference: torch.Tensor,
    k: int = 3,
    omit: str | None = None,
) -> dict[str, float | str | None]:
    """Compare ``samples`` (floats in [0, 1]) with ``reference`` images (uint8 or floats).

    With ``omit`` (a reason, see :func:`quality_caveat`) the Frechet distance, precision
    and recall are None and ``omitted`` holds the reason; the class entropies remain."""
    logits_s, feats_s = _logits_and_features(net, samples.cpu())
    logits_r, feats_r = _logits_and_features(net, reference.cpu())
    precision, recall = precision_recall(feats_r, feats_s, k) if omit is None else (None, None)
    ent_s, cover_s = _entropies(logits_s)
    ent_r, cover_r = _entropies(logits_r)
    return {
        "frechet_distance": frechet_distance(feats_s, feats_r) if omit is None else None,
        "precision": precision,
        "recall": recall,
        "omitted": omit,
        "class_entropy_samples": ent_s,
        "class_entropy_test": ent_r,
        "class_coverage_entropy_samples": cover_s,
        "class_coverage_entropy_test": cover_r,
        "samples": len(samples),
        "reference": len(reference),
        "k": k,
    }


@torch.inference_mode()
def reconstruction_quality(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per-pixel MSE and mean per-image PSNR (peak 1) of reconstructions of uint8 ``x``."""
    param = next(model.parameters())
    errors = []
    for xb in x.split(1000):
        xf = to_unit(xb.to(param.device), param.dtype)
        errors.append((model.reconstruct(xf) - xf).square().flatten(1).mean(1).double().cpu())
    mse = torch.cat(errors)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))
    return {"mse": mse.mean().item(), "psnr_db": psnr.mean().item(), "images": len(mse)}
