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

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vaelab.training.folder import read_metrics


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


def _nice_step(span: float) -> float:
    """A round step (1, 2 or 5 x 10^k) giving about four isolines over ``span``."""
    raw = max(span, 1e-9) / 4
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def rd_figure(points: Sequence[dict[str, Any]], option: str) -> Figure:
    """Distortion against rate, one labelled point per ``option`` value, joined in value
    order, over dashed ELBO isolines D + R = c at round values (labelled ELBO = −c)."""
    fig = Figure(figsize=(6.4, 5.0), dpi=110)
    ax = fig.add_subplot()
    pts = sorted(points, key=lambda p: p["value"])
    r = np.array([p["rate"] for p in pts])
    d = np.array([p["distortion"] for p in pts])
    span = max(float(np.ptp(r)), float(np.ptp(d)), 1e-6)
    x0, x1 = max(0.0, r.min() - 0.15 * span), r.max() + 0.15 * span
    y0, y1 = d.min() - 0.15 * span, d.max() + 0.15 * span
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    totals = r + d  # -ELBO of each point: isolines around them, at round values
    step = _nice_step(float(np.ptp(totals)) or span)
    low, high = totals.min() - 2 * step, totals.max() + 2 * step
    levels = np.arange(math.ceil(low / step), math.floor(high / step) + 1) * step
    xs = np.array([x0, x1])
    # the isolines' angle on the page (slope -1 in data units)
    (ax_, ay_), (bx_, by_) = ax.transData.transform([(x0, y1), (x0 + 1, y1 - 1)])
    angle = math.degrees(math.atan2(by_ - ay_, bx_ - ax_))
    for i, c in enumerate(levels):
        ax.plot(xs, c - xs, ls="--", lw=0.8, color="0.7", zorder=1,
                label="ELBO isolines, D + R = const" if i == 0 else None)  # fmt: skip
        # label near where the line enters the plot: the top edge, else the left edge
        x, y = (c - y1, y1) if c - y1 >= x0 else (x0, c - x0)
        x, y = x + 0.02 * (x1 - x0), y - 0.02 * (y1 - y0)
        if x0 <= x <= x1 and y0 <= y <= y1:
            ax.annotate(f"ELBO {-c:g}", (x, y), fontsize=7, color="0.45", ha="left",
                        va="top", rotation=angle, rotation_mode="anchor")  # fmt: skip
    ax.plot(r, d, "-", color="C0", lw=1, zorder=2)
    ax.scatter(r, d, color="C0", zorder=3)
    for p in pts:
        ax.annotate(f"{option}={p['value']:g}\nELBO {p['elbo']:.1f}",
                    (p["rate"], p["distortion"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)  # fmt: skip
    ax.set_xlabel("rate R = KL(q(z|x) || p(z))  [nats]")
    ax.set_ylabel("distortion D = −E log p(x|z)  [nats]")
    ax.set_title(f"Rate–distortion over {option} (test set)")
    ax.legend(loc="lower left", fontsize=8, frameon=True)
    ax.grid(alpha=0.2)
    return fig
