"""NFormer: LAA and RNS against hand-computed values and gradients, the centre loss and its SGD step, sequences,
which parameters each stage trains, the fixed NFormer rate, the presets, and a tiny two-stage run: train,
evaluate with and without the transductive step, and resume in stage 2 without redoing stage 1."""

import json
import math

import pytest
import torch
import yaml

from vireid.app.runs import evaluate_run, load_run, resolve_config, resolve_config_path, train
from vireid.cli.main import main as cli_main
from vireid.config import load_config
from vireid.engine.optim import build_optimizer, set_lr
from vireid.losses.nformer import centre_loss, centre_step
from vireid.methods import build_recipe
from vireid.methods.nformer import neighbour_sequence
from vireid.models.nformer import (
    landmark_affinity,
    landmark_features,
    reciprocal_mask,
    reciprocal_neighbour_softmax,
    rns_aggregate,
)
from vireid.synth.generator import generate

# ------------------------------------------------------------------------------------- LAA


def test_landmark_affinity_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    k = torch.tensor([[1.0, 2.0], [0.0, 1.0], [2.0, 0.0]])
    q_t, k_t = landmark_features(q, k, torch.tensor([0, 2]))
    assert torch.equal(q_t, torch.tensor([[1.0, 2.0], [2.0, 0.0], [3.0, 2.0]]))  # q k_l^T, k_l = rows 0, 2 of k
    assert torch.equal(k_t, torch.tensor([[1.0, 3.0], [0.0, 1.0], [2.0, 2.0]]))  # k q_l^T
    expected = torch.tensor([[7.0, 2.0, 6.0], [2.0, 0.0, 4.0], [9.0, 2.0, 10.0]])
    assert torch.equal(landmark_affinity(q, k, torch.tensor([0, 2]), 1.0), expected)
    assert torch.equal(landmark_affinity(q, k, torch.tensor([0, 2]), 0.5), expected / 2)


def test_landmark_affinity_gradients_by_hand():
    # N = 2, d = 1, one landmark (row 0): A~_ij = q_i k_0 k_j q_0.
    q = torch.tensor([[2.0], [3.0]], requires_grad=True)
    k = torch.tensor([[5.0], [7.0]], requires_grad=True)
    a = landmark_affinity(q, k, torch.tensor([0]), 1.0)
    assert torch.equal(a, torch.tensor([[100.0, 140.0], [150.0, 210.0]]))
    gq, gk = torch.autograd.grad(a[1, 1], (q, k), retain_graph=True)
    assert gq.flatten().tolist() == [3 * 5 * 7, 5 * 7 * 2]  # dA11/dq0 = q1 k0 k1, dA11/dq1 = k0 k1 q0
    assert gk.flatten().tolist() == [3 * 7 * 2, 3 * 5 * 2]
    gq, gk = torch.autograd.grad(a[0, 0], (q, k))
    assert gq.flatten().tolist() == [2 * 2 * 5 * 5, 0.0] and gk.flatten().tolist() == [2 * 2 * 2 * 5, 0.0]


# ------------------------------------------------------------------------------------- RNS

A = torch.tensor([[5.0, 4.0, 1.0, 0.0],
                  [4.0, 5.0, 0.0, 1.0],
                  [3.0, 0.0, 5.0, 4.0],
                  [0.0, 3.0, 2.0, 5.0]])


def test_reciprocal_mask_by_hand():
    # top-2: row 0 {0, 1}, row 1 {1, 0}, row 2 {2, 3}, row 3 {3, 1}; 2 -> 3 and 3 -> 1 are not returned.
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(reciprocal_mask(A, 2), expected)
    assert torch.equal(reciprocal_mask(A, 4), torch.ones(4, 4, dtype=torch.bool))  # everyone, k = N
    # An image outside its own top-k is still its own neighbour (M_ii = 1).
    b = torch.tensor([[0.0, 3.0, 2.0], [3.0, 0.0, 2.0], [2.0, 3.0, 1.0]])
    assert torch.equal(reciprocal_mask(b, 1), torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool))


B = torch.tensor([[0.0, 3.0, 2.0], [3.0, 0.0, 2.0], [2.0, 3.0, 1.0]])
V = torch.tensor([[1.0], [2.0], [4.0]])


