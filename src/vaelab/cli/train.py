"""vaelab train's own flags: every config field is a flag (``--latent-dim 20``), defaults
shown, generated from the config dataclasses, and so is every field of a model family's or
objective's options (``--z1-dim``), grouped under that family in --help (--out and
--overwrite are the table's common options, vaelab/cli/table.py).

--help imports no torch: registry names and the option dataclasses are read from the
source (:mod:`vaelab.cli.names`); training imports the registries, and the config then
checks every flag against what they hold at run time (a flag of a family the run does not
use is refused naming who takes it)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING
from pathlib import Path

from vaelab.cli.names import field_help, option_sections, registry_map, registry_names
from vaelab.config import _CHOICES, SECTIONS, Config, read_config_file, with_overrides
from vaelab.errors import VaelabError

# Names --help suggests beyond the registries (a dataset may also be a path).
SUGGESTED = {
    "dataset": ("vaelab.data.builtin", "BUILTIN"),
    "track": ("vaelab.training.trackers", "TRACKERS"),
}
_METAVAR = {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}


def choices(name: str) -> tuple[str, ...]:
    """The accepted values of config field ``name`` (empty where any value of its type is)."""
    sources = {**registry_map(), **SUGGESTED}
    if name in sources:
        return registry_names(*sources[name])
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


def _add(group: argparse._ArgumentGroup, name: str, tp: object, help_text: str) -> None:
    extra = {"nargs": "?", "const": "true"} if tp is bool else {}
    group.add_argument(
        f"--{name.replace('_', '-')}", dest=f"opt_{name}", default=None,
        metavar=_metavar(name, tp), help=help_text, **extra,
    )  # fmt: skip


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
            if f.name == "options":  # the family's/objective's own: their groups below
                continue
            default = f.default if f.default is not MISSING else f.default_factory()
            _add(group, f.name, hints[f.name], _flag_help(f.name, docs[f.name], default))
    # A field several sections declare (num_classes: cvae and m2) is one flag, in the group
    # of all of them; its default is the first one's.
    owners: dict[str, list[str]] = {}
    first: dict[str, tuple[str, object]] = {}
    for section, (selector, option_fields) in option_sections().items():
        for f in option_fields:
            owners.setdefault(f.name, []).append(f"--{selector} {section}")
            first.setdefault(f.name, (f, None))
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for name, takers in owners.items():
        key = tuple(takers)
        if key not in groups:
            groups[key] = parser.add_argument_group(
                f"options of {', '.join(takers)} only (config-file section: "
                f"{', '.join(t.split()[1] for t in takers)})"
            )
        f = first[name][0]
        _add(groups[key], name, f.type, _flag_help(name, f.comment, f.default))


def config_from_args(args: argparse.Namespace) -> Config:
    """defaults < the run's saved config (on --resume) < --config file < flags. The file
    and the flags are applied together, so a file's family options meet the flags' --model."""
    # Training imports torch anyway; --help does not come here. The registries register
    # their option sections with the config on import (vaelab.config.OWNERS).
    from vaelab.training import options  # noqa: F401  (every registry, for the sections)
    from vaelab.training.folder import CONFIG

    if args.resume and args.out and (Path(args.out) / CONFIG).is_file():
        flat, legacy = read_config_file(Path(args.out) / CONFIG)
        config = with_overrides(Config(), flat, str(Path(args.out) / CONFIG), legacy)
    else:
        config = Config()
    overrides: dict[str, object] = {}
    legacy: frozenset[str] = frozenset()
    if args.config:
        overrides, legacy = read_config_file(args.config)
    # Keyed as flags, so a bad value is reported as "--latent-dim: ...", not the field name.
    for k, v in vars(args).items():
        if k.startswith("opt_") and v is not None:
            overrides.pop(k[4:], None)
            overrides[f"--{k[4:].replace('_', '-')}"] = v
    return with_overrides(config, overrides, args.config or "command line", legacy)


def keywords(args: argparse.Namespace) -> dict[str, object]:
    """The keywords of :func:`vaelab.api.train` beyond --out/--overwrite: the config built
    from the flags, and --resume."""
    config = config_from_args(args)
    if args.resume and not args.out:
        raise VaelabError("--resume needs --out RUN_DIR, the run to continue")
    return {"config": config, "resume": args.resume}
