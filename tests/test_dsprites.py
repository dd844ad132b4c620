"""dSprites rendered from its definition, its per-image factors, and factors from NPZ files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vaelab.data import load_dataset
from vaelab.data.dsprites import (
    DSPRITES,
    DSPRITES_SMALL,
    FACTOR_NAMES,
    HEART_CENTROID,
    _inside,
    all_classes,
    load_sprites,
    render,
    sprite_patches,
)
from vaelab.errors import VaelabError


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return render(DSPRITES_SMALL, progress=False)


def test_counts_and_index_formula() -> None:
    assert DSPRITES.count == 737_280
    assert DSPRITES.factor_sizes == (1, 3, 6, 40, 32, 32)
    classes = all_classes(DSPRITES.factor_sizes)
    assert classes.shape == (737_280, 6)
    # the README's order: posY fastest, index = classes . [737280, 245760, 40960, 1024, 32, 1]
    strides = np.array([737280, 245760, 40960, 1024, 32, 1])
    assert (_strides(DSPRITES.factor_sizes) == strides).all()
    assert (classes @ strides == np.arange(737_280)).all()
    values = DSPRITES.factor_values()
    assert values[2] == pytest.approx(np.linspace(0.5, 1, 6))
    assert values[3].min() == 0 and values[3].max() < 2 * np.pi and len(values[3]) == 40
    assert values[4][0] == 0 and values[4][-1] == 1


def test_small_set_is_binary_and_complete(small: np.ndarray) -> None:
    assert small.shape == (DSPRITES_SMALL.count, 1, 32, 32) == (46080, 1, 32, 32)
    assert set(np.unique(small)) == {0, 255}
    assert (small.reshape(len(small), -1).max(1) == 255).all()  # a sprite in every image
    # a sprite never touches the border: nothing is clipped at any position
    assert not small[:, :, [0, -1]].any() and not small[:, :, :, [0, -1]].any()


def _strides(sizes: tuple[int, ...]) -> np.ndarray:
    # row-major strides, last factor fastest: for dSprites [737280, 245760, ..., 32, 1]
    return np.append(np.cumprod(sizes[::-1])[::-1][1:], 1)


def _moments(img: np.ndarray) -> tuple[float, float, float]:
    on = img[0] > 0
    rows, cols = np.nonzero(on)
    return float(cols.mean()), float(rows.mean()), float(on.sum())


def test_position_factors_translate_the_sprite(small: np.ndarray) -> None:
    s = DSPRITES_SMALL
    strides = _strides(s.factor_sizes)
    for shape, scale, orient in [(0, 5, 0), (2, 3, 7), (1, 0, 4)]:
        base = np.array([0, shape, scale, orient, 0, 0])
        x0, y0, a0 = _moments(small[base @ strides])
        for px, py in [(3, 0), (0, 5), (15, 15)]:
            x, y, a = _moments(small[(base + np.array([0, 0, 0, 0, px, py])) @ strides])
            # one pixel per position step: the centre of mass moves exactly, area unchanged
            assert (x - x0, y - y0, a) == pytest.approx((px, py, a0))


def test_scale_factor_sets_the_area() -> None:
    # area of the drawn square follows (2 * half * scale)^2 within one rim of pixels
    patches, _ = sprite_patches(DSPRITES)
    half = DSPRITES.size * 10 / 64
    for j, scale in enumerate(DSPRITES.factor_values()[2]):
        side = 2 * half * scale
        area = patches[0, j, 0].sum()
        assert abs(area - side**2) <= 2 * side + 1, (scale, area, side**2)
    # ellipse and heart areas scale as scale^2 too (ratio of largest to smallest: 4)
    for shape in (1, 2):
        ratio = patches[shape, -1, 0].sum() / patches[shape, 0, 0].sum()
        assert ratio == pytest.approx(4.0, rel=0.08)


def test_square_rotated_by_90_degrees_matches_itself() -> None:
    patches, _ = sprite_patches(DSPRITES)
    quarter = DSPRITES.orientations // 4  # 40 orientations: index 10 is 90 degrees
    for j in range(DSPRITES.scales):
        a, b = patches[0, j, 0], patches[0, j, quarter]
        assert (a != b).sum() <= 0.02 * a.sum()  # up to rasterisation
    # but 45 degrees does not
    a, b = patches[0, -1, 0], patches[0, -1, quarter // 2]
    assert (a != b).sum() > 0.1 * a.sum()


def test_orientation_rotates_about_the_centre_of_mass() -> None:
    patches, _ = sprite_patches(DSPRITES)
    for shape in range(3):
        centres = []
        for k in range(0, DSPRITES.orientations, 5):
            rows, cols = np.nonzero(patches[shape, -1, k])
            centres.append((rows.mean(), cols.mean()))
        spread = np.ptp(np.asarray(centres), axis=0)
        assert (spread < 0.6).all(), (shape, spread)  # the sprite turns in place


def test_heart_centroid_constant() -> None:
    # the heart's centre of mass, integrated afresh on a grid (float64)
    g = (np.arange(3000) + 0.5) / 3000 * 3 - 1.5
    a, b = np.meshgrid(g, g)
    inside = _inside("heart", a, -(b - HEART_CENTROID))  # v = -(b - centroid): b back
    assert -(b - HEART_CENTROID)[inside].mean() == pytest.approx(0.0, abs=2e-3)


def test_cache_is_deterministic_and_reused(tmp_path, small: np.ndarray) -> None:
    x1, c1 = load_sprites(DSPRITES_SMALL, tmp_path)
    files = list(tmp_path.glob("dsprites-*.npz"))
    assert len(files) == 1 and files[0].stat().st_size < small.size // 7  # bit-packed
    x2, c2 = load_sprites(DSPRITES_SMALL, tmp_path)
    assert (x1 == small).all() and (x2 == small).all() and (c1 == c2).all()


def test_builtin_small_keeps_factors_through_the_split(tmp_path) -> None:
    data = load_dataset("dsprites-small", cache_dir=tmp_path, test_fraction=0.2, seed=3)
    assert data.factor_names == FACTOR_NAMES
    assert data.factor_sizes == DSPRITES_SMALL.factor_sizes
    assert len(data.train_x) + len(data.test_x) == DSPRITES_SMALL.count
    every = render(DSPRITES_SMALL, progress=False)
    strides = _strides(DSPRITES_SMALL.factor_sizes)
    for x, f in ((data.train_x, data.train_factors), (data.test_x, data.test_factors)):
        pick = np.random.default_rng(0).choice(len(x), 50, replace=False)
        idx = f.numpy()[pick] @ strides
        assert (every[idx] == x.numpy()[pick]).all()  # each image beside its own factors
    assert (data.train_y == data.train_factors[:, 1]).all()  # labels: the shape


def _official_layout(path, n: int = 40, test: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    classes = all_classes(DSPRITES.factor_sizes)[rng.choice(DSPRITES.count, n, replace=False)]
    values = np.stack([v[classes[:, k]] for k, v in enumerate(DSPRITES.factor_values())], 1)
    imgs = rng.integers(0, 2, size=(n, 64, 64)).astype(np.uint8)
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=values)
    return classes


def test_official_archive_layout_loads_with_its_factors(tmp_path) -> None:
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    classes = _official_layout(path)
    data = load_dataset(str(path), test_fraction=0.25)
    assert data.factor_names == FACTOR_NAMES
    got = np.concatenate([data.train_factors.numpy(), data.test_factors.numpy()])
    assert sorted(map(tuple, got)) == sorted(map(tuple, classes))
    assert data.image_shape == (1, 64, 64)
    # values read back per class where the file shows them
    scale = data.factor_values[2]
    for k in np.unique(classes[:, 2]):
        assert scale[k] == pytest.approx(DSPRITES.factor_values()[2][k])


def test_npz_with_label_columns(tmp_path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "labelled.npz"
    np.savez(path, images=rng.random((30, 8, 8)), factors=rng.integers(0, 3, (30, 2)),
             factor_names=np.array(["size", "hue"]))  # fmt: skip
    data = load_dataset(str(path))
    assert data.factor_names == ("size", "hue") and data.train_factors.shape[1] == 2
    np.savez(path, images=rng.random((30, 8, 8)), factors=rng.integers(0, 3, (29, 2)))
    with pytest.raises(VaelabError, match="29 rows; expected one per image"):
        load_dataset(str(path))
    np.savez(path, images=rng.random((30, 8, 8)), factors=rng.random((30, 2)))
    with pytest.raises(VaelabError, match="expected integer factor classes"):
        load_dataset(str(path))
    np.savez(path, images=rng.random((30, 8, 8)), factor_names=np.array(["a"]))
    with pytest.raises(VaelabError, match="'factor_names' but no 'factors'"):
        load_dataset(str(path))


def test_cli_names_the_dataset_in_train_help() -> None:
    out = subprocess.run([sys.executable, "-m", "vaelab", "train", "--dataset", "dsprites-smal"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0 and "dsprites-small" in out.stderr
    assert "Traceback" not in out.stderr


def test_colour_set_colours_the_same_sprites(tmp_path) -> None:
    from vaelab.data.dsprites import COLOURS, DSPRITES_COLOUR

    x, classes = load_sprites(DSPRITES_COLOUR, tmp_path)
    spec = DSPRITES_COLOUR
    assert x.shape == (spec.count, 3, 32, 32) == (46080, 3, 32, 32)
    assert spec.factor_sizes == (4, 3, 6, 10, 8, 8)
    assert (classes @ _strides(spec.factor_sizes) == np.arange(spec.count)).all()
    per = spec.count // 4
    for i in np.random.default_rng(0).choice(per, 20, replace=False):
        masks = [x[i + c * per].max(0) > 0 for c in range(4)]
        assert all((m == masks[0]).all() for m in masks) and masks[0].any()
        for c in range(4):  # every lit pixel has exactly the colour of its color class
            lit = x[i + c * per][:, masks[0]]
            assert (lit == np.asarray(COLOURS[c])[:, None]).all()
    # positions two pixels apart: the centre of mass moves by 2 per step
    base = np.array([1, 2, 5, 0, 0, 0]) @ _strides(spec.factor_sizes)
    x0, y0, _ = _moments(x[base, :1].astype(bool).any(0, keepdims=True).astype(np.uint8))
    x1, y1, _ = _moments(
        x[base + 8 * 3 + 1, :1].astype(bool).any(0, keepdims=True).astype(np.uint8)
    )
    assert (x1 - x0, y1 - y0) == pytest.approx((6.0, 2.0))
