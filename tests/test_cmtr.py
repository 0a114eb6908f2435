"""CMTR: L_MAC and L_MAID by hand, the modality removal, which parameters each loss reaches, the refusal to start
without ViT weights, presets, and a train + evaluate run on synthetic data."""

import json
import math
from dataclasses import replace

import pytest
import torch
import yaml

from vireid.app.runs import evaluate_run, resolve_config_path, train
from vireid.config import load_config, merge
from vireid.losses.cmtr import group_centres, modality_aware_centre, modality_aware_id
from vireid.methods import build_recipe
from vireid.models.cmtr import CMTR, remove_modality
from vireid.synth.generator import generate

TINY_MODEL = ["model.backbone=vit_d32_l2_h2", "model.patch_size=8", "model.patch_stride=6", "model.pretrained=none",
              "data.height=32", "data.width=16"]


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ------------------------------------------------------------------------------------------------- losses

# identity 0: visible (0, 0), (2, 0) -> centre (1, 0), distances 1, 1; infrared (1, 1), (1, -3) -> centre (1, -1),
# distances 2, 2. Over both modalities the centre is (1, -0.5).
REMOVED = [[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, -3.0]]
LABELS, MODALITY = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 1, 1])


def test_mac_per_identity_and_modality_by_hand():
    r = torch.tensor(REMOVED, dtype=torch.float64, requires_grad=True)
    loss = modality_aware_centre(r, LABELS, MODALITY)
    torch.testing.assert_close(loss, torch.tensor((2 * sp(1) + 2 * sp(2)) / 4, dtype=torch.float64))
    # a pair a, b: c = (a + b) / 2, each term softplus(|a - b| / 2); d/da of both = sigmoid(d) * unit(a - b), / 4
    loss.backward()
    s1, s2 = sigmoid(1) / 4, sigmoid(2) / 4
    torch.testing.assert_close(r.grad, torch.tensor([[-s1, 0], [s1, 0], [0, s2], [0, -s2]], dtype=torch.float64))


def test_mac_with_one_centre_per_identity_by_hand():
    r = torch.tensor(REMOVED, dtype=torch.float64)
    loss = modality_aware_centre(r, LABELS, MODALITY, centre="identity")
    expected = (2 * sp(math.sqrt(1.25)) + sp(1.5) + sp(2.5)) / 4
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_mac_of_a_lone_image_is_log2_with_a_finite_gradient():
    r = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = modality_aware_centre(r, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]))
    torch.testing.assert_close(loss, torch.tensor(math.log(2.0)), atol=1e-6, rtol=0)
    loss.backward()
    assert torch.isfinite(r.grad).all()


def test_group_centres_and_errors():
    x = torch.tensor([[1.0], [3.0], [10.0]])
    torch.testing.assert_close(group_centres(x, torch.tensor([5, 5, 2])), torch.tensor([[2.0], [2.0], [10.0]]))
    with pytest.raises(ValueError, match="centre must be one of modality, identity, got 'camera'"):
        modality_aware_centre(x, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), centre="camera")
    with pytest.raises(ValueError, match=r"L_MAC needs removed \(B, D\), labels \(B,\)"):
        modality_aware_centre(x, torch.tensor([0, 0]), torch.tensor([0, 0, 1]))


def test_phi_cancels_in_mac_per_modality_but_not_per_identity():
    torch.manual_seed(0)
    feat = torch.randn(8, 5, dtype=torch.float64)
    labels, modality = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for centre, reached in (("modality", False), ("identity", True)):
        removal = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
        modality_aware_centre(remove_modality(feat, modality, removal), labels, modality, centre).backward()
        assert bool(removal.grad.abs().max() > 1e-6) is reached, (centre, removal.grad)


def test_maid_is_the_cross_entropy_of_the_removed_features_logits():
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    loss = modality_aware_id(logits, torch.tensor([1]))
    torch.testing.assert_close(loss, torch.tensor(math.log(4 / 3)))
    loss.backward()  # d CE / d logits = softmax - onehot = (1/4, 3/4) - (0, 1)
    torch.testing.assert_close(logits.grad, torch.tensor([[0.25, -0.25]]))


