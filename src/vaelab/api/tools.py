"""The commands that fit vaelab into the tools users already run, as Python functions:
``vaelab.training.record`` (``vaelab runs``: every run under some folders as one table),
``vaelab.sweep`` (one run per value of a numeric option, and the rate–distortion picture)
and ``vaelab.export`` (ONNX files of the encoder and decoder). Experiment tracking is an
option of training (``--track``, :mod:`vaelab.training.tracking`).
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import typing
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from vaelab.api import as_run, load_test_images
from vaelab.config import (
    SECTIONS,
    Config,
    config_from_dict,
    field_index,
    load_config,
    with_overrides,
)
from vaelab.data.prepare import eval_images, to_unit
from vaelab.errors import VaelabError, at_least
from vaelab.evaluation.export import check_onnx, export_onnx, why_not
from vaelab.evaluation.html_report import CSP, RUN_DRAWINGS
from vaelab.evaluation.plots import save_figure
from vaelab.evaluation.rate_distortion import rd_figure, rd_point
from vaelab.evaluation.runs_table import csv_table, run_row, text_table
from vaelab.evaluation.runs_table import runs_table as table_rows
from vaelab.training import loop
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.record import Run, target
from vaelab.training.session import check_config

SWEEP = "sweep.json"


def runs(
    folders: Sequence[str | Path] = ("runs",), sort: str | None = None, *, reverse: bool = False,
    json_out: str | Path | None = None, csv_out: str | Path | None = None,
    html_out: str | Path | None = None, overwrite: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per run folder at or below ``folders`` (see
    :mod:`vaelab.evaluation.runs_table`: dataset, model, likelihood, epochs done/asked, the
    last test ELBO, NLL and bits/dim with their SE after ``evaluate``, FD of the prior's
    samples, wall time, status), sorted by column ``sort`` (``-COL``: descending). Writes
    the rows as JSON, CSV, and an HTML page with each run's samples.png, when asked."""
    for path, flag in (json_out, "json_out"), (csv_out, "csv_out"), (html_out, "html_out"):
        if path:  # before any work
            target(path, overwrite, flag)
    folders = list(folders) or ["runs"]
    rows = table_rows(folders, sort, reverse)
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2) + "\n")
    if csv_out:
        Path(csv_out).write_text(csv_table(rows))
    if html_out:
        Path(html_out).write_text(runs_page(rows))
    return rows


def runs_page(rows: list[dict[str, Any]]) -> str:
    """The runs side by side: the table, then one column per run with its samples.png and
    reconstructions.png (embedded, so the page is one file)."""
    cards = []
    for r in rows:
        imgs = ""
        for name in ("samples.png", "reconstructions.png"):
            path = Path(r["run"]) / name
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                imgs += f'<img src="data:image/png;base64,{data}" alt="{name}" title="{name}">'
        title = html.escape(f"{Path(r['run']).name}: {r['status']}, ELBO "
                            f"{r['test_elbo']:.2f}" if r.get("test_elbo") is not None
                            else f"{Path(r['run']).name}: {r['status']}")  # fmt: skip
        cards.append(f"<figure><figcaption>{title}</figcaption>{imgs or 'no pictures'}</figure>")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv='
        f'"Content-Security-Policy" content="{CSP}"><title>vaelab runs</title><style>'
        "body{font-family:sans-serif;margin:1em}pre{background:#f6f6f6;padding:.8em}"
        ".runs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;width:260px}"
        "img{width:100%;image-rendering:pixelated;display:block;margin-bottom:4px}"
        "figcaption{font-size:.8em;color:#444}</style></head><body><h1>Runs</h1>"
        f'<pre>{html.escape(text_table(rows))}</pre><div class="runs">{"".join(cards)}'
        "</div></body></html>\n"
    )


def _numeric(option: str) -> type:
    index = field_index()
    if option not in index:
        raise VaelabError(f"--option: unknown config field {option!r}")
    tp = typing.get_type_hints(SECTIONS[index[option][0]])[option]
    inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if inner[0] not in (int, float) or inner[0] is bool:
        raise VaelabError(f"--option {option}: not a numeric option (its type is {tp})")
    return inner[0]


def _as_config(config: Config | dict[str, Any] | str | Path | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, dict):
        return config_from_dict(config)
    if isinstance(config, str | Path):
        return load_config(config)
    return config


def run_name(option: str, value: float) -> str:
    return f"{option}-{value:g}"


