"""Non-finite test features are caught where they arise, naming the layer (evaluation/finite.py)."""

import pytest
import torch
from torch import nn

from deploy_runs import SIZE, make_run, write_images
from vireid.data.records import Sample
from vireid.deploy.extractor import Extractor
from vireid.engine.checkpoint import load_checkpoint, save_checkpoint
from vireid.evaluation.features import image_extractor
from vireid.evaluation.finite import NonFiniteFeatures, check_finite, first_nonfinite_layer


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def overflowing():
    """Finite through ``1``, then 1e20 * 1e20 * ... overflows float32 at ``2``. The linear layer's weights are
    fixed (all ones, no bias: every output of a ones input is 4), so no draw of the global RNG can keep an
    output small enough to stay finite."""
    linear = nn.Linear(4, 4)
    with torch.no_grad():
        linear.weight.fill_(1.0)
        linear.bias.zero_()
    return nn.Sequential(linear, Scale(1e20), Scale(1e20), nn.ReLU())


def test_probe_names_the_first_module_whose_output_is_not_finite():
    model = overflowing()
    x = torch.ones(3, 4)
    layer, largest = first_nonfinite_layer(model, lambda: model(x))
    assert layer == "2 (Scale)"
    assert 1e18 < largest < 3.5e38  # the finite output of '1', before the overflow
    assert first_nonfinite_layer(nn.Sequential(nn.Linear(4, 4)), lambda: None) == (None, 0.0)
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed again


def test_check_finite_passes_finite_features_and_names_the_layer_otherwise():
    feats = torch.randn(5, 8)
    assert check_finite(feats, None, None, "x") is feats
    model = overflowing()
    x = torch.ones(3, 4)
    with pytest.raises(NonFiniteFeatures, match=r"non-finite test features in eval mode: 3 of 3 feature row\(s\) of "
                                                r"batch 7 hold NaN or inf; the first non-finite activation is the "
                                                r"output of 2 \(Scale\)"):
        check_finite(model.eval()(x), model, lambda: model(x), "batch 7")


def _broken_run(tmp_path, method="mbfvrd"):
    """A run whose eval-mode network overflows inside layer 4: one BN scale set to infinity."""
    run = make_run(tmp_path / "run", method)
    state = load_checkpoint(run / "checkpoint.pt")
    name = next(k for k in state["model"] if "layer4" in k and k.endswith("bn1.weight"))
    state["model"][name].fill_(float("inf"))
    save_checkpoint(run / "checkpoint.pt", state)
    return run, name.removesuffix(".weight")


def test_deploy_extractor_names_the_layer(tmp_path):
    run, bn = _broken_run(tmp_path)
    images = write_images(tmp_path / "img", 3)
    with pytest.raises(NonFiniteFeatures, match=rf"first non-finite activation is the output of \S*{bn} "
                                                r"\(BatchNorm2d\)"):
        Extractor(run, device="cpu").embed(images, "infrared")


def test_evaluation_extractor_names_the_layer_and_the_batch(tmp_path):
    run, bn = _broken_run(tmp_path)
    recipe = Extractor(run, device="cpu").recipe
    paths = write_images(tmp_path / "img", 5)
    samples = [Sample(str(p), 0, 1, 1) for p in paths]
    extract = image_extractor(recipe.embed, SIZE, workers=0, batch_size=2, model=recipe.model)
    with pytest.raises(NonFiniteFeatures, match=rf"of batch 0 \(images from {paths[0]}\) hold NaN or inf; the first "
                                                rf"non-finite activation is the output of \S*{bn}"):
        extract(samples)


def test_export_parity_check_names_the_layer(tmp_path):
    from vireid.deploy.export import export_run

    run, bn = _broken_run(tmp_path)
    images = [str(p) for p in write_images(tmp_path / "img", 4)]
    with pytest.raises(NonFiniteFeatures, match=rf"the parity images of .*output of \S*{bn}"):
        export_run(run, "torchscript", tmp_path / "m.pt", images)
    assert not (tmp_path / "m.pt").exists()
