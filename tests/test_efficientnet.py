"""EfficientNet-Lite0 trunk: the registry package's ImageNet file loads by name, every split point works."""

import pytest
import torch
import torch.nn.functional as F

from deploy_runs import make_run, write_images
from vireid.app.runs import resolve_config_path, run_defaults
from vireid.config import load_config
from vireid.deploy.export import export_run
from vireid.methods import build_recipe
from vireid.models.backbones import build_trunk, load_pretrained
from vireid.models.backbones.efficientnet import PART_BLOCKS
from vireid.models.backbones.weights import pretrained_path
from vireid.models.reid_net import ReIDNet

PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")
IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def weights():
    return pretrained_path("imagenet", "efficientnet_lite0")  # the package's file: no network


def _images(n=4, h=64, w=32, seed=0):
    """ImageNet-normalised smooth random images (blocky colour fields, like a coarse photo)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")
    return (x - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)


def test_the_package_file_loads_with_no_missing_or_unexpected_keys(weights):
    full = build_trunk("efficientnet_lite0", num_classes=1000)
    report = load_pretrained(full, weights, verbose=False)
    assert len(report["matched"]) == 296 and not report["missing"] and not report["unexpected"]
    assert not report["shape_mismatch"] and not report["ignored"]
    assert sum(p.numel() for p in full.parameters()) == 4_652_008
    # IDKL's cut: a shared trunk (stem, layer1, layer2) and a branch (layer3, layer4), each from the same file
    trunk = build_trunk("efficientnet_lite0", parts=PARTS[:3])
    branch = build_trunk("efficientnet_lite0", parts=PARTS[3:], last_stride=2)
    for part in (trunk, branch):
        r = load_pretrained(part, weights, verbose=False)
        assert not r["missing"] and not r["unexpected"] and r["ignored"]
    assert "_blocks.4._project_conv.weight" in trunk.state_dict()  # the split falls after block 4
    assert "_blocks.5._expand_conv.weight" in branch.state_dict()
    full.eval(), trunk.eval(), branch.eval()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(full._fc(branch(trunk(x)).mean(dim=(2, 3))), full(x), atol=1e-5, rtol=0)


def test_feature_strides_and_channels():
    trunk = build_trunk("efficientnet_lite0").eval()
    x = torch.randn(2, 3, 128, 64)
    shapes = []
    with torch.no_grad():
        for part in PARTS:
            x = trunk.stage(part)(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 64, 32), (24, 32, 16), (40, 16, 8), (112, 8, 4), (1280, 4, 2)]
    assert trunk.stage_channels == (24, 40, 112, 1280) and trunk.out_channels == 1280
    one = build_trunk("efficientnet_lite0", parts=("layer4",), last_stride=1)
    assert one(torch.randn(1, 112, 8, 4)).shape == (1, 1280, 8, 4)  # last_stride=1: stride 16 overall
    assert [len(PART_BLOCKS[p]) for p in PARTS] == [1, 2, 2, 6, 5] and sum(len(v) for v in PART_BLOCKS.values()) == 16
    with pytest.raises(ValueError, match="parts must be an ordered"):
        build_trunk("efficientnet_lite0", parts=("layer2", "stem"))
    with pytest.raises(ValueError, match="num_classes needs the whole network"):
        build_trunk("efficientnet_lite0", parts=("stem",), num_classes=10)


def test_imagenet_output_is_finite_and_not_degenerate(weights):
    torch.manual_seed(0)
    pretrained = build_trunk("efficientnet_lite0", num_classes=1000)
    random_init = build_trunk("efficientnet_lite0", num_classes=1000)
    load_pretrained(pretrained, weights, verbose=False)
    pretrained.eval(), random_init.eval()
    x = _images(6)
    with torch.no_grad():
        logits = pretrained(x)
        pooled = torch.nn.Sequential(*(pretrained.stage(p) for p in PARTS))(x).mean(dim=(2, 3))
    assert torch.isfinite(logits).all() and torch.isfinite(pooled).all()
    assert (pooled >= 0).all() and (pooled <= 6).all()  # ReLU6 after the head
    assert (logits.softmax(1).max(1).values < 0.999).all()  # no saturated, degenerate output
    assert pooled.std(0).mean() > 1e-3  # the images get different features
    with torch.no_grad():
        assert not torch.allclose(random_init(x), logits, atol=1e-2)  # the file's weights, not the initialisation


@pytest.mark.parametrize("method", ["agw", "idkl"])
def test_a_training_step_from_imagenet(method):
    overrides = ["model.backbone=efficientnet_lite0", "model.pretrained=imagenet", "data.height=64",
                 "data.width=32"]
    if method == "agw":
        overrides.append("model.non_local=[0,1,1,0]")
    cfg = load_config(resolve_config_path({"agw": "agw_sysu", "idkl": "demo_idkl"}[method]), overrides,
                      defaults=run_defaults)
    torch.manual_seed(0)
    recipe = build_recipe(cfg, 4)
    model = recipe.model.train()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 64, 32, generator=g)
    pids, modality = torch.arange(4).repeat(2), torch.tensor([0, 1]).repeat_interleave(4)  # the sampler's layout
    stem = next(p for n, p in model.named_parameters() if "_conv_stem" in n)
    before = stem.detach().clone()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    terms = recipe.training_step(model, (images, pids, torch.zeros(8), modality))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    optim.step()
    assert not torch.equal(before, stem.detach())
    model.eval()
    with torch.no_grad():
        assert recipe.embed(images, modality).shape == (8, 1280)


def test_frozen_blocks_get_no_update_and_keep_their_bn_statistics():
    """model.frozen_blocks: 3 fixes both stems (stem conv + block 0) and blocks 1-2; block 3 on still learns."""
    cfg = load_config(resolve_config_path("demo_imagenet"), ["model.frozen_blocks=3", "model.pretrained=null"],
                      defaults=run_defaults())
    torch.manual_seed(0)
    recipe = build_recipe(cfg, 4)
    model = recipe.model.train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad and n.startswith("backbone.")]
    assert frozen and all(n.startswith(("backbone.stems.", "backbone.layers._blocks.1.", "backbone.layers._blocks.2."))
                          for n in frozen)
    assert sum(n.startswith("backbone.stems.") for n in frozen) == sum(
        n.startswith("backbone.stems.") for n, _ in model.named_parameters())
    stem_bn = model.backbone.stems[0]._bn0
    assert not stem_bn.training and not getattr(model.backbone.layers._blocks, "2")._bn1.training  # eval even in train()
    assert getattr(model.backbone.layers._blocks, "3")._bn1.training and model.bn_neck.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 64, 32, generator=g)
    pids, modality = torch.arange(4).repeat(2), torch.tensor([0, 1]).repeat_interleave(4)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    recipe.training_step(model, (images, pids, torch.zeros(8), modality))["loss"].backward()
    optim.step()
    after = model.state_dict()
    for key in ("backbone.stems.1._conv_stem.weight", "backbone.stems.0._bn0.running_mean",
                "backbone.layers._blocks.2._depthwise_conv.weight", "backbone.layers._blocks.2._bn1.running_var"):
        assert torch.equal(before[key], after[key]), key
    for key in ("backbone.layers._blocks.3._depthwise_conv.weight", "backbone.layers._blocks.3._bn1.running_mean"):
        assert not torch.equal(before[key], after[key]), key
    with pytest.raises(ValueError, match="frozen_blocks must be an integer from 0 to 16"):
        build_trunk("efficientnet_lite0").freeze(17)
    with pytest.raises(ValueError, match=r"model.frozen_blocks=2 needs .*\(efficientnet_lite0\), not 'resnet'"):
        ReIDNet(4, depth=18, non_local=(0, 0, 0, 0), frozen_blocks=2)


@pytest.mark.parametrize("preset, extra", [("idkl_sysu", []), ("msclnet_sysu", []), ("maum_sysu", []),
                                           ("cmlsp_sysu", ["model.stripes=4"]), ("mbfvrd_sysu", []),
                                           ("nformer_sysu", []), ("spot_nopose_sysu", ["model.parts=4"]),
                                           ("caj_sysu", [])])
def test_every_trunk_method_freezes_the_same_blocks(preset, extra):
    """model.frozen_blocks is a trunk setting: in every method on the trunk, the stem conv and blocks 0..N-1 (in
    every slice that holds them: IDKL's trunk and both branches) get no gradient and no update, the next block
    learns, and asking it of a backbone that cannot freeze is refused by name."""
    cfg = load_config(resolve_config_path(preset), ["model.backbone=efficientnet_lite0", "model.pretrained=null",
                                                    "model.frozen_blocks=6", *extra], defaults=run_defaults)
    torch.manual_seed(0)
    recipe = build_recipe(cfg, 4)
    model = recipe.model.train()
    names = [n for n, _ in model.named_parameters()]
    low = [n for n in names if ("_blocks." not in n and ("_conv_stem." in n or "._bn0." in n))
           or any(f"_blocks.{i}." in n for i in range(6))]
    learnt = [n for n in names if "_blocks.6." in n]
    assert low and learnt
    params = dict(model.named_parameters())
    assert not any(params[n].requires_grad for n in low) and all(params[n].requires_grad for n in learnt)
    if preset == "idkl_sysu":  # blocks 5 (frozen) and 6 (trained) sit in both branches
        assert {n.split(".")[0] for n in learnt} == {"branch_sh", "branch_sp"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 64, 32, generator=g)
    pids, modality = torch.arange(4).repeat(2), torch.tensor([0, 1]).repeat_interleave(4)
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    recipe.training_step(model, (images, pids, torch.zeros(8), modality))["loss"].backward()
    optim.step()
    after = model.state_dict()
    frozen_stats = [k for k in after if k.endswith("running_mean") and k.rsplit(".", 1)[0] + ".weight" in low]
    assert frozen_stats and all(torch.equal(before[k], after[k]) for k in low + frozen_stats)
    assert any(not torch.equal(before[k], after[k]) for k in learnt)
    with pytest.raises(ValueError, match=r"model.frozen_blocks=6 needs .*\(efficientnet_lite0\), not 'resnet'"):
        build_recipe(load_config(resolve_config_path(preset), ["model.depth=18", "model.frozen_blocks=6"],
                                 defaults=run_defaults), 4)


def test_onnx_export_parity(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    images = [str(p) for p in write_images(tmp_path / "imgs", 3, seed=3)]
    for method in ("idkl", "agw"):
        run = make_run(tmp_path / method, method, extra=["model.backbone=efficientnet_lite0"])
        report = export_run(run, "onnx", tmp_path / f"{method}.onnx", images)
        assert report.max_abs_diff <= 1e-4, method
