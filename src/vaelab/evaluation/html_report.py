"""One self-contained HTML report of a run: every picture is a base64 PNG inside the file.

The page references nothing outside itself (a Content-Security-Policy forbids it), so
it opens the same offline, from an e-mail attachment or from an archive. Sections:
config, metrics, training curves, samples, reconstructions, similar images,
interpolations, traversals, latent space (and the decoded manifold of a 2-D latent).
A plain autoencoder has no prior or posterior: its samples, similar-image and
traversal sections say so instead of showing pictures.
"""

from __future__ import annotations

import base64
import html
import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

import vaelab.evaluation.pictures as pictures
from vaelab.config import Config
from vaelab.data import ImageData, dataset_for
from vaelab.data.prepare import eval_images
from vaelab.evaluation.compare import COLUMNS, PAIRED, QUALITY, comparison_rows
from vaelab.evaluation.explore import dim_scores
from vaelab.evaluation.plots import png_bytes, save_figure, training_curves
from vaelab.models import MODELS
from vaelab.training import folder as runfs
from vaelab.training.load import read_run
from vaelab.training.loop import Drawings
from vaelab.training.record import Run

REPORT, CURVES_PNG = "report.html", "training_curves.png"
SECTIONS = (
    ("config", "Configuration"),
    ("metrics", "Metrics per epoch"),
    ("evaluation", "Evaluation"),
    ("curves", "Training curves"),
    ("samples", "Samples from the prior"),
    ("reconstructions", "Reconstructions"),
    ("similar", "Similar images"),
    ("interpolations", "Interpolations"),
    ("traversals", "Latent traversals"),
    ("latent", "Latent space"),
    ("disentanglement", "Disentanglement"),
)
METRIC_COLUMNS = (
    ("epoch", "epoch", "{:d}"), ("train_bound", "train ELBO", "{:.2f}"),
    ("test_elbo", "test ELBO", "{:.2f}"), ("test_recon", "test E log p(x|z)", "{:.2f}"),
    ("test_kl", "test KL", "{:.2f}"), ("beta", "beta", "{:.3g}"), ("lr", "lr", "{:.3g}"),
    ("seconds", "seconds", "{:.1f}"), ("images_per_s", "images/s", "{:.0f}"),
)  # fmt: skip
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}th{background:#f3f3f3;
position:sticky;top:0}.scroll{max-height:30em;overflow-y:auto;display:inline-block}pre{background:#f6f6f6;padding:.8em;font-size:.85em}img{max-width:100%;
image-rendering:pixelated}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def write_curves(run: str | Path, min_interval: float = 0.0) -> Path | None:
    """RUN/training_curves.png from RUN/metrics.jsonl (None before the first epoch).

    Drawing takes a few tenths of a second; with ``min_interval`` the picture is left
    alone when it was redrawn less than that many seconds ago (for epochs shorter than
    the drawing is worth); a final call without it brings it up to date."""
    rows = runfs.read_metrics(Path(run))
    path = Path(run) / CURVES_PNG
    if not rows or (path.is_file() and time.time() - path.stat().st_mtime < min_interval):
        return None
    return save_figure(training_curves(rows), path)


def write_run_outputs(model: torch.nn.Module, data: ImageData, out: Path, config: Config) -> None:
    """The end of a training run: samples.png and reconstructions.png
    (:func:`vaelab.evaluation.pictures.write_run_pictures`), the final training_curves.png and
    report.html, in run folder ``out``."""
    pictures.write_run_pictures(model, data, out, config)
    write_curves(out)
    write_report(Run(model, config, {}, out), data=data, seed=config.train.seed)


# What --report draws during and after training (vaelab train, vaelab.train).
RUN_DRAWINGS = Drawings(curves=write_curves, pictures=write_run_outputs)


def _img(data: bytes, caption: str, alt: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{src}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


def _grid(grid: pictures.Grid, caption: str) -> str:
    return _img(png_bytes(grid.image()), caption, caption)


def _note(text: str) -> str:
    return f"<p><em>{html.escape(text)}</em></p>"


def _metrics_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return _note("no epoch finished yet")
    head = "".join(f"<th>{name}</th>" for _, name, _ in METRIC_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt.format(r[k]) if k in r else ''}</td>"
                         for k, _, fmt in METRIC_COLUMNS) + "</tr>"
        for r in rows
    )  # fmt: skip
    table = f"<table><tr>{head}</tr>{body}</table>"
    if len(rows) > 20:  # long runs: the table scrolls under its fixed header
        table = f'<div class="scroll">{table}</div>'
    return table + _note(
        f"{len(rows)} epochs. ELBO and E log p(x|z) in nats per image (higher is better); KL "
        "in nats."
    )


# compare's terse column titles, spelt out for a table with room for them
_LONG_NAMES = {
    "SE": "NLL standard error", "-ELBO": "-ELBO (nats)", "gap": "gap NLL - (-ELBO)",
    "KL": "KL (nats)", "K": "importance samples K", "images": "test images",
    "active": "active latent units", "MSE": "reconstruction MSE / pixel",
    "PSNR": "reconstruction PSNR (dB)",
}  # fmt: skip