def test_remove_modality_subtracts_each_images_own_row():
    feat = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    removal = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    out = remove_modality(feat, torch.tensor([1, 0, 1]), removal)
    torch.testing.assert_close(out, torch.tensor([[1.0, -9.0], [1.0, 2.0], [3.0, -7.0]]))
    with pytest.raises(ValueError, match=r"modality values must be 0 \(visible\) or 1 \(infrared\), got \[0, 2\]"):
        remove_modality(feat, torch.tensor([0, 2, 0]), removal)
    with pytest.raises(ValueError, match=r"removal \(2, D\)"):
        remove_modality(feat, torch.tensor([0, 1, 0]), removal[:1])


# ------------------------------------------------------------------------------------------------ network

X = torch.randn(8, 3, 32, 16, generator=torch.Generator().manual_seed(4))
PIDS, MOD = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
BATCH = (X, PIDS, torch.zeros(8, dtype=torch.long), MOD)


def tiny_net(**kwargs):
    torch.manual_seed(0)
    return CMTR(num_classes=3, backbone="vit_d32_l2_h2", patch_size=8, patch_stride=6, img_size=(32, 16), **kwargs)


def test_network_outputs_and_the_modality_embedding_on_every_token():
    net = tiny_net()
    out = net(X, MOD)
    assert out["pooled"].shape == out["feat"].shape == out["removed"].shape == (8, 32)
    assert out["logits"].shape == out["logits_removed"].shape == (8, 3) and out["map"].shape == (8, 32, 5, 2)
    torch.testing.assert_close(out["removed"], out["feat"] - net.removal()[MOD])
    torch.testing.assert_close(net.removal()[1], net.phi[1](net.modality_embed[1]))
    # the same image as visible and as infrared differs only by e_vis vs e_ir added to every token
    net.eval()
    tokens = {}
    for m in (0, 1):
        patches = net.vit.patch_embed(X[:1])
        with torch.no_grad():
            tokens[m] = net.vit.encode(patches, net.modality_embed[m].expand(1, -1))
    manual = net.vit.patch_embed(X[:1]).flatten(2).transpose(1, 2)
    manual = torch.cat([net.vit.cls_token, manual], 1) + net.vit.pos_embed + net.modality_embed[1]
    for block in net.vit.blocks:
        manual = block(manual)
    torch.testing.assert_close(tokens[1], net.vit.norm(manual))
    assert not torch.allclose(tokens[0], tokens[1])
    feat = net(X, MOD)
    assert feat.shape == (8, 32) and torch.allclose(feat.norm(dim=1), torch.ones(8))
    assert tiny_net(phi="identity").removal() is not None
    torch.testing.assert_close(tiny_net(phi="identity").removal(), tiny_net(phi="identity").modality_embed)


WEIGHTS = ("id", "wrt", "mac", "maid")


def _recipe(centre=None):
    """The preset's recipe (tiny model); ``centre`` overrides loss.mac_centre, None keeps the preset's."""
    cfg = load_config(resolve_config_path("cmtr_sysu"), [*TINY_MODEL, *([f"loss.mac_centre={centre}"] if centre
                                                                        else [])])
    torch.manual_seed(0)
    return build_recipe(cfg, num_classes=3)


def _grads(recipe, term):
    """Parameter name -> gradient (None where the loss did not reach it) of one term alone (weight 1)."""
    loss = {"id": 0.0, "mae": 1.0, "mac": 0.0, "maid": 0.0}
    if term in loss:
        loss[term] = 1.0
    recipe.settings.loss = replace(recipe.settings.loss, **loss, wrt=1.0 if term == "wrt" else 0.0)
    recipe.model.zero_grad(set_to_none=True)
    terms = recipe.training_step(recipe.model, BATCH)
    assert set(terms) == {"loss", term}
    terms["loss"].backward()
    return {n: p.grad for n, p in recipe.model.named_parameters()}


def _reached(grads, prefix, tol=1e-7):
    return [n for n, g in grads.items() if n.startswith(prefix) and g is not None and float(g.abs().max()) > tol]


