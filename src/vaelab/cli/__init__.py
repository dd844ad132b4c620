"""Command line: ``vaelab COMMAND ...``, built from the table in :mod:`vaelab.cli.table`.

Each command is one API function (``vaelab.<command>``): :func:`build_parser` turns the
table's options into argparse flags (the common ones declared once), and :func:`call` checks
the output paths, opens the run once, calls the function and hands the result to the
command's printer (:mod:`vaelab.cli.present`). Only the table and argparse are imported for
``--help`` (no torch: tests/test_cli_help.py). A :class:`VaelabError` becomes one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from vaelab import __version__
from vaelab.cli.common import HelpFormatter, new_file, one_line_warnings
from vaelab.cli.table import COMMANDS, COMMON, Command, Option
from vaelab.errors import Interrupted, VaelabError, at_least
from vaelab.training.record import OUTPUTS, numbered

__all__ = ["COMMANDS", "build_parser", "call", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (no usage block), exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _options(cmd: Command) -> list[Option]:
    """The command's options: the common ones it takes (with its own help where it gives
    one), then its own."""
    common = []
    for name in cmd.common:
        option = COMMON[name]
        text = cmd.help_of.get(name, option.help).replace("{out}", cmd.out or "")
        common.append(Option(**{**option.__dict__, "help": text}))
    return [*common[:1], *cmd.options, *common[1:]] if "run" in cmd.common else [
        *cmd.options, *common
    ]  # fmt: skip


def _add(parser: argparse.ArgumentParser, option: Option, groups: dict) -> None:
    kw = dict(option.extra)
    if option.group is not None:
        if option.group not in groups:
            groups[option.group] = parser.add_mutually_exclusive_group(
                required=kw.pop("required", False)
            )
        kw.pop("required", None)
        parser = groups[option.group]
    for key in ("type", "default", "choices"):
        if getattr(option, key) is not None:
            kw[key] = getattr(option, key)
    if option.flags[0].startswith("-"):
        kw["dest"] = option.name
        if option.dest and option.choices is None and "action" not in kw:  # not the dest's
            kw.setdefault("metavar", option.flags[0].lstrip("-").upper().replace("-", "_"))
    parser.add_argument(*option.flags, help=option.help, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", description="Train, evaluate and explore VAEs on images.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help,
                           formatter_class=HelpFormatter)  # fmt: skip
        groups: dict[str, Any] = {}
        for option in _options(cmd):
            _add(p, option, groups)
        if cmd.arguments:  # train: a flag per config field, generated from the dataclasses
            importlib.import_module(cmd.arguments).add_arguments(p)
    return parser


def _flag(option: Option) -> str:
    return option.flags[0] if option.flags[0].startswith("-") else option.name


def _keywords(cmd: Command, args: argparse.Namespace) -> dict[str, Any]:
    """The API keywords from the parsed flags, each checked the way its option says:
    at least 1, output file new (unless --overwrite), converted."""
    kwargs: dict[str, Any] = {}
    for option in _options(cmd):
        if option.name in ("run", "out", "overwrite"):
            continue
        value = getattr(args, option.name)
        if option.positive:
            at_least(_flag(option), value)
        if option.output and value is not None:
            value = new_file(_flag(option), value, args.overwrite)
        if option.convert is not None and (value is not None or option.extra.get("action")):
            value = option.convert(value)
        kwargs[option.name] = value
    return kwargs


def _out(cmd: Command, args: argparse.Namespace, fields: dict[str, Any]) -> Path | None:
    """Where the command writes: an explicit --out (new unless --overwrite), else the
    default name in RUN/outputs/ (the current folder without a run), numbered so that an
    earlier result is never replaced."""
    if args.out:
        return new_file("--out", args.out, args.overwrite)
    folder = Path(args.run) / OUTPUTS if "run" in cmd.common else Path()
    return numbered(folder / cmd.out.format(**fields))


def _beside(cmd: Command, args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Extra pictures next to the output: ``NAME`` by default, ``STEM-NAME`` beside an
    explicit --out; numbered unless an explicit --out is being overwritten."""
    paths = {}
    for key, name in cmd.beside.items():
        path = out.with_name(f"{out.stem}-{name}" if args.out else name)
        paths[key] = path if args.out and args.overwrite else numbered(path)
    return paths


def call(name: str, args: argparse.Namespace) -> int:
    """Run command ``name``: check its inputs and output paths, open the run once, call
    its API function (once per value of an ``each`` option) and print the result."""
    from vaelab.cli import present  # imports nothing heavy itself; kept off the --help path

    cmd = COMMANDS[name]
    kwargs = {**cmd.fixed, **_keywords(cmd, args)}
    if cmd.arguments:
        kwargs.update(importlib.import_module(cmd.arguments).keywords(args))
    values = kwargs.pop(cmd.each) if cmd.each else [None]
    if cmd.each and args.out and len(values) > 1:
        raise VaelabError(f"--out: names one file; give one --{cmd.each} or leave --out unset")
    jobs = []
    for value in values:
        job = dict(kwargs, **({cmd.each: value} if cmd.each else {}))
        if cmd.out and "out" in cmd.common:
            job["out"] = _out(cmd, args, job)
            job.update(_beside(cmd, args, job["out"]))
        elif "out" in cmd.common:  # a folder (train, ae-vs-vae): the function checks it
            job["out"] = args.out
        if "overwrite" in cmd.common:  # files checked above; a folder is the function's
            folder = "out" in cmd.common and not cmd.out
            job["overwrite"] = args.overwrite if folder else True
        jobs.append(job)
    module, function_name = cmd.function
    function = getattr(importlib.import_module(module), function_name)
    accepted = inspect.signature(function).parameters
    first: list[Any] = []
    if "run" in cmd.common:
        first = [args.run]
        if cmd.open_run:
            first = [importlib.import_module("vaelab.api").open_run(args.run, args.device)]
    show = getattr(present, cmd.present)
    for i, job in enumerate(jobs):
        job = {k: v for k, v in job.items() if k in accepted}
        show(job, function(*first, **job), first=i == 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        with one_line_warnings(args.command):
            return call(args.command, args)
    except VaelabError as exc:
        print(f"vaelab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # Ctrl-C where the work can be continued (checkpoint written)
        how = f"vaelab train --resume --out {stop.run_dir}" if stop.resume_with == "" else (
            stop.resume_with)  # fmt: skip
        print(f"vaelab {args.command}: {stop}" + (f"; resume with: {how}" if how else ""),
              file=sys.stderr)  # fmt: skip
        return 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
    except KeyboardInterrupt:
        print(f"vaelab {args.command}: interrupted", file=sys.stderr)
        return 130
