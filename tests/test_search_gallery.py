"""benchmarks/search_gallery.py: the gallery model recovers the geometry it is fitted to, and samples it."""


import numpy as np
import pytest

from benchmark_modules import load


@pytest.fixture(scope="module")
def sg():
    return load("search_gallery")


def labelled(rng, ids=300, per_id=8, dim=48, between=6, within=3, within_std=0.2, cams=4):
    """Identity centres in a ``between``-d subspace, images spread in a ``within``-d one, a camera shift."""
    centres = rng.standard_normal((ids, between)) @ np.linalg.qr(rng.standard_normal((dim, between)))[0].T
    pids = np.repeat(np.arange(ids), per_id)
    cam = rng.integers(0, cams, len(pids))
    shift = 0.3 * rng.standard_normal((cams, dim))
    spread = within_std * rng.standard_normal((len(pids), within)) @ np.linalg.qr(
        rng.standard_normal((dim, within)))[0].T
    return (centres[pids] + shift[cam] + spread).astype(np.float32), pids, cam


def test_fit_recovers_the_spreads_and_sampling_reproduces_them(sg, tmp_path):
    rng = np.random.default_rng(0)
    x, pids, cams = labelled(rng)
    model = sg.fit(x, pids, cams, {"note": "test"})
    assert model.between_scale.shape[0] >= 6 and model.within_scale.shape[0] >= 3
    assert np.sum(model.between_scale[6:] ** 2) < 0.05 * np.sum(model.between_scale ** 2)  # a 6-d spread
    assert np.sum(model.within_scale[3:] ** 2) < 0.05 * np.sum(model.within_scale ** 2)     # a 3-d spread
    assert model.within_scale[0] == pytest.approx(0.2, rel=0.25)
    assert model.camera_prob.sum() == pytest.approx(1.0) and model.id_sizes.tolist() == [8] * 300
    info = sg.describe(model)
    assert info["between_dims_90"] <= 6 and info["within_dims_90"] <= 3 and info["note"] == "test"

    model.save(tmp_path / "m.npz")
    back = sg.GalleryModel.load(tmp_path / "m.npz")
    assert np.array_equal(back.within_dirs, model.within_dirs) and back.source == model.source

    chunks, queries = sg.realistic(back, 1000, 7, seed=1, chunk=300)
    gallery = np.concatenate(list(chunks))
    assert gallery.shape == (1000, 48) and queries.shape == (7, 48)
    assert np.allclose(np.linalg.norm(gallery, axis=1), 1, atol=1e-5)
    again, q_again = sg.realistic(back, 1000, 7, seed=1, chunk=300)
    assert np.array_equal(gallery, np.concatenate(list(again))) and np.array_equal(queries, q_again)  # each pass
    other = np.concatenate(list(sg.realistic(back, 1000, 7, seed=2, chunk=300)[0]))
    assert not np.allclose(gallery, other)
    wide = np.concatenate(list(sg.realistic(back, 1000, 7, seed=1, dim=96)[0]))
    assert wide.shape == (1000, 96)
    assert np.linalg.matrix_rank(wide - wide.mean(0), tol=1e-3) <= 48  # placed in a 48-d frame


def test_fit_errors(sg):
    with pytest.raises(ValueError, match="must describe the same images"):
        sg.fit(np.zeros((4, 3)), np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="several identities with several images"):
        sg.fit(np.ones((2, 3)), np.array([0, 1]), np.array([0, 0]))


def test_isotropic_floor(sg):
    chunks, queries = sg.isotropic(500, 4, 32, seed=0, chunk=200)
    sizes = [len(c) for c in chunks]
    assert sizes == [200, 200, 100] and queries.shape == (4, 32)
