"""Labels of a trained label-using model (CVAE, M2): naming classes, class grids, labelling
samples. Hiding labels for training (``--labels-per-class``) is :mod:`vaelab.training.labels`.

A class is named on the command line by index (``7``) or by name (``sneaker``, matched
case-insensitively against the run's class names).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vaelab.errors import VaelabError, at_least, positive


def class_names(model: torch.nn.Module, names: Sequence[str] | None = None) -> list[str]:
    """``names`` (the run's class names, ``Run.info["class_names"]``), else the indices as
    strings."""
    return list(names) if names else [str(i) for i in range(model.num_classes)]


def resolve_label(
    model: torch.nn.Module, label: str | int, names: Sequence[str] | None = None
) -> int:
    """Class index of ``label``: an index, or one of the run's class ``names``
    (case-insensitive)."""
    if not model.uses_labels:
        raise VaelabError("--label: this run's model has no labels; train --model cvae or m2")
    names = class_names(model, names)
    text = str(label).strip()
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit() and 0 <= int(text) < model.num_classes:
        return int(text)
    raise VaelabError(
        f"--label {label}: expected a class index 0..{model.num_classes - 1} or a name: "
        + ", ".join(names)
    )


@torch.no_grad()
def class_grid(
    model: torch.nn.Module, n: int, temperature: float = 1.0, seed: int | None = None
) -> torch.Tensor:
    """One row per class, the same ``n`` latents z in every row: ``(C * n, C, H, W)``.

    Down a column only the label changes, so the column shows one style in every class."""
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    z = model.prior.sample(n, temperature)
    labels = torch.arange(model.num_classes, device=z.device)
    params = model.decode(z[None].expand(model.num_classes, -1, -1), labels[:, None])
    return model.to_images(model.likelihood.mean(params).flatten(0, 1))


@torch.no_grad()
def sample_class(
    model: torch.nn.Module, n: int, label: int, temperature: float = 1.0, seed: int | None = None
) -> torch.Tensor:
    """``n`` images ``(n, C, H, W)`` of class ``label`` from a CVAE or M2."""
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    return model.sample(n, temperature, label)


def label_samples(
    model: torch.nn.Module, n: int, label: str, temperature: float = 1.0,
    seed: int | None = None, names: Sequence[str] | None = None,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """What ``vaelab sample --label`` draws: ``n`` images of one class (an index, or one of
    the run's class ``names``), or with ``all`` one row per class over min(n, 10) shared
    latents. Returns (images on CPU, images per row)."""
    at_least("-n", n)
    positive("--temperature", temperature)
    if str(label).lower() == "all":
        resolve_label(model, 0)  # the same error for a model without labels
        cols = min(n, 10)
        return class_grid(model, cols, temperature, seed).cpu(), cols
    images = sample_class(model, n, resolve_label(model, label, names), temperature, seed)
    return images.cpu(), min(n, 8)
