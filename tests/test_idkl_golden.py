"""Parity with the IDKL reference code: every case of every golden file under golden_dir/idkl.

Each file is its own test id. Float32 outputs are compared with rtol 1e-4 /
atol 1e-5, ``*_f64`` outputs against a float64 run with rtol 1e-7 / atol 1e-9,
as README-idkl.md prescribes. An unknown ``fn`` fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import golden_root
from vireid import losses as L
from vireid.evaluation import idkl_compat as E
from vireid.losses.idkl import REFERENCE_SMALL_BATCH, IDKLLossSettings
from vireid.models.layers import InformationPurifier, gem

F32 = dict(rtol=1e-4, atol=1e-5)
F64 = dict(rtol=1e-7, atol=1e-9)


def _files():
    root = golden_root() / "idkl"
    return sorted(root.rglob("*.npz")) if root.is_dir() else []


def t(d, key, dtype=None):
    x = torch.from_numpy(np.asarray(d[key]))
    return x.to(dtype) if dtype is not None else x


def close(actual, expected, tol=F32, what=""):
    a = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    np.testing.assert_allclose(a, np.asarray(expected), err_msg=what, **tol)


def both_precisions(d, run):
    """Run ``run(dtype)`` in float32 against the plain fields and in float64 against the *_f64 fields."""
    out32 = run(torch.float32)
    out64 = run(torch.float64)
    for name, value in out32.items():
        key = "expected" if name == "" else f"expected_{name}"
        if key in d.files:
            close(value, d[key], F32, key)
    for name, value in out64.items():
        key = "expected_f64" if name == "" else f"expected_{name}_f64"
        if key in d.files:
            close(value, d[key], F64, key)


def check_gem(d):
    both_precisions(d, lambda dt: {"": gem(t(d, "x", dt), float(d["p"]), float(d["eps"]))})


def check_offdiag(d):
    both_precisions(d, lambda dt: {"": L.offdiag_pairwise_dist(t(d, "feat", dt), float(d["sq_clamp_min"]))})


def check_sym_kl(d):
    both_precisions(d, lambda dt: {"": L.sym_kl(t(d, "a", dt), t(d, "b", dt)),
                                   "kl_ab": L.kl_batchmean(t(d, "a", dt), t(d, "b", dt))})


def check_sm_kl(d):
    def run(dt):
        a, b, y = t(d, "logits1", dt), t(d, "logits2", dt), t(d, "labels")
        run_len = int((y == y[0]).sum()) // 2
        kl12 = L.kl_batchmean(L.regroup_by_identity(a, run_len), L.regroup_by_identity(b, run_len))
        return {"": L.sm_kl(a, b, y), "kl_12": kl12}
    both_precisions(d, run)


def check_entropy(d):
    def run(dt):
        zf, zp = t(d, "logits_F", dt), t(d, "logits_Fp", dt)
        return {"": L.entropy_margin(zf, zp, float(d["margin"])),
                "entropy_F": L.entropy(zf), "entropy_Fp": L.entropy(zp)}
    both_precisions(d, run)


def check_centroid(d):
    def run(dt):
        f1, f2, y, m = t(d, "F1", dt), t(d, "F2", dt), t(d, "labels"), t(d, "modality")
        d1, uniq = L.modal_centroid_dist(f1, y, m)
        d2, _ = L.modal_centroid_dist(f2, y, m)
        assert uniq.tolist() == d["expected_unique_labels"].tolist()
        return {"": L.modal_centroid(f1, f2, y, m, float(d["margin"])), "dist_F1": d1, "dist_F2": d2}
    both_precisions(d, run)


def check_triplet(d):
    def run(dt):
        loss, ap, an = L.triplet_hard(t(d, "feat", dt), t(d, "labels"), float(d["margin"]), return_dists=True)
        return {"": loss, "dist_ap": ap, "dist_an": an}
    both_precisions(d, run)


def _settings(d) -> IDKLLossSettings:
    """The reference's batch-size switch, made explicit: B == batch_switch -> defaults, else the small-batch weights."""
    big = d["labels"].shape[0] == int(d["batch_switch"])
    return IDKLLossSettings() if big else IDKLLossSettings(**REFERENCE_SMALL_BATCH)


