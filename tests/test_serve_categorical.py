"""vaelab serve on latents that are not R^D: categorical groups (gumbel, JointVAE) get a class
selector, not sliders, and every decoded code is one-hot in each group; the sphere (svae)
decodes z/|z|. API tests on tiny digits runs, and one click in a real headless Chromium."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.serve_helpers import (
    png_array,
    post,
    request,
    running,
    served,
    session_base,
    trained_run,
)
from torch.distributions import Categorical, kl_divergence

import vaelab.models  # noqa: F401  (registers the families whose options the config reads)
from vaelab.api import load
from vaelab.data.prepare import to_unit
from vaelab.evaluation.explore import decode_mean
from vaelab.web.app import build_app

# JointVAE on digits: 2 Gaussian dims + 2 groups of 4 classes, the capacity objective so that
# the groups carry information (their KL rises toward C_c; ~8 s once per session).
GUMBEL_RUN = {"model": "gumbel", "joint": True, "cat_vars": 2, "categories": 4, "latent_dim": 2,
              "epochs": 10, "objective": "capacity", "capacity_steps": 150,
              "disc_capacity": 1.3, "cont_capacity": 3.0}  # fmt: skip
DC, V, C = 2, 2, 4
PNG_TOL = 0.51  # the page's PNG rounds each pixel of the decoded mean to 1/255


@pytest.fixture(scope="module")
def gumbel_run(tmp_path_factory):
    return trained_run(session_base(tmp_path_factory), "gumbel-joint", **GUMBEL_RUN)


@pytest.fixture(scope="module")
def gumbel(gumbel_run):
    app = build_app(gumbel_run)
    return app, app.explorer.model


def _one_hot(zc: list[float], classes: list[int]) -> torch.Tensor:
    y = torch.zeros(V, C)
    y[torch.arange(V), torch.tensor(classes)] = 1
    return torch.cat([torch.tensor(zc, dtype=torch.float32), y.flatten()])


def _decoded(model, z: torch.Tensor) -> np.ndarray:
    return decode_mean(model, z[None])[0, 0].numpy() * 255


def test_info_names_each_group_with_its_classes_ranked_by_its_kl(gumbel):
    app, model = gumbel
    info = app.explorer.info("run")
    assert info["latent_space"] == "categorical"
    # Sliders only for the Gaussian dims: a one-hot coordinate has no continuous axis.
    assert sorted(d["index"] for d in info["dims"]) == list(range(DC))
    groups = info["groups"]
    assert sorted(g["group"] for g in groups) == list(range(V))
    assert all(g["name"] == f"cat {g['group']}" for g in groups)
    assert all(g["classes"] == [f"category {k}" for k in range(C)] for g in groups)
    # Each group's score is its KL(Cat(pi(x)) || U(C)) averaged over the map's images, here
    # from torch.distributions (the server sums the per-coordinate split of explore.py).
    with torch.no_grad():
        logits = model.encode(to_unit(app.explorer.images)).logits  # (N, V, C)
    uniform = Categorical(logits=torch.zeros(C))
    kl = [float(kl_divergence(Categorical(logits=logits[:, g]), uniform).mean()) for g in range(V)]
    for g in groups:
        assert g["score"] == pytest.approx(kl[g["group"]], abs=2e-4)  # rounded to 4 places
        assert 0.05 < g["score"] <= math.log(C)  # the capacity objective made them carry bits
    assert [g["score"] for g in groups] == sorted((g["score"] for g in groups), reverse=True)


def test_decoding_a_chosen_class_is_the_decoder_at_the_one_hot_code(gumbel):
    app, model = gumbel
    with running(app) as url:
        clicked = post(url + "api/decode", {"index": 5})
        zc = clicked["z"][:DC]
        seen = set()
        for k in range(C):
            r = post(url + "api/decode", {"z": clicked["z"], "classes": [k, 3 - k]})
            z = _one_hot(zc, [k, 3 - k])
            assert r["classes"] == [k, 3 - k]
            assert r["z"] == pytest.approx(z.tolist(), abs=1e-5)
            image = png_array(r["image"]).astype(float)
            assert np.abs(image - _decoded(model, z)).max() <= PNG_TOL
            seen.add(image.tobytes())
        assert len(seen) == C  # the classes decode to different images: the choice matters


def test_a_code_that_is_not_one_hot_decodes_at_each_groups_argmax(gumbel):
    app, model = gumbel
    with running(app) as url:
        # A map point or an old slider's code: groups that are mixtures of classes.
        mixed = [0.3, -0.5, 0.2, 0.5, 0.3, 0.0, 0.1, 0.1, 0.7, 0.1]
        r = post(url + "api/decode", {"z": mixed})
        assert r["classes"] == [1, 2]
        z = _one_hot(mixed[:DC], [1, 2])
        image = png_array(r["image"]).astype(float)
        assert np.abs(image - _decoded(model, z)).max() <= PNG_TOL
        raw = _decoded(model, torch.tensor(mixed))
        assert np.abs(image - raw).max() > 2  # what the old sliders showed is not this
        # A click on the map (PCA inverse: a weighted mixture of codes) decodes one-hot too.
        r = post(url + "api/decode", {"xy": [0.1, -0.2]})
        groups = torch.tensor(r["z"][DC:]).reshape(V, C)
        assert (groups.sum(1) == 1).all() and ((groups == 0) | (groups == 1)).all()


def test_clicking_a_test_image_selects_the_argmax_of_q_c_given_x(gumbel):
    app, model = gumbel
    ex = app.explorer
    with torch.no_grad():
        logits = model.encode(to_unit(ex.images[:20])).logits
    with running(app) as url:
        for i in range(20):
            r = post(url + "api/decode", {"index": i})
            assert r["classes"] == logits[i].argmax(-1).tolist()


def test_bad_classes_are_refused_in_one_line(gumbel):
    app, _ = gumbel
    with running(app) as url:
        z = [0.0] * (DC + V * C)
        for body, words in [
            ({"z": z, "classes": [1]}, "expected 2 classes"),
            ({"z": z, "classes": [0, 4]}, "each in 0..3"),
            ({"z": z, "classes": [0, 1.5]}, "list of integers"),
            ({"z": z, "classes": "0,1"}, "list of integers"),
        ]:
            status, data = request(url + "api/decode", body)
            assert status == 400 and words in data.decode(), data


@pytest.mark.filterwarnings("ignore:posterior collapse")  # 2 epochs of a tiny svae
def test_a_run_without_groups_refuses_classes_and_keeps_its_sliders(tmp_path_factory):
    run = trained_run(session_base(tmp_path_factory), "svae", model="svae", latent_dim=3)
    app = build_app(run)
    info = app.explorer.info("run")
    assert info["groups"] == [] and info["latent_space"] == "sphere"
    assert len(info["dims"]) == 3
    with running(app) as url:
        status, data = request(url + "api/decode", {"z": [1.0, 0.0, 0.0], "classes": [0]})
        assert status == 400 and b"no categorical latents" in data
        # A slider moved one coordinate off the sphere: the page decodes z/|z| and says so.
        off = [0.6, -1.7, 0.4]
        r = post(url + "api/decode", {"z": off})
        unit = torch.tensor(off) / torch.tensor(off).norm()
        assert r["z"] == pytest.approx(unit.tolist(), abs=1e-5)
        assert r["classes"] == []
        model = app.explorer.model
        assert np.abs(png_array(r["image"]) - _decoded(model, unit)).max() <= PNG_TOL


# ---- one click in a real browser ------------------------------------------------------------
def test_clicking_a_class_button_decodes_that_class(gumbel_run):
    pytest.importorskip("selenium")
    from tests.test_serve_browser import CHROMIUM, DRIVER, _images, _settled, _src, _wait

    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium and chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1010"):  # fmt: skip
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    model = load(gumbel_run)
    try:
        with served(gumbel_run) as url:
            d.get(url)
            _wait(d, _settled, "the page did not finish loading")
            _wait(d, lambda d: _src(d, "decoded").startswith("data:image/png"), "no image")
            # Sliders only for the 2 Gaussian dims; one row of C class buttons per group.
            dims = [int(s.get_attribute("data-dim"))
                    for s in d.find_elements(By.CSS_SELECTOR, "#sliders input")]  # fmt: skip
            assert sorted(dims) == list(range(DC))
            assert d.find_element(By.ID, "groups-box").is_displayed()
            assert len(d.find_elements(By.CSS_SELECTOR, "#groups button")) == V * C
            classes = d.execute_script("return state.groupClasses")
            pressed = d.execute_script(
                "return [...document.querySelectorAll('#groups button[aria-pressed=true]')]"
                ".map((b) => [Number(b.dataset.group), Number(b.dataset.cls)])"
            )
            assert sorted(pressed) == [[g, classes[g]] for g in range(V)]  # test image 0's
            g, k = 1, (classes[1] + 1) % C
            before = _src(d, "decoded")
            d.find_element(By.CSS_SELECTOR, f"#groups [data-group='{g}'][data-cls='{k}']").click()
            _wait(d, lambda d: _src(d, "decoded") != before and _settled(d), "no new image")
            assert d.execute_script("return state.groupClasses")[g] == k
            button = d.find_element(By.CSS_SELECTOR, f"#groups [data-group='{g}'][data-cls='{k}']")
            assert button.get_attribute("aria-pressed") == "true"
            z = torch.tensor(d.execute_script("return state.z"))
            assert z[DC + g * C : DC + (g + 1) * C].tolist() == [float(j == k) for j in range(C)]
            shown = png_array(_src(d, "decoded")).astype(float)
            assert np.abs(shown - _decoded(model, z)).max() <= PNG_TOL
            for _ in range(3):  # Random classes: a class per group from U(C), decoded one-hot
                d.find_element(By.ID, "random-classes").click()
                _wait(d, _settled, "Random classes did not finish")
                drawn = d.execute_script("return state.groupClasses")
                assert len(drawn) == V and all(0 <= c < C for c in drawn)
                z = torch.tensor(d.execute_script("return state.z"))
                assert z[DC:].reshape(V, C).argmax(1).tolist() == drawn
                assert z[DC:].sum() == V and ((z[DC:] == 0) | (z[DC:] == 1)).all()
                image = png_array(_src(d, "decoded")).astype(float)
                assert np.abs(image - _decoded(model, z)).max() <= PNG_TOL
            assert _images(d, "#samples img")  # New images still draws (classes ~ U(C))
            # The map's points keep their class colours (the page's own state is untouched:
            # a name clash once painted them white on white).
            coloured = d.execute_script(
                "const c = document.getElementById('map'), ctx = c.getContext('2d');"
                "const p = ctx.getImageData(0, 0, c.width, c.height).data; let n = 0;"
                "for (let i = 0; i < p.length; i += 4) {"
                "  const [r, g, b] = [p[i], p[i + 1], p[i + 2]];"
                "  if (Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;"
                "} return n;"
            )
            assert coloured > 500  # hundreds of dots of radius 2.4 px in tab10 colours
            errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, errors
    finally:
        d.quit()
