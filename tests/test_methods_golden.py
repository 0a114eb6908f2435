"""Parity with the AGW, CAJ, HcTri, VSD and IDKL reference code: every file under golden_dir/methods.

The vectors were produced by running the reference code (README-methods.md
in the golden directory describes every field). Each file is its own test
id and is dispatched on its ``fn``; an unknown ``fn`` (or sampler /
schedule name) fails, and so does an ``expected*`` field that no check
reads, so a new output cannot pass unnoticed. Tolerances are the README's:
float32 outputs rtol 1e-4 / atol 1e-5, ``*_f64`` rtol 1e-7 / atol 1e-9,
WRT/ADP intermediates rtol = atol = 1e-4 (off-diagonal distances only),
VSD's Sinkhorn term rtol 1e-3, integers exact, learning rates rtol 1e-12.
Everything is computed by the vireid functions the training path uses.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import golden_root
from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.data.samplers import AGWIdentitySampler, IDKLIdentitySampler, VSDIdentitySampler, agw_epoch_counts
from vireid.engine.optim import REFERENCE_SCHEDULES, lr_factor, set_lr
from vireid.losses.center import hetero_center_parts
from vireid.losses.vsd_code import BRANCHES, VSDCodeSettings, vsd_code_terms
from vireid.losses.weighted import esd_terms, weighted_parts
from vireid.models.layers import BNNeck, classifier
from vireid.models.reid_net import NonLocal, make_pool, non_local_state_from_agw

F32 = dict(rtol=1e-4, atol=1e-5)
F64 = dict(rtol=1e-7, atol=1e-9)
INTERMEDIATE = dict(rtol=1e-4, atol=1e-4)
SINKHORN = dict(rtol=1e-3, atol=0.0)
LR = dict(rtol=1e-12, atol=0.0)
EXACT = dict(rtol=0.0, atol=0.0)
INFRARED_CAM_COLUMNS = (2, 5)  # cam_counts columns are cameras 1..6; cameras 3 and 6 are infrared


def _files():
    root = golden_root() / "methods"
    return sorted(root.rglob("*.npz")) if root.is_dir() else []


class Case:
    """A golden file whose ``expected*`` fields must each be compared once (``unchecked`` lists the rest)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = np.load(path, allow_pickle=False)
        self.checked: set[str] = set()

    def __contains__(self, key):
        return key in self.data.files

    def __getitem__(self, key):
        return self.data[key]

    def t(self, key, dtype=None):
        x = torch.from_numpy(np.asarray(self.data[key]))
        return x.to(dtype) if dtype is not None else x

    def scalar(self, key):
        return self.data[key].item()

    def compare(self, key, actual, tol=F32, mask=None, view=None):
        """Compare ``actual`` with field ``key`` if the file has it (optional boolean ``mask``: entries
        compared; optional ``view``: applied to both sides first)."""
        if key not in self.data.files:
            return
        a = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
        e = np.asarray(self.data[key])
        if view is not None:
            a, e = view(a), view(e)
        if mask is not None:
            a, e = a[mask], e[mask]
        np.testing.assert_allclose(a, e, err_msg=f"{self.path.name}: {key}", **tol)
        self.checked.add(key)

    def unchecked(self) -> list[str]:
        return sorted(k for k in self.data.files if k.startswith("expected") and k not in self.checked)


def dtypes(case: Case):
    """(dtype, field suffix, float tolerance): the float32 run and the float64 run."""
    return ((torch.float32, "", F32), (torch.float64, "_f64", F64))


# ---------------------------------------------------------------- losses


