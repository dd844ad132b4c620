"""The label and completion commands as Python functions: ``vaelab.classify`` and
``vaelab.complete``. ``vaelab CMD`` calls these (vaelab/cli/table.py), so the two cannot
drift apart; with ``out`` (and ``json_out``) they write what the command writes."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from vaelab.api import as_run, load_test_images, model_of
from vaelab.api.drawing import input_image
from vaelab.data import ImageData
from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.classifier import evaluate_classifier, save_confusion
from vaelab.evaluation.completion import Completion, downscale, load_mask, make_mask, upsample
from vaelab.evaluation.completion import complete as run_chains
from vaelab.evaluation.completion_eval import evaluate_completion
from vaelab.evaluation.plots import save_grid
from vaelab.training.code_prior import read_prior
from vaelab.training.record import Run, RunLike, target


def _targets(overwrite: bool, **paths: str | Path | None) -> dict[str, Path | None]:
    """Each given output path checked (new, or ``overwrite``) before any work."""
    return {k: target(v, overwrite, k) if v is not None else None for k, v in paths.items()}


def classify(
    run_or_model: str | Path | Run, limit: int | None = None, baseline: bool = False,
    baseline_steps: int = 2000, data: ImageData | None = None, label_control: int = 0, *,
    seed: int = 0, device: str = "cpu", out: str | Path | None = None,
    label_control_out: str | Path | None = None, json_out: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Test accuracy, error and confusion matrix of an m2/cvae run; with ``baseline`` also of
    the same classifier network trained on the run's labels alone; with ``label_control``
    = N, how often N samples per label are seen as that label by the dataset's classifier
    (vaelab.classify). ``out``: the confusion matrix PNG (and the label control's beside
    it, ``STEM-label-control.png``, unless ``label_control_out`` names it); ``json_out``:
    the result as JSON."""
    at_least("--limit", limit)
    if out is not None and label_control_out is None:
        label_control_out = Path(out).with_name(f"{Path(out).stem}-label-control.png")
    paths = _targets(overwrite, out=out, json_out=json_out,
                     label_control_out=label_control_out if label_control else None)  # fmt: skip
    run = as_run(run_or_model, device)
    result = evaluate_classifier(
        run, load_test_images(run, data), limit, baseline, baseline_steps, seed=seed,
        label_samples=label_control,
    )  # fmt: skip
    pct = f"{100 * result['error']:.2f}%"
    if paths["out"] is not None:
        save_confusion(torch.tensor(result["confusion"]), result["class_names"], paths["out"],
                       f"{result['model']} on {result['dataset']}: test error {pct}")  # fmt: skip
    if paths["label_control_out"] is not None:
        lc = result["label_control"]
        save_confusion(
            torch.tensor(lc["confusion"]), result["class_names"], paths["label_control_out"],
            f"{result['model']} samples: {100 * lc['accuracy']:.1f}% seen as the label asked",
            axes=("label asked for", "class seen by the dataset classifier"),
        )  # fmt: skip
    if paths["json_out"] is not None:
        paths["json_out"].write_text(json.dumps(result, indent=2))
    return result


def _observation(
    shape: tuple[int, ...], mask: str | torch.Tensor | None, mask_file: str | Path | None,
    downscale_factor: int | None, seed: int,
) -> torch.Tensor | None:  # fmt: skip
    """The missing-pixel mask (True = missing), or None for super-resolution."""
    given = [v for v in (mask, mask_file, downscale_factor) if v is not None]
    if len(given) != 1:
        raise VaelabError("give --mask, --mask-preset or --downscale (one of them)")
    if mask_file is not None:
        return load_mask(mask_file, shape)
    if isinstance(mask, str):
        return make_mask(mask, shape, seed)
    return mask


