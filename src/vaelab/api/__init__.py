"""The Python API: everything the CLI does, as functions of configs, run folders and models.

import vaelab
run = vaelab.train(vaelab.Config(), out="runs/fmnist")      # or train({"epochs": 5})
model = vaelab.load(run)                                     # an nn.Module
images = model.sample(16)                                    # (16, 1, 28, 28) in [0, 1]
report = vaelab.evaluate(run, samples=1000)                  # dict: ELBO, NLL, bits/dim
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from vaelab.config import Config, config_from_dict, load_config, with_overrides
from vaelab.data import ImageData, dataset_for
from vaelab.data.prepare import eval_images
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.extras import extra_metrics
from vaelab.evaluation.html_report import RUN_DRAWINGS, write_report
from vaelab.evaluation.nll import evaluate_model, images_fingerprint, nll_batching
from vaelab.evaluation.resume import Progress, interrupted, run_identity
from vaelab.evaluation.vq import evaluate_vq
from vaelab.likelihoods import nll_meaning
from vaelab.training.code_prior import read_prior
from vaelab.training.folder import CONFIG
from vaelab.training.load import read_run
from vaelab.training.loop import fit
from vaelab.training.record import Run, numbered, target
from vaelab.training.session import flush_denormals

__all__ = [
    "Run",
    "as_run",
    "evaluate",
    "evaluation_json",
    "load",
    "load_test_images",
    "model_of",
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
    return read_run(run, device)


def load(run: str | Path | Run, device: str = "cpu") -> torch.nn.Module:
    """The trained model of a run folder, in eval mode, on ``device`` (``open_run(run).model``;
    use :func:`open_run` for its config, dataset info and folder as well)."""
    return open_run(run, device).model


def as_run(run: str | Path | Run | torch.nn.Module, device: str = "cpu") -> Run:
    """A run path or a :class:`Run` as a Run. A bare model (from :func:`load`) carries no
    config, dataset or folder, so functions that need them refuse it in one line."""
    if isinstance(run, torch.nn.Module):
        raise VaelabError(
            "needs the run's config and data, which a bare model does not carry: pass the run "
            "folder or vaelab.open_run(folder)"
        )
    return open_run(run, device)


def refuse_codes(model: torch.nn.Module, command: str, why: str) -> None:
    """A one-line refusal of a tool that does not apply to a VQ-VAE's discrete codes."""
    if model.discrete_codes:
        raise VaelabError(f"{command}: --model vqvae {why}")


