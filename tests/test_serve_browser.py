"""vaelab serve in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

The page is driven as a user would: click and drag on the map, move a slider, paint a
mask; each test checks the images that come back (they change, they have the run's shape,
they are what the model decodes). Set VAELAB_SERVE_SCREENSHOT=docs/images/serve.png to
keep the README's screenshot (of VAELAB_SERVE_SCREENSHOT_RUN when given, e.g. runs/demo).
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.serve_helpers import MNIST_RUN, png_array, served, session_base, trained_run

from vaelab.api import load
from vaelab.evaluation.explore import decode_mean

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the dev extra installs it
    webdriver = None

pytestmark = [
    pytest.mark.skipif(webdriver is None, reason="selenium not installed (pip install -e .[dev])"),
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="chromium and chromedriver not installed (apt-get install chromium chromium-driver)",
    ),
]
WAIT = 30  # seconds; requests answer in well under a second, the margin is for a busy CPU


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1010", "--hide-scrollbars"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    # The window's size includes browser chrome; fix the page's own viewport instead.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
    )
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    return trained_run(session_base(tmp_path_factory), "mnist", **MNIST_RUN)


def _src(d, element_id: str) -> str:
    return d.execute_script("return document.getElementById(arguments[0]).src", element_id)


def _images(d, css: str) -> list[str]:
    # One script call: the page replaces its tiles, so element handles can go stale.
    return d.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((i) => i.src)", css
    )


def _wait(d, predicate, what: str):
    return WebDriverWait(d, WAIT).until(lambda d: predicate(d), message=what)


def _settled(d) -> bool:
    """No request in flight and every image of the page loaded."""
    return d.execute_script(
        "return document.body.dataset.ready === '1' && document.body.dataset.busy === '0' &&"
        " [...document.images].every((i) => !i.src || i.complete)"
    )


def _open(d, url: str) -> None:
    d.get(url)
    _wait(d, _settled, "the page did not finish loading")
    _wait(d, lambda d: _src(d, "decoded").startswith("data:image/png"), "no decoded image")


def _shape_ok(urls: list[str], shape=(28, 28)) -> bool:
    return bool(urls) and all(png_array(u).shape == shape for u in urls)


@pytest.fixture(scope="module")
def page(browser, mnist_run):
    with served(mnist_run) as url:
        _open(browser, url)
        _wait(browser, lambda d: len(_images(d, "#completions img")) == 6, "no completions")
        yield browser, load(mnist_run)


def _map_offset(d, i: int) -> tuple[float, float]:
    """Offset of map point ``i`` from the canvas centre, in CSS pixels."""
    return d.execute_script(
        "const c = document.getElementById('map'), r = c.getBoundingClientRect();"
        "const p = state.info.map.points[arguments[0]], [x, y] = toCanvas(p[0], p[1]);"
        "return [x * r.width / c.width - r.width / 2, y * r.height / c.height - r.height / 2];",
        i,
    )


def test_page_shows_every_tool_with_images_of_the_runs_shape(page):
    d, _ = page
    assert _shape_ok([_src(d, "decoded")])
    assert len(_images(d, "#samples img")) == 15 and _shape_ok(_images(d, "#samples img"))
    assert _shape_ok(_images(d, "#similar-out img")) and _shape_ok([_src(d, "similar-input")])
    rows = _images(d, "#interp-rows img")
    assert len(rows) == 20 and _shape_ok(rows)  # linear and spherical, 10 steps each
    assert _shape_ok(_images(d, "#completions img")) and _shape_ok([_src(d, "observed")])
    legend = d.find_element(By.ID, "legend").text
    assert all(str(c) in legend for c in range(10))
    assert not d.find_element(By.ID, "label-picker").is_displayed()  # a plain VAE
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_click_and_drag_on_the_map_decode_what_the_model_decodes(page):
    d, model = page
    canvas = d.find_element(By.ID, "map")
    before = _src(d, "decoded")
    ActionChains(d).move_to_element_with_offset(canvas, 150, -120).click().perform()
    _wait(d, lambda d: _src(d, "decoded") != before and _settled(d), "a click decoded nothing")
    clicked = _src(d, "decoded")
    # The image shown is the model's decoding of the z the page holds (8-bit PNG).
    z = torch.tensor([d.execute_script("return state.z")])
    ref = decode_mean(model, z)[0, 0].numpy() * 255
    assert np.abs(png_array(clicked) - ref).max() <= 0.6
    seen = {clicked}
    drag = ActionChains(d).move_to_element_with_offset(canvas, 150, -120).click_and_hold()
    for _ in range(5):
        drag.move_by_offset(-40, 30).pause(0.15)
    drag.release().perform()
    _wait(d, _settled, "the drag's decodes did not finish")
    seen.add(_src(d, "decoded"))
    assert len(seen) == 2 and _shape_ok(list(seen))
    mx, my = d.execute_script("return state.marker")
    assert mx < 0 < my or mx < my  # the marker moved left and down with the drag


def test_hovering_a_point_shows_its_test_image(page):
    d, _ = page
    dx, dy = _map_offset(d, 7)
    ActionChains(d).move_to_element_with_offset(d.find_element(By.ID, "map"), dx, dy).perform()
    _wait(d, lambda d: d.find_element(By.ID, "hover").is_displayed(), "no hover box")
    src = _src(d, "hover-img")
    assert src.endswith("/api/test-image/7") or "#7" in d.find_element(By.ID, "hover").text


def test_a_slider_moves_one_dimension_and_changes_the_image(page):
    d, _ = page
    _wait(d, _settled, "busy")
    z_before = d.execute_script("return state.z.slice()")
    before = _src(d, "decoded")
    slider = d.find_elements(By.CSS_SELECTOR, "#sliders input")[0]
    dim = int(slider.get_attribute("data-dim"))
    width = slider.size["width"]
    ActionChains(d).move_to_element_with_offset(slider, int(width * 0.45), 0).click().perform()
    _wait(d, lambda d: _src(d, "decoded") != before and _settled(d), "the slider decoded nothing")
    z_after = d.execute_script("return state.z.slice()")
    changed = [
        i for i, (a, b) in enumerate(zip(z_before, z_after, strict=True)) if abs(a - b) > 1e-4
    ]
    assert changed == [dim]  # only the slider's dimension moved
    assert z_after[dim] == pytest.approx(float(slider.get_attribute("value")), abs=1e-3)
    assert _shape_ok([_src(d, "decoded")])


def test_painting_a_mask_completes_the_painted_pixels(page):
    d, _ = page
    shown = _src(d, "observed")
    d.find_element(By.CSS_SELECTOR, "[data-preset=clear]").click()
    _wait(d, lambda d: _src(d, "observed") != shown and _settled(d), "Clear completed nothing")
    original = png_array(_src(d, "observed"))  # nothing missing: the test image itself
    canvas = d.find_element(By.ID, "mask")
    w = canvas.size["width"]
    before = _images(d, "#completions img")
    paint = ActionChains(d).move_to_element_with_offset(canvas, -w // 3, -w // 8).click_and_hold()
    for _ in range(6):
        paint.move_by_offset(w // 9, 0).pause(0.05)
    paint.release().perform()
    _wait(d, lambda d: _images(d, "#completions img") != before and _settled(d), "no completion")
    painted = np.array(d.execute_script("return Array.from(state.mask)"), bool).reshape(28, 28)
    assert 10 <= painted.sum() <= 300  # a stroke of a medium brush across the image
    observed = png_array(_src(d, "observed"))  # what the model saw: painted pixels grey
    assert (observed[painted] == 128).all() and (observed[~painted] == original[~painted]).all()
    completions = [png_array(u) for u in _images(d, "#completions img")]
    assert len(completions) == 6 and all(c.shape == (28, 28) for c in completions)
    for c in completions:  # observed pixels kept; painted ones filled by the model
        assert (c[~painted] == original[~painted]).all()
    assert any((c[painted] != original[painted]).any() for c in completions)


def test_an_uploaded_picture_of_another_size_is_drawn_at_the_runs_size(page, tmp_path):
    d, _ = page
    picture = np.zeros((60, 40, 3), np.uint8)
    picture[10:50, 17:23] = (255, 200, 0)  # a yellow "1" on black, not 28x28, in colour
    path = tmp_path / "one.png"
    Image.fromarray(picture).save(path)
    before = _src(d, "similar-input")
    d.find_element(By.ID, "upload").send_keys(str(path))
    _wait(d, lambda d: _src(d, "similar-input") != before and _settled(d), "upload ignored")
    seen = png_array(_src(d, "similar-input"))  # the page resized it, the server made it grey
    assert seen.shape == (28, 28) and seen[14, 14] > 100 and seen[14, 3] == 0
    assert _shape_ok(_images(d, "#similar-out img"))


def test_new_images_and_the_temperature_slider_redraw_the_samples(page):
    d, _ = page
    before = _images(d, "#samples img")
    d.find_element(By.ID, "new-images").click()
    _wait(d, lambda d: _images(d, "#samples img") != before and _settled(d), "no new images")
    drawn = _images(d, "#samples img")
    slider = d.find_element(By.ID, "temperature")
    ActionChains(d).move_to_element_with_offset(
        slider, -slider.size["width"] // 3, 0
    ).click().perform()
    _wait(d, lambda d: _images(d, "#samples img") != drawn and _settled(d), "T changed nothing")
    assert float(d.find_element(By.ID, "temperature-value").text) < 1
    assert _shape_ok(_images(d, "#samples img"))


def test_screenshot(page, tmp_path):
    d, _ = page
    size = {"width": 1400, "height": 1150, "deviceScaleFactor": 1, "mobile": False}
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", size)
    other = os.environ.get("VAELAB_SERVE_SCREENSHOT_RUN")  # e.g. the README's runs/demo
    with served(Path(other)) if other else nullcontext(None) as url:
        _screenshot(d, url or d.current_url, tmp_path / "serve.png")


def _screenshot(d, url: str, shot: Path) -> None:
    _open(d, url)  # a fresh page: the state a user sees after one click and a hover
    labels = d.execute_script("return state.info.map.labels") or []
    # click the first image of class 2, hover one of class 6 (images 0 and 1 without labels)
    click, hover = (labels.index(2), labels.index(6)) if {2, 6} <= set(labels) else (0, 1)
    dx, dy = _map_offset(d, click)
    canvas = d.find_element(By.ID, "map")
    ActionChains(d).move_to_element_with_offset(canvas, dx, dy).click().perform()
    _wait(d, _settled, "the click's decode did not finish")
    dx, dy = _map_offset(d, hover)
    ActionChains(d).move_to_element_with_offset(canvas, dx, dy).perform()
    _wait(d, lambda d: _settled(d) and d.find_element(By.ID, "hover").is_displayed(), "hover")
    assert d.save_screenshot(str(shot))
    pixels = png_array(shot.read_bytes())
    assert pixels.shape[:2] == (1150, 1400) and pixels.std() > 10  # a page, not a blank
    if os.environ.get("VAELAB_SERVE_SCREENSHOT"):
        keep = Path(os.environ["VAELAB_SERVE_SCREENSHOT"])
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)


def test_conditional_and_autoencoder_runs_show_only_what_applies(browser, tmp_path_factory):
    base = session_base(tmp_path_factory)
    cvae = trained_run(base, "cvae", model="cvae", num_classes=10, epochs=3, latent_dim=2)
    with served(cvae, limit=180) as url:
        _open(browser, url)
        picker = browser.find_element(By.ID, "label")
        assert picker.is_displayed()
        before = _images(browser, "#samples img")
        Select(picker).select_by_index(7)
        _wait(browser, lambda d: _images(d, "#samples img") != before and _settled(d), "no label")
        assert _shape_ok(_images(browser, "#samples img"), (8, 8))
    ae = trained_run(base, "ae", model="ae", epochs=2)
    with served(ae, limit=180) as url:
        _open(browser, url)
        for card in ("sample-card", "similar-card", "complete-card"):
            assert not browser.find_element(By.ID, card).is_displayed()
        assert browser.find_element(By.ID, "interp-card").is_displayed()
        assert _shape_ok([_src(browser, "decoded")], (8, 8))


def test_a_vq_run_samples_from_its_code_prior_or_says_how_to_train_one(browser, tmp_path_factory):
    """A VQ-VAE run: without a code prior the sample card says so in one line naming
    `vaelab train-prior`; similar images (nearby codes) and completion work; with a prior
    the card draws images. VAELAB_SERVE_SCREENSHOT_VQ=path keeps a screenshot (of
    VAELAB_SERVE_SCREENSHOT_VQ_RUN when given)."""
    from vaelab.cli import main

    run = session_base(tmp_path_factory) / "vq"
    if not (run / "checkpoint.safetensors").is_file():
        assert main(["train", "--model", "vqvae", "--arch", "conv", "--hidden", "8,8",
                     "--blocks", "1", "--latent-dim", "4", "--codes", "8", "--dataset",
                     "digits", "--binarize", "static", "--epochs", "1", "--progress", "false",
                     "--report", "false", "--out", str(run)]) == 0  # fmt: skip
    with served(run, limit=180) as url:
        _open(browser, url)
        _wait(browser, lambda d: len(_images(d, "#completions img")) == 6, "no completions")
        note = browser.find_element(By.ID, "sample-note")
        assert note.is_displayed() and "vaelab train-prior" in note.text
        assert not _images(browser, "#samples img")
        assert not browser.find_element(By.ID, "samples").is_displayed()
        assert len(_images(browser, "#similar-out img")) == 10
        assert _shape_ok(_images(browser, "#similar-out img"), (8, 8))
        assert "codebook" in browser.find_element(By.ID, "similar-caption").text
        assert browser.find_element(By.ID, "codes-card").is_displayed()
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # the page never asked /api/sample (that would be a 400)
    assert main(["train-prior", str(run), "--epochs", "1", "--width", "8", "--layers", "2"]) == 0
    with served(run, limit=180) as url:
        _open(browser, url)
        _wait(browser, lambda d: len(_images(d, "#samples img")) == 15, "no samples")
        assert not browser.find_element(By.ID, "sample-note").is_displayed()
        assert _shape_ok(_images(browser, "#samples img"), (8, 8))
    other = os.environ.get("VAELAB_SERVE_SCREENSHOT_VQ_RUN")
    if os.environ.get("VAELAB_SERVE_SCREENSHOT_VQ"):
        size = {"width": 1400, "height": 1150, "deviceScaleFactor": 1, "mobile": False}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", size)
        with served(Path(other) if other else run) as url:
            _open(browser, url)
            _wait(browser, _settled, "the page did not settle")
            shot = Path(os.environ["VAELAB_SERVE_SCREENSHOT_VQ"])
            shot.parent.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(shot))
