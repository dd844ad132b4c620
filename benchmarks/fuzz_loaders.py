"""Fuzz the dataset loaders for a fixed time; write counts and failures as JSON.

Runs the three properties of tests/test_data_fuzz.py (IDX, npz, image folders: any input
either loads as a valid ImageData or raises a one-line VaelabError) with fresh random seeds,
in rounds, until ``--seconds`` have passed. Needs hypothesis and pytest (dev dependencies).

    PYTHONPATH=src python benchmarks/fuzz_loaders.py --seconds 120
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from provenance import provenance, save_json  # benchmarks/provenance.py

ROOT = Path(__file__).resolve().parents[1]


def load_properties():
    """Import tests/test_data_fuzz.py by path (tests/ is not a package)."""
    if importlib.util.find_spec("vaelab") is None:
        sys.path.insert(0, str(ROOT / "src"))
    spec = importlib.util.spec_from_file_location(
        "test_data_fuzz", ROOT / "tests" / "test_data_fuzz.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="total time budget")
    ap.add_argument("--round", type=int, default=100, help="examples per hypothesis round")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz_loaders.json"))
    args = ap.parse_args(argv)

    from hypothesis import HealthCheck, settings

    props = load_properties()
    config = settings(
        max_examples=args.round,
        deadline=None,
        derandomize=False,  # a fresh random seed every round: new inputs each time
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    outcomes = {name: Counter() for name in props.STRATEGIES}
    failures = []
    start = time.monotonic()
    while time.monotonic() - start < args.seconds:
        for name, strategy in props.STRATEGIES.items():
            try:
                props.fuzz(strategy, config, outcomes[name])
            except Exception as err:  # record every failure, then go on
                notes = getattr(err, "__notes__", [])
                failures.append(
                    {
                        "loader": name,
                        "error": f"{type(err).__name__}: {err}"[:2000],
                        "example": "\n".join(notes)[:4000],
                        "traceback": traceback.format_exc()[-4000:],
                    }
                )
                print(f"FAILURE in {name}: {type(err).__name__}: {err}", file=sys.stderr)
    elapsed = time.monotonic() - start

    result = {
        "benchmark": "fuzz_loaders",
        **provenance(),
        "platform": f"{platform.platform()}, python {platform.python_version()}",
        "seconds": round(elapsed, 1),
        "inputs_tried": {name: c["tried"] for name, c in outcomes.items()},
        "loaded_ok": {name: c["ok"] for name, c in outcomes.items()},
        "vaelab_errors": {name: c["error"] for name, c in outcomes.items()},
        "failures": len(failures),
        "failure_details": failures,
    }
    summary = {k: v for k, v in result.items() if k != "failure_details"}
    print(json.dumps(summary, indent=2))
    save_json(args.out, result)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