def check_weighted(case: Case):
    """AGW's WRT (``wrt``) and CAJ's ESD (``adp``), with the reference's softmax numerics."""
    fn = str(case["fn"])
    assert case.scalar("normalize_feature") == 0, "only normalize_feature=0 is pinned"
    alpha = float(case.scalar("alpha")) if fn == "adp" else 1.0
    if fn == "adp":
        assert case.scalar("square") == 1, "only square=1 (what CAJ runs) is pinned"
    labels = case.t("labels")
    off_diag = ~np.eye(len(labels), dtype=bool)
    for dtype, suffix, tol in dtypes(case):
        feat = case.t("feat", dtype).requires_grad_(True)
        parts = weighted_parts(feat, labels, alpha, numerics="reference")
        d_p, d_n = parts["dist_ap"], parts["dist_an"]
        if fn == "wrt":
            margin_input = d_n - d_p
            loss = F.softplus(-margin_input).mean()  # SoftMarginLoss(d_n - d_p, 1)
        else:
            margin_input, y = esd_terms(d_p, d_n, float(case.scalar("gamma")), float(case.scalar("clamp_max")))
            loss = F.softplus(-y * margin_input).mean()
            if suffix == "":
                case.compare("expected_y", y, EXACT)
        (grad,) = torch.autograd.grad(loss, feat)
        case.compare("expected" + suffix, loss, tol)
        case.compare("expected_grad" + suffix, grad, tol)
        if suffix == "":
            case.compare("expected_margin_input", margin_input, INTERMEDIATE)
            case.compare("expected_dist", parts["dist"], INTERMEDIATE, mask=off_diag)
            case.compare("expected_weights_ap", parts["weights_ap"], INTERMEDIATE)
            case.compare("expected_weights_an", parts["weights_an"], INTERMEDIATE)
            case.compare("expected_correct", int((d_n >= d_p).sum()), EXACT)
        else:
            case.compare("expected_margin_input_f64", margin_input, F64)
            # The diagonal is sqrt(max(rounding residual, 1e-12)) ~ 1e-6: it depends on the BLAS's summation
            # order, so it is held to the clamp's scale only; every other distance to float64 precision.
            case.compare("expected_dist_f64", parts["dist"], F64, mask=off_diag)
            if "expected_dist_f64" in case:
                np.testing.assert_allclose(np.diag(parts["dist"].detach().numpy()),
                                           np.diag(case["expected_dist_f64"]), rtol=0, atol=1e-6,
                                           err_msg=f"{case.path.name}: diagonal of expected_dist_f64")


def check_hetero_center(case: Case):
    labels, modality = case.t("labels"), case.t("modality")
    assert set(np.unique(case["modality"]).tolist()) <= {VISIBLE, INFRARED}
    for dtype, suffix, tol in dtypes(case):
        feat = case.t("feat", dtype).requires_grad_(True)
        parts = hetero_center_parts(feat, labels, modality, float(case.scalar("margin")))
        (grad,) = torch.autograd.grad(parts["loss"], feat)
        case.compare("expected" + suffix, parts["loss"], tol)
        case.compare("expected_grad" + suffix, grad, tol)
        case.compare("expected_dist_ap" + suffix, parts["dist_ap"], tol)
        case.compare("expected_dist_an" + suffix, parts["dist_an"], tol)
        if suffix == "":
            case.compare("expected_correct", int((parts["dist_an"] >= parts["dist_ap"]).sum()), EXACT)


def check_vsd(case: Case):
    settings = VSDCodeSettings(**{f.name: float(case.scalar(f.name)) for f in fields(VSDCodeSettings)})
    for dtype, suffix, tol in dtypes(case):
        outputs, leaves = {}, {}
        for branch in BRANCHES:
            for head in ("observation", "representation"):
                name = f"{branch}_{head}"
                leaves[name] = case.t(f"{name}_logits", dtype).requires_grad_(True)
                outputs[name] = (leaves[name], case.t(f"{name}_feat", dtype))
        terms = vsd_code_terms(outputs, case.t("labels"), case.t("modality"), settings)
        case.compare("expected" + suffix, terms["vsd"], tol)
        case.compare("expected_vcd" + suffix, terms["vcd"], tol)
        case.compare("expected_ce" + suffix, terms["ce"], tol)
        case.compare("expected_rank" + suffix, terms["rank"], tol)
        case.compare("expected_cml" + suffix, terms["cml"], SINKHORN)
        grads = torch.autograd.grad(terms["vsd"], [leaves["i_representation"], leaves["v_representation"]],
                                    retain_graph=True)
        case.compare("expected_grad_i_representation_logits" + suffix, grads[0], tol)
        case.compare("expected_grad_v_representation_logits" + suffix, grads[1], tol)
        grads = torch.autograd.grad(terms["vcd"], [leaves["i_ms_representation"], leaves["v_ms_representation"]])
        case.compare("expected_vcd_grad_i_ms_representation_logits" + suffix, grads[0], tol)
        case.compare("expected_vcd_grad_v_ms_representation_logits" + suffix, grads[1], tol)


# ---------------------------------------------------------------- modules