def check_tgsa(d):
    s = _settings(d)
    f_sh, f_sp, y, m = t(d, "feat_sh"), t(d, "feat_sp"), t(d, "labels"), t(d, "modality")
    sh_v, sh_i = L.split_modalities(f_sh, m, y)
    sp_v, sp_i = L.split_modalities(f_sp, m, y)
    terms = L.tgsa_reference(sh_v, sh_i, sp_v, sp_i, mixed=True)
    for k, v in terms.items():
        close(v, d[f"expected_kl_{k}"], F32, k)
    close(L.offdiag_pairwise_dist(sh_v), d["expected_affinity_dist_sh_v"], F32, "H_V")
    from vireid.losses.graph import mixed_halves
    close(L.offdiag_pairwise_dist(mixed_halves(sh_v, sh_i)), d["expected_affinity_dist_cross"], F32, "H_X")
    only_graph = IDKLLossSettings(**{**s.as_dict(), **dict(id_sh=0, id_sp=0, tri_sh=0, tri_sp=0, discriminator=0,
                                                            confuser=0, ip_e=0, ip_r=0, csa=0, mdr_logit=0)})
    out = {"feat_sh": f_sh, "feat_sp": f_sp, "logits_sh": f_sh}
    total, metrics = L.idkl_total_loss(out, y, m, only_graph)
    close(metrics["soft_dt"], d["expected"], F32, "soft_dt")
    close(total, d["expected_total_loss"], F32, "total")


def check_csa(d):
    s = _settings(d)
    z_sh, z_sp, y, m = t(d, "logits_sh"), t(d, "logits_sp"), t(d, "labels"), t(d, "modality")
    sh_v, sh_i = L.split_modalities(z_sh, m, y)
    sp_v, sp_i = L.split_modalities(z_sp, m, y)
    parts = {"intra_bg": L.sym_kl(sh_v, sh_i), "inter_bg_v": L.sym_kl(sh_v, sp_v), "inter_bg_i": L.sym_kl(sh_i, sp_i),
             "intra_sm": L.sm_kl(sh_v, sh_i, y), "inter_sm_v": L.sm_kl(sh_v, sp_v, y),
             "inter_sm_i": L.sm_kl(sh_i, sp_i, y), "ce": L.id_loss(z_sh, y)}
    for k, v in parts.items():
        close(v, d[f"expected_{k}"], F32, k)
    only_logits = IDKLLossSettings(**{**s.as_dict(), **dict(id_sh=0, id_sp=0, tri_sh=0, tri_sp=0, discriminator=0,
                                                            confuser=0, ip_e=0, ip_r=0, tgsa=0, mdr_graph=0,
                                                            mdr_graph_mixed=0)})
    total, metrics = L.idkl_total_loss({"feat_sh": z_sh, "logits_sh": z_sh, "logits_sp": z_sp}, y, m, only_logits)
    close(metrics["bg_kl"], d["expected_bg_kl"], F32, "bg_kl")
    close(metrics["sm_kl"], d["expected_sm_kl"], F32, "sm_kl")
    close(total, d["expected"], F32, "bg_kl + sm_kl")


def check_ip_module(d):
    x_sh, x_sp = t(d, "x_sh"), t(d, "x_sp_f")
    c = x_sp.shape[1]
    ip = InformationPurifier(c, reduction=int(d["r"]), pooled_gates=False, in_affine=True)
    ip.norm.eps, ip.norm.momentum = float(d["in_eps"]), float(d["in_momentum"])
    with torch.no_grad():
        ip.norm.weight.copy_(t(d, "in_weight"))
        ip.norm.bias.copy_(t(d, "in_bias"))
        ip.norm.running_mean.copy_(t(d, "in_running_mean"))
        ip.norm.running_var.copy_(t(d, "in_running_var"))
        for gate, prefix in ((ip.gate_r, "mask_IN"), (ip.gate_e, "mask_F")):
            gate.fc1.weight.copy_(t(d, f"{prefix}_w1")[:, :, None, None])
            gate.fc2.weight.copy_(t(d, f"{prefix}_w2")[:, :, None, None])
    ip.train()
    out = ip(x_sp)
    p, eps = float(d["gem_p"]), float(d["gem_eps"])
    close(gem(out["out"], p, eps), d["expected"], F32, "gem(x_sp)")
    close(gem(x_sh, p, eps), d["expected_sh_pl"], F32, "sh_pl")
    for mine, theirs in (("x_in", "sp_IN"), ("m_r", "m_IN"), ("m_e", "m_F"), ("x_in_p", "sp_IN_p"),
                         ("x_p", "x_sp_f_p")):
        close(out[mine], d[f"expected_{theirs}"], F32, theirs)
    close(ip.norm.running_mean, d["expected_in_running_mean_after"], F32, "running_mean")
    close(ip.norm.running_var, d["expected_in_running_var_after"], F32, "running_var")


