"""Synthetic target domains: invariants (shape, dtype, range, determinism) and that each kind does what it says."""

import numpy as np
import pytest
from PIL import Image

from vireid.cli.main import main
from vireid.synth.domains import (
    KINDS,
    add_noise,
    change_color,
    change_lighting,
    dct_recolor,
    domain_grid,
    gamma_value,
    highpass,
    image_rng,
    is_infrared_path,
    occlude,
    occlusion_box,
    shift_image,
    synth_domain,
)
from vireid.synth.generator import generate


def _image(seed=0, h=32, w=16):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _grey(seed=0):
    g = _image(seed)[..., :1]
    return np.repeat(g, 3, axis=2)


@pytest.mark.parametrize("kind", KINDS)
def test_shape_dtype_determinism_and_change(kind):
    x = _image()
    a = shift_image(x, kind, np.random.default_rng(5))
    b = shift_image(x, kind, np.random.default_rng(5))
    c = shift_image(x, kind, np.random.default_rng(6))
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, x) and not np.array_equal(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_grey_images_stay_grey(kind):
    out = shift_image(_grey(), kind, np.random.default_rng(1))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_noise_is_zero_mean_with_the_given_sigma():
    x = np.full((64, 64, 3), 128, np.uint8)
    out = add_noise(x, np.random.default_rng(0), sigma=10.0).astype(float) - 128
    assert abs(out.mean()) < 0.5 and 9.5 < out.std() < 10.5
    assert np.array_equal(add_noise(x, np.random.default_rng(0), sigma=0.0), x)


def test_gamma_value_keeps_hue_and_saturation_and_maps_v():
    x = np.array([[[200, 100, 50], [0, 0, 0]]], np.uint8)
    out = gamma_value(x, gamma=2.0, gain=0.5)
    v = 200 / 255
    assert np.allclose(out[0, 0].max() / 255, 0.5 * v ** 2)          # V' = gain * V^gamma
    assert np.allclose(out[0, 0] / out[0, 0].max(), x[0, 0] / 200.0)  # ratios, hence hue and saturation, kept
    assert np.allclose(out[0, 1], 0)                                 # black stays black


def test_lighting_darkens_and_keeps_brightness_order():
    x = np.repeat(np.repeat(np.linspace(20, 250, 16, dtype=np.uint8)[None, :, None], 8, 0), 3, 2)
    out = change_lighting(x, np.random.default_rng(0), blur_sigma=0.0)
    assert out.mean() < x.mean()
    row = out[4, :, 0].astype(int)
    assert (np.diff(row) >= 0).all()  # monotone: no inversion of brightness


def test_highpass_formula_and_dct_recolor_sets_the_mean_and_keeps_detail():
    h = highpass((4, 3), radius=2.0)
    assert h[0, 0] == 0.0 and np.isclose(h[1, 2], 1 - np.exp(-(1 + 4) / 8.0))
    x = _image(3, 16, 16)
    out = dct_recolor(x, (10.0, 100.0, 200.0), radius=1e-3)  # R -> 0: H = 1 except at DC
    assert np.allclose(out.mean(axis=(0, 1)), [10.0, 100.0, 200.0])
    assert np.allclose(out - out.mean(axis=(0, 1)), x - x.mean(axis=(0, 1)))
    smooth = dct_recolor(x, (0, 0, 0), radius=4.0)  # a wider high-pass removes low-frequency energy
    assert np.abs(smooth).std() < np.abs(x - x.mean()).std()


def test_color_moves_the_mean_colour():
    x = np.full((32, 16, 3), 128, np.uint8)
    x[10:20, 5:10] = 30
    out = change_color(x, np.random.default_rng(2), radius=2.0)
    assert np.abs(out.reshape(-1, 3).mean(0) - x.reshape(-1, 3).mean(0)).max() > 5


def test_occlusion_changes_one_constant_rectangle_only():
    x = _image(4)
    box = occlusion_box(x.shape[:2], np.random.default_rng(9))
    out = occlude(x, np.random.default_rng(9))
    top, left, bh, bw = box
    inside = np.zeros(x.shape[:2], bool)
    inside[top:top + bh, left:left + bw] = True
    assert np.array_equal(out[~inside], x[~inside])
    patch = out[inside]
    assert (patch == patch[0]).all()
    assert 0.05 <= inside.mean() <= 0.35


def test_bad_input_and_kind_are_rejected():
    with pytest.raises(ValueError, match="uint8 array of shape"):
        shift_image(np.zeros((4, 4), np.uint8), "noise", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown domain kind 'fog'"):
        shift_image(_image(), "fog", np.random.default_rng(0))
    with pytest.raises(ValueError, match="radius R must be > 0"):
        highpass((4, 4), 0)


def test_image_rng_depends_on_seed_and_path_only():
    a = image_rng(1, "cam1/0001/0001.jpg").integers(0, 1 << 30)
    assert a == image_rng(1, "cam1/0001/0001.jpg").integers(0, 1 << 30)
    assert a != image_rng(2, "cam1/0001/0001.jpg").integers(0, 1 << 30)
    assert a != image_rng(1, "cam1/0001/0002.jpg").integers(0, 1 << 30)


def test_grid_has_one_row_per_kind_plus_originals():
    sheet = domain_grid([_image(0), _image(1)], gap=2)
    assert sheet.shape == (5 * 34 - 2, 2 * 18 - 2, 3)


def test_synth_domain_copies_the_layout_and_shifts_every_image(tmp_path):
    raw = tmp_path / "raw"
    generate(raw, "regdb", 4, seed=0, size=(32, 16), images=2, workers=1)
    out = tmp_path / "occ"
    assert main(["synth-domain", "--in", str(raw), "--out", str(out), "--kind", "occlusion", "--seed", "3"]) == 0
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    assert before == sorted(p.relative_to(out) for p in out.rglob("*"))
    images = [p for p in before if p.suffix == ".bmp"]
    assert images
    changed = 0
    for rel in images:
        a, b = np.asarray(Image.open(raw / rel)), np.asarray(Image.open(out / rel))
        assert a.shape == b.shape
        changed += not np.array_equal(a, b)
    assert changed == len(images)
    for rel in before:
        if (raw / rel).is_file() and rel.suffix == ".txt":
            assert (raw / rel).read_bytes() == (out / rel).read_bytes()
    again = tmp_path / "occ2"
    synth_domain(raw, again, "occlusion", seed=3)
    assert all((out / r).read_bytes() == (again / r).read_bytes() for r in images)
    with pytest.raises(ValueError, match="not empty"):
        synth_domain(raw, out, "noise")
    assert main(["synth-domain", "--in", str(raw), "--out", str(out), "--kind", "noise"]) == 2


@pytest.mark.parametrize("layout", ["sysu", "regdb"])
def test_color_shift_recolours_visible_images_only(tmp_path, layout):
    """The paper's colour shift is written for RGB images x_r: infrared files are copied unchanged."""
    raw, out = tmp_path / "raw", tmp_path / "col"
    generate(raw, layout, 4, seed=0, size=(32, 16), images=2, workers=1)
    synth_domain(raw, out, "color", seed=1)
    suffix = ".jpg" if layout == "sysu" else ".bmp"
    images = [p.relative_to(raw) for p in raw.rglob(f"*{suffix}")]
    infrared = [r for r in images if is_infrared_path(r.as_posix())]
    visible = [r for r in images if not is_infrared_path(r.as_posix())]
    assert infrared and visible
    assert all((raw / r).read_bytes() == (out / r).read_bytes() for r in infrared)
    assert all(not np.array_equal(np.asarray(Image.open(raw / r)), np.asarray(Image.open(out / r)))
               for r in visible)
    noise = tmp_path / "noise"  # the other kinds shift both modalities
    synth_domain(raw, noise, "noise", seed=1)
    assert all((raw / r).read_bytes() != (noise / r).read_bytes() for r in infrared)


def test_modality_of_a_path_comes_from_its_top_folder():
    assert is_infrared_path("cam3/0001/0001.jpg") and is_infrared_path("Thermal/1/a.bmp")
    assert is_infrared_path("train_nir/cam1/0001/x.jpg") and is_infrared_path("infrared/p1/x.png")
    assert not is_infrared_path("cam1/0001/0001.jpg") and not is_infrared_path("Visible/1/a.bmp")
    with pytest.raises(ValueError, match="cannot tell the modality of 'misc/x.jpg'"):
        is_infrared_path("misc/x.jpg")
    x = _image()
    assert np.array_equal(shift_image(x, "color", np.random.default_rng(0), infrared=True), x)
    assert not np.array_equal(shift_image(x, "noise", np.random.default_rng(0), infrared=True), x)
