"""A trained run as one object: model, config, checkpoint info and folder.

The model stays a plain ``nn.Module``; what belongs to the run (its Config, the dataset it
was trained on, where its files are) travels beside it in :class:`Run`, returned by
:func:`vaelab.api.open_run`. ``vaelab.load(path)`` is ``open_run(path).model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: this module must stay light
    import torch

    from vaelab.config import Config


@dataclass(frozen=True)
class Run:
    """``model`` (eval mode), its ``config``, the checkpoint's ``info`` (dataset name,
    ``image_shape`` as (C, H, W), class names, ...) and the run ``folder``."""

    model: torch.nn.Module
    config: Config
    info: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model was trained on."""
        return tuple(self.info["image_shape"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
