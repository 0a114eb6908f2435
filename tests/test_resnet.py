"""Own ResNet: torchvision-compatible names and sizes, slicing, loading report, errors."""

import hashlib
import logging
import pickle

import pytest
import torch
from safetensors.torch import save_file

from vireid.models.backbones.resnet import build_resnet, resnet18, resnet34, resnet50
from vireid.models.backbones.weights import REFERENCE_WEIGHTS, load_pretrained, pretrained_path, require_pretrained


@pytest.mark.parametrize("factory, params", [(resnet18, 11_689_512), (resnet34, 21_797_672), (resnet50, 25_557_032)])
def test_parameter_count_matches_torchvision(factory, params):
    # torchvision's published parameter counts for the ImageNet models (1000 classes)
    model = factory(num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet50_names_match_torchvision_checkpoint_layout():
    keys = set(resnet50(num_classes=1000).state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.running_mean", "layer2.3.bn3.bias", "layer3.5.conv2.weight",
                "layer4.2.bn3.weight", "fc.weight", "fc.bias"):
        assert key in keys, key
    assert "layer4.0.conv2.weight" in keys and resnet50().layer4[0].conv2.stride == (2, 2)
    assert resnet50(last_stride=1).layer4[0].conv2.stride == (1, 1)  # stride on the 3x3 conv (v1.5)
    assert resnet50(last_stride=1).layer4[0].downsample[0].stride == (1, 1)


def test_slices_compose_to_the_full_network():
    torch.manual_seed(0)
    full = resnet18(last_stride=1).eval()
    trunk = resnet18(parts=("stem", "layer1", "layer2")).eval()
    branch = resnet18(parts=("layer3", "layer4"), last_stride=1).eval()
    trunk.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("layer3", "layer4"))})
    branch.load_state_dict({k: v for k, v in full.state_dict().items() if k.startswith(("layer3", "layer4"))})
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(branch(trunk(x)), full(x), atol=1e-5)
        assert full(x).shape == (2, 512, 4, 2)  # 1/16 with last stride 1


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_pretrained_reports_and_copies(tmp_path, suffix, caplog):
    caplog.set_level(logging.INFO, logger="vireid")
    torch.manual_seed(0)
    source = resnet18(num_classes=10)
    state = source.state_dict()
    state.pop("layer1.0.bn1.num_batches_tracked")  # old checkpoints lack these: never "missing"
    state["extra.weight"] = torch.zeros(3)
    state["layer4.1.conv2.weight"] = torch.zeros(7, 7, 3, 3)  # wrong shape
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    target = resnet18(parts=("layer3", "layer4"))
    report = load_pretrained(target, path)
    assert report["unexpected"] == ["extra.weight"]
    assert report["shape_mismatch"] and report["shape_mismatch"][0].startswith("layer4.1.conv2.weight")
    assert report["missing"] == []  # the mismatched tensor keeps its init and is reported above
    assert all(k.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "fc.")) for k in report["ignored"])
    assert torch.equal(target.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert "matched" in caplog.text and f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in caplog.text


def test_load_pretrained_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(resnet18(), tmp_path / "nope.pth")


class Payload:
    """Stands for an arbitrary pickled object inside a checkpoint."""


def test_load_pretrained_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "obj": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):  # weights_only=True
        load_pretrained(resnet18(), path)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="last_stride"):
        resnet50(last_stride=3)
    with pytest.raises(ValueError, match="depth 101"):
        build_resnet(101)
    with pytest.raises(ValueError, match="parts"):
        resnet18(parts=("layer2", "stem"))


def test_resnet50_runs_refuse_an_empty_pretrained_setting():
    """Every reference starts ResNet-50 from ImageNet weights: leaving model.pretrained empty is refused."""
    for cfg in ({"depth": 50}, {"pretrained": None}, {"depth": 50, "pretrained": None}, {"depth": 50, "pretrained": " "}):
        with pytest.raises(ValueError, match=f"model.pretrained is not set.*{REFERENCE_WEIGHTS}.*pretrained=none"):
            require_pretrained(cfg)
    assert require_pretrained({"depth": 50, "pretrained": "none"}) is None  # random weights, on purpose
    assert require_pretrained({"depth": 50, "pretrained": "None"}) is None
    assert require_pretrained({"depth": 18}) is None  # small backbones have no reference start
    assert require_pretrained({"width": 32}) is None  # no ResNet settings at all: a network of its own
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        require_pretrained({"depth": 50, "pretrained": "/nonexistent/missing.pth"})
    assert pretrained_path("none") is None and pretrained_path(None) is None and pretrained_path("a.pth") == "a.pth"
    with pytest.raises(ValueError, match="must be a file path, a weights name, 'imagenet' or 'none'"):
        pretrained_path(3)


def test_a_resnet50_file_other_than_the_reference_is_named_with_its_hash(tmp_path, caplog):
    path = tmp_path / "resnet50-other.pth"
    torch.save({"fc.bias": torch.zeros(3)}, path)
    assert require_pretrained({"depth": 50, "pretrained": str(path)}) == str(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in caplog.text and REFERENCE_WEIGHTS in caplog.text


@pytest.mark.parametrize("parts", [("layer3",), ("stem", "layer1", "layer2"), ("layer3", "layer4"), ("stem",)])
def test_a_slice_reports_the_channels_it_outputs(parts):
    # Hi-CMD's ID trunk is a layer3-only slice: it reported layer4's width and its bottleneck failed at test time
    from vireid.models.backbones.resnet import PARTS, resnet18

    net = resnet18(parts=parts).eval()
    first = PARTS.index(parts[0])
    cin = 3 if first == 0 else (64 if first == 1 else net.stage_channels[first - 2])
    size = 64 // (2 ** max(first, 1)) if first else 64
    with torch.no_grad():
        out = net(torch.randn(1, cin, size, size // 2))
    assert out.shape[1] == net.out_channels
