"""MSCLNet: each loss against hand-computed values and gradients, the Mogrifier LSTM, pairing, the network's
shapes, which parameters each loss may reach, the schedule, config errors and a short train + evaluate run."""

import json
import math
from dataclasses import replace

import pytest
import torch
import yaml

from vireid.app.runs import evaluate_run, resolve_config_path, train
from vireid.config import load_config, merge
from vireid.data.pairing import pair_by_identity
from vireid.engine.optim import lr_factor
from vireid.losses.msclnet import (
    divergence,
    global_complement,
    inter_aggregation,
    intra_aggregation,
    local_complement,
    modality_ce,
    subclass_aggregation,
)
from vireid.methods import build_recipe
from vireid.models import build_model
from vireid.models.msclnet import MogrifierLSTMCell, stripes
from vireid.schema import TrainSettings, parse_section
from vireid.synth.generator import generate


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ----------------------------------------------------------------------------------------------- losses


def test_divergence_is_minus_kl_with_its_gradients():
    v, r = leaf([[0.0, math.log(2.0)]]), leaf([[0.0, 0.0]])
    p, q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
    kl = float((p * (p / q).log()).sum())
    assert kl == pytest.approx(1 / 3 * math.log(2 / 3) + 2 / 3 * math.log(4 / 3))
    loss = divergence(v, r)
    assert float(loss.detach()) == pytest.approx(-kl)
    loss.backward()
    torch.testing.assert_close(v.grad[0], -p * ((p / q).log() - kl))  # d KL / d logit_k = p_k (log p_k/q_k - KL)
    torch.testing.assert_close(r.grad[0], p - q)  # d KL / d r_k = q_k - p_k
    assert float(divergence(r.detach(), r.detach())) == 0.0
    with pytest.raises(ValueError, match="two \\(N, D\\) tensors"):
        divergence(torch.zeros(2, 3), torch.zeros(2, 4))


def test_modality_ce_adds_one_mean_per_modality():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]])
    labels, modality = torch.tensor([1, 2, 0]), torch.tensor([0, 0, 1])
    # visible: two rows of uniform logits, CE = ln 4; infrared: p(label 0) = 3 / 6
    assert float(modality_ce(logits, labels, modality)) == pytest.approx(math.log(4) + math.log(2))
    assert float(modality_ce(logits[:2], labels[:2], modality[:2])) == pytest.approx(math.log(4))


