"""Export every method's eval graph; the exported file reproduces PyTorch's features on real images."""

import os
import re

import pytest
import torch

from conftest import REPO, optional
from deploy_runs import make_run, write_images
from vireid.cli.main import main
from vireid.deploy.export import export_run
from vireid.deploy.extractor import Extractor


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return [str(p) for p in write_images(tmp_path_factory.mktemp("imgs"), 5, seed=3)]


@pytest.mark.parametrize("method", ["idkl", "agw", "mbfvrd"])
def test_torchscript_export_matches_pytorch(method, images, tmp_path):
    run = make_run(tmp_path / "run", method)
    report = export_run(run, "torchscript", tmp_path / "m.pt", images)
    assert report.max_abs_diff <= 1e-4 and report.batch == 5
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    ex = Extractor(run, device="cpu")
    x = ex.preprocess(torch.stack([torch.zeros(3, 32, 16, dtype=torch.uint8)] * 3))
    mod = torch.tensor([1, 0, 1])  # a batch size the trace never saw
    torch.testing.assert_close(loaded(x, mod), ex(x, modality=mod), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["idkl", "agw", "mbfvrd"])
def test_onnx_export_matches_pytorch(method, images, tmp_path):
    optional("onnx")
    ort = optional("onnxruntime")
    run = make_run(tmp_path / "run", method)
    report = export_run(run, "onnx", tmp_path / "m.onnx", images)
    assert report.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [i.name for i in session.get_inputs()] == ["images", "modality"]  # every method takes both
    assert session.get_inputs()[0].shape[0] == "batch"
    # the docs' "without vireid" snippet gives the features vireid gives
    text = (REPO / "docs" / "deploy.md").read_text()
    snippet = re.search(r"<!-- onnx-snippet -->\n```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "m.onnx").rename(tmp_path / "idkl.onnx")
    scope = {"query_paths": images[:2], "gallery_paths": images[2:]}
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        exec(snippet, scope)
    finally:
        os.chdir(cwd)
    ex = Extractor(run, device="cpu")
    q = torch.nn.functional.normalize(ex(images[:2], modality="infrared"), dim=1)
    torch.testing.assert_close(torch.from_numpy(scope["q"]), q, atol=1e-4, rtol=0)
    assert scope["ranking"].shape == (2, 3)


def test_two_stream_export_keeps_per_image_routing(images, tmp_path):
    run = make_run(tmp_path / "run", "agw")
    export_run(run, "torchscript", tmp_path / "m.pt", images)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    ex = Extractor(run, device="cpu")
    x = ex.preprocess(torch.randint(0, 256, (4, 3, 32, 16), dtype=torch.uint8))
    vis, ir = loaded(x, torch.zeros(4, dtype=torch.long)), loaded(x, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(vis, ir)
    torch.testing.assert_close(vis, ex(x, modality="visible"), atol=1e-4, rtol=0)
    torch.testing.assert_close(ir, ex(x, modality="infrared"), atol=1e-4, rtol=0)


def test_export_command_prints_the_difference_and_refuses_bad_input(images, tmp_path, capsys):
    run = make_run(tmp_path / "run", "idkl")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, p in enumerate(images):
        (folder / f"{i}.png").write_bytes(open(p, "rb").read())
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt"),
                 "--images", str(folder)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "n.pt"),
                 "--images", str(folder), "--tolerance", "-1"]) == 2
    err = capsys.readouterr().err
    assert "differs from PyTorch by max abs diff" in err and not (tmp_path / "n.pt").exists()
    (tmp_path / "empty_run").mkdir()
    assert main(["export", str(tmp_path / "empty_run"), "--format", "onnx", "--out", str(tmp_path / "x.onnx"),
                 "--images", str(folder)]) == 2
    assert "has no checkpoint.pt" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no images for the parity check" in capsys.readouterr().err
