"""vaelab compare: the evaluations of several runs side by side (table + bar chart)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.cli.common import new_file
from vaelab.errors import VaelabError

HELP = "compare the evaluations of several runs: a table (printed, .md, .json) and a bar chart"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUN",
        help="run folders (their newest evaluation*.json) or evaluation JSON files",
    )  # fmt: skip
    parser.add_argument(
        "--out", default=None,
        help="chart path (.png; the table goes next to it as .md and .json); default "
        "comparison.png here, numbered if it exists",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _out_path(args: argparse.Namespace) -> Path:
    if args.out:
        if Path(args.out).suffix.lower() != ".png":
            raise VaelabError(f"--out {args.out}: expected a .png path")
        return new_file("--out", args.out, args.overwrite)
    path, i = Path("comparison.png"), 2
    while path.exists() or path.with_suffix(".md").exists():
        path, i = Path(f"comparison-{i}.png"), i + 1
    return path


def run(args: argparse.Namespace) -> int:
    from vaelab.api_studies import compare

    path = _out_path(args)
    result = compare(args.runs, path, overwrite=True)  # _out_path checked it
    print(result["markdown"], end="")
    print(f"wrote {path}, {path.with_suffix('.md')}, {path.with_suffix('.json')}")
    return 0