def test_reciprocal_neighbour_softmax_values_and_gradients_by_hand():
    a = B.clone().requires_grad_(True)
    w = reciprocal_neighbour_softmax(a, 1)
    w01 = math.exp(3) / (1 + math.exp(3))
    assert w[0].tolist() == pytest.approx([1 - w01, w01, 0.0])
    assert w[2].tolist() == [0.0, 0.0, 1.0]  # no reciprocal neighbour: itself only
    out = w @ V
    (grad,) = torch.autograd.grad(out[0, 0], a)
    # out_0 = w00 v0 + w01 v1: d/dA01 = w00 w01 (v1 - v0), d/dA00 = -w00 w01 (v1 - v0), masked entries 0.
    assert grad[0].tolist() == pytest.approx([-(1 - w01) * w01, (1 - w01) * w01, 0.0])
    assert torch.count_nonzero(grad[1:]) == 0


def test_rns_aggregate_by_hand_through_landmark_codes():
    # q~ = B, k~ = I gives the affinity B itself.
    out = rns_aggregate(B[None], torch.eye(3)[None], V[None], k=1, scale=1.0)
    w01 = math.exp(3) / (1 + math.exp(3))
    assert out[0, :, 0].tolist() == pytest.approx([(1 - w01) * 1 + w01 * 2, w01 * 1 + (1 - w01) * 2, 4.0])


@pytest.mark.parametrize("k, chunk", [(3, 2), (1, 7), (7, 3)])
def test_rns_aggregate_equals_the_dense_softmax_in_value_and_gradient(k, chunk):
    g = torch.Generator().manual_seed(k)
    q_t, k_t, v = (torch.randn(2, 7, n, generator=g, dtype=torch.float64, requires_grad=True) for n in (3, 3, 4))
    sparse = rns_aggregate(q_t, k_t, v, k, 0.5, chunk=chunk)
    dense = reciprocal_neighbour_softmax(q_t @ k_t.transpose(1, 2) * 0.5, k) @ v
    assert torch.allclose(sparse, dense, atol=1e-12)
    weights = torch.randn(sparse.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((sparse * weights).sum(), (q_t, k_t, v)),
                    torch.autograd.grad((dense * weights).sum(), (q_t, k_t, v))):
        assert torch.allclose(a, b, atol=1e-12)


# ------------------------------------------------------------------------------------- centre loss

def test_centre_loss_value_gradient_and_step_by_hand():
    feat = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    centres = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    loss = centre_loss(feat, labels, centres)
    assert loss.item() == pytest.approx((1 + 9 + 2) / 3)
    (grad,) = torch.autograd.grad(loss, feat)  # (2/B)(f_i - c_yi)
    assert torch.allclose(grad, torch.tensor([[2 / 3, 0.0], [2.0, 0.0], [-2 / 3, 2 / 3]]))
    new = centre_step(centres, feat, labels, rate=0.5)
    assert torch.allclose(new, torch.tensor([[4 / 3, 0.0], [2 / 3, 4 / 3], [5.0, 5.0]]))  # class 2 absent: unmoved
    # the released code: plain SGD (lr 0.5) on the centres' gradient of the unweighted loss
    param = centres.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(((feat.detach() - param[labels]) ** 2).sum(1).mean(), param)
    assert torch.allclose(centres - 0.5 * grad, new)


def test_neighbour_sequences_stay_in_a_neighbourhood():
    features = torch.cat([torch.randn(4, 3) * 0.01 + 10, torch.randn(4, 3) * 0.01 - 10])
    for seed in range(5):
        rows = neighbour_sequence(features, 2, torch.Generator().manual_seed(seed))
        assert len(set(rows.tolist())) == 2 and len({int(r) // 4 for r in rows}) == 1  # one cluster (pool <= 3)
    whole = neighbour_sequence(features, 100, torch.Generator().manual_seed(0))
    assert sorted(whole.tolist()) == list(range(8))  # capped at the set's size


# ------------------------------------------------------------------------------------- recipe

CFG = {"method": "nformer",
       "model": {"depth": 18, "pretrained": None, "dim": 16, "heads": 2, "blocks": 2, "landmarks": 3, "topk": 3},
       "recipe": {"stage2_start": 1}, "train": {"epochs": 2}}


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, 32, 16, generator=g), torch.arange(n) % 2, torch.zeros(n, dtype=torch.long),
            torch.arange(n) % 2)


