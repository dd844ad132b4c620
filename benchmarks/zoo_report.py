"""The zoo table in Markdown: the quality rows of one or more ``zoo_table.py`` JSONs (rows
split over several processes are joined; a family in two files is an error) beside the
quiet-window speed of ``zoo_speed.py``. Prints the table and, with ``--json``, writes the
joined rows with the speed put in.

    python benchmarks/zoo_report.py benchmarks/results/zoo_table_10ep*.json \\
        --speed benchmarks/results/zoo_speed.json --json benchmarks/results/zoo_table.json

Columns: test ELBO (nats/image; "-" where there is no bound), importance-sampled NLL,
reconstruction MSE, classifier-feature Frechet distance of prior samples and of the best
post-hoc sampler (its name), vaelab images/s (quiet window) and, for families pythae has,
pythae's ELBO, NLL, best post-hoc FD, images/s and the speed ratio vaelab / pythae.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def join(paths: list[str]) -> tuple[dict, dict]:
    """(budget, family -> row) over the files; the budgets must agree."""
    rows: dict = {}
    budget = None
    for path in paths:
        data = json.loads(Path(path).read_text())
        if budget is not None and data["budget"] != budget:
            raise SystemExit(f"{path}: another budget than the first file's: {data['budget']}")
        budget = data["budget"]
        for name, row in data["families"].items():
            if name in rows:
                raise SystemExit(f"{path}: family {name} is also in an earlier file")
            rows[name] = row
    return budget or {}, rows


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def fd(side: dict | None, part: str) -> str:
    if not side or not side.get(part):
        return "-"
    return fmt(side[part]["frechet_distance"], ".2f")


def markdown(rows: dict, speed: dict) -> str:
    names = [
        "family",
        "ELBO",
        "NLL",
        "MSE",
        "FD prior",
        "FD post-hoc (best)",
        "img/s",
        "pythae peer",
        "py ELBO",
        "py NLL",
        "py FD post-hoc",
        "py img/s",
        "speed ratio",
    ]
    lines = ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    for name in sorted(rows, key=lambda n: (rows[n].get("pythae") is None, n)):
        row = rows[name]
        if "error" in row:
            lines.append(f"| {name} | error: {row['error'][:80]} |")
            continue
        v, p = row["vaelab"], row.get("pythae")
        s = speed.get(name, {})
        sv, sp = (s.get("vaelab") or {}), (s.get("pythae") or {})
        best = f"{fd(v, 'posthoc')} ({v.get('best_posthoc') or '-'})"
        cells = [
            name, fmt(v.get("test_elbo"), ".1f"), fmt(v.get("nll_nats"), ".1f"),
            fmt(v.get("recon_mse"), ".4f"), fd(v, "prior"), best,
            fmt(sv.get("images_per_s"), ".0f"),
            (p or {}).get("model") or (sp.get("model") or "-"),
            fmt((p or {}).get("test_elbo"), ".1f"), fmt((p or {}).get("nll_nats"), ".1f"),
            fd(p, "posthoc") if p and "not_scored" not in p else "-",
            fmt(sp.get("images_per_s"), ".0f"), fmt(s.get("ratio"), ".2f"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", help="zoo_table.py JSON files")
    ap.add_argument("--speed", default=None, help="zoo_speed.py JSON (quiet window)")
    ap.add_argument("--json", default=None, help="write the joined rows here")
    a = ap.parse_args(argv)
    budget, rows = join(a.tables)
    speed = json.loads(Path(a.speed).read_text())["families"] if a.speed else {}
    print(markdown(rows, speed))
    missing = sorted(set(speed) - set(rows))
    if missing:
        print(f"\nno quality row for: {', '.join(missing)}", file=sys.stderr)
    if a.json:
        for name, row in rows.items():
            if name in speed and "error" not in row:
                row["speed_quiet"] = speed[name]
        Path(a.json).write_text(json.dumps({"budget": budget, "families": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
