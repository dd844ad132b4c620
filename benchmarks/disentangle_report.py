"""Gather the scored runs of ``disentangle_zoo.py`` (each run folder's ``zoo_scores.json``,
or ``zoo_interim.json`` with ``--interim``) into one JSON and print the markdown table of
benchmarks/README.md: every metric as mean ± standard error over the seeds, with the
steps and CPU minutes each model had. Trains and scores nothing.

    .venv/bin/python benchmarks/disentangle_report.py --runs /work/runs/disentangle_zoo \\
        --out benchmarks/results/disentangle_zoo_cpu20.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

from disentangle_zoo import INTERIM, MODELS, SCORES, summarise

LABELS = {"vae": "VAE", "beta_vae": "β-VAE (β 4)", "annealed_vae": "annealed β-VAE",
          "beta_tcvae": "β-TCVAE (β 6)", "factor_vae": "FactorVAE (γ 35)",
          "dip_vae": "DIP-VAE-II"}  # fmt: skip
COLUMNS = [("mig_exact", "MIG exact"), ("mig_binned", "MIG binned"),
           ("factor_vae_score", "FactorVAE score"), ("beta_vae_score", "β-VAE score"),
           ("sap", "SAP"), ("dci_disentanglement", "DCI D"), ("dci_completeness", "DCI C"),
           ("dci_informativeness", "DCI I"), ("total_correlation", "TC (nats)"),
           ("test_recon", "test recon (nats)")]  # fmt: skip


def gather(runs: Path, kind: str) -> list[dict]:
    """Every run's record under ``runs`` (folders named MODEL-sSEED), in MODELS order."""
    records = [json.loads(f.read_text()) for f in sorted(runs.glob(f"*-s*/{kind}"))]
    order = list(MODELS)
    return sorted(records, key=lambda r: (order.index(r["model"]), r["seed"]))


def cell(stats: dict, digits: int) -> str:
    se = stats["se"]
    mean = f"{stats['mean']:.{digits}f}"
    return mean if math.isnan(se) else f"{mean} ± {se:.{digits}f}"


def markdown(records: list[dict], summary: dict) -> str:
    head = ["model", "seeds", "steps", "CPU-min"] + [label for _, label in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, stats in summary.items():
        mine = [r for r in records if r["model"] == name]
        steps = f"{min(r['steps'] for r in mine):,}–{max(r['steps'] for r in mine):,}"
        cpu = [r["cpu_seconds"] / 60 for r in mine if r.get("cpu_seconds")]
        row = [LABELS.get(name, name), str(stats["seeds"]), steps,
               f"{min(cpu):.1f}–{max(cpu):.1f}" if cpu else "–"]  # fmt: skip
        for key, _ in COLUMNS:
            digits = 1 if key in ("test_recon",) else 2 if key == "total_correlation" else 3
            row.append(cell(stats[key], digits) if key in stats else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/disentangle_zoo")
    parser.add_argument("--dataset", default="dsprites-small", help="the runs' data (a label)")
    parser.add_argument("--interim", action="store_true", help="the runs short of budget")
    parser.add_argument("--out", default=None, help="write the gathered JSON here")
    args = parser.parse_args()
    runs = Path(args.runs)
    if not runs.is_dir():
        parser.error(f"--runs {runs}: no such folder")
    records = gather(runs, INTERIM if args.interim else SCORES)
    if not records:
        parser.error(f"--runs {runs}: no scored run (MODEL-sSEED/{SCORES}) in it")
    summary = summarise(records)
    print(markdown(records, summary))
    if args.out:
        first = records[0]
        result = {
            "dataset": args.dataset, "cpu_minutes_per_run": first.get("cpu_minutes"),
            "interim": args.interim, "machine": platform.processor() or platform.machine(),
            "summary": summary, "runs": records,
        }  # fmt: skip
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