def _ip_outputs(d):
    w = t(d, "W_csf")
    return {"ent_logits": gem(t(d, "x_sp_f")) @ w.t(), "ent_logits_p": gem(t(d, "x_sp_f_p")) @ w.t(),
            "pool_in": gem(t(d, "sp_IN")), "pool_in_p": gem(t(d, "sp_IN_p"))}


def check_ip_loss(d):
    y, m = t(d, "labels"), t(d, "modality")
    out = _ip_outputs(d)
    l_e = L.entropy_margin(out["ent_logits"], out["ent_logits_p"], float(d["entropy_margin"]))
    l_r = L.modal_centroid(out["pool_in"], out["pool_in_p"], y, m, float(d["centroid_margin"]))
    close(l_e, d["expected_L_e"], F32, "L_e")
    close(l_r, d["expected_L_r"], F32, "L_r")
    w = float(d["weight"])
    s = IDKLLossSettings(id_sh=0, id_sp=0, tri_sh=0, tri_sp=0, discriminator=0, confuser=0, ip_e=w, ip_r=w,
                         tgsa=0, mdr_graph=0, mdr_graph_mixed=0, csa=0, mdr_logit=0)
    total, _ = L.idkl_total_loss({**out, "feat_sh": out["pool_in"], "logits_sh": out["ent_logits"]}, y, m, s)
    close(total, d["expected"], F32, "0.1 * (L_e + L_r)")


def check_confuser(d):
    m, _y = t(d, "modality"), t(d, "labels")
    target = L.confuser_targets(m)
    assert target.tolist() == d["expected"].tolist()
    assert m.tolist() == d["expected_discriminator_targets"].tolist()
    close(L.modality_loss(t(d, "d_sp_logits"), m), d["expected_unad"], F32, "unad")
    close(L.modality_loss(t(d, "d_sh_logits"), target), d["expected_pse"], F32, "pse")


def check_total(d):
    y, m = t(d, "labels"), t(d, "modality")
    eps = float(d["bn_eps"])
    f_sh, f_sp = t(d, "feat_sh"), t(d, "feat_sp")
    bn = lambda f: F.batch_norm(f, None, None, training=True, eps=eps)  # noqa: E731  fresh BN neck, train mode
    out = {"feat_sh": f_sh, "feat_sp": f_sp, "logits_sh": bn(f_sh) @ t(d, "W_cls").t(),
           "logits_sp": bn(f_sp) @ t(d, "W_cls_sp").t(), "d_sp_logits": t(d, "d_sp_logits"),
           "d_sh_logits": t(d, "d_sh_logits"), **_ip_outputs(d)}
    s = _settings(d).as_dict()
    s.update(triplet_margin=float(d["margin"]))
    flag = lambda name: bool(int(d[f"flag_{name}"]))  # noqa: E731
    if not flag("distalign"):
        s.update(tgsa=0, mdr_graph=0, mdr_graph_mixed=0)
    if not flag("IP"):
        s.update(ip_e=0, ip_r=0)
    if not flag("triplet"):
        s.update(tri_sh=0, tri_sp=0)
    if not flag("classification"):
        s.update(id_sh=0)
    if not flag("decompose"):
        s.update(id_sp=0, discriminator=0, confuser=0)
    s.update(bg_kl=float(flag("bg_kl")), sm_kl=float(flag("sm_kl")))
    total, metrics = L.idkl_total_loss(out, y, m, IDKLLossSettings(**s))
    for key in ("tri", "soft_dt", "IN_p", "F_p", "unad", "id_pl", "pse", "bg_kl", "sm_kl", "ce", "acc"):
        if f"expected_{key}" in d.files and (key in metrics or float(d[f"expected_{key}"]) != 0.0):
            close(metrics[key], d[f"expected_{key}"], F32, key)
    close(total, d["expected"], F32, "total")


