"""Fuzz everything a user feeds vaelab: files, folders, configs and HTTP requests.

Generates ``--count`` inputs (default 100,000) from a seeded RNG, in a fixed mix:

* ``idx``, ``npz``, ``png``: dataset files (valid ones, byte-mutated ones, random bytes)
  loaded with ``vaelab.data.load_dataset``;
* ``folder``: image folders (flat or one sub-folder per class, nested, with non-image
  files, dot files, empty classes, links inside and outside the tree, mixed sizes and modes);
* ``config``: config files (YAML, TOML, JSON; mutated text) read by ``load_config``, and
  flag values (any field, any string) through ``with_overrides`` and the training checks
  (``check_config``: resolve, validate, names);
* ``http``: requests to the explorer of a tiny trained run: ``App.handle`` with mutated
  JSON bodies and paths in process, and a share as raw bytes over a socket to a live server
  on 127.0.0.1 (request lines, headers, lengths, bodies).

Each input must end in a result or in vaelab's own one-line error (``VaelabError``, no
newline); the explorer must answer every request with a status below 500 and JSON or an
image. Anything else is counted as a failure, with its traceback's last line.
Prints and saves JSON (benchmarks/results/fuzz.json).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fuzz.py --count 100000
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fuzz.py --count 300   # a quick check
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, field_index, load_config, with_overrides
from vaelab.data import folder as folder_module
from vaelab.data import load_dataset
from vaelab.errors import VaelabError
from vaelab.training.loop import fit
from vaelab.training.session import check_config
from vaelab.web.app import build_app, make_server

ROOT = Path(__file__).resolve().parent.parent
MIX = {"idx": 14, "npz": 14, "png": 14, "folder": 10, "config": 20, "http": 26, "raw_http": 2}


def mutate(rng: random.Random, blob: bytes, edits: int | None = None) -> bytes:
    """Byte edits biased to the first 40 bytes (headers decide sizes): set, insert,
    delete, truncate."""
    out = bytearray(blob)
    for _ in range(rng.choice([0, 1, 1, 2, 3]) if edits is None else edits):
        if not out:
            break
        pos = rng.randrange(min(len(out), 40) if rng.random() < 0.6 else len(out))
        kind = rng.choice("ssstid")
        if kind == "s":
            out[pos] = rng.randrange(256)
        elif kind == "t":
            del out[pos:]
        elif kind == "i":
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        else:
            del out[pos : pos + rng.randint(1, 8)]
    return bytes(out)


def _pixels(rng: random.Random, shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    gen = np.random.default_rng(rng.randrange(2**32))
    if dtype == "uint16":
        return gen.integers(0, 65536, shape, dtype=np.uint16)
    return gen.integers(0, 256, shape, dtype=np.uint8)


def png_bytes(rng: random.Random, h: int | None = None, w: int | None = None) -> bytes:
    h, w = h or rng.randint(1, 12), w or rng.randint(1, 12)
    mode = rng.choice(["L", "RGB", "RGBA", "LA", "P", "I;16", "1", "CMYK"])
    buf = io.BytesIO()
    if mode == "I;16":
        image = Image.fromarray(_pixels(rng, (h, w), "uint16"))
    elif mode in ("L", "1"):
        image = Image.fromarray(_pixels(rng, (h, w))).convert(mode)
    elif mode == "P":
        image = Image.fromarray(_pixels(rng, (h, w, 3))).convert("P")
        if rng.random() < 0.3:
            image.info["transparency"] = 0
    else:
        bands = {"RGB": 3, "RGBA": 4, "LA": 2, "CMYK": 4}[mode]
        image = Image.fromarray(_pixels(rng, (h, w, bands)), mode)
    fmt = "JPEG" if mode == "CMYK" else rng.choice(["PNG"] * 6 + ["BMP", "GIF", "JPEG"])
    if fmt in ("JPEG", "BMP", "GIF") and image.mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    if fmt == "GIF" and image.mode == "RGB":
        image = image.convert("P")
    image.save(buf, fmt)
    return buf.getvalue()


def idx_bytes(rng: random.Random, ndim: int, count: int) -> bytes:
    code = rng.choice([0x08] * 6 + [0x09, 0x0B, 0x0C, 0x0D, 0x0E])
    size = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[code]
    ndim = rng.choice([ndim] * 4 + [1, 2, 4])
    dims = [count] + [rng.choice([1, 2, 3, 5, 7, 0]) for _ in range(ndim - 1)]
    raw = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims)
    raw += rng.randbytes(int(np.prod(dims)) * size)
    blob = mutate(rng, raw)
    return gzip.compress(blob, mtime=0) if rng.random() < 0.3 else blob


def npz_bytes(rng: random.Random) -> bytes:
    n, h, w = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 6)
    shape = rng.choice([(n, h, w), (n, h, w, rng.choice([1, 2, 3, 4])), (n, 3, h, w), (n,)])
    dtype = rng.choice(["uint8", "float32", "float64", "bool", "int64", "int8", "complex64"])
    gen = np.random.default_rng(rng.randrange(2**32))
    values = gen.random(shape) * rng.choice([1.0, 255.0, 300.0, -1.0, float("nan")])
    arrays = {rng.choice(["images", "x", "x_train", "train_x", "data"]): values.astype(dtype)}
    if rng.random() < 0.5:
        labels = gen.integers(-1, 5, rng.choice([n, n + 1]))
        arrays[rng.choice(["labels", "y", "y_train"])] = labels.astype(
            rng.choice(["int64", "float32", "uint8"]))  # fmt: skip
    if rng.random() < 0.3:
        arrays["x_test"] = (gen.random((rng.randint(0, 3), h, w)) * 255).astype("uint8")
    if rng.random() < 0.1:
        arrays["class_names"] = np.array(["a", "b"][: rng.randint(0, 2)])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return mutate(rng, buf.getvalue(), rng.choice([0, 0, 1, 2]))


class Fuzzer:
    """One generator and one check per input kind; ``run`` tallies outcomes."""

    def __init__(self, rng: random.Random, tmp: Path, app, url: str) -> None:
        self.rng, self.tmp, self.app, self.url = rng, tmp, app, url
        self.images = len(app.explorer.images)
        self.shape = app.explorer.image_shape
        self.fields = sorted(field_index())

    def fresh(self) -> Path:
        path = Path(tempfile.mkdtemp(dir=self.tmp))
        return path

    def load(self, root: Path, target: str = ".") -> str:
        options = {}
        if self.rng.random() < 0.3:
            options["resize"] = (self.rng.randint(1, 6), self.rng.randint(1, 6))
        if self.rng.random() < 0.2:
            options["channels"] = self.rng.choice([1, 3])
        load_dataset(str(root / target), download=False, **options)
        return "ok"

    def idx(self) -> str:
        root, n = self.fresh(), self.rng.randint(1, 6)
        if self.rng.random() < 0.1:
            (root / "x-images-idx3-ubyte").write_bytes(self.rng.randbytes(self.rng.randint(0, 64)))
        else:
            for prefix in self.rng.choice([["train"], ["train", "t10k"], ["a"]]):
                (root / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(self.rng, 3, n))
                if self.rng.random() < 0.5:
                    (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(self.rng, 1, n))
        files = sorted(p.name for p in root.iterdir())
        return self.load(root, self.rng.choice([".", files[0]]))

    def npz(self) -> str:
        root = self.fresh()
        blob = npz_bytes(self.rng) if self.rng.random() < 0.9 else self.rng.randbytes(200)
        (root / "data.npz").write_bytes(blob)
        return self.load(root, "data.npz")

    def png(self) -> str:
        root, h, w = self.fresh(), self.rng.randint(1, 10), self.rng.randint(1, 10)
        for i in range(self.rng.randint(1, 5)):
            same = self.rng.random() < 0.8
            blob = png_bytes(self.rng, h if same else None, w if same else None)
            if self.rng.random() < 0.3:
                blob = mutate(self.rng, blob)
            (root / f"{i}{self.rng.choice(['.png'] * 4 + ['.jpg', '.gif', '.bmp', '.webp'])}"
             ).write_bytes(blob)  # fmt: skip
        return self.load(root)

    def folder(self) -> str:
        root, rng = self.fresh(), self.rng
        h, w = rng.randint(1, 8), rng.randint(1, 8)
        classes = rng.choice([0, 1, 2, 3])
        for i in range(rng.randint(0, 8)):
            where = root / f"c{i % classes}" if classes else root
            if classes and rng.random() < 0.3:
                where = where / "deeper"
            where.mkdir(parents=True, exist_ok=True)
            (where / f"{i}.png").write_bytes(png_bytes(rng, h, w))
        extras = rng.randint(0, 3)
        for j in range(extras):
            kind = rng.choice(["text", "dot", "empty_class", "link_in", "link_out", "mixed"])
            if kind == "text":
                (root / f"notes{j}.txt").write_text("hello")
            elif kind == "dot":
                (root / f".hidden{j}.png").write_bytes(b"junk")
            elif kind == "empty_class":
                (root / f"empty{j}").mkdir(exist_ok=True)
            elif kind == "link_in" and any(root.iterdir()):
                target = next(iter(sorted(root.iterdir())))
                os.symlink(target, root / f"link{j}{target.suffix}")
            elif kind == "link_out":
                os.symlink("/etc", root / f"outside{j}")
            elif kind == "mixed":
                (root / f"big{j}.png").write_bytes(png_bytes(rng, h + 1, w))
        return self.load(root)

    def config(self) -> str:
        rng = self.rng
        names = self.fields
        if rng.random() < 0.5:  # a config file
            values = {}
            for _ in range(rng.randint(0, 4)):
                key = rng.choice([*names, "nonsense", "model", "train", ""])
                values[key] = self._value()
            if rng.random() < 0.3:
                values = {rng.choice(["model", "train", "data", "x"]): values}
            suffix = rng.choice([".yaml", ".toml", ".json", ".yml"])
            if suffix == ".toml":
                text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()
                                 if not isinstance(v, dict))  # fmt: skip
            else:
                text = json.dumps(values)
            text = mutate(rng, text.encode(), rng.choice([0, 0, 1, 2])).decode("latin-1")
            path = self.fresh() / f"config{suffix}"
            path.write_text(text)
            config = load_config(path)
        else:  # flag values
            flags = {f"--{rng.choice(names).replace('_', '-')}": self._value()
                     for _ in range(rng.randint(1, 3))}  # fmt: skip
            config = with_overrides(Config(), flags, "command line")
        check_config(config)
        return "ok"

    def _value(self):
        rng = self.rng
        return rng.choice([
            rng.randint(-5, 1000), rng.random() * rng.choice([1, -1, 1e9]), float("nan"),
            "", "none", "true", "1e-3", "3x3", "32,64", "a,b", "-1", "inf", "mlp", "conv",
            "resnet", "dmol", "bernoulli", "cosine", "digits", None, [1, 2], {"a": 1},
            rng.randbytes(4).decode("latin-1"),
        ])  # fmt: skip

    def http(self) -> str:
        rng, n = self.rng, self.images
        path = rng.choice([
            "/api/decode", "/api/sample", "/api/similar", "/api/interpolate", "/api/complete",
            "/api/info", f"/api/test-image/{rng.randint(-2, n + 2)}", "/", "/static/app.js",
            "/nothing", "/api/" + rng.randbytes(3).hex(),
        ])  # fmt: skip
        h, w = self.shape[1:]
        body = rng.choice([
            {"xy": [rng.uniform(-50, 50), rng.uniform(-50, 50)]}, {"index": rng.randint(-1, n)},
            {"z": [rng.uniform(-1e3, 1e3) for _ in range(rng.randint(0, 4))]},
            {"n": rng.randint(-1, 70), "temperature": rng.choice([0, 0.5, 1e9, "x"]),
             "seed": rng.randint(-1, 2**32)},
            {"index": rng.randint(0, n - 1), "n": rng.randint(0, 5), "spread": rng.uniform(-1, 6)},
            {"a": rng.randint(-1, n), "b": rng.randint(0, n - 1), "steps": rng.randint(0, 40),
             "method": rng.choice(["linear", "spherical", "x"])},
            {"index": rng.randint(0, n - 1), "n": rng.randint(0, 3), "steps": rng.randint(0, 3),
             "mask": "".join(rng.choice("01") for _ in range(h * w + rng.choice([0, 0, 1, -1]))),
             "method": rng.choice(["pseudo-gibbs", "metropolis", "x"])},
            {"image": "data:image/png;base64,"
             + base64.b64encode(png_bytes(rng, h, w)).decode()},
            {"label": rng.randint(-1, 12), "xy": [0, 0]},
        ])  # fmt: skip
        raw = json.dumps(body).encode()
        if rng.random() < 0.3:
            raw = mutate(rng, raw)
        method = rng.choice(["POST"] * 4 + ["GET", "PUT"])
        status, ctype, data = self.app.handle(method, path, raw if method == "POST" else None)
        known = ctype in ("application/json", "image/png") or ctype.startswith("text/")
        if status >= 500 or not known:
            raise AssertionError(f"{method} {path}: {status} {ctype} {data[:200]!r}")
        return "ok" if status == 200 else "refused"

    def raw_http(self) -> str:
        rng = self.rng
        body = mutate(rng, b'{"xy": [0.1, 0.2]}')
        length = rng.choice([str(len(body)), str(len(body) + 3), "x", "-1", "", "99999999"])
        lines = [rng.choice(["POST /api/decode HTTP/1.1", "GET /api/info HTTP/1.1",
                             "POST /api/decode HTTP/1.0", "BREW / HTTP/1.1",
                             rng.randbytes(10).decode("latin-1")]),
                 rng.choice(["Host: localhost", "Host: evil.example", "Host:", ""]),
                 rng.choice(["Content-Type: application/json", "Content-Type: text/plain", ""]),
                 rng.choice([f"Content-Length: {length}", "Transfer-Encoding: chunked", ""]),
                 "Connection: close"]  # fmt: skip
        payload = mutate(rng, "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        host, port = self.url.split("//")[1].rstrip("/").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # all sent: a body shorter than declared ends here
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        if answer:
            status = int(answer.split(b" ", 2)[1])
            if status >= 500:
                raise AssertionError(f"raw request answered {status}: {answer[:200]!r}")
            return "ok" if status == 200 else "refused"
        return "refused"  # a request http.server could not parse at all: closed

    def run(self, count: int, progress: Callable[[int], None]) -> dict:
        kinds = [k for k, weight in MIX.items() for _ in range(weight)]
        tally, failures, seconds = Counter(), [], Counter()
        for i in range(count):
            kind, start = self.rng.choice(kinds), time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    outcome = getattr(self, kind)()
            except VaelabError as err:
                outcome = "refused"
                if "\n" in str(err) or not str(err):
                    outcome = "failure"
                    failures.append({"kind": kind, "error": f"multi-line VaelabError: {err!r}"})
            except Exception as exc:  # anything else is a bug
                outcome = "failure"
                last = traceback.format_exc().strip().splitlines()[-3:]
                failures.append({"kind": kind, "error": f"{type(exc).__name__}: {exc}"[:300],
                                 "where": last})  # fmt: skip
            tally[f"{kind} {outcome}"] += 1
            tally[outcome] += 1
            seconds[kind] += time.perf_counter() - start
            if (i + 1) % 1000 == 0:
                progress(i + 1)
        return {
            "tally": dict(sorted(tally.items())),
            "failures": failures[:50],
            "seconds_per_kind": {k: round(v, 1) for k, v in sorted(seconds.items())},
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fuzz.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder_module.MAX_PIXELS = 1 << 20  # mutated headers may declare huge images
    with tempfile.TemporaryDirectory(prefix="vaelab-fuzz-") as tmp:
        tmp = Path(tmp)
        cfg = {"dataset": "digits", "hidden": "32", "latent_dim": 4, "epochs": 1,
               "progress": False, "report": False}  # fmt: skip
        run = fit(with_overrides(Config(), cfg, "fuzz"), tmp / "run")
        app = build_app(run, limit=200)
        server = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        work = tmp / "inputs"
        work.mkdir()
        t0 = time.perf_counter()

        def progress(done: int) -> None:
            print(f"{done} inputs, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            for child in work.iterdir():  # keep the temp folder small
                shutil.rmtree(child, ignore_errors=True)

        try:
            result = Fuzzer(random.Random(args.seed), work, app, server.url).run(
                args.count, progress)  # fmt: skip
        finally:
            server.shutdown()
            server.server_close()
    seconds = time.perf_counter() - t0
    result = {"count": args.count, "seed": args.seed, "seconds": round(seconds, 1),
              "command": "OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fuzz.py "
              f"--count {args.count} --seed {args.seed}", **result,
              "provenance": provenance()}  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))
    save_json(args.out, result)
    sys.exit(1 if result["tally"].get("failure") else 0)


if __name__ == "__main__":
    main()
