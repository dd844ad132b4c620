"""Latency of one decode round trip of ``vaelab serve``: HTTP request -> decoded PNG.

Starts ``vaelab serve RUN --port 0`` in its own process (as a user would) and sends
--requests POST /api/decode requests over one keep-alive connection, as the page does while
a point is dragged (``{"xy": [u, v]}``: map point -> z -> decoder -> PNG -> JSON) or a
slider moves (``{"z": [...]}``). Each time is measured by the client from sending the
request to holding the whole answer. For comparison it also times the decoder call alone
(``explore.decode_mean`` of one z, in this process). Prints and saves JSON
(benchmarks/results/serve_latency.json): median, p90, p99, mean, min and max in ms.

Uses --run (any run folder) or trains the reference 784-400-20 VAE (--epochs on
Fashion-MNIST; --quick: one epoch of mnist-5k and 30 requests, to check the script runs).

    flock /tmp/vaelab-cpu.lock python benchmarks/serve_latency.py --run runs/demo
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.api import open_run
from vaelab.config import Config, with_overrides
from vaelab.evaluation.explore import decode_mean
from vaelab.training.loop import fit

ROOT = Path(__file__).resolve().parent.parent


def summary(ms: list[float]) -> dict[str, float]:
    """Median, p90, p99, mean, min, max of times in ms (rounded to 0.01 ms)."""
    a = np.asarray(ms)
    stats = {"median": np.median(a), "p90": np.percentile(a, 90), "p99": np.percentile(a, 99),
             "mean": a.mean(), "min": a.min(), "max": a.max()}  # fmt: skip
    return {k: round(float(v), 2) for k, v in stats.items()} | {"n": len(ms)}


def start_server(run: str, limit: int) -> tuple[subprocess.Popen, str]:
    """``vaelab serve RUN --port 0`` in a child process; returns it and its URL."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "serve", run, "--port", "0", "--limit", str(limit)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    line = proc.stdout.readline()
    if " at http" not in line:
        proc.kill()
        raise SystemExit(f"vaelab serve did not start: {line!r}")
    return proc, line.split(" at ")[1].split()[0]


def round_trips(url: str, bodies: list[dict], warmup: int) -> list[float]:
    """Client-side ms per request (send -> whole answer read), one keep-alive connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    times = []
    for k, body in enumerate(bodies):
        data = json.dumps(body)
        t0 = time.perf_counter()
        conn.request("POST", "/api/decode", data, headers)
        answer = conn.getresponse().read()
        dt = (time.perf_counter() - t0) * 1000
        if not json.loads(answer)["image"].startswith("data:image/png"):
            raise SystemExit(f"no PNG in the answer: {answer[:200]!r}")
        if k >= warmup:
            times.append(dt)
    conn.close()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", default=None, help="a run folder (else the reference VAE is trained)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs when no --run")
    p.add_argument("--requests", type=int, default=500, help="timed requests of each kind")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    p.add_argument("--limit", type=int, default=2000, help="test images on the server's map")
    p.add_argument("--quick", action="store_true", help="mnist-5k, 1 epoch, 30 requests")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_latency.json"))
    args = p.parse_args()
    if args.quick:
        args.requests, args.warmup = 30, 5
    run = args.run
    if run is None:  # the tutorials' 784-400-20 VAE (vaelab's defaults)
        dataset = "mnist-5k" if args.quick else "fashion-mnist"
        cfg = with_overrides(Config(), {"dataset": dataset, "epochs": args.epochs,
                                        "progress": False, "report": False}, "bench")  # fmt: skip
        run = str(fit(cfg, "/tmp/vaelab-bench-serve/vae", overwrite=True))
    opened = open_run(run)
    model = opened.model
    d = model.latent_dim
    gen = torch.Generator().manual_seed(0)
    total = args.warmup + args.requests
    zs = torch.randn(total, d, generator=gen)
    uv = torch.randn(total, 2, generator=gen)  # map points around the codes' centre
    z_bodies = [{"z": [round(float(v), 5) for v in z]} for z in zs]
    xy_bodies = [{"xy": [round(float(v), 5) for v in p]} for p in uv]
    decoder_ms = []  # the decoder alone: what the HTTP round trip adds to
    for k, z in enumerate(zs):
        t0 = time.perf_counter()
        decode_mean(model, z[None])
        if k >= args.warmup:
            decoder_ms.append((time.perf_counter() - t0) * 1000)
    proc, url = start_server(run, args.limit)
    try:
        slider = round_trips(url, z_bodies, args.warmup)
        drag = round_trips(url, xy_bodies, args.warmup)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    out = {
        "benchmark": "serve_latency", "run": run, "dataset": opened.info.get("dataset"),
        "model": f"{opened.config.model.model} hidden={list(opened.config.model.hidden)} "
                 f"latent_dim={d}",
        "image_shape": list(model.image_shape),
        "round_trip_ms": {"slider (z)": summary(slider), "map point (xy)": summary(drag)},
        "decoder_only_ms": summary(decoder_ms),
        "median_under_50ms": statistics.median(drag) < 50 and statistics.median(slider) < 50,
        **provenance(),
    }  # fmt: skip
    print(json.dumps({k: out[k] for k in ("round_trip_ms", "decoder_only_ms")}, indent=2))
    save_json(args.out, out)


if __name__ == "__main__":
    main()
