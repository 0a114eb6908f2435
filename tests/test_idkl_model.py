"""IDKL model: train outputs, shared-only test path, GRL, config -> (model, loss settings)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO
from vireid.config import load_config
from vireid.losses import IDKLLossSettings, idkl_total_loss
from vireid.losses.idkl import PAPER
from vireid.methods.idkl import build_idkl
from vireid.models import MODELS
from vireid.models.fused_eval import FusedResNetEval
from vireid.models.idkl import IDKL
from vireid.models.layers import gem
from vireid.schema import parse_section

CONFIGS = ["idkl_sysu.yaml", "idkl_regdb.yaml", "idkl_llcm.yaml", "idkl_paper_sysu.yaml"]
PAPER_MODEL = dict(gates="se", in_affine=False, confuser="grl", head_input="pooled", entropy_classifier="specific",
                   raw_sp_reid=True)


def batch(p=2, k=2, h=32, w=16, seed=0):
    """Sampler layout: p identities, each a run of 2k samples I, V, I, V, ..."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(2 * k)
    modality = torch.tensor([1, 0]).repeat(p * k)
    return torch.randn(2 * p * k, 3, h, w, generator=g), labels, modality


def tiny(**kw):
    torch.manual_seed(0)
    return IDKL(num_classes=3, **{"depth": 18, **kw})


def load(name, **model_overrides):
    cfg = load_config(REPO / "src" / "vireid" / "configs" / name)  # with its _base_ chain
    cfg["model"].update(num_classes=3, depth=18, **model_overrides)
    return cfg


def test_registered():
    assert MODELS.get("idkl") is IDKL


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_build_and_train_one_step(name):
    model, settings = build_idkl(load(name))
    x, y, m = batch()
    out = model(x, m)
    total, metrics = idkl_total_loss(out, y, m, settings)
    assert torch.isfinite(total)
    total.backward()
    for part in (model.trunk, model.branch_sh, model.branch_sp, model.classifier, model.confusers, model.discriminators):
        assert all(p.grad is not None for p in part.parameters() if p.requires_grad), part.__class__.__name__
    assert model.bn_neck.bias.grad is None  # frozen BN-neck bias


def test_config_loss_sections_match_the_named_presets():
    _, code = build_idkl(load("idkl_sysu.yaml"))
    assert code == IDKLLossSettings(batch_switch=120)  # the code's switch on the literal batch size
    _, paper = build_idkl(load("idkl_paper_sysu.yaml"))
    assert paper == IDKLLossSettings(**PAPER)
    _, regdb = build_idkl(load("idkl_regdb.yaml"))
    assert (regdb.tgsa, regdb.mdr_graph, regdb.csa) == (0.0, 0.0, 0.3)


@pytest.mark.parametrize("terms, present, absent", [
    ({"ip": False, "tgsa": False, "csa": False, "mdr": False}, {"ce", "tri"}, {"tgsa", "csa", "F_p", "mdr_graph"}),
    ({"ip": False, "csa": False, "mdr": False}, {"tgsa"}, {"csa", "mdr_graph", "F_p"}),
    ({"tgsa": False, "csa": False}, {"F_p", "IN_p", "mdr_graph", "mdr_logit"}, {"tgsa", "csa"}),
    ({}, {"tgsa", "csa", "mdr_graph", "mdr_logit", "F_p", "IN_p"}, set()),
])
def test_table4_rows_are_term_switches(terms, present, absent):
    cfg = load("idkl_paper_sysu.yaml")
    cfg["terms"] = terms
    model, settings = build_idkl(cfg)
    x, y, m = batch()
    _, metrics = idkl_total_loss(model(x, m), y, m, settings)
    assert present <= set(metrics) and not (absent & set(metrics))


def test_train_outputs_shapes():
    model = tiny(raw_sp_reid=True, num_confusers=2)
    x, y, m = batch()
    out = model(x, m)
    d = model.feature_dim
    for key in ("feat_sh", "feat_sp", "bn_sh", "bn_sp", "pool_in", "pool_in_p", "feat_sp_raw"):
        assert out[key].shape == (8, d), key
    for key in ("logits_sh", "logits_sp", "ent_logits", "ent_logits_p", "logits_sp_raw"):
        assert out[key].shape == (8, 3), key
    assert len(out["d_sh_logits"]) == 2 and out["d_sh_logits"][0].shape == (8, 2)


def test_eval_runs_only_the_shared_branch_and_returns_the_bn_neck_feature():
    model = tiny()
    x, y, m = batch()
    model(x, m)  # one training forward so BN statistics are not the init values
    model.eval()
    calls = []
    model.branch_sp.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        feat = model(x)
        expected = model.bn_neck(gem(model.branch_sh(model.trunk(x))))
    assert not calls
    assert torch.allclose(feat, expected, atol=1e-5)  # the CPU test path folds BN: other rounding
    perm = torch.randperm(8)
    with torch.no_grad():
        assert torch.allclose(model(x[perm]), feat[perm], atol=1e-5)  # no dependence on batch order


