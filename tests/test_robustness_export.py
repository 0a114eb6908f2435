"""Issue 25: ``vireid export`` works for the ``plain`` baseline too (was a shape-error traceback)."""

import pytest
import torch

from deploy_runs import make_run, write_images
from vireid.cli.main import main
from vireid.deploy.export import export_run
from vireid.deploy.extractor import Extractor


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_plain_run_exports_with_parity(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    run = make_run(tmp_path / "run", "plain")
    images = [str(p) for p in write_images(tmp_path / "imgs", 6)]
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    assert main(["export", str(run), "--format", fmt, "--out", str(out), "--images", str(tmp_path / "imgs")]) == 0
    report = export_run(run, fmt, out, images, batch=5)
    assert report.method == "plain" and report.max_abs_diff <= 1e-4 and report.batch == 5


def test_exported_plain_graph_routes_each_image_to_its_stem(tmp_path):
    run = make_run(tmp_path / "run", "plain")
    images = [str(p) for p in write_images(tmp_path / "imgs", 4)]
    export_run(run, "torchscript", tmp_path / "m.pt", images)
    extractor = Extractor(run, device="cpu")
    assert not hasattr(extractor.model, "stem") or "stem" not in vars(extractor.model)  # the export patch is gone
    x = torch.randn(4, 3, *extractor.size)
    modality = torch.tensor([0, 1, 1, 0])
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    mixed = loaded(x, modality)
    with torch.inference_mode():
        per_image = torch.cat([extractor.recipe.embed(x[i:i + 1], modality[i:i + 1]) for i in range(4)])
    assert torch.allclose(mixed, per_image, atol=1e-5)
    assert not torch.allclose(loaded(x, 1 - modality), mixed, atol=1e-3)  # the modality really picks the stem
