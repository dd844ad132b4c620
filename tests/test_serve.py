"""vaelab serve without a browser: the map's inverse, the endpoints' images, bad requests."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from tests.serve_helpers import (
    MNIST_RUN,
    png_array,
    png_data_url,
    post,
    request,
    served,
    session_base,
    trained_run,
)

import vaelab
from vaelab.api import load
from vaelab.cli import main
from vaelab.data.prepare import to_unit
from vaelab.errors import VaelabError
from vaelab.evaluation.explore import decode_mean
from vaelab.web.app import MAX_BODY
from vaelab.web.latentmap import LatentMap, kernel_bandwidth


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    return trained_run(session_base(tmp_path_factory), "mnist", **MNIST_RUN)


@pytest.fixture(scope="module")
def mnist_url(mnist_run):
    with served(mnist_run) as url:
        yield url


@pytest.fixture(scope="module")
def mnist_model(mnist_run):
    return load(mnist_run)


# ---- the map and its inverse ------------------------------------------------------------------
def test_pca_map_matches_sklearn_and_a_click_projects_back_onto_itself():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(300, 6, generator=gen) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    m = LatentMap.fit(z, "pca")
    ref = PCA(2).fit_transform(z.double().numpy())  # an independent PCA (up to axis signs)
    signs = np.sign((ref * m.coords.numpy()).sum(0))
    np.testing.assert_allclose(m.coords.numpy(), ref * signs, atol=1e-9)
    for u, v in [(0.0, 0.0), (1.5, -2.0), (40.0, 30.0)]:  # also far outside the codes
        back = m.axes @ (m.to_latent(u, v).double() - m.mean)
        np.testing.assert_allclose(back.numpy(), [u, v], atol=1e-4)  # float32 z: ~1e-6 rel


def test_kernel_map_inverse_returns_the_code_of_an_isolated_point():
    # Three codes far apart on the map (t-SNE kind): clicking one returns its own code,
    # since the others' kernel weights are exp(-d^2 / 2h^2) ~ 0 at d >> h.
    z = torch.tensor([[1.0, 2.0, 3.0], [-4.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    coords = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)
    m = LatentMap("tsne", "t-SNE ", coords, z.double(), bandwidth=1.0)
    for i in range(3):
        assert torch.allclose(m.to_latent(*coords[i].tolist()), z[i])
    middle = m.to_latent(50.0, 0.0)  # equidistant from codes 0 and 1: their mean
    assert torch.allclose(middle, (z[0] + z[1]) / 2, atol=1e-5)


def test_kernel_bandwidth_is_the_median_fifth_neighbour_distance():
    pts = torch.from_numpy(np.random.default_rng(0).normal(size=(2500, 2)))
    dist, _ = NearestNeighbors(n_neighbors=6).fit(pts.numpy()).kneighbors(pts.numpy())
    assert kernel_bandwidth(pts, chunk=700) == pytest.approx(np.median(dist[:, 5]), rel=1e-9)


def test_two_d_latent_map_is_the_latent_itself(tmp_path_factory):
    run = trained_run(session_base(tmp_path_factory), "digits2d", latent_dim=2, epochs=3)
    model = load(run)
    with served(run, limit=100) as url:  # digits has 180 test images
        info = json.loads(request(url + "api/info")[1])
        assert info["map"]["kind"] == "z" and len(info["map"]["points"]) == 100
        out = post(url + "api/decode", {"xy": [0.7, -1.2]})
    assert out["z"] == pytest.approx([0.7, -1.2], abs=1e-5)
    # The PNG is the library's decoding of that z, quantized to 8 bits (<= 1/2 level + float).
    ref = decode_mean(model, torch.tensor([[0.7, -1.2]]))[0, 0].numpy() * 255
    assert np.abs(png_array(out["image"]).astype(float) - ref).max() <= 0.51


# ---- endpoints against the library ------------------------------------------------------------
def test_info_describes_the_run(mnist_url):
    status, data = request(mnist_url + "api/info")
    info = json.loads(data)
    assert status == 200 and info["image_shape"] == [1, 28, 28] and info["latent_dim"] == 8
    assert info["map"]["kind"] == "pca" and info["features"]["labels"]
    assert not info["features"]["conditional"] and info["features"]["sample"]
    assert len(info["map"]["points"]) == len(info["map"]["labels"])
    kl = [d["score"] for d in info["dims"]]
    assert kl == sorted(kl, reverse=True) and info["measure"] == "KL"


def test_decode_of_a_map_point_projects_back_and_matches_the_library(mnist_url, mnist_model):
    out = post(mnist_url + "api/decode", {"xy": [0.5, -0.25]})
    assert out["xy"] == pytest.approx([0.5, -0.25], abs=1e-4)
    ref = decode_mean(mnist_model, torch.tensor([out["z"]]))[0, 0].numpy() * 255
    img = png_array(out["image"])
    assert img.shape == (28, 28) and np.abs(img - ref).max() <= 0.6  # z rounded to 1e-5


def test_point_click_zero_spread_and_interpolation_ends_are_reconstructions(mnist_url, mnist_model):
    x = json.loads(request(mnist_url + "api/info")[1])
    assert x["image_shape"] == [1, 28, 28]
    test = png_array(request(mnist_url + "api/test-image/3")[1])
    recon = mnist_model.reconstruct(to_unit(torch.from_numpy(test)[None, None]))[0, 0] * 255
    sim = post(mnist_url + "api/similar", {"index": 3, "n": 3, "spread": 0.0})
    for url in sim["images"]:  # z = mu + 0 * sigma * eps = mu: the reconstruction
        assert np.abs(png_array(url) - recon.numpy()).max() <= 0.51
    clicked = post(mnist_url + "api/decode", {"index": 3})  # a click on the image's point
    assert np.abs(png_array(clicked["image"]) - recon.numpy()).max() <= 0.6
    path = post(mnist_url + "api/interpolate", {"a": 3, "b": 7, "steps": 5, "method": "spherical"})
    assert len(path["images"]) == 5
    assert np.abs(png_array(path["images"][0]) - recon.numpy()).max() <= 0.51
    spread = post(mnist_url + "api/similar", {"index": 3, "n": 3, "spread": 2.0})
    assert len({u for u in spread["images"]}) == 3  # noise: three different images


def test_completion_keeps_every_observed_pixel(mnist_url):
    original = png_array(request(mnist_url + "api/test-image/5")[1])
    mask = np.zeros((28, 28), bool)
    mask[:, :14] = True  # left half missing
    body = {"index": 5, "mask": "".join("1" if m else "0" for m in mask.flat), "n": 3,
            "steps": 10, "method": "mwg"}  # fmt: skip
    out = post(mnist_url + "api/complete", body)
    observed = png_array(out["observed"])
    assert (observed[mask] == 128).all() and (observed[~mask] == original[~mask]).all()
    assert len(out["images"]) == 3 and 0 <= out["acceptance"] <= 1
    for url in out["images"]:
        img = png_array(url)
        assert img.shape == (28, 28) and (img[~mask] == original[~mask]).all()
        assert (img[mask] != 128).any()  # the missing half was filled in


def test_samples_repeat_with_the_seed_and_change_with_it(mnist_url):
    a = post(mnist_url + "api/sample", {"n": 4, "temperature": 0.8, "seed": 5})["images"]
    b = post(mnist_url + "api/sample", {"n": 4, "temperature": 0.8, "seed": 5})["images"]
    c = post(mnist_url + "api/sample", {"n": 4, "temperature": 0.8, "seed": 6})["images"]
    assert a == b and a != c and png_array(a[0]).shape == (28, 28)


def test_upload_of_the_runs_shape_is_accepted(mnist_url):
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:16] = 255  # a "1"
    out = post(mnist_url + "api/similar", {"image": png_data_url(img), "n": 2, "spread": 0.5})
    assert len(out["images"]) == 2 and png_array(out["input"]).shape == (28, 28)


# ---- bad requests: 4xx with one line, and the server keeps answering ---------------------------
def _raw(url: str, payload: bytes) -> bytes:
    """Send bytes as they are (no client normalising the path) and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(payload)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status_and_reason(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    reason = json.loads(body)["error"]
    assert "\n" not in reason and reason
    return int(head.split()[1]), reason


@pytest.mark.parametrize(
    "path",
    ["/../../etc/passwd", "/static/../../../etc/passwd", "/static/%2e%2e/app.py",
     "/static/..%2f..%2fpyproject.toml", "//etc/passwd", "/static/app.js/../../x",
     "/api/test-image/../../../../etc/passwd", "/static/index.html", "/app.py", "/api/nothing"],
)  # fmt: skip
def test_unknown_and_traversal_paths_are_404(mnist_url, path):
    answer = _raw(
        mnist_url, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    status, _ = _status_and_reason(answer)
    assert status == 404 and b"root:" not in answer and b"[project]" not in answer


def _post_raw(url: str, body: bytes, headers: str) -> tuple[int, str]:
    head = f"POST /api/decode HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
    return _status_and_reason(_raw(url, head.encode() + body))


def test_bad_requests_get_a_4xx_and_one_line(mnist_url):
    j = "Content-Type: application/json\r\n"
    huge = f"{j}Content-Length: {MAX_BODY + 1}\r\n"
    assert _post_raw(mnist_url, b"", huge)[0] == 413  # refused before reading the body
    assert _post_raw(mnist_url, b"{}", j)[0] == 411  # no Content-Length
    assert (
        _post_raw(mnist_url, b"{}", "Content-Type: text/plain\r\nContent-Length: 2\r\n")[0] == 415
    )
    for body, expect in [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"z": [1, 2]}', "list of 8 finite numbers"),
        (b'{"z": [NaN, 0, 0, 0, 0, 0, 0, 0]}', "finite numbers"),
        (b'{"xy": ["a", 1]}', "finite numbers"),
        (b'{"xy": [0, 0], "label": 3}', "not conditioned on labels"),
    ]:
        status, reason = _post_raw(mnist_url, body, f"{j}Content-Length: {len(body)}\r\n")
        assert status == 400 and expect in reason, (body, reason)
    assert _status_and_reason(_raw(mnist_url, b"GET / HTTP/banana\r\n\r\n"))[0] == 400
    put = b"PUT /api/decode HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    assert _status_and_reason(_raw(mnist_url, put))[0] == 405
    assert request(mnist_url + "api/decode")[0] == 405  # GET of a POST endpoint
    # DNS rebinding: another site's name pointed at 127.0.0.1 is refused, localhost is not
    status, reason = _status_and_reason(
        _raw(mnist_url, b"GET /api/info HTTP/1.1\r\nHost: evil.example:8000\r\n\r\n")
    )
    assert status == 403 and "localhost only" in reason
    assert request(mnist_url + "api/info", headers={"Host": "localhost:1"})[0] == 200


@pytest.mark.parametrize(
    ("path", "body", "expect"),
    [
        ("similar", {"image": png_data_url(np.zeros((32, 32), np.uint8))},
         "is 32x32; this run's images are 28x28"),
        ("similar", {"image": "data:image/png;base64,aGVsbG8="}, "not a readable PNG"),
        ("similar", {"image": "data:image/gif;base64,R0lG"}, "PNG data URL"),
        ("similar", {"index": 1, "image": png_data_url(np.zeros((28, 28), np.uint8))},
         "one of them"),
        ("similar", {"index": 10**6}, "'index': expected an integer in"),
        ("similar", {"index": 1, "spread": -1}, "'spread'"),
        ("sample", {"n": 10**6}, "'n'"),
        ("sample", {"temperature": "hot"}, "'temperature'"),
        ("interpolate", {"a": 0, "b": 1, "method": "cubic"}, "linear, spherical"),
        ("interpolate", {"a": 0}, "'b': required"),
        ("complete", {"index": 0, "mask": "01"}, "784 characters"),
        ("complete", {"index": 0, "mask": "0" * 784, "method": "magic"}, "'method'"),
    ],
)  # fmt: skip
def test_bad_fields_name_the_field(mnist_url, path, body, expect):
    status, data = request(mnist_url + f"api/{path}", body)
    reason = json.loads(data)["error"]
    assert status == 400 and expect in reason and "\n" not in reason, reason


def test_server_still_answers_after_the_bad_requests(mnist_url):
    # Runs after the tests above (same module server): it must still decode.
    for _ in range(3):
        _raw(mnist_url, b"\x00\x01garbage\r\n\r\n")
    out = post(mnist_url + "api/decode", {"xy": [0.0, 0.0]})
    assert png_array(out["image"]).shape == (28, 28)


# ---- other models ------------------------------------------------------------------------------
def test_cvae_decodes_each_class_and_an_autoencoder_offers_no_sampling(tmp_path_factory):
    base = session_base(tmp_path_factory)
    cvae = trained_run(base, "cvae", model="cvae", num_classes=10, epochs=3, latent_dim=2)
    with served(cvae, limit=200) as url:
        info = json.loads(request(url + "api/info")[1])
        assert info["features"]["conditional"] and len(info["class_names"]) == 10
        images = {post(url + "api/decode", {"z": [0, 0], "label": c})["image"] for c in (0, 1, 7)}
        assert len(images) == 3  # one z, three classes: three different images
        assert len(post(url + "api/sample", {"n": 3, "label": 4})["images"]) == 3
        assert request(url + "api/decode", {"z": [0, 0], "label": 10})[0] == 400
    ae = trained_run(base, "ae", model="ae", epochs=2)
    with served(ae, limit=200) as url:
        info = json.loads(request(url + "api/info")[1])
        assert not (info["features"]["sample"] or info["features"]["similar"])
        assert info["measure"] == "activity"
        status, data = request(url + "api/sample", {"n": 2})
        assert status == 400 and "autoencoder" in json.loads(data)["error"]
        assert png_array(post(url + "api/decode", {"xy": [0, 0]})["image"]).shape == (8, 8)


def test_a_colour_run_answers_colour_images(tmp_path_factory):
    # digits tinted per class into RGB (real images, three channels), in an .npz archive
    from sklearn.datasets import load_digits

    digits = load_digits()
    tint = np.array([[255, 80, 80], [80, 255, 80], [80, 80, 255]], float)[digits.target % 3]
    grey = digits.images / 16.0
    rgb = (grey[..., None] * tint[:, None, None, :]).round().astype(np.uint8)  # (N, 8, 8, 3)
    base = session_base(tmp_path_factory)
    base.mkdir(parents=True, exist_ok=True)
    npz = base / "rgb-digits.npz"
    np.savez(npz, images=rgb[:1500], labels=digits.target[:1500], test_images=rgb[1500:],
             test_labels=digits.target[1500:])  # fmt: skip
    run = trained_run(base, "rgb", dataset=str(npz), epochs=2)
    with served(run, limit=100) as url:
        info = json.loads(request(url + "api/info")[1])
        assert info["image_shape"] == [3, 8, 8]
        assert png_array(post(url + "api/decode", {"xy": [0, 0]})["image"]).shape == (8, 8, 3)
        test = png_array(request(url + "api/test-image/0")[1])
        assert (test == rgb[1500]).all()  # the run's own test image, colours intact
        up = post(url + "api/similar", {"image": png_data_url(rgb[1501]), "n": 2})
        assert png_array(up["input"]).shape == (8, 8, 3)
        out = post(url + "api/complete", {"index": 0, "mask": "1" * 32 + "0" * 32, "n": 2})
        assert all(png_array(u)[4:].tolist() == test[4:].tolist() for u in out["images"])


# ---- the command line and the Python API --------------------------------------------------------
def test_vaelab_serve_is_the_function_after_every_submodule_is_imported():
    import vaelab.web.app  # importing a submodule again must not rebind vaelab.serve
    import vaelab.web.latentmap

    assert callable(vaelab.serve) and vaelab.serve.__module__ == "vaelab.web.app"


def test_cli_prints_its_address_serves_and_stops_cleanly_on_ctrl_c(mnist_run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "serve", str(mnist_run), "--port", "0", "--limit", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split(" at ")[1].split()[0]
        assert request(url)[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err


def test_cli_errors_are_one_line(mnist_run, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run folder" in err
    with socket.socket() as s:  # a port already taken: refused before the model loads
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", str(mnist_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--port {port}: cannot listen" in err
    assert main(["serve", str(mnist_run), "--limit", "0"]) == 2
    assert "--limit: must be at least 1" in capsys.readouterr().err
    with pytest.raises(VaelabError, match="--port"):
        vaelab.serve(mnist_run, port=70000)


def test_keep_alive_connection_serves_many_requests(mnist_url):
    parts = urlsplit(mnist_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    for i in range(5):
        conn.request("POST", "/api/decode", json.dumps({"xy": [i * 0.1, 0]}),
                     {"Content-Type": "application/json"})  # fmt: skip
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["image"]
    conn.close()