def check_nonlocal(case: Case):
    assert case.scalar("inter_channels") == 1, "AGW's block has a 1-channel inner width"
    state_names = [str(n) for n in case["input_names"] if str(n) != "x"]
    for dtype, suffix, tol in dtypes(case):
        x = case.t("x", dtype)
        block = NonLocal(x.shape[1], width="agw")
        block.out[1].eps, block.out[1].momentum = float(case.scalar("bn_eps")), float(case.scalar("bn_momentum"))
        state = non_local_state_from_agw({name: case.t(name) for name in state_names})
        block.load_state_dict(state, strict=False)
        missing = set(block.state_dict()) - set(state) - {"out.1.num_batches_tracked"}
        assert not missing, f"golden non-local state lacks {sorted(missing)}"
        block.to(dtype)
        seen = {}
        hook = block.out.register_forward_hook(lambda module, args, out: seen.update(y=args[0], W_y=out))
        block.train()
        out = block(x)
        case.compare("expected" + suffix, out, tol)
        case.compare("expected_y" + suffix, seen["y"], tol)
        case.compare("expected_W_y" + suffix, seen["W_y"], tol)
        case.compare("expected_running_mean_after" + suffix, block.out[1].running_mean, tol)
        case.compare("expected_running_var_after" + suffix, block.out[1].running_var, tol)
        block.load_state_dict(state, strict=False)  # eval with the stored running statistics
        block.eval()
        out = block(x)
        case.compare("expected_eval" + suffix, out, tol)
        case.compare("expected_eval_y" + suffix, seen["y"], tol)
        hook.remove()


def check_gem(case: Case):
    """AGW's GeM (eps inside the root) + BN neck (frozen zero bias) + bias-free classifier, train and eval."""
    for dtype, suffix, tol in dtypes(case):
        x_vis, x_ir = case.t("x_visible", dtype), case.t("x_infrared", dtype)
        channels = x_vis.shape[1]
        pool = make_pool("gem", float(case.scalar("p")), gem_form="root_eps")
        assert pool.eps == float(case.scalar("eps"))
        neck = BNNeck(channels, eps=float(case.scalar("bn_eps")))
        neck.momentum = float(case.scalar("bn_momentum"))
        weight = case.t("classifier.weight")
        head = classifier(channels, weight.shape[0])

        def load():
            neck.load_state_dict({"weight": case.t("bottleneck.weight"), "bias": torch.zeros(channels),
                                  "running_mean": case.t("bottleneck.running_mean"),
                                  "running_var": case.t("bottleneck.running_var"),
                                  "num_batches_tracked": torch.tensor(0)})
            head.load_state_dict({"weight": weight})
            neck.to(dtype), head.to(dtype)

        load()
        neck.train()
        pooled = pool(torch.cat([x_vis, x_ir]))
        case.compare("expected" + suffix, pooled, tol)
        case.compare("expected_train_logits" + suffix, head(neck(pooled)), tol)
        case.compare("expected_bn_running_mean_after" + suffix, neck.running_mean, tol)
        case.compare("expected_bn_running_var_after" + suffix, neck.running_var, tol)
        load()
        neck.eval()
        for name, x in (("visible", x_vis), ("infrared", x_ir)):
            pooled = pool(x)
            case.compare(f"expected_eval_pool_{name}{suffix}", F.normalize(pooled, dim=1), tol)
            case.compare(f"expected_eval_feat_{name}{suffix}", F.normalize(neck(pooled), dim=1), tol)


# ---------------------------------------------------------------- samplers and schedules


def samples_from_counts(case: Case) -> list[Sample]:
    """A listing with the file's per-identity counts, in the reference's order.

    With ``cam_counts``: camera-major (cameras 1..6), identities by original
    folder number, as IDKL's sorted paths; otherwise visible then infrared, label-major.
    """
    if "cam_counts" in case:
        counts = case["cam_counts"]
        order = np.argsort(case["orig_ids"], kind="stable") if "orig_ids" in case else np.arange(len(counts))
        listing = []
        for column in range(counts.shape[1]):
            modality = INFRARED if column in INFRARED_CAM_COLUMNS else VISIBLE
            for label in order:
                sample = Sample(f"c{column + 1}/{label}", int(label), column + 1, modality)
                listing += [sample] * int(counts[label, column])
        return listing
    listing = [Sample("", label, 1, VISIBLE) for label, n in enumerate(case["vis_counts"]) for _ in range(int(n))]
    infrared = [Sample("", label, 3, INFRARED) for label, n in enumerate(case["ir_counts"]) for _ in range(int(n))]
    return listing + infrared


