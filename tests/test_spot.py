"""SPOT: its parts by hand on tiny tensors (positional encodings, mask pooling, stripes, structure attention),
which parameters each branch loss reaches, the recipe's terms and refusals, and tiny end-to-end runs of
``spot`` (synthetic keypoint files) and ``spot_nopose``."""

import json
import math

import pytest
import torch
import yaml

from vireid.app.runs import evaluate_run, resolve_config_path, train
from vireid.config import load_config
from vireid.methods import build_recipe
from vireid.models.spot import SPOTNet, mask_pool, sinusoidal_positions, stripe_masks, structure_attention
from vireid.synth.generator import generate


def close(actual, expected, atol=1e-6):
    """allclose with the values in the message (torch.testing's first call imports for seconds)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape and torch.allclose(actual, expected, atol=atol, rtol=1e-6), (actual, expected)


# ------------------------------------------------------------------------------------------------ pure parts


def test_positional_encodings_by_hand():
    # dim 4, base 10000: frequencies 1 / 10000^(0/4) = 1 and 1 / 10000^(2/4) = 1/100
    pe = sinusoidal_positions(3, 4)
    close(pe[0], [0.0, 1.0, 0.0, 1.0])
    close(pe[1], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)])
    close(pe[2], [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)])
    assert sinusoidal_positions(2, 5).shape == (2, 5)  # odd width: the last column is a sine


def test_mask_pool_by_hand_and_its_gradient():
    masks = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]]]], requires_grad=True)  # (1, p=1, 2, 2)
    feat = torch.tensor([[[[2.0, 9.0], [4.0, 7.0]]]], requires_grad=True)  # (1, C=1, 2, 2)
    part = mask_pool(masks, feat, eps=0.0)
    close(part, [[[(1 * 2 + 0.5 * 4) / 1.5]]])  # 4 / 1.5: positions the mask ignores do not count
    part.sum().backward()
    # d f / d M_hw = (F_hw - f) / K: above the mean pulls up, below pulls down
    close(masks.grad, [[[[(2 - 8 / 3) / 1.5, (9 - 8 / 3) / 1.5], [(4 - 8 / 3) / 1.5, (7 - 8 / 3) / 1.5]]]])
    close(feat.grad, [[[[1 / 1.5, 0.0], [0.5 / 1.5, 0.0]]]])
    with pytest.raises(ValueError, match="share the batch and the spatial size"):
        mask_pool(torch.ones(1, 2, 3, 2), torch.ones(1, 4, 2, 2))


def test_stripe_masks_partition_the_rows():
    masks = stripe_masks(3, 4, 2)  # row r -> stripe floor(3 r / 4): 0, 0, 1, 2
    assert masks.shape == (3, 4, 2)
    close(masks[:, :, 0], [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    close(masks.sum(0), torch.ones(4, 2))
    with pytest.raises(ValueError, match="fewer than the 6 stripes"):
        stripe_masks(6, 4, 2)


def test_structure_attention_by_hand_and_gradcheck():
    # two positions, one key/query channel: K = [1, 0], Q = [1, 2], V = [3, 5]
    keys = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    queries = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    values = torch.tensor([3.0, 5.0]).view(1, 1, 1, 2)
    out = structure_attention(keys, queries, values).flatten()
    e = math.e
    # t = 0: softmax([1, 2]) = [1, e] / (1 + e); t = 1: softmax([0, 0]) = [1/2, 1/2]
    close(out, [(3 + 5 * e) / (1 + e), 4.0], atol=1e-5)
    torch.manual_seed(0)
    args = [torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    args.append(torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True))
    weights = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    (structure_attention(*args) * weights).sum().backward()
    for arg in args:  # autograd against central differences, entry by entry
        for i in range(arg.numel()):
            step = torch.zeros_like(arg).view(-1)
            step[i] = 1e-6
            step = step.view_as(arg)
            with torch.no_grad():
                rest = [a + step if a is arg else a for a in args]
                less = [a - step if a is arg else a for a in args]
                numeric = ((structure_attention(*rest) - structure_attention(*less)) * weights).sum() / 2e-6
            assert abs(numeric.item() - arg.grad.view(-1)[i].item()) < 1e-6


def test_cosine_attention_logits_are_bounded_where_the_literal_ones_overflow():
    """Issue 21: the survey's K^T Q is unbounded; once keys and queries are large (training grew the largest
    logit 4.6 -> 2.9e3 in 10 steps before a NaN), it saturates, then overflows. Cosine logits do not."""
    keys = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    queries = torch.tensor([1.0, -2.0]).view(1, 1, 1, 2)
    values = torch.tensor([3.0, 5.0]).view(1, 1, 1, 2)
    # cos(K_t, Q_j) in one channel: the signs; t = 0: logits [1, -1] / 0.5; t = 1 (K = 0): [0, 0]
    e4 = math.exp(4.0)
    close(structure_attention(keys, queries, values, temperature=0.5).flatten(), [(3 * e4 + 5) / (e4 + 1), 4.0],
          atol=1e-5)
    torch.manual_seed(0)
    k, q, v = torch.randn(2, 4, 3, 2), torch.randn(2, 4, 3, 2), torch.randn(2, 6, 3, 2)
    literal = structure_attention(k * 1e20, q * 1e20, v)
    assert not torch.isfinite(literal).all()  # K^T Q = inf, the softmax gives NaN
    bounded = structure_attention(k * 1e20, q * 1e20, v, temperature=0.1)
    assert torch.isfinite(bounded).all()
    close(bounded, structure_attention(k, q, v, temperature=0.1), atol=1e-5)  # the scale of K and Q is gone
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SPOTNet(num_classes=2, backbone="plain_w8", attention_temperature=0.0)
    with pytest.raises(ValueError, match="attention must be one of"):
        SPOTNet(num_classes=2, backbone="plain_w8", attention="scaled")


@pytest.mark.parametrize("attention, finite", [("cosine", True), ("dot", False)])
def test_asr_feature_stays_finite_with_huge_key_and_query_weights(attention, finite):
    net = SPOTNet(num_classes=4, backbone="plain_w32", structure_channels=8, relation_width=4, parts=2, heads=2,
                  transformer_ffn=32, dropout=0.0, attention=attention)
    assert net.asr.temperature == (0.1 if attention == "cosine" else None)
    with torch.no_grad():
        for layer in (net.asr.key, net.asr.query):
            layer.weight.mul_(1e20)
            layer.bias.mul_(1e20)
    net.train()
    assert bool(torch.isfinite(net(IMAGES, MODALITY, HEATMAPS)["asr"]).all()) is finite


# ------------------------------------------------------------------------------------------------ the network


def _net(pose=True):
    torch.manual_seed(0)
    return SPOTNet(num_classes=4, backbone="plain_w32", pose=pose, structure_channels=8, relation_width=4, parts=2, heads=2,
                   transformer_ffn=32, dropout=0.0)


IMAGES, MODALITY = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 0, 1])
HEATMAPS = torch.rand(4, 17, 16, 8)


def _reached(net, loss) -> set[str]:
    """Top-level module names whose parameters get a non-zero gradient from ``loss``."""
    net.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name.split(".")[0] + ("." + name.split(".")[1] if name.split(".")[0] in ("necks", "classifiers") else "")
            for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_which_parameters_each_branch_loss_reaches():
    net = _net()
    out = net(IMAGES, MODALITY, HEATMAPS)
    assert out["masks"].shape == (4, 2, 4, 2) and out["structure"].shape == (4, 8, 4, 2)
    assert out["fused"].shape == (4, 256) and out["logits_part"].shape == (4, 4)
    base = _reached(net, out["logits_base"].logsumexp(1).sum() + out["base"].sum())
    assert base == {"backbone", "necks.base", "classifiers.base"}  # L_B: the backbone only, no SPOT part
    asr = _reached(net, out["logits_asr"].logsumexp(1).sum() + out["asr"].sum())
    assert {"backbone", "relation", "asr"} <= asr and not asr & {"tpi", "fuse", "necks.part", "classifiers.part"}
    part = _reached(net, out["logits_part"].logsumexp(1).sum() + out["part"].sum())
    assert {"backbone", "relation", "tpi"} <= part and not part & {"asr", "fuse"}  # keypoints shape the part maps
    fused = _reached(net, out["logits_fused"].logsumexp(1).sum())
    assert {"backbone", "relation", "asr", "tpi", "fuse", "necks.fused"} <= fused


def test_the_variant_without_keypoints_uses_stripes_and_has_no_relation_network():
    net = _net(pose=False)
    assert net.relation is None and net.tpi.theta is None
    out = net(IMAGES, MODALITY)
    close(out["masks"][0], stripe_masks(2, 4, 2))
    assert out["structure"] is None
    part = _reached(net, out["logits_part"].logsumexp(1).sum())
    assert "tpi" in part and "asr" not in part


def test_heatmaps_are_required_and_checked():
    net = _net()
    with pytest.raises(ValueError, match="needs keypoint heat-maps .*spot_nopose works without them"):
        net(IMAGES, MODALITY)
    with pytest.raises(ValueError, match=r"expected keypoint heat-maps of shape \(B, 17, h, w\)"):
        net(IMAGES, MODALITY, torch.rand(4, 16, 16, 8))
    with pytest.raises(ValueError, match="render heat-maps at 4x the feature map .*heatmap_stride"):
        net(IMAGES, MODALITY, torch.rand(4, 17, 8, 4))  # 2x the feature size: the two pools give 2 x 1
    net.eval()
    assert net(IMAGES, MODALITY, HEATMAPS).norm(dim=1).sub(1).abs().max() < 1e-5  # L2-normalised fused feature


# ------------------------------------------------------------------------------------------------ the recipe

TINY_MODEL = ["model.backbone=plain_w32", "model.structure_channels=8", "model.relation_width=4", "model.parts=2",
              "model.heads=2", "model.transformer_ffn=32"]


def _recipe(name="spot_sysu", *overrides):
    return build_recipe(load_config(resolve_config_path(name), [*TINY_MODEL, *overrides]), num_classes=3)


def _batch(heatmaps=True):
    pids = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    batch = [torch.randn(8, 3, 64, 32), pids, torch.zeros(8), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])]
    return batch + [{"heatmaps": torch.rand(8, 17, 16, 8)}] if heatmaps else batch


def test_training_step_terms_weights_and_sum():
    recipe = _recipe()
    terms = recipe.training_step(recipe.model, _batch())
    branches = ("base", "asr", "part", "fused")
    assert set(terms) == {"loss"} | {f"{k}_{b}" for k in ("id", "triplet") for b in branches}
    close(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))
    torch.manual_seed(1)
    half = _recipe("spot_sysu", "loss.lambda_asr=0.5", "loss.lambda_part=0.0")
    torch.manual_seed(1)
    full = _recipe()
    half.model.load_state_dict(full.model.state_dict())
    batch = _batch()
    torch.manual_seed(2)
    a = half.training_step(half.model, batch)
    torch.manual_seed(2)
    b = full.training_step(full.model, batch)
    assert "id_part" not in a and "triplet_part" not in a  # lambda_2 = 0 switches L_IP off
    close(a["id_asr"], 0.5 * b["id_asr"], atol=1e-5)
    close(a["id_fused"], b["id_fused"], atol=1e-5)
    nopose = _recipe("spot_nopose_sysu")
    assert nopose.name == "spot_nopose" and nopose.report_tags == ("spot_nopose: fixed stripes, no keypoints",)
    assert set(nopose.training_step(nopose.model, _batch(heatmaps=False))) == set(terms)
    with pytest.raises(ValueError, match="every SPOT loss weight is 0"):
        r = _recipe("spot_sysu", "loss.id=0.0", "loss.triplet=0.0")
        r.training_step(r.model, _batch())


def test_embed_needs_heatmaps_and_flips_them_with_the_image():
    recipe = _recipe("spot_sysu", "eval.flip=true")
    recipe.model.eval()
    batch = _batch()
    with pytest.raises(ValueError, match="only with its keypoint heat-maps"):
        recipe.embed(batch[0], batch[3])
    heatmaps = batch[4]["heatmaps"]
    from vireid.data.keypoints import flip_heatmaps

    feat = recipe.embed(batch[0], batch[3], heatmaps=heatmaps)
    mirrored = recipe.embed(batch[0].flip(3), batch[3], heatmaps=flip_heatmaps(heatmaps))
    close(feat, mirrored, atol=1e-5)  # flip-averaging makes the feature mirror-invariant


def test_refusals_name_the_file_and_the_way_out(tmp_path):
    cfg = load_config(resolve_config_path("spot_sysu"))
    recipe_cls = type(_recipe())
    with pytest.raises(FileNotFoundError) as error:
        recipe_cls.check_inputs(cfg, tmp_path)
    message = str(error.value)
    assert str(tmp_path / "keypoints.json") in message and "spot_nopose" in message and "vireid synth" in message
    cfg["data"]["keypoints"] = None
    with pytest.raises(ValueError, match="set data.keypoints .*spot_nopose"):
        recipe_cls.check_inputs(cfg, tmp_path)
    with pytest.raises(FileNotFoundError, match="keypoints.json does not exist"):
        train("spot_sysu", tmp_path, tmp_path / "run", ["model.pretrained=none"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="spot_nopose does not read keypoints"):
        train("spot_nopose_sysu", tmp_path, tmp_path / "run", ["model.pretrained=none", "data.keypoints=kp.json"],
              device="cpu", progress=False)
    with pytest.raises(ValueError, match="method 'agw' does not use keypoint heat-maps"):
        train("agw_sysu", tmp_path, tmp_path / "run", ["model.pretrained=none", "data.keypoints=kp.json"],
              device="cpu", progress=False)


@pytest.mark.parametrize("name, dataset", [("spot_sysu", "sysu"), ("spot_regdb", "regdb"), ("spot_llcm", "llcm"),
                                           ("spot_nopose_sysu", "sysu")])
def test_presets_resolve(name, dataset):
    cfg = load_config(resolve_config_path(name))
    assert cfg["data"]["dataset"] == dataset and cfg["model"]["parts"] == 6
    assert cfg["method"] == ("spot_nopose" if "nopose" in name else "spot")
    assert cfg["data"]["keypoints"] == (None if "nopose" in name else "keypoints.json")


# ------------------------------------------------------------------------------------------------ end to end

TINY = {"data": {"height": 64, "width": 32, "p": 2, "k": 2, "workers": 0, "cache": False},
        "model": {"backbone": "plain_w32", "structure_channels": 8, "relation_width": 4, "parts": 2, "heads": 2,
                  "transformer_ffn": 32},
        "train": {"epochs": 1, "milestones": [], "lr": 0.01, "warmup_epochs": 0, "log_every": 1}}


@pytest.fixture(scope="module")
def spot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spot") / "sysu"
    generate(root, "sysu", 5, seed=2, size=(64, 32), images=1, workers=1)
    return root


@pytest.mark.parametrize("preset", ["spot_sysu", "spot_nopose_sysu"])
def test_preset_trains_and_evaluates(preset, spot_root, tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"_base_": str(resolve_config_path(preset)), **TINY}))
    out = tmp_path / "run"
    train(tiny, spot_root, out, device="cpu", progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(records[-1][k]) for k in ("loss", "id_fused", "triplet_part"))
    result = evaluate_run(out, spot_root, "sysu/all/single/seeded", device="cpu", trials=[0])
    assert 0.0 <= result.mean["mAP"] <= 1.0
    tagged = "[spot_nopose: fixed stripes, no keypoints]" in result.format_table()
    assert tagged == (preset == "spot_nopose_sysu")
    assert ("tags" in result.to_dict()) == tagged
