"""The parts of ``vaelab evaluate`` beyond the likelihood: latent health, reconstruction and
sample quality, gathered into one JSON-ready dict."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

from vaelab.data import ImageData
from vaelab.data.prepare import train_images
from vaelab.errors import at_least, unknown_name
from vaelab.evaluation.disentangle_run import disentanglement_of
from vaelab.evaluation.health import latent_health
from vaelab.evaluation.quality import (
    load_classifier,
    quality_caveat,
    reconstruction_quality,
    sample_quality,
)
from vaelab.evaluation.samplers import SAMPLERS, prepare_sampler, sample_images


def extra_metrics(
    model: torch.nn.Module,
    data: ImageData,
    x: torch.Tensor,
    *,
    quality: bool = True,
    samplers: tuple[str, ...] = ("prior",),
    quality_samples: int = 5000,
    components: int = 10,
    run_dir: str | Path | None = None,
    binarize: str,
    seed: int,
) -> dict[str, Any]:
    """Health and reconstruction on the evaluation images ``x`` (uint8, as the model sees
    them); with ``quality``, sample metrics for each sampler against the first
    ``quality_samples`` raw test images (grey levels: a Bernoulli decoder's means are
    compared with the images it models, not with one binarized draw of them). ``binarize``
    and ``seed`` are the run's (``Run.config``): the GMM sampler is fitted on the training
    images as the model was trained on them."""
    for name in samplers:
        if name not in SAMPLERS:
            raise unknown_name("--sampler", name, SAMPLERS)
    at_least("--quality-samples", quality_samples, 10)
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "health": latent_health(model, x),
        "reconstruction": reconstruction_quality(model, x),
    }
    if quality and (data.train_y is None or (data.num_classes or 0) < 2):
        # Does what it can: the likelihood, health and reconstruction need no labels.
        warnings.warn(f"{data.name}: sample-quality metrics left out (they need a classifier "
                      "trained on two or more labelled classes); pass --no-quality to skip "
                      "them without this note", stacklevel=2)  # fmt: skip
        quality = False
    if quality:
        net, info = load_classifier(data)
        reference = data.test_x[:quality_samples]
        out["classifier"] = info
        # None, or why Frechet distance and precision/recall are left out (JSON null).
        out["quality_omitted"] = quality_caveat(info["test_accuracy"], len(reference))
        out["quality"] = {}
        # The training images as the model was trained on them (binarized if it was).
        train_x = train_images(data.train_x, binarize, seed, 20000)
        for name in samplers:
            options = prepare_sampler(name, model, lambda: train_x, components, run_dir)
            images = sample_images(model, len(reference), name, **options)
            out["quality"][name] = sample_quality(
                net, images, reference, omit=out["quality_omitted"]
            )
    if data.has_factors:  # ground truth known: one seed of every metric on 5,000 images
        scored = disentanglement_of(model, data, binarize=binarize, data_seed=seed, pool=5000,
                                    seeds=(0,), votes=(2000, 800), mig_samples=5000)  # fmt: skip
        keys = ("summary", "factor_names", "omitted", "warnings")
        out["disentanglement"] = {k: scored[k] for k in keys}
    out["seconds_extras"] = time.perf_counter() - t0
    return out


def print_extras(result: dict[str, Any]) -> None:
    """The health / reconstruction / quality part of ``vaelab evaluate``'s table."""
    if "health" not in result:
        return
    h, r = result["health"], result["reconstruction"]
    if h["active_units"] is not None:
        active = f"{h['active_units']:>8d} / {h['latent_dim']}"
        print(f"{'active units (Cov E[z|x] > 0.01)':<32}{active}")
    for warning in h["warnings"]:
        print(f"warning: {warning}")
    print(f"{'reconstruction MSE / pixel':<32}{r['mse']:>12.5f}")
    print(f"{'reconstruction PSNR (dB)':<32}{r['psnr_db']:>12.2f}")
    scored = result.get("disentanglement", {})
    for name, v in scored.get("summary", {}).items():
        print(f"{name + ' (1 seed)':<32}{v['mean']:>12.3f}")
    for warning in scored.get("warnings", []):
        print(f"warning: {warning}")
    if "quality" not in result:
        return
    acc = result["classifier"]["test_accuracy"]
    print(f"sample quality in the {result['dataset']} classifier (test accuracy {acc:.3f});")
    omitted = result.get("quality_omitted")
    if omitted:
        print(f"Frechet distance and precision/recall left out: {omitted}")
    else:
        print("Frechet distances in its features, not the Inception FID:")
    print(f"{'sampler':<10}{'FD':>10}{'precision':>11}{'recall':>8}{'H(class)':>10}{'H(test)':>9}")
    for name, q in result["quality"].items():
        print(
            f"{name:<10}{_num(q['frechet_distance'], 10, 2)}{_num(q['precision'], 11, 3)}"
            f"{_num(q['recall'], 8, 3)}"
            f"{q['class_entropy_samples']:>10.3f}{q['class_entropy_test']:>9.3f}"
        )


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"