def _trained_eval_model(**kw):
    model = tiny(**kw)
    x, _, m = batch()
    model(x, m)  # BN statistics away from their init values
    return model.eval()


def _close(fast: torch.Tensor, eager: torch.Tensor, relative: float) -> bool:
    """Within ``relative`` of the feature's scale: the folded BN and oneDNN's kernels round differently from
    eager on different CPUs (AVX-512, AVX2); a wrong fold or fused op is off by the scale itself."""
    return bool((fast - eager).abs().max() <= relative * eager.abs().max())


@pytest.mark.parametrize("mode, depth, rel", [("exact", 18, 1e-4), ("fold", 18, 1e-3), ("fold", 50, 1e-3)])
def test_cpu_eval_paths_give_the_eager_feature(mode, depth, rel):
    x = batch(seed=1)[0]
    model = _trained_eval_model(cpu_eval=mode, depth=depth)
    with torch.no_grad():
        fast = model(x)
        model.cpu_eval = "eager"
        eager = model(x)
    assert model._cpu_test_path is not None  # the fast path really ran
    assert isinstance(model._cpu_test_path[1], FusedResNetEval) == (mode == "fold")
    assert _close(fast, eager, rel), ((fast - eager).abs().max(), eager.abs().max())


def test_cpu_eval_path_follows_weight_changes_and_stays_off_with_autograd():
    x = batch(seed=1)[0]
    model = _trained_eval_model(cpu_eval="exact")
    with torch.no_grad():
        before = model(x)
        next(model.trunk.parameters()).mul_(0.5)  # an in-place update, as the optimiser makes
        after = model(x)
        model.cpu_eval = "eager"
        expected = model(x)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, expected, atol=1e-5)
    model.cpu_eval, model._cpu_test_path = "exact", None
    feat = model(x)  # autograd on: the eager modules, so gradients reach the weights
    assert model._cpu_test_path is None and feat.requires_grad
    seen = []
    handle = model.branch_sh.register_forward_hook(lambda *a: seen.append(1))
    with torch.no_grad():
        model(x)  # a hook on the branch (the non-finite layer search): the eager modules, so it fires
    handle.remove()
    assert seen and model._cpu_test_path is None


def test_fused_runner_matches_the_modules_and_leaves_its_input_alone():
    model = _trained_eval_model(depth=50)
    maps = model.trunk(batch(seed=2)[0]).detach()
    given = maps.clone()
    with torch.no_grad():
        fused = FusedResNetEval(model.branch_sh)(maps)  # a slice without stem: its first block adds into a copy
        eager = model.branch_sh(maps)
    assert torch.equal(maps, given)
    assert _close(fused, eager, 1e-3), ((fused - eager).abs().max(), eager.abs().max())
    with pytest.raises(TypeError, match="headless vireid ResNet"):
        FusedResNetEval(nn.Linear(2, 2))


def test_cpu_eval_runs_osnet_eagerly():
    model = _trained_eval_model(backbone="osnet_x0_25")
    with torch.no_grad():
        model(batch(seed=1)[0])
    assert model._cpu_test_path is None


def test_cpu_eval_falls_back_to_eager_with_a_warning_when_no_runner_works(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("not in this torch")

    monkeypatch.setattr("vireid.models.idkl.FusedResNetEval", broken)
    monkeypatch.setattr("vireid.models.idkl.optimize_for_inference", broken)
    model = _trained_eval_model()
    x = batch(seed=1)[0]
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="running the eager test path"):
        feat = model(x)
    with torch.no_grad():
        assert model.cpu_eval == "eager" and torch.equal(model(x), feat)


def test_cpu_eval_is_checked():
    with pytest.raises(ValueError, match="cpu_eval='fast'"):
        tiny(cpu_eval="fast")


def test_flip_averaging_and_normalisation():
    model = tiny().eval()
    x, _, _ = batch()
    with torch.no_grad():
        plain, flipped = model.extract(x), model.extract(x.flip(3))
        assert torch.allclose(model.extract(x, flip=True), 0.5 * (plain + flipped), atol=1e-6)
        model.test_normalize = True
        assert torch.allclose(model.extract(x, flip=True).norm(dim=1), torch.ones(8), atol=1e-5)


def test_channels_last_eval_matches():
    model = tiny().eval()
    x, _, _ = batch()
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)


