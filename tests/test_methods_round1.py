"""AGW, CAJ, MBFVRD and the config-only combinations (IDKL + CAJ augmentation, any method + hetero-center):
each trains on a tiny synthetic SYSU tree through ``vireid.app.runs`` and is evaluated; plus the
tri-modal batch, the MBFVRD model's shapes and gradients, the parameter groups and the config errors."""

import json

import pytest
import torch
import yaml

from vireid.app.runs import evaluate_run, resolve_config_path, train
from vireid.config import load_config, merge
from vireid.methods import build_recipe
from vireid.methods.baseline import tri_modal
from vireid.models.mbfvrd import MBFVRD
from vireid.synth.generator import generate

TINY = {"data": {"height": 32, "width": 16, "p": 2, "k": 4, "workers": 0, "cache": False},
        "model": {"depth": 18}, "train": {"epochs": 1, "milestones": [], "amp": "off", "log_every": 1,
                                                "time_budget_s": 0}}
SMALL = {"model": {"non_local": [0, 1, 1, 0]}, "train": {"warmup_epochs": 0, "lr": 0.01}}
PROTOCOL = "sysu/all/single/seeded"


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "sysu"
    generate(root, "sysu", 8, seed=1, size=(32, 16), images=2, workers=1)
    return root


CASES = {  # config, settings merged over it, terms that must be logged
    "agw": ("agw_sysu", SMALL, {"id", "wrt"}),
    "caj": ("caj_sysu", SMALL, {"id", "adp"}),
    "mbfvrd": ("mbfvrd_sysu", merge(SMALL, {"model": {"ib_widths": [64, 32]}}),
               {"id", "id_z", "vsd", "wrt", "hetero_center"}),
    "agw+hc": ("agw_sysu", merge(SMALL, {"loss": {"hetero_center": 1.0}}), {"id", "wrt", "hetero_center"}),
    "idkl+caj+hc": ("demo_idkl", {"data": {"augment": "caj"}, "loss": {"hetero_center": 1.0}},
                    {"hetero_center_sh", "ce"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recipe_trains_and_evaluates(case, sysu_root, tmp_path):
    config, extra, logged = CASES[case]
    out = tmp_path / case
    tiny = tmp_path / "tiny.yaml"  # the shipped config shrunk (a _base_ merge may add keys; overrides may not)
    tiny.write_text(yaml.safe_dump({"_base_": str(resolve_config_path(config)), **merge(TINY, extra)}))
    train(tiny, sysu_root, out, device="cpu", progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) >= 2  # at least two optimisation steps
    assert logged <= set(records[-1]) and all(records[-1][k] == records[-1][k] for k in logged)  # finite
    result = evaluate_run(out, sysu_root, PROTOCOL, device="cpu", trials=[0, 1])
    assert len(result.trials) == 2 and 0.0 <= result.mean["mAP"] <= 1.0 and 0.0 <= result.mean["rank1"] <= 1.0


def test_tri_modal_batch_layout():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 8, 4)
    pids, modality = torch.tensor([5, 6, 5, 6]), torch.tensor([0, 0, 1, 1])
    out, labels, mods = tri_modal(images, pids, modality)
    assert labels.tolist() == [5, 6, 5, 6, 5, 6] and mods.tolist() == [0, 0, 0, 0, 1, 1]
    torch.testing.assert_close(out[:2], images[:2])
    torch.testing.assert_close(out[4:], images[2:])
    for img in out[2:4]:  # each exchanged image is one of its source channels copied three times
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
        assert any(torch.equal(img[0], src[c]) for src in images[:2] for c in range(3))
    with pytest.raises(ValueError, match="visible and infrared samples"):
        tri_modal(images, pids, torch.zeros(4, dtype=torch.long))


def test_caj_step_feeds_three_views_through_the_model():
    cfg = load_config(resolve_config_path("caj_sysu"), ["model.depth=18", "model.non_local=[0,0,0,0]"])
    recipe = build_recipe(cfg, num_classes=3)
    seen = {}
    recipe.model.register_forward_hook(lambda m, args, out: seen.update(n=args[0].shape[0], mod=args[1].tolist()))
    batch = (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8),
             torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    terms = recipe.training_step(recipe.model, batch)
    assert seen["n"] == 12 and seen["mod"] == [0] * 8 + [1] * 4
    assert set(terms) == {"loss", "id", "adp"}
    torch.testing.assert_close(terms["loss"], terms["id"] + terms["adp"])


def test_agw_param_groups_split_backbone_and_heads():
    cfg = load_config(resolve_config_path("agw_sysu"), ["model.depth=18", "model.non_local=[0,2,2,0]"])
    recipe = build_recipe(cfg, num_classes=4)
    backbone, heads = recipe.param_groups()
    assert backbone["lr_mult"] == 0.1 and "lr_mult" not in heads
    n_all = sum(1 for _ in recipe.model.parameters())
    assert len(backbone["params"]) + len(heads["params"]) == n_all
    assert any(p is recipe.model.backbone.non_local["layer2"][0].theta.weight for p in backbone["params"])
    assert any(p is recipe.model.classifier.weight for p in heads["params"])


def test_mbfvrd_shapes_gradients_and_test_features():
    torch.manual_seed(0)
    net = MBFVRD(num_classes=5, depth=18, non_local=None, ib_widths=(64, 32))
    x, modality = torch.randn(4, 3, 32, 16), torch.tensor([0, 1, 0, 1])
    out = net(x, modality)
    assert out["pooled1"].shape == out["bn2"].shape == (4, 512) and out["z1"].shape == (4, 32)
    assert out["logits2"].shape == out["z_logits1"].shape == (4, 5)
    torch.testing.assert_close(out["pooled2"], out["bn1"] + net.pool2(out["map"]))  # global2 = global1 + GeM(x)
    sum(out[k].logsumexp(1).sum() for k in ("logits1", "logits2", "z_logits1", "z_logits2")).backward()
    assert net.pool1.p.grad is not None and net.ib[0].weight.grad is not None
    assert net.backbone.stems[0].conv1.weight.grad.abs().sum() > 0
    net.eval()
    assert net(x, modality).shape == (4, 1024)
    torch.testing.assert_close(net(x, modality)[:, :512].norm(dim=1), torch.ones(4))
    net.test_feature = "bn2"
    assert net(x, modality).shape == (4, 512)


def test_learnable_gem_exponent_is_clamped_and_trained_at_the_backbone_rate():
    from vireid.models.layers import GeM

    pool = GeM(3.0, learnable=True, p_min=1.0)
    with torch.no_grad():
        pool.p.fill_(-2.0)
    x = torch.rand(2, 4, 3, 3) + 0.1
    torch.testing.assert_close(pool(x), x.mean(dim=(2, 3)))  # clamped to p = 1: average pooling
    with pytest.raises(ValueError, match="p_min must be in"):
        GeM(3.0, learnable=True, p_min=4.0)
    cfg = load_config(resolve_config_path("mbfvrd_sysu"), ["model.depth=18", "model.non_local=[0,0,0,0]"])
    recipe = build_recipe(cfg, num_classes=3)
    backbone, heads = recipe.param_groups()
    assert any(p is recipe.model.pool1.p for p in backbone["params"])
    assert not any(p is recipe.model.pool1.p for p in heads["params"])


def test_mbfvrd_step_terms_and_vsd_switch():
    cfg = load_config(resolve_config_path("mbfvrd_sysu"), ["model.depth=18", "model.non_local=[0,0,0,0]",
                                                          "loss.vsd=0.0", "loss.metric_branches=[2]"])
    recipe = build_recipe(cfg, num_classes=3)
    batch = (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8),
             torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    terms = recipe.training_step(recipe.model, batch)
    assert set(terms) == {"loss", "id", "id_z", "wrt", "hetero_center"}
    torch.testing.assert_close(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))


@pytest.mark.parametrize("config, override, message", [
    ("agw_sysu", "model.depth=18", "3 blocks after layer3, which has only 2"),
    ("agw_sysu", "loss.wrt=-1", "loss.wrt must be a number >= 0"),
    ("mbfvrd_sysu", "loss.metric_branches=[3]", "metric_branches must be a list drawn from"),
    ("agw_sysu", "recipe.backbone_lr_mult=0", "backbone_lr_mult must be a number > 0"),
])
def test_config_errors_name_the_value(config, override, message):
    cfg = load_config(resolve_config_path(config), [override])
    with pytest.raises(ValueError, match=message):
        build_recipe(cfg, num_classes=3).param_groups()


def test_unknown_keys_are_rejected():
    cfg = load_config(resolve_config_path("agw_sysu"))
    cfg["loss"]["vsd"] = 1.0
    with pytest.raises(ValueError, match="unknown loss setting\\(s\\) vsd"):
        build_recipe(cfg, num_classes=3)


@pytest.mark.parametrize("name", [f"{m}_{d}" for m in ("agw", "caj", "mbfvrd") for d in ("sysu", "regdb", "llcm")])
def test_shipped_configs_build(name):
    cfg = load_config(resolve_config_path(name), ["model.depth=18", "model.non_local=[0,0,0,0]"])
    assert cfg["method"] in name and cfg["data"]["dataset"] == name.split("_")[1]
    assert cfg["eval"]["protocol"].startswith(name.split("_")[1])
    recipe = build_recipe(cfg, num_classes=3)
    assert recipe.name == cfg["method"] and len(recipe.param_groups()) == 2