def complete(
    run_or_model: RunLike, x: torch.Tensor | int | str | Path | None = None,
    mask: str | torch.Tensor | None = None, *, mask_file: str | Path | None = None,
    downscale_factor: int | None = None, n: int = 8, steps: int = 50,
    method: str = "pseudo-gibbs", fill: str = "mean", evaluate: int | None = None,
    seed: int = 0, device: str = "cpu", out: str | Path | None = None,
    json_out: str | Path | None = None, overwrite: bool = False, details: bool = False,
) -> torch.Tensor | Completion | dict[str, Any]:  # fmt: skip
    """Completions ``(B, n, C, H, W)`` of images ``x``: floats in [0, 1] ``(B, C, H, W)``, or a
    test index or an image file (default: test image 0). What is observed: ``mask`` (a
    preset name such as ``left-half``, ``random:0.5``, or a bool tensor, True = missing),
    ``mask_file`` (a PNG, white = missing) or ``downscale_factor`` (super-resolution). The
    chain (vaelab.complete): ``method``, ``steps``, ``fill``. ``out``: a PNG row of the first
    image, what the model saw and its completions. With ``evaluate`` = N, instead the
    missing-pixel MSE on the first N test images against the baselines (a dict; also
    written to ``json_out``). A bare model works for tensor inputs. ``details``: return the
    chain's whole result (:class:`vaelab.evaluation.completion.Completion`: images, decoded means,
    Metropolis acceptance rate) instead of the images. A VQ-VAE run with a trained code
    prior (RUN/prior) samples the codes under the missing pixels from it
    (:mod:`vaelab.evaluation.vq_complete`); without one it iterates encode -> codes ->
    decode."""
    paths = _targets(overwrite, out=out, json_out=json_out)
    needs_run = evaluate is not None or not isinstance(x, torch.Tensor)
    needs_run |= not isinstance(run_or_model, torch.nn.Module)  # a VQ run's code prior
    run = as_run(run_or_model, device) if needs_run else None
    model = run.model if run is not None else model_of(run_or_model, device)
    missing = _observation(model.image_shape, mask, mask_file, downscale_factor, seed)
    # A VQ-VAE run's trained code prior samples the missing codes (none: the projection).
    found = read_prior(run) if run is not None and model.discrete_codes else None
    prior = None if found is None else found[0]
    if run is not None and model.discrete_codes and prior is None and missing is not None:
        warnings.warn(
            f"{run.folder} has no code prior: completing by re-encoding, which keeps much of "
            f"the grey start; train one with `vaelab train-prior {run.folder}`",
            stacklevel=2,
        )
    if evaluate is not None:
        result = evaluate_completion(
            run, load_test_images(run), mask=missing, downscale_factor=downscale_factor,
            limit=evaluate, n=n, steps=steps, method=method, seed=seed, fill=fill,
            code_prior=prior,
        )  # fmt: skip
        result["task"] = mask if isinstance(mask, str) else str(mask_file or result["task"])
        if model.discrete_codes:  # which of the two VQ completions the numbers are
            result["code_prior"] = prior is not None
        if paths["json_out"] is not None:
            paths["json_out"].write_text(json.dumps(result, indent=2) + "\n")
        return result
    if not isinstance(x, torch.Tensor):
        flag = "--index" if x is None or isinstance(x, int) else "--input"
        x = to_unit(input_image(run, 0 if x is None else x, flag, seed)[None])
    result = run_chains(model, x, missing, n=n, steps=steps, method=method,
                        downscale_factor=downscale_factor, seed=seed, fill=fill,
                        code_prior=prior)  # fmt: skip
    if paths["out"] is not None:
        first = x[:1].to(result.images.device)
        if missing is not None:  # what the model saw: missing pixels shown mid-grey
            seen = torch.where(missing.to(first.device), torch.full_like(first, 0.5), first)
        else:
            seen = upsample(downscale(first, downscale_factor), downscale_factor)
        save_grid(torch.cat([first, seen, result.images[0]]).cpu(), paths["out"],
                  nrow=n + 2)  # fmt: skip
    # Like every other API function: CPU tensors, whatever device the chain ran on.
    result = dataclasses.replace(result, images=result.images.cpu(), decoded=result.decoded.cpu())
    return result if details else result.images
