"""vaelab classify: test accuracy and confusion matrix of a CVAE or M2 run (and a baseline)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaelab.cli.common import (
    OUTPUTS,
    add_out_arguments,
    add_run_argument,
    new_file,
    numbered,
    output_path,
)

HELP = "classify the test set with an m2 (or cvae) run: accuracy and confusion matrix PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument(
        "--baseline", action="store_true", help="also train the same classifier network on "
        "the run's labelled images alone (supervised-only baseline) and report it",
    )  # fmt: skip
    parser.add_argument("--baseline-steps", type=int, default=2000, help="its Adam steps")
    parser.add_argument(
        "--label-control", type=int, default=0, metavar="N", help="also draw N images per "
        "label and report how often the dataset's classifier sees the label asked for "
        "(confusion matrix in RUN_DIR/outputs/label-control.png)",
    )  # fmt: skip
    parser.add_argument(
        "--json", default=None, help="also write the results to this file (new, or --overwrite)"
    )
    add_out_arguments(parser, "confusion.png")


def label_control_path(args: argparse.Namespace, confusion: Path) -> Path:
    """Beside an explicit --out (``NAME-label-control.png``), else
    RUN_DIR/outputs/label-control.png; numbered rather than replacing an earlier one unless
    --overwrite."""
    if args.out:
        path = confusion.with_name(f"{confusion.stem}-label-control.png")
        return path if args.overwrite else numbered(path)
    return numbered(Path(args.run) / OUTPUTS / "label-control.png")


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import classify
    from vaelab.classify import save_confusion

    json_path = new_file("--json", args.json, args.overwrite) if args.json else None
    result = classify(
        args.run, args.limit, args.baseline, args.baseline_steps,
        label_control=args.label_control, seed=args.seed, device=args.device,
    )  # fmt: skip
    path = save_confusion(
        torch.tensor(result["confusion"]), result["class_names"],
        output_path(args, "confusion.png"),
        f"{result['model']} on {result['dataset']}: test error {100 * result['error']:.2f}%",
    )  # fmt: skip
    print(f"test accuracy {100 * result['accuracy']:.2f}% (error {100 * result['error']:.2f}%) "
          f"on {result['images']} images")  # fmt: skip
    if "baseline" in result:
        b = result["baseline"]
        print(f"supervised-only baseline: accuracy {100 * b['accuracy']:.2f}% "
              f"(error {100 * b['error']:.2f}%)")  # fmt: skip
    print(f"wrote {path}")
    if "label_control" in result:
        lc = result["label_control"]
        control = save_confusion(
            torch.tensor(lc["confusion"]), result["class_names"],
            label_control_path(args, path),
            f"{result['model']} samples: {100 * lc['accuracy']:.1f}% seen as the label asked",
            axes=("label asked for", "class seen by the dataset classifier"),
        )  # fmt: skip
        print(f"label control: {100 * lc['accuracy']:.2f}% of {lc['per_class']} samples per "
              f"label seen as that label (the classifier's test accuracy "
              f"{100 * lc['classifier_test_accuracy']:.2f}%); wrote {control}")  # fmt: skip
    if json_path is not None:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {json_path}")
    return 0
