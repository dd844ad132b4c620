"""Labels for training the label-using models (CVAE, M2): checking and hiding them.

``--labels-per-class N`` keeps N labels of each class (a seeded, balanced choice) and marks
the others -1 (hidden); :func:`prepare_labels` does that inside ``fit()``, and
:func:`labelled_stream` gives the loop M2's labelled images, from which it feeds a batch to
the objective's class loss every step. It is training code (fit calls it), below evaluation.
"""

from __future__ import annotations

import dataclasses

import torch

from vaelab.config import Config
from vaelab.data import ImageData
from vaelab.data.prepare import binarize_fixed
from vaelab.errors import VaelabError


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
    """Check the labels a model needs and hide them per ``--labels-per-class``. Returns the
    data to train on (unchanged for models without ``semi_supervised``)."""
    t = config.train
    uses, semi = model.uses_labels, model.semi_supervised
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
    per_class = type(model).options_of(config.model).labels_per_class
    train_y = hide_labels(data.train_y, per_class, t.seed)
    return dataclasses.replace(data, train_y=train_y)


class LabelledStream:
    """Batches of the labelled images (uint8 ``x`` ``(L, C, H, W)``, labels ``y`` ``(L,)``,
    on the training device), drawn uniformly with replacement: what the loop feeds M2's class
    loss every step. Scaled to [0, 1] (Bernoulli-binarized again per draw with ``dynamic``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, dynamic: bool, batch: int) -> None:
        self.x, self.y, self.dynamic, self.batch = x, y, dynamic, batch

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if len(self.x) == 0:
            return None
        # Indices from the CPU generator: checkpointed, so resume stays exact on CUDA too.
        # (randint's own draw, into pinned memory on CUDA: the copy does not block the host.)
        cuda = self.x.device.type == "cuda"
        idx = torch.empty(self.batch, dtype=torch.long, pin_memory=cuda).random_(len(self.x))
        idx = idx.to(self.x.device, non_blocking=cuda)
        x = self.x[idx].float().div_(255.0)
        return (torch.bernoulli(x) if self.dynamic else x), self.y[idx]


def labelled_stream(
    model: torch.nn.Module, config: Config, data: ImageData, device: torch.device
) -> LabelledStream | None:
    """The labelled images of ``data`` (as :func:`prepare_labels` left them) for a
    ``semi_supervised`` model, else None; with ``--binarize static`` the same fixed draw
    fit() trains on."""
    if not model.semi_supervised:
        return None
    t = config.train
    known = torch.nonzero(data.train_y >= 0).flatten()
    x = data.train_x
    if config.data.binarize == "static":
        x = binarize_fixed(x, t.seed)
    return LabelledStream(
        x[known].to(device), data.train_y[known].to(device), config.data.binarize == "dynamic",
        min(t.batch_size, max(len(known), 1)),
    )  # fmt: skip
