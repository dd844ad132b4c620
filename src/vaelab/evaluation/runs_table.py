"""The runs table (``vaelab runs``): one row per run folder found under some paths, read
from the files a run leaves (config.yaml, run.json, metrics.jsonl, status.json, the newest
evaluation*.json); no model is loaded, so a folder of a hundred runs lists at once.

A run folder is one holding config.yaml, run.json, metrics.jsonl, status.json or a
checkpoint; other folders are searched below (not inside a run). A file that cannot be
read leaves its columns empty and says so in ``problem``; it never stops the listing.

Status: what ``status.json`` (training/tracking.py) says, except that ``running`` with a
process that no longer exists on this host is ``interrupted`` (killed: ``--resume``
continues it from its last checkpoint). A run from before status.json is ``finished`` when
metrics.jsonl has all its epochs, else ``interrupted``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from vaelab.errors import VaelabError
from vaelab.training.checkpoint import CHECKPOINT
from vaelab.training.folder import CONFIG, INFO, METRICS
from vaelab.training.tracking import STATUS

MARKERS = (CONFIG, INFO, METRICS, STATUS, CHECKPOINT)
# column -> header, format; the row dict's keys (JSON/CSV keep every key)
COLUMNS: dict[str, tuple[str, str]] = {
    "run": ("run", "{}"),
    "dataset": ("dataset", "{}"),
    "model": ("model", "{}"),
    "likelihood": ("likelihood", "{}"),
    "beta": ("beta", "{:g}"),
    "epochs": ("epochs", "{}"),
    "test_elbo": ("test ELBO", "{:.2f}"),
    "nll": ("NLL", "{:.2f}"),
    "nll_se": ("±", "{:.2f}"),
    "bits_per_dim": ("bits/dim", "{:.4f}"),
    "bits_per_dim_se": ("±", "{:.4f}"),
    "fd": ("FD", "{:.2f}"),
    "seconds": ("time", "{}"),
    "status": ("status", "{}"),
    "problem": ("problem", "{}"),
}
STATUSES = ("finished", "running", "interrupted", "failed")
SKIP = {"mlruns", "tensorboard", "outputs"}  # trackers' copies of runs, runs' own folders


def is_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in MARKERS)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder at or below ``paths`` (sorted per path; a run's own subfolders,
    e.g. outputs/, are not searched). A path that does not exist is an error."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.resolve() in {p.resolve() for p in found}:
            continue
        if not path.is_dir():
            raise VaelabError(f"{path}: no such folder (name the folders that hold run folders)")
        if is_run(path):
            found.append(path)
            continue
        for root, dirs, _ in os.walk(path):
            dirs.sort()
            keep = []
            for d in dirs:
                if d.startswith(".") or d in SKIP:
                    continue
                (found if is_run(Path(root) / d) else keep).append(Path(root) / d)
            dirs[:] = [p.name for p in keep]
    unique = {p.resolve(): p for p in found}  # a run reached from two of the paths: once
    return list(unique.values())


def _read(path: Path, parse: Any, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        problems.append(f"{path.name}: unreadable ({type(exc).__name__})")
        return None


def _jsonl(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:  # a torn last line (killed mid-write): the rows before count
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _alive(status: dict[str, Any]) -> bool:
    """The process that wrote ``running`` still exists (on another host: assumed so)."""
    if status.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def run_row(folder: str | Path) -> dict[str, Any]:
    """The table row of one run folder (see the module docstring); never raises for a
    damaged run: what cannot be read is named in ``problem``."""
    folder, problems = Path(folder), []
    config = _read(folder / CONFIG, yaml.safe_load, problems)
    info = _read(folder / INFO, json.loads, problems)
    rows = _read(folder / METRICS, _jsonl, problems) or []
    status = _read(folder / STATUS, json.loads, problems)
    config = config if isinstance(config, dict) else {}
    flat = {k: v for s in config.values() if isinstance(s, dict) for k, v in s.items()}
    info = info if isinstance(info, dict) else {}
    done = max((r.get("epoch", 0) for r in rows), default=0)
    asked = flat.get("epochs")
    last = rows[-1] if rows else {}
    seconds = sum(float(r.get("seconds", 0) or 0) for r in rows)
    model = flat.get("model")
    if model and flat.get("arch"):
        model = f"{model}/{flat['arch']}"
    row: dict[str, Any] = {
        "run": str(folder),
        "dataset": info.get("dataset") or flat.get("dataset"),
        "model": model,
        "likelihood": flat.get("likelihood"),
        "beta": flat.get("beta"),
        "epochs_done": done,
        "epochs_asked": asked,
        "epochs": f"{done}/{asked if asked is not None else '?'}",
        "test_elbo": last.get("test_elbo"),
        "test_recon": last.get("test_recon"),
        "test_kl": last.get("test_kl"),
        "seconds": round(seconds, 1),
    }
    row.update(_evaluation(folder, problems))
    if isinstance(status, dict) and status.get("status") in STATUSES:
        state = status["status"]
        if state == "running" and not _alive(status):
            state = "interrupted"
        if state == "failed" and status.get("error"):
            problems.append(str(status["error"]))
    else:
        state = "finished" if asked is not None and done >= asked else "interrupted"
        if not config and not rows:
            state = "unknown"
    row["status"] = state
    if isinstance(status, dict) and isinstance(status.get("wall_seconds"), int | float):
        wall = float(status["wall_seconds"])
        if state == "running" and isinstance(status.get("started"), int | float):
            wall += time.time() - status["started"]
        row["seconds"] = round(wall, 1)  # else: the epochs' own seconds (metrics.jsonl)
    row["problem"] = "; ".join(problems) or None
    return row


def _evaluation(folder: Path, problems: list[str]) -> dict[str, Any]:
    found = sorted(folder.glob("evaluation*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        return {}
    result = _read(found[-1], json.loads, problems)
    if not isinstance(result, dict):
        return {}
    quality = (result.get("quality") or {}).get("prior") or {}
    return {
        "nll": result.get("nll_nats"), "nll_se": result.get("nll_nats_se"),
        "bits_per_dim": result.get("bits_per_dim"),
        "bits_per_dim_se": result.get("bits_per_dim_se"),
        "fd": quality.get("frechet_distance") if isinstance(quality, dict) else None,
    }  # fmt: skip


def runs_table(
    paths: Sequence[str | Path] = ("runs",), sort: str | None = None, reverse: bool = False
) -> list[dict]:
    """The rows of every run under ``paths``, sorted by column ``sort`` (rows without a
    value last; ascending, or descending with ``reverse`` or ``-COLUMN``), else in folder
    order."""
    rows = [run_row(p) for p in find_runs(paths)]
    if sort:
        key, reverse = sort.lstrip("-"), reverse != sort.startswith("-")
        names = sorted({*COLUMNS, *(k for r in rows for k in r)})
        if key not in names:
            raise VaelabError(f"--sort: unknown column {key!r}; valid: {', '.join(names)}")
        have = [r for r in rows if r.get(key) is not None]
        missing = [r for r in rows if r.get(key) is None]
        have.sort(key=lambda r: (isinstance(r[key], str), r[key]), reverse=reverse)
        rows = have + missing
    return rows


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and fmt == "{}":
        return _duration(value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def text_table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text (columns with no value in any row left out)."""
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    header = [COLUMNS[c][0] for c in cols]
    body = [[_cell(r.get(c), COLUMNS[c][1]) for c in cols] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(x.ljust(w) for x, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)


def csv_table(rows: list[dict[str, Any]]) -> str:
    """Every key of every row as CSV (a spreadsheet's columns)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
