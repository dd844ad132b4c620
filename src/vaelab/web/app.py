"""The explorer's web server: the standard library's ThreadingHTTPServer, no framework.

Requests map to answers through fixed tables, never through the filesystem: ``ASSETS``
(the page's three files, read from the package once at start) and ``API`` (JSON POST
endpoints, each a method of :class:`App`), plus ``GET /api/info`` and
``GET /api/test-image/<i>`` (the run's own test images). Bodies are JSON objects of at
most ``MAX_BODY`` bytes with ``Content-Type: application/json`` (which a cross-site form
cannot send without a preflight this server never grants). A malformed request gets a 4xx
with a one-line JSON reason ``{"error": ...}``; an unexpected failure a 500; neither stops
the server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import torch

from vaelab.api import load_test_images, open_run
from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError
from vaelab.evaluation.completion import METHODS as COMPLETIONS
from vaelab.evaluation.explore import INTERPOLATIONS
from vaelab.web import fields as f
from vaelab.web.explorer import Explorer

MAX_BODY = 1 << 20  # 1 MiB: a PNG upload of the run's size or a mask needs far less
LINGER_SECONDS, LINGER_BYTES = 2.0, 16 << 20  # what a closing connection still reads
ASSETS: dict[str, tuple[str, str]] = {  # URL path -> (file in serve/static, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)  # the page loads nothing from elsewhere: it works offline and no CDN can be slipped in
TEST_IMAGE = re.compile(r"/api/test-image/(\d{1,9})")
SEED_MAX = 2**31 - 1
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}  # Host names a loopback server answers

Response = tuple[int, str, bytes]  # status, content type, body


def _json(status: int, obj: Any) -> Response:
    return status, "application/json", json.dumps(obj, separators=(",", ":")).encode()


def error(status: int, reason: str) -> Response:
    """A 4xx/5xx answer: one line of JSON naming what was wrong."""
    return _json(status, {"error": " ".join(str(reason).split())})


class App:
    """The routes of one explorer: ``handle(method, path, body) -> (status, type, bytes)``.

    Independent of sockets, so it can be tested and embedded; :func:`make_server` binds it.
    """

    def __init__(self, explorer: Explorer, run_name: str = "run") -> None:
        self.explorer = explorer
        static = resources.files("vaelab.web") / "static"
        self.assets = {url: ((static / name).read_bytes(), ctype) for url, (name, ctype)
                       in ASSETS.items()}  # fmt: skip
        self.info = _json(200, explorer.info(run_name))
        self.api: dict[str, Callable[[dict], dict]] = {
            "/api/decode": self.decode,
            "/api/sample": self.sample,
            "/api/similar": self.similar,
            "/api/interpolate": self.interpolate,
            "/api/complete": self.complete,
            "/api/codes": self.codes,  # a VQ-VAE's code grid: read one, or decode an edited one
        }

    def handle(self, method: str, path: str, body: bytes | None = None) -> Response:
        path = urlsplit(path).path
        try:
            if method == "GET":
                return self.get(path)
            if path not in self.api:
                return error(404 if path not in self.assets else 405, f"no POST {path}"[:200])
            return _json(200, self.api[path](f.json_object(body or b"")))
        except f.BadRequest as exc:
            return error(exc.status, str(exc))
        except VaelabError as exc:  # the library's own checks of a value: still the client's
            return error(400, str(exc))

    def get(self, path: str) -> Response:
        if path in self.assets:
            data, ctype = self.assets[path]
            return 200, ctype, data
        if path == "/api/info":
            return self.info
        match = TEST_IMAGE.fullmatch(path)
        if match:
            x = self.explorer.test_image(int(match.group(1)))
            return 200, "image/png", f.png_image(to_unit(x[None])[0])
        if path in self.api:
            return error(405, f"{path}: use POST with a JSON body")
        return error(404, f"no such page: {path}"[:200])

    # ---- endpoints: JSON object in, JSON object out ---------------------------------------
    def _label(self, body: dict) -> int | None:
        return f.optional_integer(body, "label", 0, 10_000)

    def decode(self, body: dict) -> dict:
        """``{"xy": [u, v]}`` (a map point), ``{"index": i}`` (test image i's code) or
        ``{"z": [...]}``, optional ``label``, and for categorical latents optional ``classes``
        (one class per group, replacing the groups of z; every group is decoded one-hot, its
        argmax): ``{"z", "xy", "nearest", "image", "classes"}`` (``classes``: each group's
        class of the decoded z, [] without groups)."""
        ex = self.explorer
        xy = None
        if "index" in body:  # a click on a point: exactly that image's code
            i = f.integer(body, "index", None, 0, len(ex.images) - 1)
            z, xy = ex.map.z[i].float(), ex.map.coords[i].tolist()
        elif "xy" in body:
            z = ex.map.to_latent(*f.vector(body, "xy", 2).tolist())
        else:
            z = f.vector(body, "z", ex.map.z.shape[1])
        if "classes" in body:  # categorical latents: the chosen class of each group
            z = ex.with_classes(z, f.integers(body, "classes"))
        z = ex.in_support(z)
        image = ex.decode(z, self._label(body))
        return {"z": [round(float(v), 5) for v in z], "xy": xy or ex.map.to_map(z),
                "nearest": ex.nearest(z), "image": f.png_data_url(image),
                "classes": ex.classes(z)}  # fmt: skip

    def sample(self, body: dict) -> dict:
        n = f.integer(body, "n", 8, 1, 64)
        t = f.number(body, "temperature", 1.0, 0.01, 5.0)
        seed = f.integer(body, "seed", 0, 0, SEED_MAX)
        return {"images": f.png_data_urls(self.explorer.sample(n, t, seed, self._label(body)))}

    def similar(self, body: dict) -> dict:
        ex = self.explorer
        if ("index" in body) == ("image" in body):
            raise f.BadRequest("give 'index' (a test image) or 'image' (a PNG), one of them")
        if "image" in body:
            x = ex.prepare_upload(f.image_field(body, "image", ex.image_shape))
        else:
            x = ex.test_image(f.integer(body, "index", None, 0, len(ex.images) - 1))
        n = f.integer(body, "n", 8, 1, 64)
        spread = f.number(body, "spread", 1.0, 0.0, 5.0)
        seed = f.integer(body, "seed", 0, 0, SEED_MAX)
        images = ex.near_images(x, n, spread, seed)
        return {"input": f.png_data_url(to_unit(x[None])[0]), "images": f.png_data_urls(images)}

    def interpolate(self, body: dict) -> dict:
        ex, last = self.explorer, len(self.explorer.images) - 1
        a, b = f.integer(body, "a", None, 0, last), f.integer(body, "b", None, 0, last)
        steps = f.integer(body, "steps", 10, 2, 32)
        method = f.choice(body, "method", "linear", list(INTERPOLATIONS))
        images = ex.interpolate(a, b, steps, method, self._label(body))
        return {"images": f.png_data_urls(images)}

    def complete(self, body: dict) -> dict:
        ex = self.explorer
        i = f.integer(body, "index", None, 0, len(ex.images) - 1)
        missing = f.mask_field(body, "mask", ex.image_shape)
        n = f.integer(body, "n", 4, 1, 16)
        steps = f.integer(body, "steps", 30, 0, 200)
        method = f.choice(body, "method", "pseudo-gibbs", sorted(COMPLETIONS))
        seed = f.integer(body, "seed", 0, 0, SEED_MAX)
        observed, images, acceptance = ex.complete(i, missing, n, steps, method, seed)
        return {"observed": f.png_data_url(observed), "images": f.png_data_urls(images),
                "acceptance": acceptance}  # fmt: skip

    def codes(self, body: dict) -> dict:
        """VQ-VAE runs: ``{"index": i}`` -> test image i's code grid and its decoding;
        ``{"codes": [[k, ...], ...]}`` (h rows of w codes in [0, K)) -> that grid decoded:
        ``{"codes", "num_codes", "image"}``. Editing one cell and posting the grid back is
        the explorer's code-grid control."""
        ex = self.explorer
        model = ex.model
        if not model.discrete_codes:
            raise f.BadRequest("codes: this run has no discrete codes (train --model vqvae)")
        h, w = model.grid
        if "codes" in body:
            grid = body["codes"]
            ok = (isinstance(grid, list) and len(grid) == h and all(
                isinstance(r, list) and len(r) == w and all(
                    isinstance(k, int) and not isinstance(k, bool) and 0 <= k < model.num_codes
                    for k in r) for r in grid))  # fmt: skip
            if not ok:
                raise f.BadRequest(f"field 'codes': expected {h} rows of {w} integers in "
                                   f"[0, {model.num_codes})")  # fmt: skip
            codes = torch.tensor(grid, dtype=torch.long)
        else:
            i = f.integer(body, "index", None, 0, len(ex.images) - 1)
            with ex.lock:
                codes = model.codes(to_unit(ex.test_image(i)[None]).to(model.device))[0].cpu()
        with ex.lock, torch.no_grad():
            image = model.likelihood.mean(model.decode_codes(codes[None].to(model.device)))
        return {"codes": codes.tolist(), "num_codes": model.num_codes,
                "image": f.png_data_url(image[0].clamp(0, 1).cpu())}  # fmt: skip


def make_handler(log: TextIO | None = None) -> type[BaseHTTPRequestHandler]:
    """A request-handler class answering with its server's ``app``; logs to ``log``. Its
    length is the class body (nine short methods closing over ``log``), not one procedure."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "vaelab-serve"
        protocol_version = "HTTP/1.1"  # keep-alive: a drag sends many small requests
        timeout = 30  # a client that stops sending loses its thread after 30 s
        # Headers and body go out in two writes; with Nagle's algorithm on, the body waits
        # for the client's delayed ACK (~40 ms on Linux) on a keep-alive connection.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._answer(lambda: self.server.app.handle("GET", self.path))

        def do_POST(self) -> None:
            self._answer(lambda: self.server.app.handle("POST", self.path, self._body()))

        def _declared(self) -> int | None:
            """The body's length from Content-Length (0 without one), or None when the end
            of the body cannot be known (chunked, or a length that is not a number)."""
            if self.headers.get("Transfer-Encoding"):
                return None
            length = self.headers.get("Content-Length")
            if length is None:
                return 0
            return int(length) if length.isascii() and length.isdigit() else None

        def _body(self) -> bytes:
            if self._unread is None or self.headers.get("Content-Length") is None:
                raise f.BadRequest("POST needs a Content-Length (no chunked bodies)", 411)
            if self._unread > MAX_BODY:
                raise f.BadRequest(f"body of {self._unread} bytes; the limit is {MAX_BODY}", 413)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise f.BadRequest("Content-Type must be application/json", 415)
            return self._read_body()

        def _read_body(self) -> bytes:
            data, self._unread = self.rfile.read(self._unread), 0
            return data

        def _keep_connection(self) -> bool:
            """Read what is left of this request's body, so that the connection can carry
            the next request; False when it cannot be read (unknown length, over the
            limit): then the answer says Connection: close."""
            if self._unread is None or self._unread > MAX_BODY:
                return False
            if self._unread:
                self._read_body()
            return True

        def _check_host(self) -> None:
            # DNS rebinding: a web page can point its own name at 127.0.0.1 and then read
            # this server as "same origin"; its requests still carry its name in Host.
            if self.server.loopback:
                try:
                    host = urlsplit("//" + (self.headers.get("Host") or "")).hostname
                except ValueError:  # e.g. "Host: [" (an unclosed IPv6 bracket)
                    host = None
                if host not in LOCAL_NAMES:  # a foreign page: no second request on this one
                    self.close_connection = True
                    raise f.BadRequest(f"Host {host!r}: this server answers to localhost only", 403)

        def _answer(self, respond: Callable[[], Response]) -> None:
            self._unread = self._declared()
            try:
                self._check_host()
                status, ctype, data = respond()
            except f.BadRequest as exc:  # refused before its body was read
                status, ctype, data = error(exc.status, str(exc))
            except Exception as exc:  # a bug: answer 500 and keep serving
                traceback.print_exc(file=log or sys.stderr)
                status, ctype, data = error(500, f"internal error: {type(exc).__name__}: {exc}")
            # Either the whole request is read and the connection carries the next one, or
            # the answer says Connection: close (and Server.shutdown_request reads what the
            # client still sends, so that the close is not a reset that loses this answer).
            if not self._keep_connection():
                self.close_connection = True
            self._send(status, ctype, data)

        def _send(self, status: int, ctype: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", CSP)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def parse_request(self) -> bool:
            # RFC 9112 2.2: empty lines before a request line are skipped (http.server would
            # close the connection without an answer); a few only, then it is a bad request.
            for _ in range(8):
                if self.raw_requestline not in (b"\r\n", b"\n"):
                    break
                self.raw_requestline = self.rfile.readline(65537)
            if not super().parse_request():
                return False
            if self.request_version == "HTTP/0.9":  # "GET /path": an answer with no status
                self.send_error(400, "HTTP/0.9 requests are not supported; use HTTP/1.x")
                return False
            return True

        def version_string(self) -> str:
            return self.server_version

        def send_error(self, code: int, message: str | None = None, explain=None) -> None:
            # http.server's own errors (bad request line, unknown method): one line too; a
            # method other than GET/POST is the client's error (405), not "unimplemented".
            self.close_connection = True
            code = 405 if code == 501 else code
            # An unparsable request line leaves the HTTP/0.9 default, which would drop the
            # status line; nobody speaks 0.9, so answer with a proper status line.
            self.request_version = "HTTP/1.0"
            status, ctype, data = error(code, message or self.responses.get(code, ("",))[0])
            with contextlib.suppress(OSError):  # the client may be gone already
                self._send(status, ctype, data)

        def log_message(self, format: str, *args: Any) -> None:
            if log is not None:
                log.write(f"{self.address_string()} {format % args}\n")

    return Handler


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer on IPv4 or IPv6 (by the host's form); ``url`` is its address."""

    daemon_threads = True  # Ctrl-C does not wait for a browser's idle keep-alive connection
    app: App | None = None  # set before serve_forever: binding first fails fast on a busy port

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        try:  # on a loopback address, requests must name it (see Handler._check_host)
            self.loopback = ipaddress.ip_address(self.server_address[0]).is_loopback
        except ValueError:
            self.loopback = False

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser drops requests it no longer needs (a drag moved on, a tab closed): a
        # broken pipe or reset is routine, not worth a line. Anything else gets one line.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        print(f"vaelab serve: {client_address[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def shutdown_request(self, request: Any) -> None:
        """Close a connection without resetting it: after our FIN, read (and drop) what
        the client still sends, up to ``LINGER_BYTES`` for ``LINGER_SECONDS``. Closing a
        socket with unread bytes sends a TCP reset, which makes the client drop the answer
        it has not read yet (a refused over-long body, a pipelined request)."""
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
            deadline, left = time.monotonic() + LINGER_SECONDS, LINGER_BYTES
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                request.settimeout(remaining)
                chunk = request.recv(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        self.close_request(request)


def make_server(
    app: App | None, host: str = "127.0.0.1", port: int = 8000, log: TextIO | None = None
) -> Server:
    """Bind ``app`` to ``host:port`` (port 0: any free port; see ``server.url``); the app
    may be set later (``server.app``), before ``serve_forever``."""
    try:
        server = Server((host, port), make_handler(log))
    except (OSError, OverflowError) as exc:
        raise VaelabError(f"--host {host} --port {port}: cannot listen there ({exc})") from None
    server.app = app
    return server


def build_app(
    run: str | Path, method: str = "pca", limit: int = 2000, device: str = "cpu", seed: int = 0
) -> App:
    """Load a run folder and prepare its explorer (codes, map, ranked dimensions)."""
    opened = open_run(run, device)
    explorer = Explorer(opened, load_test_images(opened), method, limit, seed=seed)
    return App(explorer, Path(run).name)


def serve(
    run: str | Path, port: int = 8000, host: str = "127.0.0.1", *, method: str = "pca",
    limit: int = 2000, device: str = "cpu", seed: int = 0, out: TextIO | None = None,
) -> None:  # fmt: skip
    """Serve the latent-space explorer of ``run`` at http://host:port/ until Ctrl-C.

    ``method`` (pca | tsne) maps latents of more than 2 dimensions onto the page's plane;
    ``limit`` test images make the map. ``host="0.0.0.0"`` exposes it to the network.
    """
    out = out or sys.stdout
    if not 0 <= port <= 65535:
        raise VaelabError(f"--port: must be in 0..65535, got {port}")
    if not Path(run).is_dir():  # before binding: the usual mistake gets the usual message
        raise VaelabError(f"{run}: no such run folder")
    server = make_server(None, host, port)  # a busy port fails now, not after the loading
    try:
        server.app = build_app(run, method, limit, device, seed)
    except BaseException:
        server.server_close()
        raise
    print(f"vaelab serve: {run} at {server.url} (Ctrl-C to stop)", file=out, flush=True)
    if host in ("0.0.0.0", "::", ""):
        print("vaelab serve: listening on every interface: anyone who can reach this machine "
              "can use the page", file=out, flush=True)  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("vaelab serve: stopped", file=out, flush=True)
    finally:
        server.server_close()