def check_eval_retrieval(d):
    summary, cmc, dist = E.eval_retrieval(
        d["q_feats"], d["g_feats"], d["q_ids"], d["g_ids"], d["q_cams"], d["g_cams"],
        rerank_on=bool(int(d["rerank"])), k1=int(d["rerank_k1"]), k2=int(d["rerank_k2"]),
        lambda_value=float(d["rerank_lambda"]))
    dist_tol = dict(rtol=1e-6, atol=5e-3) if int(d["rerank"]) else F32
    close(dist, d["expected_dist"], dist_tol, "dist")
    close(cmc, d["expected_cmc"], F32, "cmc")
    close(summary, d["expected"], F32, "metrics")


def check_eval_sysu(d):
    out = E.eval_sysu(d["q_feats"], d["q_ids"], d["q_cams"], d["g_feats"], d["g_ids"], d["g_cams"], d["g_paths"],
                      d["perm_rows"], mode=str(d["mode"]), num_shots=int(d["num_shots"]),
                      num_trials=int(d["num_trials"]), rerank_on=bool(int(d["rerank"])))
    close(out, d["expected"], F32, "metrics")


def check_rerank(d):
    out = E.rerank(d["q_feat"], d["g_feat"], int(d["k1"]), int(d["k2"]), float(d["lambda_value"]),
                   eval_type=bool(int(d["eval_type"])))
    # README tolerance is atol 5e-3; we emulate the float16 tables, so hold ourselves to 1e-6.
    close(out, d["expected"], dict(rtol=0, atol=1e-6), "rerank")


CHECKS = {
    "gem": check_gem, "offdiag_pairwise_dist": check_offdiag, "sym_kl": check_sym_kl, "sm_kl": check_sm_kl,
    "entropy_margin": check_entropy, "modal_centroid": check_centroid, "triplet_hard": check_triplet,
    "tgsa": check_tgsa, "csa": check_csa, "ip_module": check_ip_module, "ip_loss": check_ip_loss,
    "confuser_targets": check_confuser, "total_loss": check_total, "eval_retrieval": check_eval_retrieval,
    "eval_sysu": check_eval_sysu, "rerank": check_rerank,
}


def test_golden_files_exist(golden_dir):
    files = list((golden_dir / "idkl").rglob("*.npz"))
    assert len(files) >= 32, f"expected the IDKL golden vectors under {golden_dir / 'idkl'}, found {len(files)}"


def run_case(path: Path) -> None:
    d = np.load(path, allow_pickle=False)
    fn = str(d["fn"])
    assert fn in CHECKS, f"{path.name}: unknown golden fn {fn!r}; known: {sorted(CHECKS)}"
    CHECKS[fn](d)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(golden_root() / "idkl")))
def test_golden_case(path: Path):
    run_case(path)


def test_unknown_fn_fails_instead_of_skipping(tmp_path):
    path = tmp_path / "new_01.npz"
    np.savez(path, fn=np.array("brand_new_term"), expected=np.zeros(1))
    with pytest.raises(AssertionError, match="unknown golden fn 'brand_new_term'"):
        run_case(path)


def test_a_wrong_answer_is_caught(tmp_path):
    """The checks can fail: a golden file with a perturbed expectation must not pass."""
    cases = sorted((golden_root() / "idkl").rglob("triplet_*.npz"))
    assert cases, f"no triplet_*.npz golden case under {golden_root() / 'idkl'}"
    d = dict(np.load(cases[0], allow_pickle=False))
    d["expected"] = d["expected"] * 1.01
    path = tmp_path / "triplet_bad.npz"
    np.savez(path, **d)
    with pytest.raises(AssertionError):
        run_case(path)