@pytest.mark.parametrize("term, reaches, blocked", [
    ("id", ("vit.", "modality_embed", "bn_neck.weight", "classifier."), ("phi.",)),
    ("wrt", ("vit.", "modality_embed"), ("phi.", "bn_neck.", "classifier.")),
    ("mac", ("vit.", "modality_embed", "bn_neck.weight", "phi."), ("classifier.",)),  # identity centres
    ("maid", ("vit.", "modality_embed", "phi.", "bn_neck.weight", "classifier."), ()),
])
def test_each_loss_reaches_only_what_it_should(term, reaches, blocked):
    grads = _grads(_recipe(), term)
    for prefix in reaches:
        assert _reached(grads, prefix), f"{term} must train {prefix}*"
    for prefix in blocked:
        assert not _reached(grads, prefix), f"{term} reached {_reached(grads, prefix)[:3]}"
    assert not _reached(grads, "bn_neck.bias", tol=0.0)  # the BN neck's bias is frozen


def test_mac_trains_phi_by_default_and_not_with_modality_centres():
    default = _recipe()
    assert default.settings.loss.mac_centre == type(default.settings.loss)().mac_centre == "identity"
    assert _reached(_grads(default, "mac"), "phi.")
    assert not _reached(_grads(_recipe("modality"), "mac"), "phi.")  # the switch: phi_m(e_m) cancels


@pytest.mark.parametrize("centre, trains_removal", [("identity", True), ("modality", False)])
def test_mac_trains_phi_and_the_modality_embedding_through_the_removal(centre, trains_removal):
    """Issue 21: through r = f - phi_m(e_m) alone (f detached), the default identity centre gives phi_m and e_m a
    gradient; the equation's per-modality centre (the switch) gives them none."""
    net = tiny_net()
    removed = remove_modality(net(X, MOD)["feat"].detach(), MOD, net.removal())
    modality_aware_centre(removed, PIDS, MOD, centre).backward()
    grads = [p.grad for n, p in net.named_parameters() if n.startswith(("phi.", "modality_embed"))]
    assert len(grads) >= 3 and all(g is not None for g in grads)
    largest = max(float(g.abs().max()) for g in grads)
    if trains_removal:
        assert all(float(g.abs().max()) > 1e-4 for g in grads)
    else:
        assert largest < 1e-6


def test_training_step_terms_sum_to_the_loss_with_lambda():
    recipe = build_recipe(load_config(resolve_config_path("cmtr_sysu"), [*TINY_MODEL, "loss.mae=0.5",
                                                                       "loss.hetero_center=1.0"]), num_classes=3)
    torch.manual_seed(1)  # the same stochastic-depth draws in both passes
    terms = recipe.training_step(recipe.model, BATCH)
    assert set(terms) == {"loss", "id", "wrt", "mac", "maid", "hetero_center"}
    torch.testing.assert_close(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))
    torch.manual_seed(1)
    out = recipe.model(X, MOD)
    assert torch.allclose(terms["maid"], 0.5 * modality_aware_id(out["logits_removed"], PIDS), atol=1e-5)
    backbone, heads = recipe.param_groups()
    assert backbone["lr_mult"] == 1.0 and id(recipe.model.modality_embed) in {id(p) for p in heads["params"]}


@pytest.mark.parametrize("override, message", [
    ("model.backbone=resnet", "unknown ViT backbone 'resnet'"),
    ("model.phi=mlp", "model.phi must be one of linear, identity, got 'mlp'"),
    ("loss.mac_centre=camera", "loss.mac_centre must be one of modality, identity, got 'camera'"),
    ("loss.mae=-1", "loss.mae must be a number >= 0, got -1"),
])
def test_config_errors_name_the_value(override, message):
    cfg = load_config(resolve_config_path("cmtr_sysu"), [*TINY_MODEL, override])
    with pytest.raises(ValueError, match=message):
        build_recipe(cfg, num_classes=3)


def test_unknown_key_and_all_weights_zero():
    cfg = load_config(resolve_config_path("cmtr_sysu"), TINY_MODEL)
    cfg["loss"]["lambda"] = 0.5
    with pytest.raises(ValueError, match=r"unknown loss setting\(s\) lambda; known: .*mac_centre"):
        build_recipe(cfg, num_classes=3)
    cfg = load_config(resolve_config_path("cmtr_sysu"), [*TINY_MODEL, "loss.id=0", "loss.wrt=0", "loss.mae=0"])
    recipe = build_recipe(cfg, num_classes=3)
    with pytest.raises(ValueError, match="every CMTR loss weight is 0"):
        recipe.training_step(recipe.model, BATCH)


