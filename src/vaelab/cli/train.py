"""vaelab train: every config field is a flag (``--latent-dim 20``), defaults shown."""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING
from pathlib import Path

from vaelab.config import SECTIONS, Config, load_config, with_overrides
from vaelab.errors import Interrupted, VaelabError
from vaelab.train.loop import fit
from vaelab.train.run import CONFIG

HELP = "train an autoencoder or a VAE; writes a run folder"


def _flag_help(section: str, f) -> str:
    default = f.default if f.default is not MISSING else f.default_factory()
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    tp = typing.get_type_hints(SECTIONS[section])[f.name]
    kind = getattr(tp, "__name__", str(tp)).replace("typing.", "")
    return f"[{section}] {kind} (default: {default})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", help="YAML or TOML file of options (flags override it)")
    parser.add_argument("--out", help="run folder (default: runs/<time>-<dataset>-<model>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    group = parser.add_argument_group("options (also config-file keys, with _ for -)")
    for section, cls in SECTIONS.items():
        for f in cls.__dataclass_fields__.values():
            tp = typing.get_type_hints(cls)[f.name]
            extra = {"nargs": "?", "const": "true"} if tp is bool else {}
            group.add_argument(
                f"--{f.name.replace('_', '-')}", dest=f"opt_{f.name}", default=None,
                metavar="VALUE", help=_flag_help(section, f), **extra,
            )  # fmt: skip


def config_from_args(args: argparse.Namespace) -> Config:
    """defaults < the run's saved config (on --resume) < --config file < flags."""
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


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.resume and not args.out:
        raise VaelabError("--resume needs --out RUN_DIR, the run to continue")
    try:
        out = fit(config, args.out, resume=args.resume, overwrite=args.overwrite)
    except Interrupted as stop:
        print(f"vaelab train: {stop}", file=sys.stderr)
        print(f"resume with: vaelab train --resume --out {stop.run_dir}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
    print(f"run folder: {out}")
    return 0