def _evaluation_section(run: Path) -> str:
    """The newest RUN/evaluation*.json (vaelab evaluate) as a table, or a note."""
    found = sorted(run.glob("evaluation*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        return _note(f"no evaluation yet: `vaelab evaluate {run}` adds the importance-sampled "
                     "NLL, bits/dim and sample quality here")  # fmt: skip
    try:
        result = {"name": run.name, **json.loads(found[-1].read_text())}
        header, (row,) = comparison_rows([result])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _note(f"{found[-1].name}: not readable ({type(exc).__name__})")
    fmts = [c[2] for c in COLUMNS] + [p[2] for p in PAIRED] + [q[2] for q in QUALITY] * 9
    paired = {p[0] for p in PAIRED}  # differences to a first run: none in a one-run table
    body = "".join(
        f"<tr><th>{html.escape(_LONG_NAMES.get(name, name))}</th><td>{fmt.format(value)}</td></tr>"
        for name, value, fmt in zip(header[1:], row[1:], fmts, strict=False)
        if value is not None and name not in paired
    )
    caveat = ""
    if result.get("bits_per_dim_comparable") is False:
        caveat = _note(f"bits/dim here is not comparable with published figures: this NLL is "
                       f"{result.get('nll_is', 'not a likelihood of the 8-bit data')}")  # fmt: skip
    return (
        f"<table>{body}</table>"
        + _note(
            f"from {found[-1].name}: NLL by importance sampling with K samples per image, in nats "
            "per image (lower is better); FD/prec/rec: sample quality per latent sampler"
        )
        + caveat
    )


def _disentanglement_section(run: Path) -> str:
    """The newest RUN/outputs/disentanglement*.json (vaelab disentanglement) and its two
    pictures, or a note saying how to make them."""
    found = sorted((run / "outputs").glob("disentanglement*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        return _note(f"not measured: `vaelab disentanglement {run}` scores the latents against "
                     "the data's ground-truth factors (dsprites, an NPZ with factors)")  # fmt: skip
    try:
        result = json.loads(found[-1].read_text())
        rows = "".join(
            f"<tr><th>{html.escape(name)}</th><td>{v['mean']:.3f}</td>"
            f"<td>{'-' if v['std'] is None else format(v['std'], '.3f')}</td>"
            f"<td>{v['n']}</td></tr>" for name, v in result["summary"].items()
        )  # fmt: skip
        names = ", ".join(result["factor_names"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _note(f"{found[-1].name}: not readable ({type(exc).__name__})")
    part = (f"<table><tr><th>metric</th><th>mean</th><th>std over seeds</th><th>seeds</th></tr>"
            f"{rows}</table>" + _note(f"from {found[-1].name}; factors: {names}"))  # fmt: skip
    for warning in result.get("warnings", []):
        part += _note(f"warning: {warning}")
    for key, caption in (("matrix_out", "I(z_j; v_k) / H(v_k) per latent dimension and factor"),
                         ("out", "one row per latent dimension, labelled with the factor it "
                                 "captures best")):  # fmt: skip
        name = Path(result.get("files", {}).get(key, "")).name
        picture = run / "outputs" / name  # the path as written may be relative to elsewhere
        if name and picture.is_file():
            part += _img(picture.read_bytes(), caption, caption)
    return part


def build_sections(
    run: Run, data: ImageData, rows: list[dict[str, Any]], seed: int = 0
) -> dict[str, str]:
    """The HTML body of each section of :data:`SECTIONS`, keyed by its id. Every picture is
    the one its command draws (vaelab.evaluation.pictures) for test images picked with ``seed``."""
    model, config = run.model, run.config
    is_vae = model.has_posterior and model.has_prior  # an AE has neither
    test = eval_images(data.test_x, config.data.binarize, config.train.seed)
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(test), generator=gen)[:16].tolist()
    out = {"config": f"<pre>{html.escape(yaml.safe_dump(config.to_dict(), sort_keys=False))}</pre>"}
    out["metrics"] = _metrics_table(rows)
    out["curves"] = (_img(png_bytes(training_curves(rows)), "ELBO, reconstruction term and KL "
                          "per epoch, train vs test", "training curves") if rows
                     else _note("no epoch finished yet"))  # fmt: skip
    no_prior = _note("a plain autoencoder has no prior or posterior: nothing to sample")
    out["samples"] = _grid(pictures.samples(run, 64, seed=seed), "64 decodings of z ~ p(z) "
                           "(means of p(x|z))") if is_vae else no_prior  # fmt: skip
    out["reconstructions"] = _grid(pictures.reconstructions(model, test[picks], row=8),
                                   "rows 1 and 3: test images; rows 2 and 4: their "
                                   "reconstructions at z = E_q[z|x]")  # fmt: skip
    if is_vae:
        grids = [pictures.similar_images(model, test[i], 11, seed=seed, nrow=12) for i in picks[:4]]
        out["similar"] = _grid(pictures.stack(grids), "first column: a test image; then 11 "
                               "decodings of z = mu(x) + sigma(x) * eps")  # fmt: skip
    else:
        out["similar"] = no_prior
    out["interpolations"] = _interpolations(model, test, picks)
    out["traversals"] = _traversals(model, test, picks[:2]) if is_vae else _note(
        "a plain autoencoder has no posterior to rank dimensions by KL")  # fmt: skip
    out["latent"] = _latent_section(run, data, is_vae)
    return out


def _interpolations(model: torch.nn.Module, test: torch.Tensor, picks: list[int]) -> str:
    """Up to three pairs of test images; a test set of one image has no pair (said in a
    note and in one warning, so training on a small folder still finishes its report)."""
    pairs = min(3, len(picks) // 2)
    if pairs == 0:
        warnings.warn(f"report: no interpolations (they need 2 test images; the test set has "
                      f"{len(test)}); raise --test-fraction for more", stacklevel=2)  # fmt: skip
        return _note(f"interpolations need 2 test images; the test set has {len(test)}")
    grids = [pictures.interpolation(model, test[picks[2 * k]], test[picks[2 * k + 1]], 10)
             for k in range(pairs)]  # fmt: skip
    what = {1: "one pair", 2: "two pairs", 3: "three pairs"}[pairs]
    return _grid(pictures.stack(grids), f"{what} of test images (first and last column); for "
                 "each, a linear then a spherical path of 10 decodings between their latent "
                 "means (the second and eleventh columns are their reconstructions)")  # fmt: skip


def _traversals(model: torch.nn.Module, test: torch.Tensor, picks: list[int]) -> str:
    scores = dim_scores(model, test)  # ranked once for both pictures
    parts = []
    for i in picks:
        fig, shown = pictures.traversal(model, test, i, 6, scores=scores)
        parts.append(_img(png_bytes(fig), f"test image {i}: each row moves one latent dimension "
                          f"(the {len(shown['dims'])} with the most {shown['kind']}; KL in "
                          "nats) about the image's posterior mean", "traversal"))  # fmt: skip
    return "".join(parts)


def _latent_section(run: Run, data: ImageData, is_vae: bool) -> str:
    model = run.model
    fig, _, _ = pictures.latent_plot(run, data)
    title = fig.axes[0].get_title()
    part = _img(png_bytes(fig), title, "latent scatter")
    # An AE has no p(z) to tile; a conditional model decodes only with a label.
    if is_vae and pictures.has_manifold(model):  # 2-D, or the sphere S^1 / S^2
        fig = pictures.manifold(model, 15)
        caption = fig.axes[0].get_title() if model.latent_space == "sphere" else (
            "decodings at z = (Phi^-1((i+1/2)/15), Phi^-1((j+1/2)/15)): each tile stands for "
            "an equal share of p(z)")  # fmt: skip
        part += _img(png_bytes(fig), caption, "manifold")
    return part


def render(title: str, sections: dict[str, str]) -> str:
    """The page: every section of :data:`SECTIONS` in order, with an anchor id."""
    nav = " | ".join(f'<a href="#{k}">{html.escape(t)}</a>' for k, t in SECTIONS)
    body = "".join(f'<section id="{k}"><h2>{html.escape(t)}</h2>{sections[k]}</section>'
                   for k, t in SECTIONS)  # fmt: skip
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>written {stamp} by vaelab</p><nav>{nav}</nav>"
            f"{body}</body></html>\n")  # fmt: skip


def write_report(
    run: str | Path | Run, out: str | Path | None = None, data: ImageData | None = None,
    seed: int = 0,
) -> Path:  # fmt: skip
    """Write the HTML report of a run (its folder, or a :class:`Run` whose model is already
    loaded) to ``out`` (default RUN/report.html, replaced if present); returns the path.
    ``data`` skips reloading the run's dataset."""
    if not isinstance(run, Run):
        run = read_run(run)
    folder, model = Path(run.folder), run.model
    data = data or dataset_for(run.config)
    was_training = model.training
    model.eval()
    try:
        # Fork only the model's own generators (fork_rng() alone would touch every GPU).
        where = next(model.parameters()).device
        gpus = [where] if where.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=gpus):  # caller's RNG untouched
            sections = build_sections(run, data, runfs.read_metrics(folder), seed)
        sections["evaluation"] = _evaluation_section(folder)
        sections["disentanglement"] = _disentanglement_section(folder)
    finally:
        model.train(was_training)
    path = Path(out) if out else folder / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(f"vaelab run {folder.name}: {cfg_line(run.config)}", sections))
    return path


def cfg_line(config: Config) -> str:
    m, d = config.model, config.data
    return f"{MODELS[m.model].describe(m)}, {m.likelihood}, on {d.dataset}"
