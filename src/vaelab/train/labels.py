"""Labels for training the label-using models (CVAE, M2): checking and hiding them.

``--labels-per-class N`` keeps N labels of each class (a seeded, balanced choice) and marks
the others -1 (hidden); :func:`prepare_labels` does that inside ``fit()`` and hands M2 its
labelled stream and its alpha. It is training code (fit calls it), below evaluation.
"""

from __future__ import annotations

import dataclasses

import torch

from vaelab.config import Config
from vaelab.data import ImageData
from vaelab.data.prepare import binarize_fixed
from vaelab.errors import VaelabError
from vaelab.models.m2 import DEFAULT_ALPHA_PER_IMAGE  # M2 starts with it; fit sets alpha


def keep_per_class(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of ``per_class`` labels of every class, drawn with ``seed``.

    Raises if a class has fewer than ``per_class`` images (the choice would not be balanced).
    """
    gen = torch.Generator().manual_seed(seed)
    y = y.cpu()
    keep = []
    for c in torch.unique(y[y >= 0]).tolist():
        members = torch.nonzero(y == c).flatten()
        if len(members) < per_class:
            raise VaelabError(
                f"--labels-per-class {per_class}: class {c} has only {len(members)} images"
            )
        keep.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.sort(torch.cat(keep)).values


def hide_labels(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """A copy of labels ``y`` ``(N,)`` with all but ``per_class`` per class set to -1."""
    if per_class <= 0:
        return y.clone()
    out = torch.full_like(y, -1)
    keep = keep_per_class(y, per_class, seed)
    out[keep] = y[keep]
    return out


def prepare_labels(model: torch.nn.Module, config: Config, data: ImageData) -> ImageData:
    """Check the labels a model needs, hide them per ``--labels-per-class`` and give M2 its
    alpha and labelled stream. Returns the data to train on (unchanged for other models)."""
    t = config.train
    uses, semi = getattr(model, "uses_labels", False), getattr(model, "semi_supervised", False)
    if t.labels_per_class and not semi:
        raise VaelabError("--labels-per-class: only --model m2 learns from unlabelled images")
    if t.alpha is not None and not semi:
        raise VaelabError("--alpha: weights M2's classification loss; use it with --model m2")
    if t.objective == "m2" and not semi:
        raise VaelabError("--objective m2: needs --model m2")
    if not uses:
        return data
    if data.train_y is None:
        raise VaelabError(f"--model {config.model.model}: dataset {data.name} has no labels")
    if data.num_classes != model.num_classes:
        raise VaelabError(
            f"--num-classes: dataset {data.name} has {data.num_classes} classes, the model "
            f"{model.num_classes}; pass --num-classes {data.num_classes}"
        )
    if not semi:
        return data
    if t.objective != "m2":
        raise VaelabError("--model m2: train it with --objective m2 (bound + alpha * class loss)")
    if t.labels_per_class < 0:
        raise VaelabError(f"--labels-per-class: must be >= 0, got {t.labels_per_class}")
    train_y = hide_labels(data.train_y, t.labels_per_class, t.seed)
    n = len(train_y)
    alpha = DEFAULT_ALPHA_PER_IMAGE * n if t.alpha is None else t.alpha
    if alpha < 0:
        raise VaelabError(f"--alpha: must be >= 0, got {alpha}")
    model.ce_weight = alpha / n  # J^alpha / N: the class loss is a mean over labelled images
    known = torch.nonzero(train_y >= 0).flatten()
    x = data.train_x
    if config.data.binarize == "static":  # the same fixed draw fit() trains on
        x = binarize_fixed(x, t.seed)
    device = next(model.parameters()).device
    model.attach_labelled(
        x[known].to(device), train_y[known].to(device), config.data.binarize == "dynamic"
    )
    model.labelled_batch = min(t.batch_size, max(len(known), 1))
    return dataclasses.replace(data, train_y=train_y)