def test_local_complement_values_and_gradient():
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[2.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    s = leaf([[[5.0, 0.0], [0.0, 1.0]], [[1.0, math.sqrt(3.0)], [-1.0, 0.0]]])
    # cos: 1 -> 1 + 0; 0 -> 0 + sqrt(2); 1/2 -> 1/2 + 1; -1 -> -1 + 2
    expected = ((1.0 + math.sqrt(2.0)) + (1.5 + 1.0)) / 2
    loss = local_complement(v, s)
    assert float(loss.detach()) == pytest.approx(expected)
    loss.backward()
    # at s = (0, 1), v = (1, 0): d cos / d s = v / (|v||s|) - cos s / |s|^2 = (1, 0); d f / d cos = 1 - 1/sqrt(2 - 2cos)
    torch.testing.assert_close(s.grad[0, 1], torch.tensor([1 - 1 / math.sqrt(2.0), 0.0], dtype=torch.float64) / 2)
    assert torch.isfinite(s.grad).all()  # cos = 1 and -1 keep a finite gradient


def test_global_complement_value_gradient_and_missing_identity():
    syn = leaf([[1.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    ir = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    loss = global_complement(syn, torch.tensor([5, 5, 7]), ir, torch.tensor([5, 5, 7]))
    # identity 5: C_s = (2, 0), C_r = (0, 1) -> 5 (for two samples); identity 7: C_s = 0, C_r = (1, 1) -> 2
    assert float(loss.detach()) == pytest.approx((5 + 5 + 2) / 3)
    loss.backward()
    # d/ds_i = (1/N) * n_y * 2 (C_s - C_r) / n_y
    torch.testing.assert_close(syn.grad, torch.tensor([[4.0, -2.0], [4.0, -2.0], [-2.0, -2.0]],
                                                      dtype=torch.float64) / 3)
    with pytest.raises(ValueError, match=r"identities \[9\] have synergy features but no infrared"):
        global_complement(syn.detach(), torch.tensor([5, 5, 9]), ir, torch.tensor([5, 5, 7]))


def test_cascaded_aggregation_values_and_gradients():
    labels, cams = torch.tensor([1, 1, 1]), torch.tensor([1, 1, 2])
    # sub-classes (1, cam 1) = {0, 2} -> centre 1, (1, cam 2) = {4} -> centre 4; identity centre 2
    f = leaf([[0.0], [2.0], [4.0]])
    sub = subclass_aggregation(f, labels, cams)
    assert float(sub.detach()) == pytest.approx((1 + 1 + 0) / 3)
    sub.backward()
    torch.testing.assert_close(f.grad, torch.tensor([[-2 / 3], [2 / 3], [0.0]], dtype=torch.float64))

    f = leaf([[0.0], [2.0], [4.0]])
    intra = intra_aggregation(f, labels, cams)
    assert float(intra.detach()) == pytest.approx(1 + 4)  # every sample: |1 - 2|^2 + |4 - 2|^2
    intra.backward()
    torch.testing.assert_close(f.grad, torch.tensor([[-5 / 3], [-5 / 3], [10 / 3]], dtype=torch.float64))

    f = leaf([[0.0], [2.0], [4.0]])
    inter = inter_aggregation(f, torch.tensor([0, 0, 1]))
    # C_0 = 1, C_1 = 4: four ordered cross-identity pairs of 9 each, over C(3, 2) = 3
    assert float(inter.detach()) == pytest.approx(-36 / 3)
    inter.backward()
    torch.testing.assert_close(f.grad, torch.tensor([[4.0], [4.0], [-8.0]], dtype=torch.float64))


def test_intra_aggregation_sums_over_each_identitys_subclasses():
    f = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    labels, cams = torch.tensor([3, 3, 8, 8]), torch.tensor([1, 2, 1, 1])
    # identity 3: centre (1, 0), sub-centres (0, 0) and (2, 0): 1 + 1 = 2; identity 8: one sub-class = centre: 0
    assert float(intra_aggregation(f, labels, cams)) == pytest.approx((2 + 2 + 0 + 0) / 4)
    assert float(subclass_aggregation(f, labels, cams)) == pytest.approx((0 + 0 + 4 + 4) / 4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        inter_aggregation(f[:1], labels[:1])


# ------------------------------------------------------------------------------------------- the network


def test_mogrifier_rounds_follow_the_equations():
    torch.manual_seed(0)
    cell = MogrifierLSTMCell(4, rounds=3)
    x, h, c = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    x1 = 2 * torch.sigmoid(h @ cell.q[0].weight.t()) * x
    h2 = 2 * torch.sigmoid(x1 @ cell.r[0].weight.t()) * h
    x3 = 2 * torch.sigmoid(h2 @ cell.q[1].weight.t()) * x1
    mx, mh = cell.mogrify(x, h)
    torch.testing.assert_close(mx, x3)
    torch.testing.assert_close(mh, h2)
    torch.testing.assert_close(cell(x, (h, c))[0], cell.cell(x3, (h2, c))[0])
    plain = MogrifierLSTMCell(4, rounds=0)
    torch.testing.assert_close(plain(x, (h, c))[1], plain.cell(x, (h, c))[1])
    assert len(MogrifierLSTMCell(4, rounds=5, rank=2).q) == 3
    with pytest.raises(ValueError, match="rank must be null"):
        MogrifierLSTMCell(4, rank=0)


def test_pairing_and_stripes():
    labels = torch.tensor([5, 6, 5, 6, 5, 6, 5, 5])
    modality = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    vis, ir = pair_by_identity(labels, modality)
    assert vis.tolist() == [0, 2, 1] and ir.tolist() == [4, 6, 3]  # identity 5: (0, 4), (2, 6); identity 6: (1, 3)
    assert (labels[vis] == labels[ir]).all()
    with pytest.raises(ValueError, match="both a visible and an infrared image"):
        pair_by_identity(labels, torch.zeros(8, dtype=torch.long))
    maps = torch.arange(2 * 3 * 6 * 2, dtype=torch.float32).reshape(2, 3, 6, 2)
    out = stripes(maps, 3)
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out[1, 2], maps[1, :, 4:6].mean(dim=(1, 2)))


def _net():
    torch.manual_seed(0)
    return build_model("msclnet", num_classes=3, depth=18, non_local=(0, 0, 0, 0), parts=6, mogrifier_rounds=2)


BATCH = (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.tensor([1, 2, 1, 1, 3, 3, 6, 3]),
         torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))


def test_network_shapes_and_test_feature():
    net = _net()
    images, pids, _, modality = BATCH
    out = net(images, modality, pids)
    assert out["logits"].shape == (8, 3) and out["pooled"].shape == (8, 512)
    assert out["visible_parts"].shape == out["synergy_parts"].shape == (4, 6, 512)
    assert out["div_visible"].shape == out["div_infrared"].shape == (4, 6 * 512)
    assert set(net(images, modality)) == {"map", "pooled", "bn", "logits"}  # no labels: the extractor only
    net.eval()
    feat = net(images, modality, pids)
    assert feat.shape == (8, 512)
    torch.testing.assert_close(feat.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(feat, net.extractor(images, modality))


# ------------------------------------------------------------------------------------------ gradient flow

ALL_WEIGHTS = ("synergy_div", "synergy_ce", "complement_local", "complement_global", "ca_sub", "ca_intra",
               "ca_inter")


PRESET = dict(zip(ALL_WEIGHTS, (0.5, 1.25, 0.8, 1.5, 1.0, 1.0, 1.0)))


def _recipe(routing="through_encoder", **weights):
    overrides = ["model.depth=18", "model.non_local=[0,0,0,0]", "model.mogrifier_rounds=2",
                 f"loss.synergy_routing={routing}"]
    overrides += [f"loss.{k}={weights.get(k, 0.0)}" for k in ALL_WEIGHTS]
    torch.manual_seed(0)
    return build_recipe(load_config(resolve_config_path("msclnet_sysu"), overrides), num_classes=3)


def _grads(recipe, **weights):
    """Parameter name -> gradient (None where the loss did not reach it) after one backward of the total."""
    recipe.settings.loss = replace(recipe.settings.loss, **{k: weights.get(k, 0.0) for k in ALL_WEIGHTS})
    recipe.model.zero_grad(set_to_none=True)
    terms = recipe.training_step(recipe.model, BATCH)
    terms["loss"].backward()
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in recipe.model.named_parameters()}


def _reached(grads, prefix):
    return [n for n, g in grads.items() if n.startswith(prefix) and g is not None and bool(g.abs().sum() > 0)]


@pytest.mark.parametrize("routing", ["through_encoder", "detached"])
@pytest.mark.parametrize("term, lets_through, blocked", [
    ("synergy_div", "extractor.backbone.", "synergy."),       # L_synergy updates only the extractors ...
    ("synergy_ce", "extractor.", "synergy."),
    ("complement_local", "synergy.lstm.", "extractor."),      # ... L_Com only the synergy encoder
    ("complement_global", "synergy.out.", "extractor."),
    ("ca_intra", "extractor.backbone.", "synergy."),
    ("ca_inter", "extractor.backbone.", "synergy."),
])
def test_each_loss_reaches_only_its_parameters(routing, term, lets_through, blocked):
    grads = _grads(_recipe(routing), **{term: 1.0})
    assert _reached(grads, lets_through), f"{term} must train {lets_through}*"
    assert not _reached(grads, blocked), f"{term} reached {_reached(grads, blocked)[:3]}"


def test_sub_term_reads_the_synergy_feature_through_the_encoder_by_default():
    grads = _grads(_recipe(), ca_sub=1.0)  # L_sub on f^s: theta_s and, through it, the extractor
    assert _reached(grads, "synergy.lstm.") and _reached(grads, "synergy.norms.")
    assert _reached(grads, "extractor.backbone.")
    old = _grads(_recipe("detached"), ca_sub=1.0)  # the pre-issue-21 reading: the extractor feature only
    assert _reached(old, "extractor.backbone.") and not _reached(old, "synergy.")


def test_divergence_leaves_the_instance_norm_affine_and_complement_trains_it():
    recipe = _recipe()
    assert not _reached(_grads(recipe, synergy_div=1.0), "synergy.norms.")
    assert _reached(_grads(recipe, complement_local=1.0), "synergy.norms.")


@pytest.mark.parametrize("routing, synergy_terms", [
    ("detached", ("complement_local", "complement_global")),
    ("through_encoder", ("complement_local", "complement_global", "ca_sub")),
])
def test_one_step_gives_each_part_the_gradient_of_its_own_objective(routing, synergy_terms):
    """The complement terms train theta_s only; with ``through_encoder`` L_sub trains theta_s too."""
    recipe = _recipe(routing)
    total = _grads(recipe, **PRESET)
    synergy_only = _grads(recipe, **{k: PRESET[k] for k in synergy_terms})
    extractor_only = _grads(recipe, **{k: v for k, v in PRESET.items() if not k.startswith("complement")})
    for name, grad in total.items():
        part = synergy_only if name.startswith("synergy.") else extractor_only
        torch.testing.assert_close(grad, part[name], msg=name)


def _evaluated_after_sgd(routing, steps=3, **weights):
    """The eval-mode test features of BATCH after ``steps`` SGD steps (lr 0.05, momentum 0.9) with ``weights``."""
    recipe = _recipe(routing, **weights)
    optimiser = torch.optim.SGD(recipe.model.parameters(), lr=0.05, momentum=0.9)
    recipe.model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        recipe.training_step(recipe.model, BATCH)["loss"].backward()
        optimiser.step()
    recipe.model.eval()
    return recipe.embed(BATCH[0], BATCH[3])


BASES = {"preset": PRESET, "no_div": {**PRESET, "synergy_div": 0.0}}  # no_div: L_div's affine path closed


@pytest.mark.parametrize("term, base", [(t, b) for b in BASES for t in ALL_WEIGHTS if BASES[b][t]])
def test_every_term_changes_the_evaluated_feature(term, base):
    """Issue 21: switching any one term off changes the extractor's test feature after 3 SGD steps, the
    complement terms included (they train theta_s, which L_sub on f^s passes through into the extractor)."""
    base = BASES[base]
    with_term = _evaluated_after_sgd("through_encoder", **base)
    without = _evaluated_after_sgd("through_encoder", **{**base, term: 0.0})
    assert torch.isfinite(with_term).all()
    assert (with_term - without).abs().max() > 1e-6, f"switching {term} off left the evaluated feature unchanged"


@pytest.mark.parametrize("term", ["complement_local", "complement_global"])
def test_detached_routing_keeps_the_complement_terms_away_from_the_evaluated_feature(term):
    """The old reading, kept as ``synergy_routing: detached``: without L_div (whose gradient depends on the
    instance norms' affine, which L_Com trains) the complement terms cannot change the test feature."""
    base = {**PRESET, "synergy_div": 0.0}
    with_term = _evaluated_after_sgd("detached", **base)
    without = _evaluated_after_sgd("detached", **{**base, term: 0.0})
    torch.testing.assert_close(with_term, without, rtol=0, atol=0)


@pytest.mark.parametrize("routing", ["through_encoder", "detached"])
def test_training_step_terms_sum_to_the_loss(routing):
    recipe = _recipe(routing, **PRESET)
    terms = recipe.training_step(recipe.model, BATCH)
    assert set(terms) == {"loss", "div", "ce", "local", "global", "sub", "intra", "inter"}
    torch.testing.assert_close(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))
    assert float(terms["div"].detach()) <= 0 and float(terms["inter"].detach()) <= 0


def test_param_groups_put_the_synergy_encoder_with_the_heads():
    recipe = _recipe()
    backbone, heads = recipe.param_groups()
    assert backbone["lr_mult"] == 0.1
    ids = {id(p) for p in heads["params"]}
    assert all(id(p) in ids for p in recipe.model.synergy.parameters())
    assert id(recipe.model.extractor.classifier.weight) in ids
    assert len(backbone["params"]) + len(heads["params"]) == sum(1 for _ in recipe.model.parameters())


# ---------------------------------------------------------------------------------------- schedule, config


def test_per_milestone_lr_factors():
    kw = dict(schedule="multistep", epochs=200, milestones=[20, 50, 100], factors=[0.5, 0.1, 0.01])
    assert [lr_factor(e, **kw) for e in (0, 19.9, 20, 50, 99, 100, 199)] == [1, 1, 0.5, 0.1, 0.1, 0.01, 0.01]
    cfg = load_config(resolve_config_path("msclnet_sysu"))
    tc = parse_section(TrainSettings, cfg["train"], "train")
    assert tc.lr_factors == (0.5, 0.1, 0.01) and tc.milestones == (20, 50, 100) and tc.warmup_epochs == 0
    with pytest.raises(ValueError, match=r"train.lr_factors must give one factor per milestone \(3 milestones"):
        parse_section(TrainSettings, {**cfg["train"], "lr_factors": [0.5]}, "train")


@pytest.mark.parametrize("override, message", [
    ("loss.synergy_div=-1", "loss.synergy_div must be a number >= 0, got -1"),
    ("model.mogrifier_rank=0", "model.mogrifier_rank must be null or an integer >= 1, got 0"),
    ("model.parts=many", "model.parts must be an integer >= 1, got 'many'"),
    ("loss.ca_feature=map", "loss.ca_feature must be one of bn, pooled, got 'map'"),
])
def test_config_errors_name_the_value(override, message):
    cfg = load_config(resolve_config_path("msclnet_sysu"), ["model.depth=18", override])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_recipe(cfg, num_classes=3)


def test_unknown_key_and_all_weights_zero():
    cfg = load_config(resolve_config_path("msclnet_sysu"), ["model.depth=18"])
    cfg["loss"]["lambda_div"] = 0.5
    with pytest.raises(ValueError, match="unknown loss setting\\(s\\) lambda_div; known: .*synergy_div"):
        build_recipe(cfg, num_classes=3)
    recipe = _recipe()
    with pytest.raises(ValueError, match="every MSCLNet loss weight is 0"):
        recipe.training_step(recipe.model, BATCH)


@pytest.mark.parametrize("name, dataset", [("msclnet_sysu", "sysu"), ("msclnet_regdb", "regdb"),
                                           ("msclnet_llcm", "llcm")])
def test_presets_resolve(name, dataset):
    cfg = load_config(resolve_config_path(name))
    assert cfg["method"] == "msclnet" and cfg["data"]["dataset"] == dataset
    assert cfg["loss"]["synergy_div"] == 0.5 and cfg["train"]["epochs"] == 200


# ------------------------------------------------------------------------------------- train and evaluate

TINY = {"data": {"height": 32, "width": 16, "p": 2, "k": 4, "workers": 0, "cache": False},
        "model": {"depth": 18, "non_local": [0, 1, 1, 0], "mogrifier_rounds": 2},
        "train": {"epochs": 1, "milestones": [], "lr_factors": [], "lr": 0.01, "amp": "off", "log_every": 1}}


@pytest.mark.parametrize("dataset, protocol", [("sysu", "sysu/all/single/seeded"), ("llcm", "llcm/i2v")])
def test_preset_trains_and_evaluates(dataset, protocol, tmp_path):
    root = tmp_path / dataset
    generate(root, dataset, 8, seed=1, size=(32, 16), images=2, workers=1)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"_base_": str(resolve_config_path(f"msclnet_{dataset}")), **merge({}, TINY)}))
    out = tmp_path / "run"
    train(tiny, root, out, device="cpu", progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {"ce", "div", "local", "global", "sub", "intra", "inter"}
    assert len(records) >= 2 and logged <= set(records[-1])
    assert all(math.isfinite(records[-1][k]) for k in logged)
    result = evaluate_run(out, root, protocol, device="cpu", trials=[0, 1])
    assert len(result.trials) == 2 and 0.0 <= result.mean["mAP"] <= 1.0
