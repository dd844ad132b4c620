"""Where a benchmark figure came from: the command, the date and the machine.

Every script under benchmarks/ stores this beside its numbers (``**provenance()``) and
writes its JSON with :func:`save_json`, so a figure in a JSON file can always be traced to
how, when and where it was measured.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str | None = None) -> dict[str, str]:
    """``{"command", "date", "machine"}`` for the running script (UTC date, ISO 8601)."""
    machine = (
        f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} cpus), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    if device and device.startswith("cuda") and torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    return {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
    }


def save_json(path: str | Path, result: dict) -> Path:
    """Write ``result`` as indented JSON to ``path`` (folders made as needed); say so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path