def _reached(recipe, terms):
    recipe.model.zero_grad(set_to_none=True)
    terms["loss"].backward()
    stage1 = any(p.grad is not None and p.grad.abs().sum() > 0 for p in recipe.model.stage1_parameters())
    stage2 = any(p.grad is not None and p.grad.abs().sum() > 0 for p in recipe.model.stage2_parameters())
    return stage1, stage2


def test_each_stage_trains_only_its_own_part():
    torch.manual_seed(0)
    recipe = build_recipe(CFG, num_classes=2)
    before = recipe.model.centres.clone()
    terms = recipe.training_step(recipe.model, _batch())
    assert set(terms) == {"loss", "id", "triplet", "centre"}
    assert _reached(recipe, terms) == (True, False)
    assert not torch.equal(recipe.model.centres, before)  # the centres moved by their own step
    recipe.epoch = 1  # stage 2 (the loop calls on_epoch_start, which also freezes stage 1)
    for p in recipe.model.stage1_parameters():
        p.requires_grad_(False)
    feats, labels = torch.randn(2, 6, 16), torch.arange(12).reshape(2, 6) % 2
    terms = recipe.training_step(recipe.model, (feats, labels))
    assert set(terms) == {"loss", "nf_id", "nf_triplet", "nf_centre"}
    assert _reached(recipe, terms) == (False, True)
    assert int(recipe.model.nformer_steps) == 1


def test_the_nformer_rate_is_fixed_and_undecayed():
    recipe = build_recipe(CFG, num_classes=2)
    optimiser = build_optimizer(recipe.param_groups(), "adam", 3.5e-4, 5e-4)
    set_lr(optimiser, 0.01)
    first, second = optimiser.param_groups
    assert first["lr"] == pytest.approx(3.5e-6) and first["weight_decay"] == 5e-4
    assert second["lr"] == 1e-5 and second["weight_decay"] == 0.0


def test_transductive_step_needs_a_trained_stage_2_and_mixes_rows():
    torch.manual_seed(0)
    recipe = build_recipe(CFG, num_classes=2)
    features = torch.nn.functional.normalize(torch.randn(10, 16), dim=1)
    with pytest.raises(ValueError, match=r"NFormer \(stage 2\) has not been trained yet"):
        recipe.transductive(features)
    recipe.model.nformer_steps += 1
    recipe.model.eval()
    out = recipe.transductive(features)
    assert out.shape == (10, 16) and torch.allclose(out.norm(dim=1), torch.ones(10))
    assert torch.equal(out, recipe.transductive(features))  # fixed test landmarks: repeatable
    changed = features.clone()
    changed[1:] = torch.nn.functional.normalize(torch.randn(9, 16), dim=1)
    assert not torch.allclose(recipe.transductive(changed)[0], out[0])  # row 0 depends on the other rows


@pytest.mark.parametrize("override, message", [
    ("recipe.stage2_start=2", r"recipe.stage2_start \(2\) must be smaller than train.epochs \(2\)"),
    ("train.time_budget_s=10", "time_budget_s cannot be used with method: nformer"),
    ("model.topk=0", "model.topk must be an integer >= 1"),
])
def test_config_errors_name_the_key(override, message):
    cfg = json.loads(json.dumps(CFG))
    key, value = override.split("=")
    section, name = key.split(".")
    cfg.setdefault(section, {})[name] = yaml.safe_load(value)
    with pytest.raises(ValueError, match=message):
        build_recipe(cfg, num_classes=2)


@pytest.mark.parametrize("name, dataset, protocol", [
    ("nformer_sysu", "sysu", "sysu/all/single/seeded"), ("nformer_regdb", "regdb", "regdb/trial1/v2i"),
    ("nformer_llcm", "llcm", "llcm/i2v"), ("nformer_market1501", "market1501", "market1501")])
def test_presets_resolve(name, dataset, protocol):
    cfg = resolve_config(name, ["model.pretrained=none"])
    assert cfg["method"] == "nformer" and cfg["data"]["dataset"] == dataset and cfg["eval"]["protocol"] == protocol
    assert cfg["eval"]["transductive"] is False and cfg["train"]["epochs"] == 150
    assert cfg["recipe"]["stage2_start"] == 120 and cfg["model"]["topk"] == 20 and cfg["model"]["landmarks"] == 5
    if dataset != "market1501":
        assert "vireid's VI extension" in resolve_config_path(name).read_text()
    with pytest.raises(ValueError, match="model.pretrained is not set for a ResNet-50 model"):
        from vireid.app.runs import _require_weights

        _require_weights(load_config(resolve_config_path(name)))


