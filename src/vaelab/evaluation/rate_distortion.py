"""Rate–distortion of a sweep (Alemi et al. 2018, "Fixing a Broken ELBO"): each trained
run is a point (R, D) on the test set, with

    rate        R = E_x KL(q(z|x) || p(z))          (nats per image; the test KL)
    distortion  D = −E_x E_q[log p(x|z)]              (nats per image; minus test recon)

read from the last row of the run's metrics.jsonl (the per-epoch test bound). The ELBO is
−(D + R), so its isolines are the lines D + R = const, slope −1: moving along one trades
rate for distortion at the same bound; β-VAEs with β < 1 sit at high rate and low
distortion, β > 1 at low rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vaelab.training.run import read_metrics


def rd_point(run: str | Path) -> dict[str, float] | None:
    """(rate, distortion, elbo) of a run's last epoch; None before its first epoch."""
    rows = read_metrics(Path(run))
    if not rows:
        return None
    last = rows[-1]
    return {
        "rate": float(last["test_kl"]),
        "distortion": -float(last["test_recon"]),
        "elbo": float(last["test_elbo"]),
        "epoch": int(last["epoch"]),
    }


def rd_figure(points: Sequence[dict[str, Any]], option: str) -> Figure:
    """Distortion against rate, one labelled point per ``option`` value, joined in value
    order, over dashed ELBO isolines D + R = c (labelled with the ELBO −c)."""
    fig = Figure(figsize=(6.4, 5.0), dpi=110)
    ax = fig.add_subplot()
    pts = sorted(points, key=lambda p: p["value"])
    r = np.array([p["rate"] for p in pts])
    d = np.array([p["distortion"] for p in pts])
    span = max(float(np.ptp(r)), float(np.ptp(d)), 1e-6)
    x0, x1 = max(0.0, r.min() - 0.15 * span), r.max() + 0.15 * span
    y0, y1 = d.min() - 0.15 * span, d.max() + 0.15 * span
    totals = r + d
    levels = np.linspace(totals.min(), totals.max(), 5) if len(pts) > 1 else totals
    pad = (levels[1] - levels[0]) if len(levels) > 1 else 0.1 * span
    levels = np.concatenate([[levels[0] - pad], levels, [levels[-1] + pad]])
    xs = np.array([x0, x1])
    for c in levels:
        ax.plot(xs, c - xs, ls="--", lw=0.8, color="0.7", zorder=1)
        # label where the line leaves the top or the right edge of the axes
        xl = min(x1, c - y0) if c - x1 < y0 else x1
        xl = max(x0, min(xl, c - y0))
        yl = c - xl
        if y0 <= yl <= y1 and x0 <= xl <= x1:
            ax.annotate(f"ELBO {-c:.1f}", (xl, yl), fontsize=7, color="0.45",
                        ha="right", va="bottom", rotation=-35)  # fmt: skip
    ax.plot(r, d, "-", color="C0", lw=1, zorder=2)
    ax.scatter(r, d, color="C0", zorder=3)
    for p in pts:
        ax.annotate(f"{option}={p['value']:g}", (p["rate"], p["distortion"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)  # fmt: skip
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("rate R = KL(q(z|x) || p(z))  [nats]")
    ax.set_ylabel("distortion D = −E log p(x|z)  [nats]")
    ax.set_title(f"rate–distortion over {option} (test set); dashed: ELBO = −(D + R)")
    ax.grid(alpha=0.2)
    return fig
