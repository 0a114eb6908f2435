"""ViT backbone: timm's names and sizes, overlapping patches, position-grid resizing, loading report, ReIDNet on it."""

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from vireid.app.runs import evaluate_run, resolve_config_path, train
from vireid.config import merge
from vireid.models.backbones import build_trunk, build_vit, load_pretrained
from vireid.models.backbones.vit import checkpoint_grid, grid_size, resize_pos_embed, split_tokens, vit_config
from vireid.models.backbones.weights import require_pretrained
from vireid.models.idkl import IDKL
from vireid.models.reid_net import ReIDNet
from vireid.synth.generator import generate

TINY = dict(patch_size=8, patch_stride=6, img_size=(32, 16))  # a 5 x 2 grid


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    return build_vit("vit_d32_l2_h2", **{**TINY, **kwargs})


def analytic_params(dim: int, depth: int, patch: int, positions: int) -> int:
    """Patch conv + cls + pos + per block (qkv 3d^2+3d, proj d^2+d, fc1 4d^2+4d, fc2 4d^2+d, 2 LayerNorms 4d)
    + final LayerNorm."""
    return 3 * patch * patch * dim + dim + dim + positions * dim + depth * (12 * dim * dim + 13 * dim) + 2 * dim


def test_names_are_timms_and_the_sizes_are_the_published_ones():
    keys = set(tiny_vit().state_dict())
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.norm1.weight",
                "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
                "blocks.1.norm2.bias", "blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.bias", "norm.weight", "norm.bias"):
        assert key in keys, key
    assert vit_config("vit_base") == (768, 12, 12) and vit_config("vit_small") == (384, 12, 6)
    assert vit_config("vit_tiny") == (192, 12, 3) and vit_config("vit_d32_l2_h2") == (32, 2, 2)
    # ViT-Ti/16 at 224 with 16x16 non-overlapping patches: timm's vit_tiny_patch16_224 has 5,717,416 parameters,
    # 193,000 of them in its 1000-class head
    tiny = build_vit("vit_tiny", patch_stride=16, img_size=(224, 224))
    assert sum(p.numel() for p in tiny.parameters()) == 5_717_416 - 193_000
    assert analytic_params(192, 12, 16, 197) == 5_717_416 - 193_000
    # the overlapping 16/12 geometry at 256x128: a 21 x 10 grid, TransReID's 210 patch tokens
    assert grid_size(256, 128, 16, 12) == (21, 10)


def test_shapes_odd_inputs_and_the_two_parts():
    vit = tiny_vit().eval()
    tokens = vit(torch.randn(2, 3, 32, 16))
    assert tokens.shape == (2, 1 + 5 * 2, 32)
    odd = vit(torch.randn(2, 3, 37, 19))  # floor((37 - 8) / 6) + 1 = 5, floor((19 - 8) / 6) + 1 = 2
    assert odd.shape == (2, 11, 32)
    assert vit(torch.randn(1, 3, 50, 27)).shape == (1, 1 + 8 * 4, 32)  # another grid: position embeddings resized
    cls, fmap = split_tokens(tokens, (5, 2))
    assert cls.shape == (2, 32) and fmap.shape == (2, 32, 5, 2)
    torch.testing.assert_close(fmap[:, :, 1, 0], tokens[:, 1 + 2])  # row-major: (row 1, col 0) is patch 2
    stem, body = build_trunk("vit_d32_l2_h2", parts=("stem",), **TINY), build_trunk(
        "vit_d32_l2_h2", parts=("layer1", "layer2", "layer3", "layer4"), **TINY)
    stem.load_state_dict({k: v for k, v in vit.state_dict().items() if k.startswith("patch_embed.")})
    body.load_state_dict({k: v for k, v in vit.state_dict().items() if not k.startswith("patch_embed.")})
    x = torch.randn(2, 3, 32, 16)
    assert stem(x).shape == (2, 32, 5, 2)
    torch.testing.assert_close(body.eval()(stem(x)), vit(x))
    with pytest.raises(ValueError, match="a 7x16 input is smaller than one 8x8 patch"):
        vit(torch.randn(1, 3, 7, 16))