# ------------------------------------------------------------------------------------- tiny two-stage run

TINY = {"data": {"height": 32, "width": 16, "p": 2, "k": 2, "workers": 0, "cache": False},
        "model": {"depth": 18, "pretrained": "none", "dim": 16, "blocks": 2, "landmarks": 3, "topk": 4},
        "recipe": {"stage2_start": 1, "sequence_length": 12, "images_per_sequence": 8, "feature_batch": 64},
        "train": {"epochs": 2, "milestones": [], "warmup_epochs": 0, "log_every": 1, "seed": 3}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("nformer")
    root = base / "sysu"
    generate(root, "sysu", 6, seed=1, size=(32, 16), images=1, workers=1)
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump({"_base_": str(resolve_config_path("nformer_sysu")), **TINY}))
    run = base / "run"
    train(config, root, run, device="cpu", progress=False)
    return {"root": root, "config": config, "run": run}


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_one_run_trains_both_stages(tiny):
    records = [r for r in _records(tiny["run"]) if "loss" in r]
    assert {r["epoch"] for r in records if "id" in r} == {0}
    assert {r["epoch"] for r in records if "nf_id" in r} == {1}
    assert all(math.isfinite(r["loss"]) for r in records)
    assert any(r.get("cached_features") for r in _records(tiny["run"]))


def test_evaluation_with_and_without_the_transductive_step(tiny, capsys):
    plain = evaluate_run(tiny["run"], tiny["root"], device="cpu", trials=[0, 1])
    refined = evaluate_run(tiny["run"], tiny["root"], device="cpu", trials=[0, 1], transductive=True)
    assert plain.label == "sysu/all/single/seeded" and refined.label == "sysu/all/single/seeded [transductive]"
    assert all(0.0 <= r.mean["mAP"] <= 1.0 for r in (plain, refined))
    recipe, _ = load_run(tiny["run"])  # the step moves the features (the tiny test set is solved either way)
    features = torch.nn.functional.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert not torch.allclose(recipe.transductive(features), features, atol=1e-3)
    out = tiny["run"].parent / "eval.json"
    assert cli_main(["eval", str(tiny["run"]), "--data-root", str(tiny["root"]), "--device", "cpu",
                     "--transductive", "--json", str(out)]) == 0
    assert "sysu/all/single/seeded [transductive] mean" in capsys.readouterr().out
    assert json.loads(out.read_text())["transductive"] is True


def test_a_run_stopped_in_stage_2_resumes_there_and_ends_as_an_uninterrupted_one(tiny, tmp_path):
    run = tmp_path / "run"

    def stop_in_stage_2(trainer, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt  # killed after the first stage-2 step: the last checkpoint ends stage 1

    with pytest.raises(KeyboardInterrupt):
        train(tiny["config"], tiny["root"], run, device="cpu", progress=False, on_step=stop_in_stage_2)
    stage1 = torch.load(run / "checkpoint.pt", weights_only=True)
    assert stage1["epoch"] == 1 and int(stage1["model"]["nformer_steps"]) == 0
    epochs = []
    train(tiny["config"], tiny["root"], run, device="cpu", progress=False,
          on_step=lambda trainer, record: epochs.append(record["epoch"]))
    assert epochs and set(epochs) == {1}  # stage 1 was not trained again
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    reference = torch.load(tiny["run"] / "checkpoint.pt", weights_only=True)["model"]
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name
        if not name.startswith("nformer") and value.is_floating_point():
            assert torch.equal(stage1["model"][name], value), f"{name} moved in stage 2"


def test_nformer_market1501_trains_both_stages_and_evaluates_transductively(tmp_path, capsys):
    """The paper's own setting: a visible-only Market-1501 layout, both stages, the labelled transductive test."""
    root = tmp_path / "market"
    generate(root, "market1501", 8, seed=4, size=(32, 16), images=3, workers=1)
    config = tmp_path / "tiny_market.yaml"
    config.write_text(yaml.safe_dump({"_base_": str(resolve_config_path("nformer_market1501")), **TINY}))
    run = tmp_path / "run"
    train(config, root, run, device="cpu", progress=False)
    assert {r["epoch"] for r in _records(run) if "nf_id" in r} == {1}
    result = evaluate_run(run, root, device="cpu", transductive=True)
    assert result.label == "market1501 [transductive]" and len(result.trials) == 1
    assert 0.0 <= result.mean["mAP"] <= 1.0
