"""vaelab train's own flags: every config field is a flag (``--latent-dim 20``), defaults
shown, generated from the config dataclasses (--out and --overwrite are the table's
common options, vaelab/cli/table.py)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING
from pathlib import Path

from vaelab.cli.names import field_help, registry_names
from vaelab.config import _CHOICES, SECTIONS, Config, load_config, with_overrides
from vaelab.errors import VaelabError

# The fields whose value names a registry entry: --help lists the names (read from the
# source, so that --help does not import torch).
REGISTRIES = {
    "dataset": ("vaelab.data.builtin", "BUILTIN"),
    "model": ("vaelab.models", "MODELS"),
    "arch": ("vaelab.nn", "ARCHS"),
    "likelihood": ("vaelab.likelihoods", "LIKELIHOODS"),
    "prior": ("vaelab.latents.priors", "PRIORS"),
    "posterior": ("vaelab.latents", "FAMILIES"),
    "estimator": ("vaelab.objectives.estimators", "ESTIMATORS"),
    "objective": ("vaelab.objectives", "OBJECTIVES"),
    "track": ("vaelab.training.trackers", "TRACKERS"),
}
_METAVAR = {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}


def choices(name: str) -> tuple[str, ...]:
    """The accepted values of config field ``name`` (empty where any value of its type is)."""
    if name in REGISTRIES:
        return registry_names(*REGISTRIES[name])
    return tuple(_CHOICES.get(name, ()))


def _metavar(name: str, tp: object) -> str:
    if choices(name):
        return "NAME"
    inner = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(inner) == 1:
        tp = inner[0]  # X | None: shown as X
    if typing.get_origin(tp) is tuple:
        return f"{_METAVAR[typing.get_args(tp)[0]]},..."
    return _METAVAR.get(tp, "VALUE")


def _flag_help(name: str, comment: str, default: object) -> str:
    """The field's own comment, its choices, and its default (once)."""
    names = choices(name)
    text = comment or name.replace("_", " ")
    if names:
        word = "builtin" if name == "dataset" else "one of"
        text += f"; {word}: {', '.join(names)}"
    if "(default" in text:  # the comment says what an unset value means
        return text
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    return f"{text} (default: {default})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML or TOML file of options (flags override it)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    titles = {"data": "data", "model": "model", "train": "training"}
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(
            f"{titles.get(section, section)} options (also config-file keys, with _ for -)"
        )
        docs, hints = field_help(cls), typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            extra = {"nargs": "?", "const": "true"} if hints[f.name] is bool else {}
            group.add_argument(
                f"--{f.name.replace('_', '-')}", dest=f"opt_{f.name}", default=None,
                metavar=_metavar(f.name, hints[f.name]),
                help=_flag_help(f.name, docs[f.name], default), **extra,
            )  # fmt: skip


def config_from_args(args: argparse.Namespace) -> Config:
    """defaults < the run's saved config (on --resume) < --config file < flags."""
    from vaelab.training.folder import CONFIG  # imports torch: only when training, not for --help

    if args.resume and args.out and (Path(args.out) / CONFIG).is_file():
        config = load_config(Path(args.out) / CONFIG)
    else:
        config = Config()
    if args.config:
        config = load_config(args.config, config)
    # Keyed as flags, so a bad value is reported as "--latent-dim: ...", not the field name.
    flags = {
        f"--{k[4:].replace('_', '-')}": v
        for k, v in vars(args).items()
        if k.startswith("opt_") and v is not None
    }
    return with_overrides(config, flags, "command line")


def keywords(args: argparse.Namespace) -> dict[str, object]:
    """The keywords of :func:`vaelab.api.train` beyond --out/--overwrite: the config built
    from the flags, and --resume."""
    config = config_from_args(args)
    if args.resume and not args.out:
        raise VaelabError("--resume needs --out RUN_DIR, the run to continue")
    return {"config": config, "resume": args.resume}
