"""Side-by-side evaluations of several runs: a table (Markdown + JSON) and a bar chart.

Each run contributes its latest ``evaluation*.json`` (written by ``vaelab evaluate``); a path
to an evaluation JSON file is taken as is. Runs scored on the same test images (the same
``images_fingerprint``) also get their NLL difference from the first run with its paired
standard error, which is what says whether one model is really better than another: each
NLL's own SE is dominated by how hard the images are, which the models share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from vaelab.errors import VaelabError
from vaelab.evaluation.nll import paired_difference
from vaelab.evaluation.plots import save_figure

# (column title, function of an evaluation dict -> number or None, format)
COLUMNS: list[tuple[str, Any, str]] = [
    ("NLL (nats)", lambda r: r.get("nll_nats"), "{:.2f}"),
    ("SE", lambda r: r.get("nll_nats_se"), "{:.2f}"),
    ("bits/dim", lambda r: r.get("bits_per_dim"), "{:.4f}"),
    ("-ELBO", lambda r: r.get("negative_elbo"), "{:.2f}"),
    ("gap", lambda r: r.get("gap_nats"), "{:.2f}"),
    ("KL", lambda r: r.get("kl"), "{:.2f}"),
    ("K", lambda r: r.get("samples"), "{}"),
    ("images", lambda r: r.get("images"), "{}"),
    ("active", lambda r: r.get("health", {}).get("active_units"), "{}"),
    ("MSE", lambda r: r.get("reconstruction", {}).get("mse"), "{:.4f}"),
    ("PSNR", lambda r: r.get("reconstruction", {}).get("psnr_db"), "{:.2f}"),
]
PAIRED = [
    ("dNLL vs first", "nll_difference", "{:+.3f}"),
    ("paired SE", "nll_difference_se", "{:.3f}"),
]
QUALITY = [("FD", "frechet_distance", "{:.2f}"), ("prec", "precision", "{:.3f}"),
           ("rec", "recall", "{:.3f}")]  # fmt: skip


def find_evaluation(run: str | Path) -> Path:
    """The newest ``evaluation*.json`` of a run folder, or ``run`` itself if it is a file."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise VaelabError(f"{run}: no such run folder or evaluation file")
    found = sorted(run.glob("evaluation*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise VaelabError(f"{run}: no evaluation*.json; run `vaelab evaluate {run}` first")
    return found[-1]


def load_evaluations(runs: list[str | Path]) -> list[dict[str, Any]]:
    """One evaluation dict per run, each with ``name`` (the folder name) and ``source``."""
    out = []
    for run in runs:
        path = find_evaluation(run)
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VaelabError(f"{path}: not a readable evaluation JSON ({exc})") from None
        if not isinstance(result, dict) or "nll_nats" not in result:
            raise VaelabError(f"{path}: not an evaluation written by vaelab evaluate")
        name = Path(run).name if Path(run).is_dir() else Path(run).parent.name
        out.append({**result, "name": name, "source": str(path)})
    return out


def paired_to_first(evaluations: list[dict[str, Any]]) -> list[dict[str, float] | None]:
    """Per run, NLL minus the first run's NLL over the same images with its paired SE;
    None where either lacks per-image values or they scored different images."""
    first = evaluations[0]
    out: list[dict[str, float] | None] = []
    for r in evaluations:
        same = (
            "log_px_per_image" in r and "log_px_per_image" in first
            and r.get("images_fingerprint") == first.get("images_fingerprint")
        )  # fmt: skip
        out.append(
            paired_difference(first["log_px_per_image"], r["log_px_per_image"]) if same else None
        )
    return out


def comparison_rows(evaluations: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (raw numbers; None where a run lacks a metric)."""
    samplers = sorted({s for r in evaluations for s in r.get("quality", {})})
    header = ["run"] + [c[0] for c in COLUMNS] + [p[0] for p in PAIRED]
    header += [f"{t} {s}" for s in samplers for t, _, _ in QUALITY]
    rows = []
    for r, paired in zip(evaluations, paired_to_first(evaluations), strict=True):
        row = [r["name"]] + [fn(r) for _, fn, _ in COLUMNS]
        row += [paired[k] if paired else None for _, k, _ in PAIRED]
        row += [r.get("quality", {}).get(s, {}).get(k) for s in samplers for _, k, _ in QUALITY]
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    fmts = ["{}"] + [c[2] for c in COLUMNS] + [p[2] for p in PAIRED]
    fmts += [q[2] for q in QUALITY] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = ["-" if v is None else fmts[i].format(v) for i, v in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_chart(evaluations: list[dict[str, Any]], path: str | Path) -> Path:
    """Bars per run: NLL with +-2 SE error bars, and the Frechet distance per sampler."""
    import numpy as np

    names = [r["name"] for r in evaluations]
    samplers = sorted({s for r in evaluations for s in r.get("quality", {})})
    panels = 2 if samplers else 1
    fig = Figure(figsize=(max(5, 1.4 * len(names)) * panels, 4))
    axes = fig.subplots(1, panels)
    axes = np.atleast_1d(axes)
    x = np.arange(len(names))
    nll = [r["nll_nats"] for r in evaluations]
    se = [2 * (r.get("nll_nats_se") or 0) for r in evaluations]
    axes[0].bar(x, nll, yerr=se, capsize=4, color="tab:blue")
    low, high = min(nll), max(nll)
    axes[0].set_ylim(low - max(1.0, 0.5 * (high - low)) - max(se), high + max(se) + 1.0)
    axes[0].set_title("test NLL, nats/image (lower is better; +-2 SE)")
    if samplers:
        width = 0.8 / len(samplers)
        for j, s in enumerate(samplers):
            fd = [r.get("quality", {}).get(s, {}).get("frechet_distance") for r in evaluations]
            fd = [np.nan if v is None else v for v in fd]  # left out (null) or not evaluated
            axes[1].bar(x + (j - (len(samplers) - 1) / 2) * width, fd, width, label=s)
        axes[1].legend(title="sampler")
        axes[1].set_title("classifier Frechet distance (lower is better)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def compare_evaluations(runs: list[str | Path], out: str | Path | None = None) -> dict[str, Any]:
    """Load the runs' evaluations; with ``out`` (a .png path) also write the chart there and
    the table next to it (.md and .json). Returns ``{header, rows, markdown}``."""
    if not runs:
        raise VaelabError("compare: give at least one run folder")
    evaluations = load_evaluations(runs)
    header, rows = comparison_rows(evaluations)
    result = {"header": header, "rows": rows, "markdown": markdown_table(header, rows)}
    if out is not None:
        out = Path(out)
        comparison_chart(evaluations, out)
        out.with_suffix(".md").write_text(result["markdown"])
        table = {"header": header, "rows": rows, "sources": [r["source"] for r in evaluations]}
        out.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n")
    return result