def test_position_embeddings_resize_bicubically_over_the_grid_keeping_the_class_position():
    torch.manual_seed(1)
    pos = torch.randn(1, 1 + 3 * 2, 4)
    assert resize_pos_embed(pos, (3, 2), (3, 2)) is pos
    out = resize_pos_embed(pos, (3, 2), (5, 4))
    assert out.shape == (1, 1 + 20, 4)
    torch.testing.assert_close(out[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 3, 2, 4).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(5, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(out[:, 1:], expected.reshape(1, 20, 4))
    const = torch.full((1, 1 + 6, 3), 0.7)
    torch.testing.assert_close(resize_pos_embed(const, (3, 2), (7, 5)), torch.full((1, 36, 3), 0.7))
    # a model fed another input size uses exactly its resized embeddings
    vit = tiny_vit().eval()
    x = torch.randn(1, 3, 44, 22)  # a 7 x 3 grid
    same = tiny_vit(img_size=(44, 22)).eval()
    same.load_state_dict({**vit.state_dict(), "pos_embed": resize_pos_embed(vit.pos_embed.detach(), (5, 2), (7, 3))})
    torch.testing.assert_close(vit(x), same(x))


def test_checkpoint_grids_are_recognised_or_refused():
    assert checkpoint_grid(197, (21, 10)) == ((14, 14), 1)  # ImageNet 224/16
    assert checkpoint_grid(211, (21, 10)) == ((21, 10), 1)  # a re-ID checkpoint of the same geometry
    assert checkpoint_grid(196, (21, 10)) == ((14, 14), 0)  # no class position
    with pytest.raises(ValueError, match="cannot tell the grid of a checkpoint pos_embed with 13 positions"):
        checkpoint_grid(13, (5, 2))


def fake_timm_checkpoint(path):
    """A timm-style ViT state dict: square 4x4 grid (non-overlapping 8x8 patches at 32x32), an ImageNet head,
    one tensor removed and one this ViT does not have."""
    torch.manual_seed(3)
    source = build_vit("vit_d32_l2_h2", patch_size=8, patch_stride=8, img_size=(32, 32))
    for p in source.parameters():
        torch.nn.init.normal_(p)
    state = dict(source.state_dict())
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.0.ls1.gamma"] = torch.ones(32)  # layer scale of newer timm models
    state["head.weight"], state["head.bias"] = torch.randn(1000, 32), torch.randn(1000)
    torch.save(state, path)
    return state


def test_a_timm_checkpoint_loads_with_its_grid_resized_and_a_report(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vireid")
    path = tmp_path / "vit_tiny_test.pth"
    state = fake_timm_checkpoint(path)
    vit = tiny_vit()
    report = load_pretrained(vit, path)
    assert report["missing"] == ["blocks.1.mlp.fc2.bias"]
    assert report["unexpected"] == ["blocks.0.ls1.gamma"]
    assert sorted(report["ignored"]) == ["head.bias", "head.weight"]
    assert not report["shape_mismatch"] and len(report["matched"]) == len(vit.state_dict()) - 1
    assert "1 missing, 1 unexpected" in caplog.text and "sha256" in caplog.text
    torch.testing.assert_close(vit.pos_embed.detach(), resize_pos_embed(state["pos_embed"], (4, 4), (5, 2)))
    torch.testing.assert_close(vit.blocks[0].attn.qkv.weight.detach(), state["blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(vit.patch_embed.proj.weight.detach(), state["patch_embed.proj.weight"])
    # a two-stream ReIDNet loads the patch embedding into both stems and the rest into the transformer
    net = ReIDNet(num_classes=3, backbone="vit_d32_l2_h2", patch_size=8, patch_stride=6, non_local=(0, 0, 0, 0),
                  pool="cls", pretrained=str(path))
    for stem in net.backbone.stems:
        torch.testing.assert_close(stem.patch_embed.proj.bias.detach(), state["patch_embed.proj.bias"])
    torch.testing.assert_close(net.backbone.layers.norm.weight.detach(), state["norm.weight"])
    # another width: every tensor is a shape mismatch, reported, nothing copied
    other = build_vit("vit_d16_l2_h2", **TINY)
    mismatched = load_pretrained(other, path, verbose=False)
    assert not mismatched["matched"] and "pos_embed: file (1, 17, 32) vs model (1, 11, 16)" in mismatched[
        "shape_mismatch"]


def test_a_pos_embed_of_unknown_grid_names_the_file(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"pos_embed": torch.zeros(1, 13, 32)}, path)
    with pytest.raises(ValueError, match=r"odd.pth: cannot tell the grid .* 13 positions"):
        load_pretrained(tiny_vit(), path, verbose=False)


def test_gradients_reach_every_parameter():
    vit = tiny_vit()
    vit(torch.randn(3, 3, 32, 16))[:, 0].pow(2).sum().backward()
    for name, p in vit.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown ViT backbone 'vit_huge'"):
        build_trunk("vit_huge")
    with pytest.raises(ValueError, match="width 30 must be a positive multiple of the 4 heads"):
        vit_config("vit_d30_l2_h4")
    with pytest.raises(ValueError, match=r"patch_stride \(10\) must not exceed patch_size \(8\)"):
        build_vit("vit_d32_l2_h2", patch_size=8, patch_stride=10)
    with pytest.raises(ValueError, match="a ViT splits only into its patch embedding"):
        build_trunk("vit_d32_l2_h2", parts=("stem", "layer1", "layer2"))
    with pytest.raises(ValueError, match="a ViT splits only into its patch embedding"):
        IDKL(num_classes=3, backbone="vit_d32_l2_h2")
    with pytest.raises(ValueError, match=r"set model.non_local=\[0, 0, 0, 0\]"):
        ReIDNet(num_classes=3, backbone="vit_d32_l2_h2")
    with pytest.raises(ValueError, match="pool 'cls' is a ViT's class token; the 'resnet' backbone has none"):
        ReIDNet(num_classes=3, depth=18, pool="cls")


def test_vit_runs_refuse_an_empty_pretrained_setting(tmp_path):
    with pytest.raises(ValueError, match="a ViT trained from scratch on re-ID data is a known failure"):
        require_pretrained({"backbone": "vit_small"})
    with pytest.raises(ValueError, match="known failure"):
        require_pretrained({"backbone": "vit_base", "depth": 50, "pretrained": ""})
    assert require_pretrained({"backbone": "vit_small", "pretrained": "none"}) is None
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        require_pretrained({"backbone": "vit_small", "pretrained": str(tmp_path / "nope.pth")})


@pytest.mark.parametrize("pool", ["cls", "avg", "gem"])
def test_reidnet_on_a_vit(pool):
    net = ReIDNet(num_classes=3, backbone="vit_d32_l2_h2", patch_size=8, patch_stride=6, non_local=(0, 0, 0, 0),
                  pool=pool)
    x, mod = torch.randn(4, 3, 32, 16), torch.tensor([0, 0, 1, 1])
    out = net(x, mod)
    assert out["map"].shape == (4, 32, 5, 2) and out["pooled"].shape == (4, 32) and out["logits"].shape == (4, 3)
    cls, fmap = net.backbone.features(x, mod)
    if pool == "cls":
        torch.testing.assert_close(out["pooled"], cls)
    elif pool == "avg":
        torch.testing.assert_close(out["pooled"], fmap.mean(dim=(2, 3)))
    out["logits"].sum().backward()
    assert net.backbone.stems[0].patch_embed.proj.weight.grad is not None
    assert net.backbone.stems[1].patch_embed.proj.weight.grad is not None  # one patch embedding per modality
    assert math.isclose(float(net.eval()(x, mod).norm(dim=1).mean()), 1.0, rel_tol=1e-5)


def test_agw_recipe_trains_and_evaluates_on_a_tiny_vit(tmp_path):
    root = tmp_path / "sysu"
    generate(root, "sysu", 8, seed=1, size=(32, 16), images=2, workers=1)
    tiny = {"data": {"height": 32, "width": 16, "p": 2, "k": 2, "workers": 0, "cache": False, "sampler": "balanced"},
            "model": {"backbone": "vit_d32_l2_h2", "patch_size": 8, "patch_stride": 6, "pool": "cls",
                      "non_local": [0, 0, 0, 0], "pretrained": "none"},
            "train": {"epochs": 1, "schedule": "multistep", "milestones": [], "lr": 0.01, "amp": "off",
                      "log_every": 1}}
    cfg = tmp_path / "agw_vit.yaml"
    cfg.write_text(yaml.safe_dump({"_base_": str(resolve_config_path("agw_sysu")), **merge({}, tiny)}))
    out = tmp_path / "run"
    train(cfg, root, out, device="cpu", progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(records[-1][k]) for k in ("id", "wrt"))
    result = evaluate_run(out, root, "sysu/all/single/seeded", device="cpu", trials=[0])
    assert 0.0 <= result.mean["mAP"] <= 1.0


def test_grad_cam_on_a_vit_reidnet_weighs_the_routed_patch_embeddings():
    from vireid.deploy.pictures import grad_cam

    torch.manual_seed(0)
    net = ReIDNet(num_classes=3, backbone="vit_d32_l2_h2", patch_size=8, patch_stride=6, non_local=(0, 0, 0, 0),
                  pool="cls")
    cams, name = grad_cam(net, torch.randn(3, 3, 32, 16), torch.tensor([0, 1, 0]))  # both stems in one batch
    assert name == "backbone.patch_map" and cams.shape == (3, 32, 16) and float(cams.max()) > 0.99
