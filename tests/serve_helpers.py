"""Runs and a live server for the ``vaelab serve`` tests (shared by test_serve*.py)."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tests.conftest import small_config
from tests.single_thread import one_thread

from vaelab.web.app import App, build_app, make_server

# A small mnist-5k VAE (28x28, the reference 784-...-D shape with fewer units): ~7 s once.
MNIST_RUN = {"dataset": "mnist-5k", "hidden": "256", "latent_dim": 8, "epochs": 4,
             "batch_size": 100}  # fmt: skip


def trained_run(base: Path, name: str, **overrides) -> Path:
    """Train ``name`` under ``base`` once per test session (both test files reuse it)."""
    from vaelab.training.loop import fit

    out = base / name
    if not (out / "checkpoint.safetensors").is_file():
        torch.manual_seed(0)
        with one_thread():
            fit(small_config(**overrides), out)
    return out


def session_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "serve-runs"


@contextmanager
def running(app: App) -> Iterator[str]:
    """``app`` served on a free port of 127.0.0.1 in a thread; yields its URL."""
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def served(run: Path, **options) -> Iterator[str]:
    with running(build_app(run, **options)) as url:
        yield url


def request(url: str, body=None, method: str | None = None, headers=None) -> tuple[int, bytes]:
    """(status, body bytes) of one request; a dict body is sent as JSON."""
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, body: dict) -> dict:
    status, data = request(url, body)
    assert status == 200, data
    return json.loads(data)


def png_array(data_url_or_bytes: str | bytes) -> np.ndarray:
    """A PNG (data URL or bytes) as a uint8 array ``(H, W)`` or ``(H, W, 3)``."""
    raw = data_url_or_bytes
    if isinstance(raw, str):
        assert raw.startswith("data:image/png;base64,"), raw[:40]
        raw = base64.b64decode(raw.split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "PNG"
        return np.asarray(img).copy()


def png_data_url(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