def test_grl_reverses_the_confuser_gradient():
    model = tiny(**PAPER_MODEL, head_dropout=0.0, grl_coef=0.5)
    x, y, m = batch()
    out = model(x, m)
    out["feat_sh"].retain_grad()
    F.cross_entropy(out["d_sh_logits"][0], m).backward()
    f = out["feat_sh"].detach().requires_grad_(True)
    (direct,) = torch.autograd.grad(F.cross_entropy(model.confusers[0](f), m), f)
    assert torch.allclose(out["feat_sh"].grad, -0.5 * direct, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    x, y, m = batch()
    with pytest.raises(ValueError, match="per-sample modality"):
        model(x)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(x[:, :1], m)
    with pytest.raises(ValueError, match="gates='nope'"):
        tiny(gates="nope")
    with pytest.raises(ValueError, match=r"unknown model setting\(s\) dropout"):
        build_idkl({"model": {"num_classes": 3, "dropout": 0.1}})
    with pytest.raises(ValueError, match=r"unknown terms setting\(s\) lb"):
        build_idkl({"model": {"num_classes": 3}, "terms": {"lb": False}})
    with pytest.raises(ValueError, match="does not fit"):
        build_idkl({"model": {"num_classes": 3, "confuser": "grl"}, "loss": {"confuser_targets": "pseudo"}})
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        IDKL(num_classes=3, depth=18, pretrained="/nonexistent/missing.pth")


def test_pretrained_checkpoint_loads_into_trunk_and_both_branches(tmp_path, caplog):
    import logging

    from vireid.models.backbones.resnet import resnet18

    caplog.set_level(logging.INFO, logger="vireid")

    torch.manual_seed(1)
    source = resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = IDKL(num_classes=3, depth=18, pretrained=str(path))
    assert torch.equal(model.trunk.conv1.weight, source.conv1.weight)
    assert torch.equal(model.trunk.layer2[1].bn2.running_var, source.layer2[1].bn2.running_var)
    for branch in (model.branch_sh, model.branch_sp):
        assert torch.equal(branch.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert caplog.text.count("0 missing, 0 unexpected, 0 shape mismatches") == 3


def test_paper_m_r_gate_depends_on_the_sample_and_trains():
    """Eq. 8's m_r on plain IN(F): a mean-pooled gate would be sigmoid(0) = 0.5 for every sample, with no gradient."""
    model, settings = build_idkl(load("idkl_paper_sysu.yaml"))
    x, y, m = batch()
    out = model(x, m)
    ip = model.purifier(model.branch_sp(model.trunk(x)))
    m_r = ip["m_r"][:, :, 0, 0].detach()
    assert m_r.shape == (8, model.feature_dim)
    assert float(m_r.std(dim=0).max()) > 1e-4  # varies across samples
    assert not torch.allclose(m_r, torch.full_like(m_r, 0.5))
    total, _ = idkl_total_loss(out, y, m, settings)
    total.backward()
    for gate in (model.purifier.gate_r, model.purifier.gate_e):
        for p in (gate.fc1.weight, gate.fc2.weight):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_mean_pooled_gate_on_plain_in_is_refused():
    with pytest.raises(ValueError, match="m_r constant"):
        tiny(gates="se", gate_pool="avg", in_affine=False)
    with pytest.raises(ValueError, match="gate_pool='nope'"):
        tiny(gates="se", gate_pool="nope")


def test_paper_entropy_term_reads_the_specific_bn_neck_output():
    """Eq. 10 uses C_sp as in Eq. 18: Z = C_sp(BN_sp(f)); the code's separate classifier reads pooled features."""
    model = tiny(**PAPER_MODEL)
    x, y, m = batch()
    out = model(x, m)
    x_sp = model.branch_sp(model.trunk(x))
    ip = model.purifier(x_sp)
    bn = torch.nn.functional.batch_norm  # train-mode BN with the neck's affine parameters, no stat update
    neck = model.bn_neck_sp

    def bn_sp(f):
        return bn(f, None, None, neck.weight, neck.bias, training=True, eps=neck.eps)

    w = model.classifier_sp.weight
    assert torch.allclose(out["ent_logits"], bn_sp(gem(x_sp)) @ w.t(), atol=1e-4)
    assert torch.allclose(out["ent_logits_p"], bn_sp(gem(ip["x_p"])) @ w.t(), atol=1e-4)
    code = tiny()
    out = code(x, m)
    x_sp = code.branch_sp(code.trunk(x))
    assert torch.allclose(out["ent_logits"], gem(x_sp) @ code.classifier_ent.weight.t(), atol=1e-4)


def test_batch_switch_gives_the_code_small_batch_weights_elsewhere():
    """The released code's literal ``batch == 120``: its weights at 120, the small-batch ones at any other
    size; a term switched off (weight 0, a Table-4 row) stays off."""
    code = IDKLLossSettings(batch_switch=120)
    assert code.for_batch(120) is code
    small = code.for_batch(8)
    assert (small.tgsa, small.mdr_graph, small.mdr_graph_mixed, small.csa) == (0.1, 0.1, 0.0, 0.3)
    assert small.mdr_logit == code.mdr_logit and small.batch_switch == 120
    off = IDKLLossSettings(batch_switch=120, tgsa=0.0, csa=0.0).for_batch(60)
    assert (off.tgsa, off.csa, off.mdr_graph) == (0.0, 0.0, 0.1)
    assert IDKLLossSettings().for_batch(8) == IDKLLossSettings()  # 0: the written weights at every size
    with pytest.raises(ValueError, match="loss.batch_switch must be an integer >= 0, got -1"):
        parse_section(IDKLLossSettings, {"batch_switch": -1}, "loss")