def check_sampler(case: Case):
    kind = str(case["sampler"])
    assert kind in SAMPLER_CHECKS, f"{case.path.name}: unknown sampler {kind!r}; known: {sorted(SAMPLER_CHECKS)}"
    listing = samples_from_counts(case)
    labels = np.array([s.pid for s in listing])
    SAMPLER_CHECKS[kind](case, listing, labels)


def check_agw_sampler(case: Case, listing, labels):
    p, k = int(case.scalar("P")), int(case.scalar("K"))
    assert int(case.scalar("loader_batch")) == p * k and case.scalar("drop_last") == 1
    sampler = AGWIdentitySampler(listing, p, k)
    batches = sampler.plan(np.random.RandomState(int(case.scalar("seed"))))
    counts = agw_epoch_counts(int(case["vis_counts"].sum()), int(case["ir_counts"].sum()), p, k)
    assert len(sampler) == counts["batches"]
    case.compare("expected", len(batches), EXACT)
    for name in ("len_dataloader", "sampler_len", "index_len", "images_per_epoch"):
        case.compare(f"expected_{name}", counts[name], EXACT)
    case.compare("expected_batch0_labels", labels[batches[0]], EXACT)
    visible = np.concatenate([b[:p * k] for b in batches])
    infrared = np.concatenate([b[p * k:] for b in batches])
    n = len(case["vis_counts"])
    case.compare("expected_vis_draws", np.bincount(labels[visible], minlength=n), EXACT)
    case.compare("expected_ir_draws", np.bincount(labels[infrared], minlength=n), EXACT)


