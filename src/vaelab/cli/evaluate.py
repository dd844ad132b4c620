"""vaelab evaluate: test-set ELBO, its terms and importance-sampled NLL, as JSON."""

from __future__ import annotations

import argparse
import json

from vaelab.api import evaluate
from vaelab.cli.common import output_path

HELP = "test-set ELBO and importance-sampled log-likelihood (nats, bits/dim) as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="run folder written by vaelab train")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples K")
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    parser.add_argument(
        "--json", dest="out", default=None,
        help="output file (default: RUN_DIR/evaluation.json, numbered if it exists)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import load

    torch.manual_seed(args.seed)
    if args.limit is not None and args.limit < 1:
        from vaelab.errors import VaelabError

        raise VaelabError(f"--limit: must be at least 1, got {args.limit}")
    path = output_path(args, "evaluation.json")
    result = evaluate(load(args.run, args.device), samples=args.samples, limit=args.limit)
    result["seed"] = args.seed
    path.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("test ELBO (nats/image)", result["elbo"]),
        ("  E_q log p(x|z)", result["recon"]),
        ("  KL(q || p)", result["kl"]),
        (f"NLL, K={result['samples']} (nats/image)", result["nll_nats"]),
        ("  standard error", result["nll_nats_se"]),
        ("NLL (bits/dim)", result["bits_per_dim"]),
        ("gap NLL - (-ELBO)", result["gap_nats"]),
    ]
    for name, value in rows:
        print(f"{name:<32}{value:>12.3f}")
    print(
        f"{result['images']} test images, {result['seconds_nll']:.1f} s for the NLL; wrote {path}"
    )
    return 0
