"""A trained run as one object: model, config, checkpoint info and folder; and where the
commands' outputs go (``RUN/outputs/``, numbered names, refusing to replace a file).

The model stays a plain ``nn.Module``; what belongs to the run (its Config, the dataset it
was trained on, where its files are) travels beside it in :class:`Run`, returned by
:func:`vaelab.api.open_run`. ``vaelab.load(path)`` is ``open_run(path).model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from vaelab.errors import VaelabError

if TYPE_CHECKING:  # annotations only: this module must stay light
    import torch

    from vaelab.config import Config


# What the API functions take as "a run": its folder, an opened Run, or a bare model.
RunLike: TypeAlias = "str | Path | Run | torch.nn.Module"
OUTPUTS = "outputs"  # RUN/outputs/: what commands made, apart from training's own pictures


def new_output(out: str | Path, overwrite: bool, flag: str = "out") -> Path:
    """``out`` as a Path; an existing file needs ``overwrite``: the one output-file guard of
    the API and the CLI (``flag``: ``--npy`` on the command line, ``out`` in Python)."""
    path = Path(out)
    if path.exists() and not overwrite:
        how = "--overwrite" if flag.startswith("-") else "overwrite=True"
        raise VaelabError(f"{flag} {path}: exists; pass {how} to replace it")
    return path


def target(out: str | Path, overwrite: bool, flag: str = "out") -> Path:
    """``out`` as a Path whose folder exists (:func:`new_output`, then its folder made)."""
    path = new_output(out, overwrite, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def numbered(path: Path) -> Path:
    """``path``, or ``stem-2.suffix``, ``stem-3.suffix``... : the first whose name is free,
    with the table/JSON a picture may get beside it (same stem, .md/.json) free too, so an
    earlier result is never replaced."""
    stem, suffix, i = path.stem, path.suffix, 2
    while any(path.with_suffix(s).exists() for s in {suffix, ".md", ".json"}):
        path = path.with_name(f"{stem}-{i}{suffix}")
        i += 1
    return path


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
