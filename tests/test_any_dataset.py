"""Every command on any dataset it accepts (issue 24, item 1), property-based.

Hypothesis builds image folders a user might have: 2 to 14 images, 1x1 to 9x9 pixels,
grey, RGB, RGBA, grey + alpha, palette or 16-bit PNGs, unlabelled or in 1 to 3 class
folders; and a model (vae, cvae, ae, hvae, deep; mlp or conv). Each is trained for one
epoch and then taken through sample, reconstruct, similar, interpolate, traverse,
latent-plot, evaluate, report and the explorer's handlers. Every command must either do
its work (exit 0) or refuse in one line (exit 2, ``vaelab CMD: error: ...``): no
traceback, never a 5xx from the explorer. A VAE on any such folder must train and draw.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaelab.cli import main
from vaelab.web.app import build_app

pytestmark = pytest.mark.usefixtures("single_thread")

MODES = ("L", "RGB", "RGBA", "LA", "P", "I;16")


def write_image(path: Path, mode: str, h: int, w: int, rng: np.random.Generator) -> None:
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(path)
        return
    bands = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2, "P": 3}[mode]
    pixels = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    if mode == "P":
        Image.fromarray(pixels, "RGB").convert("P").save(path)
    elif bands == 1:
        Image.fromarray(pixels[..., 0]).save(path)
    else:
        Image.fromarray(pixels, mode).save(path)


@st.composite
def datasets(draw):
    n = draw(st.integers(2, 14))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    modes = draw(st.lists(st.sampled_from(MODES), min_size=1, max_size=3))
    classes = draw(st.sampled_from([0, 0, 1, 2, 3]))
    return {"n": n, "h": h, "w": w, "modes": modes, "classes": classes,
            "seed": draw(st.integers(0, 2**16))}  # fmt: skip


MODELS = st.sampled_from([
    ["--model", "vae"], ["--model", "vae", "--arch", "conv"], ["--model", "ae"],
    ["--model", "hvae"], ["--model", "deep"], ["--model", "cvae"],
    ["--model", "vae", "--likelihood", "dlogistic"],
])  # fmt: skip


def build(root: Path, spec: dict) -> Path:
    rng = np.random.default_rng(spec["seed"])
    for i in range(spec["n"]):
        where = root / f"class{i % spec['classes']}" if spec["classes"] else root
        where.mkdir(parents=True, exist_ok=True)
        write_image(where / f"{i}.png", spec["modes"][i % len(spec["modes"])], spec["h"],
                    spec["w"], rng)  # fmt: skip
    return root


def run_cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue()


def check(args: list[str]) -> int:
    """Run one command: it works, or refuses in one line."""
    code, err = run_cli(args)
    assert code in (0, 2), (args, code, err)
    assert "Traceback" not in err, (args, err)
    if code == 2:
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and err.strip().endswith(errors[0]), (args, err)
    return code


def explorer_answers(run: Path, images: int, h: int, w: int) -> list[int]:
    app = build_app(run, limit=50)
    statuses = [app.handle("GET", "/api/info")[0], app.handle("GET", "/api/test-image/0")[0]]
    for path, body in [
        ("/api/decode", {"xy": [0.5, -0.5]}), ("/api/decode", {"index": images - 1}),
        ("/api/sample", {"n": 3}), ("/api/similar", {"index": 0, "n": 2}),
        ("/api/interpolate", {"a": 0, "b": images - 1, "steps": 3}),
        ("/api/complete", {"index": 0, "mask": "1" * (h * w), "n": 1, "steps": 2}),
    ]:  # fmt: skip
        status, ctype, data = app.handle("POST", path, json.dumps(body).encode())
        assert status < 500 and ctype == "application/json", (path, data)
        statuses.append(status)
    return statuses


# No shrinking: each example trains a model (seconds); a failure prints its spec as drawn.
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    derandomize=True,  # the same examples in CI as here; new ones come from a changed seed
)
# Found by a CI run: a 2-D conditional model's end-of-run manifold decoded without a label.
@example(spec={"n": 4, "h": 9, "w": 2, "modes": ["L", "P"], "classes": 3, "seed": 153},
         model=["--model", "cvae"])  # fmt: skip
@given(spec=datasets(), model=MODELS)
def test_every_command_works_or_refuses_in_one_line(spec, model):
    tmp = Path(tempfile.mkdtemp(prefix="vaelab-any-"))
    try:
        data, run = build(tmp / "data", spec), tmp / "run"
        flags = ["--dataset", str(data), "--epochs", "1", "--hidden", "8", "--latent-dim", "2",
                 "--batch-size", "4", "--progress", "false", "--out", str(run)]  # fmt: skip
        if model[1] == "cvae" and spec["classes"]:
            model = [*model, "--num-classes", str(spec["classes"])]
        trained = check(["train", *flags, *model])
        plain_vae = model == ["--model", "vae"]
        if plain_vae:  # every folder of readable images is a dataset a VAE trains on
            assert trained == 0
        if trained != 0:
            assert not run.exists()  # refused before any work: nothing created
            return
        codes = {name: check([name, str(run), *extra]) for name, extra in [
            ("sample", ["-n", "4"]), ("reconstruct", []), ("similar", ["--index", "0"]),
            ("interpolate", ["--from", "0", "--to", "0"]), ("traverse", []),
            ("latent-plot", []), ("evaluate", ["--samples", "2"]), ("report", []),
        ]}  # fmt: skip
        if plain_vae:
            assert set(codes.values()) == {0}, codes
        images = len(list((run / "outputs").glob("*"))) and _test_images(run)
        statuses = explorer_answers(run, images, spec["h"], spec["w"])
        if plain_vae:
            assert set(statuses) == {200}, statuses
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _test_images(run: Path) -> int:
    from vaelab.api import load_test_images, open_run

    with contextlib.redirect_stderr(io.StringIO()):
        return len(load_test_images(open_run(run)).test_x)
