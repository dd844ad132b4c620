"""vaelab complete: fill missing pixels (or super-resolve) with a trained VAE."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from vaelab.cli.common import add_out_arguments, add_run_argument, output_path
from vaelab.cli.names import registry_names
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    import torch

    from vaelab.runs import Run

HELP = "complete missing pixels of an image (inpainting) or its full resolution"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--index", type=int, default=None, help="test image index (default 0)")
    src.add_argument("--input", default=None, help="an image file (resized to the model's size)")
    obs = parser.add_mutually_exclusive_group()
    obs.add_argument("--mask", default=None, help="PNG whose white pixels are missing")
    obs.add_argument(
        "--mask-preset", default=None,
        help="left-half | top-half | centre-square | random:P (P = missing share)",
    )  # fmt: skip
    obs.add_argument("--downscale", type=int, default=None, help="super-resolution factor")
    parser.add_argument("-n", type=int, default=8, help="completions per input")
    parser.add_argument("--steps", type=int, default=50, help="iterations of the chain")
    parser.add_argument(
        "--method",
        choices=sorted(registry_names("vaelab.complete", "METHODS")),
        default="pseudo-gibbs",
        help="the chain: pseudo-Gibbs (decode, re-encode) or Metropolis-within-Gibbs, which "
        "accepts each move by the model's joint density",
    )
    parser.add_argument(
        "--fill", choices=sorted(registry_names("vaelab.complete", "FILLS")), default="mean",
        help="pseudo-gibbs: put back "
        "E[x_mis|z] (mean) or a draw of p(x_mis|z) (sample); mwg always draws",
    )  # fmt: skip
    parser.add_argument(
        "--evaluate", type=int, default=None, metavar="N", help="instead of pictures: missing-"
        "pixel MSE on the first N test images vs the baselines (JSON on stdout)",
    )  # fmt: skip
    parser.add_argument("--json", default=None, help="with --evaluate: also write the JSON here")
    add_out_arguments(parser, "complete.png")


def _input(run: Run, args: argparse.Namespace) -> torch.Tensor:
    import numpy as np
    import torch
    from PIL import Image

    from vaelab.data.prepare import to_unit

    c, h, w = run.image_shape
    if args.input is None:
        from vaelab.api import prepared_test_images

        x = prepared_test_images(run)
        i = args.index or 0
        if not 0 <= i < len(x):
            raise VaelabError(f"--index {i}: the test set has {len(x)} images")
        return to_unit(x[i : i + 1])
    try:
        img = Image.open(args.input).convert("L" if c == 1 else "RGB").resize((w, h))
    except (OSError, ValueError) as exc:
        raise VaelabError(f"--input {args.input}: cannot read an image ({exc})") from None
    arr = np.asarray(img, dtype=np.float32).reshape(h, w, c) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import open_run
    from vaelab.complete import complete, downscale, load_mask, make_mask, upsample
    from vaelab.plots import save_grid

    run = open_run(args.run, args.device)
    model, shape = run.model, run.image_shape
    missing = None
    if args.mask:
        missing = load_mask(args.mask, shape)
    elif args.mask_preset:
        missing = make_mask(args.mask_preset, shape, args.seed)
    elif args.downscale is None:
        raise VaelabError("give --mask, --mask-preset or --downscale")
    if args.evaluate is not None:
        from vaelab.api import load_test_images
        from vaelab.completion_eval import evaluate_completion

        result = evaluate_completion(
            run, load_test_images(run), mask=missing, downscale_factor=args.downscale,
            limit=args.evaluate, n=args.n, steps=args.steps, method=args.method, seed=args.seed,
            fill=args.fill,
        )  # fmt: skip
        result["task"] = args.mask_preset or args.mask or result["task"]
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
        return 0
    x = _input(run, args)
    result = complete(
        model, x, missing, n=args.n, steps=args.steps, method=args.method,
        downscale_factor=args.downscale, seed=args.seed, fill=args.fill,
    )  # fmt: skip
    if missing is not None:  # what the model saw: missing pixels shown mid-grey
        seen = torch.where(missing, torch.full_like(x, 0.5), x)
    else:
        seen = upsample(downscale(x, args.downscale), args.downscale)
    row = torch.cat([x, seen, result.images[0].cpu()])
    path = save_grid(row, output_path(args, "complete.png"), nrow=len(row))
    if result.acceptance is not None:
        print(f"acceptance rate {result.acceptance:.2f}")
    print(f"wrote {path} (original, observed, {args.n} completions)")
    return 0
