"""OSNet: torchreid's parameter names, slices that load from one checkpoint, every method on it."""

import pytest
import torch

from vireid.models.backbones import build_trunk, load_pretrained, osnet
from vireid.models.idkl import IDKL
from vireid.models.reid_net import ReIDNet


def test_full_network_shapes_names_and_size():
    net = osnet("x1_0", num_classes=1000)
    names = net.state_dict()
    for key in ("conv1.conv.weight", "conv1.bn.running_mean", "conv2.0.conv1.conv.weight",
                "conv2.0.conv2a.conv1.weight", "conv2.0.conv2a.conv2.weight", "conv2.0.conv2d.3.bn.weight",
                "conv2.0.gate.fc1.bias", "conv2.0.gate.fc2.weight", "conv2.0.conv3.bn.weight",
                "conv2.0.downsample.conv.weight", "conv2.2.0.conv.weight", "conv4.1.conv3.conv.weight",
                "conv5.conv.weight", "fc.0.weight", "fc.1.running_var", "classifier.weight"):
        assert key in names, key
    assert "conv4.1.downsample.conv.weight" not in names  # same width in and out: no projection
    trunk_params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith(("fc.", "classifier.")))
    assert 1.85e6 < trunk_params < 1.95e6  # the paper's 2.2 M includes the 512-d fc layer
    assert net(torch.randn(2, 3, 64, 32)).shape == (2, 1000)
    assert osnet("x0_25")(torch.randn(1, 3, 64, 32)).shape == (1, 128, 4, 2)  # output stride 16


def test_slices_load_from_one_checkpoint(tmp_path):
    full = osnet("x0_25", num_classes=10).eval()
    path = tmp_path / "osnet.pth"
    torch.save(full.state_dict(), path)
    trunk = build_trunk("osnet_x0_25", parts=("stem", "layer1", "layer2"))
    branch = build_trunk("osnet_x0_25", parts=("layer3", "layer4"))
    report = load_pretrained(trunk, path, verbose=False)
    assert not report["missing"] and not report["unexpected"] and report["ignored"]
    assert not load_pretrained(branch, path, verbose=False)["missing"]
    x = torch.randn(2, 3, 64, 32)
    stem_to_conv5 = torch.nn.Sequential(*(full.stage(p) if p != "stem" else torch.nn.Sequential(
        full.conv1, full.maxpool) for p in ("stem", "layer1", "layer2", "layer3", "layer4")))
    trunk.eval(), branch.eval()
    assert torch.allclose(branch(trunk(x)), stem_to_conv5(x), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="unknown backbone 'osnet_x2'"):
        build_trunk("osnet_x2")
    with pytest.raises(ValueError, match="output stride is fixed"):
        osnet("x0_25", last_stride=2)


def test_methods_run_on_osnet():
    x, mod, pids = torch.randn(4, 3, 64, 32), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    agw = ReIDNet(num_classes=3, backbone="osnet_x0_25", non_local=(0, 1, 1, 0))
    out = agw(x, mod)
    assert out["pooled"].shape == (4, 128) and len(agw.backbone.stems) == 2
    idkl = IDKL(num_classes=3, backbone="osnet_x0_25")
    out = idkl(x, mod)
    assert out["feat_sh"].shape == (4, 128) and out["logits_sh"].shape == (4, 3)
    assert idkl.eval()(x).shape == (4, 128)
    del pids


def test_plain_trunk_as_a_backbone():
    x, mod = torch.randn(4, 3, 64, 32), torch.tensor([0, 0, 1, 1])
    trunk = build_trunk("plain_w8")
    assert trunk(x).shape == (4, 64, 4, 2) and trunk.stage_channels == (16, 32, 64, 64)
    idkl = IDKL(num_classes=3, backbone="plain_w8")
    assert idkl(x, mod)["feat_sp"].shape == (4, 64)
    agw = ReIDNet(num_classes=3, backbone="plain_w8", non_local=(0, 0, 1, 1))
    assert agw(x, mod)["pooled"].shape == (4, 64)
    with pytest.raises(ValueError, match="unknown backbone 'plain'"):
        build_trunk("plain")