def sweep(
    config: Config | dict[str, Any] | str | Path | None = None,
    out: str | Path | None = None, *, option: str = "beta",
    values: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0), overwrite: bool = False,
    **overrides: Any,
) -> dict[str, Any]:  # fmt: skip
    """Train one run per value of the numeric config field ``option`` (same seed, data and
    every other option) into ``out/OPTION-VALUE``; then draw rate against distortion with
    the ELBO isolines (``out/rate_distortion.png``, points in ``out/rate_distortion.json``).

    Resumable: run again with the same arguments, it skips finished runs, resumes
    interrupted ones from their checkpoints and starts the missing ones. ``overwrite``
    deletes ``out`` first. Returns {option, values, points, trained, skipped, figure}."""
    kind = _numeric(option)
    if not values:
        raise VaelabError("--values: give at least one value")
    values = [kind(v) for v in values]
    if kind is int and any(v != float(v) for v in values):
        raise VaelabError(f"--values: {option} takes whole numbers")
    if len(set(values)) != len(values):
        raise VaelabError(f"--values: a value is given twice in {values}")
    base = with_overrides(_as_config(config), overrides, "sweep()")
    configs = [check_config(with_overrides(base, {option: v}, "--values")) for v in values]
    out = Path(out) if out else Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-sweep-{option}"
    manifest = {"option": option, "config": check_config(base).to_dict()}
    _prepare_sweep(out, manifest, overwrite)
    trained, skipped = [], []
    for value, cfg in zip(values, configs, strict=True):
        folder = out / run_name(option, value)
        row = run_row(folder) if folder.is_dir() else None
        if row and row["status"] == "finished" and row["epochs_done"] >= cfg.train.epochs:
            skipped.append(str(folder))
            continue
        started = folder.is_dir() and any(folder.iterdir())
        loop.fit(cfg, folder, resume=started, drawings=RUN_DRAWINGS)
        trained.append(str(folder))
    points = []
    for value in values:
        folder = out / run_name(option, value)
        point = rd_point(folder)
        if point is not None:
            points.append({"value": value, "run": str(folder), **point})
    figure = save_figure(rd_figure(points, option), out / "rate_distortion.png")
    result = {"option": option, "values": values, "points": points, "trained": trained,
              "skipped": skipped, "figure": str(figure)}  # fmt: skip
    (out / "rate_distortion.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _prepare_sweep(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Create ``out`` with its sweep.json, or check that it holds this sweep (same option
    and base config; the length of training may change), or empty it with ``overwrite``."""
    path = out / SWEEP
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out {out}: exists and is not a folder")
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise VaelabError(
                f"{path}: unreadable; pass --overwrite to start the sweep over"
            ) from None
        same = old.get("option") == manifest["option"] and _comparable(old.get("config")) == (
            _comparable(manifest["config"])
        )
        if not same:
            raise VaelabError(
                f"--out {out}: holds a sweep of other settings ({path}); name another folder "
                "or pass --overwrite"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise VaelabError(f"--out {out}: exists, is not empty and holds no {SWEEP}; "
                          "name another folder or pass --overwrite")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def _comparable(config: Any) -> Any:
    """A config dict without what may change between two calls of one sweep."""
    if not isinstance(config, dict):
        return config
    skip = {"epochs", "device", "progress", "report", "track", "track_every"}
    return {s: {k: v for k, v in sec.items() if k not in skip} for s, sec in config.items()}


def export(
    run: str | Path | Run, onnx: str | Path, *, limit: int = 256, overwrite: bool = False
) -> dict[str, Any]:
    """Write the run's encoder and decoder as ONNX (dynamic batch size) and model.json into
    folder ``onnx``, checked with onnxruntime against PyTorch on the first ``limit`` test
    images (see :mod:`vaelab.evaluation.export`). Returns model.json's content."""
    check_onnx()
    at_least("--limit", limit)
    folder = Path(onnx)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise VaelabError(f"--onnx {folder}: exists; pass --overwrite to replace it")
    run = as_run(run, "cpu")
    data = load_test_images(run)
    cfg = run.config
    x = to_unit(eval_images(data.test_x[:limit], cfg.data.binarize, cfg.train.seed))
    describe = {
        "dataset": run.info.get("dataset"), "model": cfg.model.model, "arch": cfg.model.arch,
        "latent_dim": cfg.model.latent_dim, "binarize": cfg.data.binarize,
        "run": str(run.folder) if run.folder else None,
    }  # fmt: skip
    reason = why_not(run.model)
    if reason:  # before any file is written
        raise VaelabError(f"export: cannot export this model's {reason}")
    folder.mkdir(parents=True, exist_ok=True)
    result = export_onnx(run.model, run.image_shape, x, folder, describe)
    return {**result, "folder": str(folder), "checkpoint": str(Path(run.folder or "") / CHECKPOINT)}
