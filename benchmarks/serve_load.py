"""Load test of ``vaelab serve``: concurrent keep-alive clients, a share of malformed requests.

Serves a run on 127.0.0.1 (only: the script refuses any other host) in this process and
sends --requests requests from --clients threads, each over its own keep-alive connection
(as a browser does), a --bad share of them malformed: invalid JSON, a wrong Content-Type,
a body over the limit (sent in full), a chunked body, no Content-Length, a bad field, a
garbage request line, a foreign Host. The rest are what the page sends (decode a map
point, sample, similar, interpolate, test images, info). A client follows the protocol:
when an answer says ``Connection: close`` it opens a new connection for the next request.

Counts, per status, the answers; and what must stay at zero: connections reset or cut by
the server before the whole answer arrived, 5xx answers, answers that do not parse.
Prints and saves JSON (benchmarks/results/serve_load.json).

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --run runs/demo --clients 16 --requests 4000
    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --quick    # a tiny digits run, 200 requests
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.training.loop import fit
from vaelab.web.app import MAX_BODY, build_app, make_server

ROOT = Path(__file__).resolve().parent.parent
JSON = "application/json"


def _good(rng: random.Random, last: int) -> tuple[str, str, bytes | None, dict]:
    """One request the page sends: (method, path, body, headers)."""
    kind = rng.randrange(6)
    i, j = rng.randint(0, last), rng.randint(0, last)
    if kind == 0:
        body = {"xy": [rng.uniform(-3, 3), rng.uniform(-3, 3)]}
        return "POST", "/api/decode", json.dumps(body).encode(), {"Content-Type": JSON}
    if kind == 1:
        body = {"n": rng.randint(1, 8), "seed": rng.randint(0, 99)}
        return "POST", "/api/sample", json.dumps(body).encode(), {"Content-Type": JSON}
    if kind == 2:
        body = {"index": i, "n": 4}
        return "POST", "/api/similar", json.dumps(body).encode(), {"Content-Type": JSON}
    if kind == 3:
        body = {"a": i, "b": j, "steps": 4}
        return "POST", "/api/interpolate", json.dumps(body).encode(), {"Content-Type": JSON}
    if kind == 4:
        return "GET", f"/api/test-image/{i}", None, {}
    return "GET", "/api/info", None, {}


# Malformed requests, as raw bytes (http.client would refuse to send some of them).
def _bad(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    head = "POST /api/decode HTTP/1.1\r\nHost: localhost\r\n"
    if kind == 0:
        body = b"{not json" + bytes(rng.randrange(256) for _ in range(rng.randrange(20)))
        return f"{head}Content-Type: {JSON}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    if kind == 1:
        body = b'{"xy": [0, 0]}'
        return f"{head}Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode() + (
            body)  # fmt: skip
    if kind == 2:  # over the limit, and actually sent
        body = b"x" * (MAX_BODY + 1 + rng.randrange(1000))
        return f"{head}Content-Type: {JSON}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    if kind == 3:
        chunked = "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        return f"{head}Content-Type: {JSON}\r\n{chunked}".encode()
    if kind == 4:
        return f"{head}Content-Type: {JSON}\r\n\r\n{{}}".encode()  # no Content-Length
    if kind == 5:
        body = json.dumps({"z": [1e308, "a"], "n": -5}).encode()
        return f"{head}Content-Type: {JSON}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    if kind == 6:
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 60))) + b"\r\n\r\n"
    if kind == 7:
        return b"GET /api/info HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    return f"{head}Content-Type: {JSON}\r\nContent-Length: abc\r\n\r\n{{}}".encode()


def _read_answer(sock: socket.socket, buffer: bytearray) -> tuple[int, dict, bytes]:
    """One HTTP answer from ``sock`` (``buffer`` keeps bytes past it): status, headers,
    body. Raises ConnectionError if the server cuts the connection before its end."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer's headers")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of the answer's body")
        body += chunk
    buffer[:] = body[length:]
    return status, headers, bytes(body[:length])


def _client(host: str, port: int, n: int, bad: float, seed: int, last: int, tally: Counter,
            lock: threading.Lock) -> None:  # fmt: skip
    rng = random.Random(seed)
    sock, buffer, local = None, bytearray(), Counter()
    for _ in range(n):
        if sock is None:
            sock, buffer = socket.create_connection((host, port), timeout=60), bytearray()
        if rng.random() < bad:
            payload, local["malformed"] = _bad(rng), local["malformed"] + 1
        else:
            method, path, body, headers = _good(rng, last)
            lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            if body is not None:
                lines.append(f"Content-Length: {len(body)}")
            payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        try:
            sock.sendall(payload)
            status, answer_headers, data = _read_answer(sock, buffer)
            json.loads(data) if answer_headers.get("content-type") == JSON else None
            local[f"status {status}"] += 1
            local["5xx"] += status >= 500
            if answer_headers.get("connection", "").lower() == "close":
                local["closed by the answer"] += 1
                sock.close()
                sock = None
        except (ConnectionError, TimeoutError, OSError) as exc:
            local["reset or cut"] += 1
            local[f"error {type(exc).__name__}: {exc}"] += 1
            sock.close()
            sock = None
        except ValueError:
            local["unparsable answer"] += 1
    if sock is not None:
        sock.close()
    with lock:
        tally.update(local)


def load(url: str, clients: int, requests: int, bad: float, seed: int, last: int) -> dict:
    """Send ``requests`` requests from ``clients`` threads to ``url`` (127.0.0.1 only)."""
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    if host != "127.0.0.1":
        raise SystemExit(f"serve_load: 127.0.0.1 only, got {host}")
    tally, lock = Counter(), threading.Lock()
    share = [requests // clients + (c < requests % clients) for c in range(clients)]
    threads = [threading.Thread(target=_client, args=(host, int(port), share[c], bad, seed + c,
                                                      last, tally, lock))
               for c in range(clients)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in ("5xx", "reset or cut", "unparsable answer"):
        tally.setdefault(key, 0)
    return {
        "requests": requests,
        "clients": clients,
        "bad_share": bad,
        **dict(sorted(tally.items())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="run folder to serve (default: train a tiny digits VAE)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--bad", type=float, default=0.1, help="share of malformed requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="4 clients, 200 requests")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_load.json"))
    args = ap.parse_args()
    if args.quick:
        args.clients, args.requests = 4, 200
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="serve-load-")) / "digits"
        cfg = {"dataset": "digits", "hidden": "64", "latent_dim": 4, "epochs": 2,
               "progress": False, "report": False}  # fmt: skip
        fit(with_overrides(Config(), cfg, "serve_load"), run)
    app = build_app(run)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = load(server.url, args.clients, args.requests, args.bad, args.seed,
                      len(app.explorer.images) - 1)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    result = {"run": str(run), **result, "provenance": provenance()}
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))
    if not args.quick:
        save_json(args.out, result)
    bad = result["5xx"] + result["reset or cut"] + result["unparsable answer"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
