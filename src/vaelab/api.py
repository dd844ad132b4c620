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
from vaelab.runs import Run
from vaelab.train.load import read_run
from vaelab.train.loop import fit
from vaelab.train.run import CONFIG

__all__ = [
    "Run",
    "as_run",
    "classify",
    "complete",
    "evaluate",
    "load",
    "load_test_images",
    "open_run",
    "prepared_test_images",
    "train",
]  # fmt: skip  (and, through __getattr__ below, the other commands' functions)


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


def open_run(run: str | Path | Run, device: str = "cpu") -> Run:
    """A run folder as a :class:`Run`: its model (eval mode, on ``device``), Config,
    checkpoint info (dataset name, image shape, class names) and folder. Nothing is
    unpickled: weights come from safetensors, the rest from JSON."""
    if isinstance(run, Run):
        return run
    folder = Path(run)
    if not folder.is_dir():
        raise VaelabError(f"{folder}: no such run folder")
    model, config, info = read_run(folder, device)
    # Transitional: modules below the API (report, explore, classify, samplers, web...)
    # still read these from the model; they go once each takes the Run or its fields.
    model.config, model.run_info, model.run_dir = config, info, folder
    return Run(model, config, info, folder)


def load(run: str | Path | Run, device: str = "cpu") -> torch.nn.Module:
    """The trained model of a run folder, in eval mode, on ``device`` (``open_run(run).model``;
    use :func:`open_run` for its config, dataset info and folder as well)."""
    return open_run(run, device).model


def as_run(run: str | Path | Run | torch.nn.Module, device: str = "cpu") -> Run:
    """A run path, a :class:`Run`, or a model returned by :func:`load`, as a Run."""
    if isinstance(run, torch.nn.Module):  # a model from load(): its run rides on it for now
        return Run(run, run.config, run.run_info, getattr(run, "run_dir", None))
    return open_run(run, device)


def load_test_images(
    run: str | Path | Run | torch.nn.Module, data: ImageData | None = None
) -> ImageData:
    """The run's dataset (reloaded from its config) for commands that need test images."""
    return data or dataset_for(as_run(run).config)


def prepared_test_images(run: str | Path | Run | torch.nn.Module) -> torch.Tensor:
    """The run's test images, uint8 ``(N, C, H, W)``, binarized as the model is evaluated."""
    run = as_run(run)
    return eval_images(
        load_test_images(run).test_x, run.config.data.binarize, run.config.train.seed
    )


def evaluate(
    run_or_model: str | Path | Run | torch.nn.Module,
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
    run = as_run(run_or_model)
    model, config = run.model, run.config
    if samples < 1:
        raise VaelabError(f"--samples: must be at least 1, got {samples}")
    if not (model.has_posterior and model.has_prior):  # a plain autoencoder
        raise VaelabError("evaluate: a plain autoencoder defines no likelihood p(x); use a VAE")
    if not getattr(model, "on_images", True):
        raise VaelabError(
            "evaluate: an M1+M2 run models M1's features, not images; evaluate the M1 run, "
            "and use vaelab classify for the labels"
        )
    data = load_test_images(run, data)
    x = data.test_x[:limit] if limit else data.test_x
    x = eval_images(x, config.data.binarize, config.train.seed)
    result = evaluate_model(model, x, samples=samples)
    if hasattr(model, "group_kl"):  # deep: KL per latent group, top first (unused groups ~0)
        result["kl_per_group"] = model.group_kl(x)
    result["dataset"] = data.name
    if extras:
        run_dir = run.folder
        result.update(
            extra_metrics(
                model, data, x, quality=quality, samplers=tuple(samplers),
                quality_samples=quality_samples, components=components, run_dir=run_dir,
                binarize=config.data.binarize, seed=config.train.seed,
            )
        )  # fmt: skip
    return result


def classify(
    run_or_model: str | Path | Run | torch.nn.Module, limit: int | None = None,
    baseline: bool = False, baseline_steps: int = 2000, data: ImageData | None = None,
    label_control: int = 0, *, seed: int = 0, device: str = "cpu",
) -> dict[str, Any]:  # fmt: skip
    """Test accuracy, error and confusion matrix of an m2/cvae run; with ``baseline`` also of
    the same classifier network trained on the run's labels alone; with ``label_control``
    = N, how often N samples per label are seen as that label by the dataset's classifier
    (vaelab.classify)."""
    from vaelab.classify import evaluate_classifier

    run = as_run(run_or_model, device)
    return evaluate_classifier(run.model, load_test_images(run, data), limit, baseline,
                               baseline_steps, seed=seed, label_samples=label_control)  # fmt: skip


def complete(
    run_or_model: str | Path | Run | torch.nn.Module,
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

    model = as_run(run_or_model).model
    if isinstance(mask, str):
        mask = make_mask(mask, model.image_shape, options.get("seed") or 0)
    return run_chains(model, x, mask, **options).images


# The other commands' functions live in two sibling modules that import this one; module
# __getattr__ makes them vaelab.api.NAME as well without an import cycle at load time.
_ELSEWHERE = {
    **dict.fromkeys(
        ("interpolate", "latent_plot", "reconstruct", "report", "sample", "similar", "traverse"),
        "vaelab.api_pictures",
    ),
    **dict.fromkeys(("ae_vs_vae", "compare", "gradvar"), "vaelab.api_studies"),
}


def __getattr__(name: str) -> Any:
    if name not in _ELSEWHERE:
        raise AttributeError(f"module 'vaelab.api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_ELSEWHERE[name]), name)
