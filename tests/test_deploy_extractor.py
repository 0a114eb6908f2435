"""The Extractor: the evaluation pipeline's features from paths, PIL images, arrays and tensors."""

import numpy as np
import pytest
import torch
from PIL import Image

from deploy_runs import SIZE, make_run, write_images
from vireid.app.runs import load_run
from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.deploy.extractor import Extractor, weights_hash
from vireid.evaluation.features import image_extractor


@pytest.fixture(scope="module")
def agw_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("agw") / "run", "agw")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"), 5)


def test_features_equal_the_evaluation_pipeline(agw_run, images):
    recipe, _ = load_run(agw_run)
    samples = [Sample(str(p), 0, 1, INFRARED if i % 2 else VISIBLE) for i, p in enumerate(images)]
    expected = image_extractor(recipe.embed, SIZE, workers=0)(samples)
    got = Extractor(agw_run, device="cpu", batch_size=2)(images, modality=[s.modality for s in samples])
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_every_input_kind_gives_the_same_feature(agw_run, images):
    ex = Extractor(agw_run, device="cpu")
    path = images[0]
    ref = ex(path, modality="infrared")
    with Image.open(path) as im:
        pil = im.copy()
    array = np.asarray(pil)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    for item in (str(path), pil, array, tensor, tensor[None]):
        torch.testing.assert_close(ex(item, modality="ir"), ref)
    # float tensors are preprocessed model input at the run's size
    pre = ex.preprocess(torch.from_numpy(np.asarray(pil.resize((SIZE[1], SIZE[0]), Image.LANCZOS)).copy())
                        .permute(2, 0, 1)[None])
    torch.testing.assert_close(ex(pre, modality=INFRARED), ref)


def test_modality_routes_two_stream_models_and_is_required(agw_run, images):
    ex = Extractor(agw_run, device="cpu")
    vis, ir = ex(images[:2], modality="visible"), ex(images[:2], modality="infrared")
    assert not torch.allclose(vis, ir)  # one stem per modality
    mixed = ex(images[:2], modality=["visible", "infrared"])
    torch.testing.assert_close(mixed, torch.stack([vis[0], ir[1]]))
    with pytest.raises(ValueError, match="no modality given"):
        ex(images[:2])
    with pytest.raises(ValueError, match="image 1 has no modality"):
        ex(images[:2], modality=["visible", None])
    with pytest.raises(ValueError, match="unknown modality 'uv'"):
        ex(images[:1], modality="uv")
    with pytest.raises(ValueError, match="3 modalities for 2 images"):
        ex(images[:2], modality=["ir", "ir", "ir"])


def test_flip_averages_with_the_mirrored_image(agw_run, images):
    plain = Extractor(agw_run, device="cpu", flip=False)
    flipped = Extractor(agw_run, device="cpu", flip=True)
    x = plain.preprocess(torch.stack([torch.from_numpy(np.asarray(Image.open(images[0]).resize(
        (SIZE[1], SIZE[0]), Image.LANCZOS)).copy()).permute(2, 0, 1)]))
    expected = 0.5 * (plain(x, modality="visible") + plain(x.flip(3), modality="visible"))
    torch.testing.assert_close(flipped(x, modality="visible"), expected, atol=1e-6, rtol=1e-5)


def test_bad_files_are_listed_or_stop_with_strict(agw_run, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    ex = Extractor(agw_run, device="cpu", batch_size=2)
    out = ex.embed_files([images[0], broken, images[1]], "infrared")
    assert out.paths == [str(images[0]), str(images[1])] and out.modalities == [INFRARED, INFRARED]
    assert out.features.shape[0] == 2 and out.failed[0][0] == str(broken) and "cannot decode" in out.failed[0][1]
    torch.testing.assert_close(out.features, ex(images[:2], modality="infrared"))
    with pytest.raises(ValueError, match="broken.jpg"):
        ex.embed_files([images[0], broken], "infrared", strict=True)


def test_identity_and_missing_checkpoint(agw_run, tmp_path):
    ex = Extractor(agw_run, device="cpu")
    ident = ex.identity()
    assert ident.method == "agw" and ident.input_size == SIZE and ident.feature_dim == 512
    assert ident.weights_sha256 == weights_hash(load_run(agw_run)[0].model)
    other = make_run(tmp_path / "other", "agw", seed=1)
    assert Extractor(other, device="cpu").weights_sha256 != ident.weights_sha256
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no checkpoint.pt"):
        Extractor(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no run directory or checkpoint file"):
        Extractor(tmp_path / "nope")