def check_idkl_sampler(case: Case, listing, labels):
    p, k = int(case.scalar("p_size")), int(case.scalar("k_size"))
    assert int(case.scalar("num_instances")) == k and int(case.scalar("batch_size")) == p * k
    sampler = IDKLIdentitySampler(listing, p, k // 2)
    seed = int(case.scalar("seed"))
    batches = sampler.plan(np.random.RandomState(seed))
    case.compare("expected", len(batches), EXACT)
    case.compare("expected_len_dataloader_before", sampler.estimate["len_dataloader"], EXACT)
    case.compare("expected_sampler_len_before", sampler.estimate["sampler_len"], EXACT)
    drawn = np.concatenate([IDKLIdentitySampler.reference_order(b) for b in batches])
    case.compare("expected_sampler_len_after", len(drawn), EXACT)
    case.compare("expected_images_per_epoch", len(drawn), EXACT)
    n = len(case["vis_counts"])
    draws = np.bincount(labels[drawn], minlength=n)
    case.compare("expected_draws", draws, EXACT)
    case.compare("expected_draws_multiset", np.sort(draws)[::-1], EXACT)
    infrared = np.array([listing[i].modality == INFRARED for i in drawn])
    case.compare("expected_ir_draws", np.bincount(labels[drawn[infrared]], minlength=n), EXACT)
    first = IDKLIdentitySampler.reference_order(batches[0])
    case.compare("expected_batch0_labels", labels[first], EXACT)
    case.compare("expected_batch0_cams", [listing[i].camid for i in first], EXACT)
    over = [len(sampler.plan(np.random.RandomState(seed + i))) for i in range(int(case.scalar("n_seeds")))]
    case.compare("expected_batches_over_seeds", over, EXACT)


def check_vsd_sampler(case: Case, listing, labels):
    per_id = int(case.scalar("num_instances"))
    ids_per_batch = int(case.scalar("batch_size")) // per_id
    sampler = VSDIdentitySampler(listing, ids_per_batch, per_id // 2)
    batches = sampler.plan()
    case.compare("expected", len(batches), EXACT)
    case.compare("expected_len_dataloader", len(sampler), EXACT)
    drawn = np.concatenate(batches)
    case.compare("expected_images_per_epoch", len(drawn), EXACT)
    # Which identities an epoch leaves out is random (VSD draws with its own RNG): compare the shape of the draws.
    n = len(case["cam_counts"])
    case.compare("expected_draws", np.bincount(labels[drawn], minlength=n), EXACT, view=lambda a: np.sort(a)[::-1])


SAMPLER_CHECKS = {"agw_identity": check_agw_sampler, "idkl_identity_random": check_idkl_sampler,
                  "vsd_cam_random_identity": check_vsd_sampler}


def check_lr_schedule(case: Case):
    name = str(case["schedule"])
    assert name in REFERENCE_SCHEDULES, \
        f"{case.path.name}: unknown schedule {name!r}; known: {sorted(REFERENCE_SCHEDULES)}"
    settings = dict(REFERENCE_SCHEDULES[name])
    if "milestones" in case:
        settings["milestones"] = tuple(int(m) for m in case["milestones"])
    if "gamma" in case:
        settings["gamma"] = float(case.scalar("gamma"))
    if "warmup_factor" in case:
        settings["warmup_start"] = float(case.scalar("warmup_factor"))
    if "warmup_iters" in case:
        settings["warmup_epochs"] = int(case.scalar("warmup_iters"))
    base = float(case.scalar("base_lr"))
    # Through set_lr as the trainer drives it: backbone group at 0.1 x (AGW's two rates), heads at 1 x.
    # (param_groups as build_optimizer lays them out; a real optimiser's first construction costs seconds here.)
    optimizer = SimpleNamespace(param_groups=[{"initial_lr": base * 0.1}, {"initial_lr": base}])
    heads, backbone = [], []
    for epoch in case["epochs"]:
        for step_fraction in (0.0, 0.5):  # the rate holds for the whole epoch
            set_lr(optimizer, lr_factor(float(epoch) + step_fraction, epochs=int(case.scalar("n_epochs")),
                                        **settings))
            if step_fraction == 0.0:
                backbone.append(optimizer.param_groups[0]["lr"])
                heads.append(optimizer.param_groups[1]["lr"])
            else:
                assert optimizer.param_groups[1]["lr"] == heads[-1], f"epoch {epoch}: rate changes within the epoch"
    case.compare("expected", heads, LR)
    case.compare("expected_backbone", backbone, LR)


CHECKS = {
    "wrt": check_weighted, "adp": check_weighted, "hetero_center_triplet": check_hetero_center, "vsd": check_vsd,
    "nonlocal": check_nonlocal, "gem": check_gem, "sampler_epoch": check_sampler, "lr_schedule": check_lr_schedule,
}


def run_case(path: Path) -> None:
    case = Case(path)
    fn = str(case["fn"])
    assert fn in CHECKS, f"{path.name}: unknown golden fn {fn!r}; known: {sorted(CHECKS)}"
    CHECKS[fn](case)
    assert not case.unchecked(), f"{path.name}: fields no check compares: {case.unchecked()}"


def test_methods_golden_directory_exists():
    root = golden_root() / "methods"
    assert root.is_dir(), f"methods golden vectors not found at {root}; set VIREID_GOLDEN"
    files = list(root.rglob("*.npz"))
    assert files, f"no .npz files under {root}"
    assert {str(np.load(f)["fn"]) for f in files} >= set(CHECKS), "a golden fn has no file"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(golden_root() / "methods")))
def test_methods_golden_case(path: Path):
    run_case(path)


def test_unknown_fn_fails(tmp_path):
    path = tmp_path / "new_01.npz"
    np.savez(path, fn=np.array("brand_new_term"), expected=np.zeros(1))
    with pytest.raises(AssertionError, match="unknown golden fn 'brand_new_term'"):
        run_case(path)


def test_a_perturbed_expectation_is_caught(tmp_path):
    """The checks can fail: each kind of file with a perturbed expectation must not pass."""
    root = golden_root() / "methods"
    for name, key in (("wrt_01_small_p4k2d16.npz", "expected_grad"), ("sampler_idkl_01_sysu_p12k10.npz", "expected"),
                      ("lr_01_agw_sgd0.1_81ep.npz", "expected_backbone"), ("hctri_01_small_p4k2d16.npz", "expected")):
        src = root / name
        if not src.exists():
            continue
        d = dict(np.load(src, allow_pickle=False))
        d[key] = d[key] + (1 if d[key].dtype.kind == "i" else 0.01 * np.abs(d[key]).max())
        path = tmp_path / name
        np.savez(path, **d)
        with pytest.raises(AssertionError):
            run_case(path)


def test_missing_directory_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("VIREID_GOLDEN", str(tmp_path))
    with pytest.raises(AssertionError, match="methods golden vectors not found"):
        test_methods_golden_directory_exists()
