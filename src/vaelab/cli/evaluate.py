"""vaelab evaluate: test-set ELBO, its terms and importance-sampled NLL, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaelab.cli.common import new_file, numbered
from vaelab.cli.names import registry_names

HELP = (
    "test-set ELBO, importance-sampled log-likelihood (nats, bits/dim), latent health, "
    "reconstruction and sample quality, as JSON"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="run folder written by vaelab train")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples K")
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    parser.add_argument(
        "--json", dest="out", default=None,
        help="also write the results here (RUN_DIR/evaluation.json, numbered if it exists, "
        "is always written: it is what compare and the report read)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    parser.add_argument(
        "--no-quality", action="store_true",
        help="skip the classifier sample metrics (the slow part; trains a classifier once)",
    )  # fmt: skip
    parser.add_argument(
        "--sampler", action="append", default=None,
        choices=sorted(registry_names("vaelab.samplers", "SAMPLERS")),
        help="latent sampler for the sample metrics; repeat for several (default: prior)",
    )  # fmt: skip
    parser.add_argument("--components", type=int, default=10, help="GMM sampler components")
    parser.add_argument(
        "--quality-samples", type=int, default=5000, help="generated and test images compared"
    )


def evaluation_json(result: dict) -> str:
    """Indented JSON, with the 10,000-odd per-image values on one line at the end."""
    rest = {k: v for k, v in result.items() if k != "log_px_per_image"}
    if "log_px_per_image" not in result:
        return json.dumps(rest, indent=2) + "\n"
    per_image = json.dumps(result["log_px_per_image"])
    return json.dumps(rest, indent=2)[:-2] + f',\n  "log_px_per_image": {per_image}\n}}\n'


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import evaluate, open_run
    from vaelab.evaluate.extras import print_extras

    torch.manual_seed(args.seed)
    if args.limit is not None and args.limit < 1:
        from vaelab.errors import VaelabError

        raise VaelabError(f"--limit: must be at least 1, got {args.limit}")
    extra = new_file("--json", args.out, args.overwrite) if args.out else None
    path = numbered(Path(args.run) / "evaluation.json")  # the run's own record
    run = open_run(args.run, args.device)
    result = evaluate(
        run, samples=args.samples, limit=args.limit,
        quality=not args.no_quality, samplers=tuple(args.sampler or ["prior"]),
        quality_samples=args.quality_samples, components=args.components,
    )  # fmt: skip
    result["seed"] = args.seed
    path.write_text(evaluation_json(result))
    written = [path]
    if extra is not None and extra.resolve() != path.resolve():
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(evaluation_json(result))
        written.append(extra)
    report = Path(args.run) / "report.html"
    if report.is_file():  # training wrote one: it now shows these numbers too
        from vaelab.report import write_report

        write_report(run, report, seed=args.seed)
        written.append(report)
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
    print_extras(result)
    print(
        f"{result['images']} test images, {result['seconds_nll']:.1f} s for the NLL; wrote "
        + ", ".join(map(str, written))
    )
    return 0
