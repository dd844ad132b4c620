"""The Python API: everything the CLI does, as functions of configs, run folders and models.

import vaelab
run = vaelab.train(vaelab.Config(), out="runs/fmnist")      # or train({"epochs": 5})
model = vaelab.load(run)                                     # an nn.Module
images = model.sample(16)                                    # (16, 1, 28, 28) in [0, 1]
report = vaelab.evaluate(run, samples=1000)                  # dict: ELBO, NLL, bits/dim
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaelab.config import Config, config_from_dict, load_config, with_overrides
from vaelab.data import ImageData, dataset_for
from vaelab.data.prepare import eval_images
from vaelab.errors import VaelabError
from vaelab.evaluate.extras import extra_metrics
from vaelab.evaluate.nll import evaluate_model
from vaelab.report import RUN_DRAWINGS
from vaelab.train.load import load_model
from vaelab.train.loop import fit
from vaelab.train.run import CONFIG

__all__ = ["classify", "complete", "evaluate", "load", "load_test_images", "train"]


def train(
    config: Config | dict[str, Any] | str | Path | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Train a model; returns the run folder. ``config`` is a Config, a (flat or nested)
    dict, or a YAML/TOML path; keyword overrides use the field names (``epochs=5``).
    With ``resume`` and no ``config``, the run's own config.yaml is the base (as for the
    command line), so ``train(out=run, resume=True, epochs=20)`` trains on."""
    saved = Path(out) / CONFIG if out is not None else None
    if config is None and resume and saved is not None and saved.is_file():
        config = load_config(saved)
    elif config is None:
        config = Config()
    elif isinstance(config, dict):
        config = config_from_dict(config)
    elif isinstance(config, str | Path):
        config = load_config(config)
    config = with_overrides(config, overrides, "train()")
    return fit(config, out, resume=resume, overwrite=overwrite, drawings=RUN_DRAWINGS)


def load(run: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The trained model of a run folder, in eval mode, on ``device``.

    The model gets two attributes: ``config`` (the run's Config) and ``run_info`` (dataset
    name, image shape, class names). Nothing is unpickled: weights come from safetensors.
    """
    return load_model(run, device)


def load_test_images(model: torch.nn.Module, data: ImageData | None = None) -> ImageData:
    """The run's dataset (reloaded from its config) for commands that need test images."""
    return data or dataset_for(model.config)


def evaluate(
    run_or_model: str | Path | torch.nn.Module,
    samples: int = 1000,
    limit: int | None = None,
    data: ImageData | None = None,
    *,
    extras: bool = True,
    quality: bool = True,
    samplers: tuple[str, ...] = ("prior",),
    quality_samples: int = 5000,
    components: int = 10,
) -> dict[str, Any]:
    """Test-set ELBO, its terms and the importance-sampled NLL (see vaelab.evaluate.nll);
    with ``extras``, latent health, reconstruction MSE/PSNR and (``quality``) classifier
    sample metrics per sampler (see vaelab.evaluate.extras)."""
    model = run_or_model if isinstance(run_or_model, torch.nn.Module) else load(run_or_model)
    if samples < 1:
        raise VaelabError(f"--samples: must be at least 1, got {samples}")
    if model.config.model.model == "ae":
        raise VaelabError("evaluate: a plain autoencoder defines no likelihood p(x); use a VAE")
    if not getattr(model, "on_images", True):
        raise VaelabError(
            "evaluate: an M1+M2 run models M1's features, not images; evaluate the M1 run, "
            "and use vaelab classify for the labels"
        )
    data = load_test_images(model, data)
    x = data.test_x[:limit] if limit else data.test_x
    x = eval_images(x, model.config.data.binarize, model.config.train.seed)
    result = evaluate_model(model, x, samples=samples)
    if hasattr(model, "group_kl"):  # deep: KL per latent group, top first (unused groups ~0)
        result["kl_per_group"] = model.group_kl(x)
    result["dataset"] = data.name
    if extras:
        run_dir = getattr(model, "run_dir", None)
        result.update(
            extra_metrics(
                model, data, x, quality=quality, samplers=tuple(samplers),
                quality_samples=quality_samples, components=components, run_dir=run_dir,
            )
        )  # fmt: skip
    return result


def classify(
    run_or_model: str | Path | torch.nn.Module, limit: int | None = None,
    baseline: bool = False, baseline_steps: int = 2000, data: ImageData | None = None,
    label_control: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Test accuracy, error and confusion matrix of an m2/cvae run; with ``baseline`` also of
    the same classifier network trained on the run's labels alone; with ``label_control``
    = N, how often N samples per label are seen as that label by the dataset's classifier
    (vaelab.classify)."""
    from vaelab.classify import evaluate_classifier

    model = run_or_model if isinstance(run_or_model, torch.nn.Module) else load(run_or_model)
    return evaluate_classifier(model, load_test_images(model, data), limit, baseline,
                               baseline_steps, label_samples=label_control)  # fmt: skip


def complete(
    run_or_model: str | Path | torch.nn.Module,
    x: torch.Tensor,
    mask: str | torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """Completions ``(B, n, C, H, W)`` of images ``x`` (floats in [0, 1]); ``mask`` is a preset
    name (``left-half``, ``random:0.5``...) or a bool tensor (True = missing); options go to
    :func:`vaelab.complete.complete` (``n``, ``steps``, ``method``, ``downscale_factor``,
    ``fill``)."""
    from vaelab.complete import complete as run_chains
    from vaelab.complete import make_mask

    model = run_or_model if isinstance(run_or_model, torch.nn.Module) else load(run_or_model)
    if isinstance(mask, str):
        mask = make_mask(mask, model.image_shape, options.get("seed") or 0)
    return run_chains(model, x, mask, **options).images