def test_a_run_without_vit_weights_is_refused_before_reading_data(tmp_path):
    overrides = [o for o in TINY_MODEL if not o.startswith("model.pretrained")]
    with pytest.raises(ValueError, match="a ViT trained from scratch on re-ID data is a known failure"):
        train("cmtr_sysu", tmp_path / "no-data", tmp_path / "run", overrides=overrides, device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, dataset, protocol", [("cmtr_sysu", "sysu", "sysu/all/single/seeded"),
                                                     ("cmtr_regdb", "regdb", "regdb/trial1/v2i"),
                                                     ("cmtr_llcm", "llcm", "llcm/i2v")])
def test_presets_resolve(name, dataset, protocol):
    cfg = load_config(resolve_config_path(name))
    assert cfg["method"] == "cmtr" and cfg["data"]["dataset"] == dataset and cfg["eval"]["protocol"] == protocol
    assert cfg["model"]["backbone"] == "vit_base" and cfg["model"]["pretrained"] is None
    assert (cfg["model"]["patch_size"], cfg["model"]["patch_stride"]) == (16, 12)


TINY = {"data": {"height": 32, "width": 16, "p": 2, "k": 2, "workers": 0, "cache": False},
        "model": {"backbone": "vit_d32_l2_h2", "patch_size": 8, "patch_stride": 6, "pretrained": "none"},
        "train": {"epochs": 1, "warmup_epochs": 0, "lr": 0.01, "amp": "off", "log_every": 1}}


def test_preset_trains_and_evaluates(tmp_path):
    root = tmp_path / "sysu"
    generate(root, "sysu", 8, seed=1, size=(32, 16), images=2, workers=1)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"_base_": str(resolve_config_path("cmtr_sysu")), **merge({}, TINY)}))
    out = tmp_path / "run"
    train(tiny, root, out, device="cpu", progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {"id", "wrt", "mac", "maid"}
    assert len(records) >= 2 and logged <= set(records[-1])
    assert all(math.isfinite(records[-1][k]) for k in logged)
    result = evaluate_run(out, root, "sysu/all/single/seeded", device="cpu", trials=[0, 1])
    assert len(result.trials) == 2 and 0.0 <= result.mean["mAP"] <= 1.0


def test_a_cmtr_run_exports_with_the_modality_embedding_per_image(tmp_path):
    from deploy_runs import write_images
    from vireid.app.runs import run_defaults
    from vireid.deploy.export import export_run
    from vireid.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint

    cfg = load_config(resolve_config_path("cmtr_sysu"), [*TINY_MODEL, "data.workers=0"], defaults=run_defaults)
    torch.manual_seed(0)
    recipe = build_recipe(cfg, num_classes=4)
    with torch.no_grad():
        recipe.model.bn_neck.running_mean.uniform_(-0.1, 0.1)
        recipe.model.modality_embed.mul_(50)  # make visible and infrared inputs clearly different
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / CHECKPOINT_NAME, {"config": cfg, "num_classes": 4, "method": "cmtr",
                                            "model": recipe.model.state_dict(), "epoch": 1})
    images = [str(p) for p in write_images(tmp_path / "imgs", 3, seed=3)]
    report = export_run(run, "torchscript", tmp_path / "m.pt", images)
    assert report.max_abs_diff <= 1e-4
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 32, 16)
    both = loaded(torch.cat([x, x]), torch.tensor([0, 0, 1, 1]))
    recipe.model.eval()
    torch.testing.assert_close(both, recipe.model(torch.cat([x, x]), torch.tensor([0, 0, 1, 1])), atol=1e-4, rtol=0)
    assert not torch.allclose(both[:2], both[2:], atol=1e-3)  # the same images as infrared embed differently


def test_grad_cam_weighs_the_patch_embeddings():
    # the class token does not depend on the final patch tokens (the last norm is per token), so the map
    # Grad-CAM can explain is the patch embedding the class token attends to
    from vireid.deploy.pictures import grad_cam

    cams, name = grad_cam(tiny_net(), X[:2], MOD[:2])
    assert name == "vit.patch_embed" and cams.shape == (2, 32, 16) and float(cams.max()) > 0.99
