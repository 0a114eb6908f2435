"""The backbone registry: a family registered in its own module is built, listed and given its weight rule."""

import pkgutil
import sys

import pytest
import torch
from torch import nn

import vireid.models.backbones as backbones
from vireid.models.backbones import build_trunk, register_backbone, unregister_backbone
from vireid.models.backbones import weights as W
from vireid.models.reid_net import ReIDNet

PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")


class ToyTrunk(nn.Module):
    """The smallest trunk with the five split points: one 3x3 conv per part."""

    def __init__(self, width: int = 4, parts=PARTS, last_stride: int = 1):
        super().__init__()
        self.parts = tuple(parts)
        cin = {"stem": 3, "layer1": width, "layer2": width, "layer3": width, "layer4": width}
        for part in self.parts:
            setattr(self, part, nn.Conv2d(cin[part], width, 3, stride=2 if part in ("stem", "layer1") else 1,
                                          padding=1))
        self.stage_channels = (width,) * 4
        self.out_channels = width

    def stage(self, part):
        return getattr(self, part)

    def unbuilt_prefixes(self):
        return tuple(p + "." for p in PARTS if p not in self.parts)

    def forward(self, x):
        for part in self.parts:
            x = getattr(self, part)(x)
        return x


@pytest.fixture
def toy():
    """Register ``toy_w<width>`` for one test and remove it afterwards."""

    @register_backbone("toy_w<width>", pattern=r"toy_w(\d+)", imagenet={"toy_w4": "resnet18.tv_in1k"})
    def toy_trunk(name, depth=50, **kwargs):
        return ToyTrunk(int(name.removeprefix("toy_w")), **kwargs)

    yield toy_trunk
    unregister_backbone("toy_w<width>")


def test_a_registered_backbone_is_built_by_name_and_by_the_models(toy):
    trunk = build_trunk("toy_w6")
    assert isinstance(trunk, ToyTrunk) and trunk(torch.randn(2, 3, 32, 16)).shape == (2, 6, 8, 4)
    stem = build_trunk("toy_w6", parts=("stem",))
    assert stem.parts == ("stem",)
    net = ReIDNet(num_classes=3, backbone="toy_w4", non_local=(0, 0, 0, 0))  # a method model builds it through build_trunk
    out = net(torch.randn(4, 3, 32, 16), torch.tensor([0, 0, 1, 1]))
    assert out["pooled"].shape == (4, 4)
    assert W.imagenet_name("toy_w4") == "resnet18.tv_in1k"  # its default weights come with its registration
    assert W.require_pretrained({"backbone": "toy_w4"}) is None  # no weight rule: a random start is fine


def test_unregistering_removes_the_name(toy):
    unregister_backbone("toy_w<width>")
    with pytest.raises(ValueError, match="unknown backbone 'toy_w4'"):
        build_trunk("toy_w4")


def test_an_unknown_name_lists_every_registered_one(toy):
    with pytest.raises(ValueError) as err:
        build_trunk("resnext")
    message = str(err.value)
    assert message.startswith("unknown backbone 'resnext'; expected one of ")
    for name in (*backbones.BACKBONES, "toy_w<width>"):
        assert name in message
    assert "resnet" in backbones.BACKBONES and "vit_d<dim>_l<depth>_h<heads>" in backbones.BACKBONES


def test_a_name_is_registered_once(toy):
    with pytest.raises(ValueError, match="backbone toy_w<width> is already registered"):
        register_backbone("toy_w<width>")(lambda name, depth=50, **kwargs: None)


def test_every_module_of_the_package_is_imported():
    # a new backbone file is found without a list: the package imports all its modules
    for info in pkgutil.iter_modules(backbones.__path__):
        assert f"vireid.models.backbones.{info.name}" in sys.modules, info.name