def model_of(run: str | Path | Run | torch.nn.Module, device: str = "cpu") -> torch.nn.Module:
    """The model of a run path or :class:`Run`, or a bare model as it is (for functions that
    need nothing but the model)."""
    return run if isinstance(run, torch.nn.Module) else open_run(run, device).model


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
    seed: int | None = None,
    device: str = "cpu",
    record: bool = False,
    json_out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Test-set ELBO, its terms and the importance-sampled NLL (see vaelab.evaluation.nll);
    with ``extras``, latent health, reconstruction MSE/PSNR and (``quality``) classifier
    sample metrics per sampler (see vaelab.evaluation.extras). ``seed`` seeds the draws.
    ``record`` writes RUN/evaluation.json (numbered; what compare and the report read) and
    refreshes RUN/report.html if training wrote one; ``json_out`` writes the result there
    too. The files written are then listed in ``result["files"]``. With a run folder the
    partial sums are saved as they go (vaelab.evaluation.resume): after Ctrl-C or a kill,
    ``resume`` continues to the numbers an uninterrupted evaluation gives."""
    at_least("--samples", samples)
    at_least("--limit", limit)
    if json_out is not None:
        json_out = target(json_out, overwrite, "json_out")  # before any work
    run = as_run(run_or_model, device)
    flush_denormals(torch.device(device))  # importance weights' subnormal gradients/sums
    model, config = run.model, run.config
    if seed is not None:
        torch.manual_seed(seed)
    if model.discrete_codes:  # VQ-VAE: bounds from a deterministic encoder (evaluation/vq.py)
        x = load_test_images(run, data).test_x[:limit]  # limit None: every test image
        found = read_prior(run)
        result = evaluate_vq(model, eval_images(x, config.data.binarize, config.train.seed),
                             found[0] if found else None)  # fmt: skip
        if record or json_out is not None:
            result["files"] = _write_evaluation(run, result, record, json_out, seed or 0)
        return result
    if not model.on_images:
        raise VaelabError(
            "evaluate: an M1+M2 run models M1's features, not images; evaluate the M1 run, "
            "and use vaelab classify for the labels"
        )
    data = load_test_images(run, data)
    x = data.test_x[:limit] if limit else data.test_x
    x = eval_images(x, config.data.binarize, config.train.seed)
    if not model.has_prior:  # no p(z) to draw from: its samples come post hoc
        samplers = tuple(s for s in samplers if s != "prior") or ("gmm",)
    settings = {
        "samples": samples, "limit": limit, "seed": seed, "device": device, "images": len(x),
        "images_fingerprint": images_fingerprint(x), "batching": nll_batching(model, x, samples),
        "extras": extras, "quality": quality, "samplers": list(samplers),
        "quality_samples": quality_samples, "components": components,
        "checkpoint": run_identity(run.folder) if run.folder else None,
    }  # fmt: skip
    progress = None
    if run.folder is not None and model.likelihood_bound is None:
        param = next(model.parameters())
        progress, note = Progress.start(run.folder, settings, param.device, resume)
        if note:
            print(f"vaelab: {note}", file=sys.stderr)
    try:
        if model.likelihood_bound is None:
            result = evaluate_model(model, x, samples=samples, progress=progress)
        else:  # a point-code model (ae, WAE, RAE): why there is no ELBO/NLL, in one line
            result = {"no_bound": model.likelihood_bound, "images": len(x), "samples": samples}
    except KeyboardInterrupt:
        raise interrupted(progress, run.folder, settings) from None
    try:
        _evaluate_rest(result, run, data, x, extras, quality, samplers, quality_samples,
                       components)  # fmt: skip
    except KeyboardInterrupt:  # the NLL is saved: a resume recomputes only what follows
        raise interrupted(progress, run.folder, settings) from None
    if seed is not None:
        result["seed"] = seed
    if record or json_out is not None:
        result["files"] = _write_evaluation(run, result, record, json_out, seed or 0, data)
    if progress is not None:
        progress.remove()
    return result


def _evaluate_rest(
    result: dict[str, Any], run: Run, data: ImageData, x: torch.Tensor, extras: bool,
    quality: bool, samplers: tuple[str, ...], quality_samples: int, components: int,
) -> None:  # fmt: skip
    """What ``evaluate`` adds after the NLL: the deep model's KL per group, the extras."""
    model, config = run.model, run.config
    result.update(nll_meaning(config.model.likelihood, config.data.binarize))
    if model.latent_groups:  # deep: KL per latent group, top first (unused groups ~0)
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


def evaluation_json(result: dict[str, Any]) -> str:
    """Indented JSON, with the 10,000-odd per-image values on one line at the end."""
    rest = {k: v for k, v in result.items() if k != "log_px_per_image"}
    if "log_px_per_image" not in result:
        return json.dumps(rest, indent=2) + "\n"
    per_image = json.dumps(result["log_px_per_image"])
    return json.dumps(rest, indent=2)[:-2] + f',\n  "log_px_per_image": {per_image}\n}}\n'


def _write_evaluation(
    run: Run, result: dict[str, Any], record: bool, json_out: Path | None, seed: int,
    data: ImageData | None = None,
) -> list[str]:  # fmt: skip
    """RUN/evaluation.json (numbered) and report.html where ``record``, and ``json_out``."""
    text, written = evaluation_json(result), []
    if record:
        if run.folder is None:
            raise VaelabError("evaluate: record=True needs a run folder")
        path = numbered(Path(run.folder) / "evaluation.json")
        path.write_text(text)
        written.append(path)
    if json_out is not None and not (written and json_out.resolve() == written[0].resolve()):
        json_out.write_text(text)
        written.append(json_out)
    report = Path(run.folder or ".") / "report.html"
    if record and report.is_file():  # training wrote one: it now shows these numbers too
        write_report(run, report, data=data, seed=seed)  # data: not read (and announced) twice
        written.append(report)
    return [str(p) for p in written]


# The other commands' functions live in three sibling modules that import this one; module
# __getattr__ makes them vaelab.api.NAME as well without an import cycle at load time.
_ELSEWHERE = {
    **dict.fromkeys(("classify", "complete"), "vaelab.api.tasks"),
    **dict.fromkeys(
        ("interpolate", "latent_plot", "reconstruct", "report", "sample", "similar", "traverse"),
        "vaelab.api.drawing",
    ),
    **dict.fromkeys(("ae_vs_vae", "compare", "disentanglement", "gradvar"), "vaelab.api.studies"),
    **dict.fromkeys(("export", "runs", "sweep"), "vaelab.api.tools"),
    "train_prior": "vaelab.api.codes",
}


def __getattr__(name: str) -> Any:
    if name not in _ELSEWHERE:
        raise AttributeError(f"module 'vaelab.api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_ELSEWHERE[name]), name)
