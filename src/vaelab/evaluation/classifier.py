"""Classification with a label-using model, and the supervised-only baseline.

M2 classifies with its q(y|x); a CVAE with Bayes' rule on its bound,
r(y|x) = softmax_y(ELBO(x, y) + log p(y)). Test accuracy, error and the confusion matrix
(rows: true class, columns: predicted) are reported; :func:`supervised_baseline` trains
the same classifier network from scratch on the labelled images alone (the labels the run
kept: ``--labels-per-class`` with the run's seed), so the gain from the unlabelled images
is the difference of the two accuracies. :func:`label_control` measures the other
direction: whether samples drawn for a label look like that class to the dataset's
classifier (the one the sample-quality metrics use).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from vaelab.config import Config, ModelConfig
from vaelab.data import ImageData
from vaelab.data.prepare import binarize_fixed, eval_images, prepare, to_unit
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.plots import save_figure
from vaelab.evaluation.quality import load_classifier
from vaelab.evaluation.sample_labels import class_names
from vaelab.models.m2 import M2Options, classifier_net
from vaelab.training.labels import keep_per_class
from vaelab.training.record import Run


def _predict(fn, x: torch.Tensor, device: torch.device, batch: int = 500) -> torch.Tensor:
    return torch.cat([fn(to_unit(x[i : i + batch].to(device))).argmax(-1).cpu()
                      for i in range(0, len(x), batch)])  # fmt: skip


def confusion_matrix(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts: entry (i, j) = images of class i predicted as j."""
    return torch.bincount(truth * classes + pred, minlength=classes * classes).view(classes, -1)


def save_confusion(
    cm: torch.Tensor, names: list[str], path: str | Path, title: str,
    axes: tuple[str, str] = ("true", "predicted"),
) -> Path:  # fmt: skip
    """The confusion matrix as a PNG heat map with counts in the cells; ``axes`` names the
    rows and the columns."""
    fig = Figure(figsize=(6.5, 5.5), dpi=100)
    ax = fig.subplots()
    ax.imshow(cm.numpy(), cmap="Blues")
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set_ylabel(axes[0])
    ax.set_xlabel(axes[1])
    ax.set_title(title)
    top = cm.max().item()
    for i in ticks:
        for j in ticks:
            v = cm[i, j].item()
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > top / 2 else "black")  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path)


def _scores(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> dict[str, Any]:
    acc = (pred == truth).double().mean().item()
    cm = confusion_matrix(pred, truth, classes)
    return {"accuracy": acc, "error": 1 - acc, "confusion": cm.tolist()}


def labels_per_class(config: Config) -> int:
    """How many labels per class the run trained with (0: all; only M2 hides labels)."""
    options = config.model.options
    return options.labels_per_class if isinstance(options, M2Options) else 0


def _m1_run(config: Config) -> str | None:
    options = config.model.options
    return options.m1_run if isinstance(options, M2Options) else None


def _labelled(config: Config, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images whose labels the run kept, as the run's training saw them."""
    t = config.train
    x = data.train_x
    if config.data.binarize == "static":
        x = binarize_fixed(x, t.seed)
    per_class = labels_per_class(config)
    keep = (
        keep_per_class(data.train_y, per_class, t.seed) if per_class > 0 else torch.arange(len(x))
    )
    return x[keep], data.train_y[keep]


def baseline_network(model: nn.Module, config: ModelConfig) -> nn.Module:
    """A freshly initialised copy of the model's classifier network (after M1's features
    for M1+M2); a CVAE gets the encoder-shaped classifier M2 would have."""
    if model.has_classifier:
        net = copy.deepcopy(model.classifier)
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    else:
        net = classifier_net(config, model.image_shape, model.num_classes)
    return nn.Sequential(copy.deepcopy(model.features), net).to(next(model.parameters()).device)


def supervised_baseline(
    run: Run, data: ImageData, steps: int = 2000, batch_size: int = 100,
    lr: float = 1e-3, seed: int = 0,
) -> nn.Module:  # fmt: skip
    """Train :func:`baseline_network` on the run's labelled images alone (cross-entropy,
    Adam, ``steps`` minibatches); returns it in eval mode."""
    torch.manual_seed(seed)
    x, y = _labelled(run.config, data)
    net = baseline_network(run.model, run.config.model).train()
    device = next(net.parameters()).device
    x, y = x.to(device), y.to(device)
    dynamic = run.config.data.binarize == "dynamic"
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), device=device)
        loss = F.cross_entropy(net(prepare(x[idx], dynamic)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def label_control(
    model: nn.Module, data: ImageData, per_class: int = 100, seed: int = 0
) -> dict[str, Any]:
    """Does the model draw the class it is asked for? ``per_class`` images of every label y
    (z ~ p(z), the mean of p(x|z, y)) are classified by the dataset's classifier
    (:func:`vaelab.evaluation.quality.load_classifier`, trained once and cached). ``accuracy``
    is the share seen as the y asked for: chance is 1/C, and the classifier's own test
    accuracy (``classifier_test_accuracy``) is about the best to expect. ``confusion``:
    rows = label asked for, columns = class seen."""
    if not model.on_images:
        raise VaelabError(
            "classify --label-control: this run models M1 features, not images; use a cvae "
            "run or an m2 run without --m1-run"
        )
    at_least("--label-control", per_class)
    net, info = load_classifier(data)
    device, classes = next(model.parameters()).device, model.num_classes
    torch.manual_seed(seed)
    asked = torch.arange(classes).repeat_interleave(per_class)
    with torch.inference_mode():
        seen = torch.cat([
            net(model.sample(len(y), y=y.to(device)).float().cpu()).argmax(-1)
            for y in asked.split(1000)
        ])  # fmt: skip
    return {
        "per_class": per_class,
        "classifier_test_accuracy": info["test_accuracy"],
        **_scores(seen, asked, classes),
    }


@torch.no_grad()
def evaluate_classifier(
    run: Run, data: ImageData, limit: int | None = None, baseline: bool = False,
    baseline_steps: int = 2000, seed: int = 0, label_samples: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Test accuracy, error and confusion matrix of the model (and of the baseline; with
    ``label_samples`` > 0, also :func:`label_control` with that many images per class)."""
    model, cfg = run.model, run.config
    if not model.uses_labels:
        raise VaelabError("classify: the run's model has no labels; train --model m2 or cvae")
    if data.test_y is None:
        raise VaelabError(f"classify: dataset {data.name} has no test labels")
    model.eval()
    x = eval_images(
        data.test_x[:limit] if limit else data.test_x, cfg.data.binarize, cfg.train.seed
    )
    truth = (data.test_y[:limit] if limit else data.test_y).cpu()
    device = next(model.parameters()).device
    classes = model.num_classes
    out: dict[str, Any] = {
        "dataset": data.name, "model": "m1+m2" if _m1_run(cfg) else cfg.model.model,
        "images": len(x),
        "labels_per_class": labels_per_class(cfg),
        "class_names": class_names(model, run.info.get("class_names")),
        **_scores(_predict(lambda b: model.class_log_probs(b, 4), x, device), truth, classes),
    }  # fmt: skip
    if baseline:
        with torch.enable_grad():
            net = supervised_baseline(run, data, steps=baseline_steps, seed=seed)
        out["baseline"] = {
            "steps": baseline_steps,
            **_scores(_predict(net, x, device), truth, model.num_classes),
        }
    if label_samples:
        out["label_control"] = label_control(model, data, label_samples, seed)
    return out
