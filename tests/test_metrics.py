"""Behaviour of vireid.evaluation.evaluate beyond the golden vectors."""

import numpy as np
import pytest
import torch

from loop_reference import loop_metrics
from vireid.evaluation import evaluate
from vireid.evaluation import metrics as M


def _problem(seed, nq=40, ng=60, ids=12, quantise=False):
    rng = np.random.default_rng(seed)
    dist = rng.random((nq, ng))
    if quantise:
        dist = np.round(dist * 8) / 8  # many ties
    q_pids = rng.integers(0, ids + 3, nq)  # some query ids absent from the gallery
    g_pids = rng.integers(0, ids, ng)
    q_cams = rng.choice([3, 6], nq)
    g_cams = rng.choice([1, 2, 4, 5], ng)
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("rule", ["sysu", "regdb", "llcm"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_reference(rule, seed):
    dist, qp, gp, qc, gc = _problem(seed, quantise=seed % 2 == 1)
    if rule == "llcm":
        gc = np.random.default_rng(seed).choice([1, 2, 3], len(gp))
        qc = np.random.default_rng(seed + 9).choice([1, 2, 3], len(qp))
    expected = loop_metrics(dist, qp, gp, qc, gc, rule, 10)
    out = evaluate(dist, qp, gp, qc, gc, rule=rule, max_rank=10)
    np.testing.assert_allclose(out["cmc"], expected["cmc"], atol=1e-6)
    assert out["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert out["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
    assert out["num_valid_q"] == expected["num_valid_q"]


def test_chunked_equals_unchunked(monkeypatch):
    dist, qp, gp, qc, gc = _problem(7, nq=90, ng=50)
    whole = evaluate(dist, qp, gp, qc, gc, rule="sysu")
    monkeypatch.setattr(M, "_CHUNK_CELLS", 50 * 7)  # 7 queries per chunk
    chunked = evaluate(dist, qp, gp, qc, gc, rule="sysu")
    np.testing.assert_array_equal(whole["cmc"], chunked["cmc"])
    assert whole["mAP"] == chunked["mAP"] and whole["mINP"] == chunked["mINP"]


def test_torch_and_numpy_inputs_agree():
    dist, qp, gp, qc, gc = _problem(3)
    a = evaluate(dist, qp, gp, qc, gc, rule="sysu")
    b = evaluate(torch.from_numpy(dist).float(), torch.from_numpy(qp), torch.from_numpy(gp),
                 torch.from_numpy(qc), torch.from_numpy(gc), rule="sysu")
    np.testing.assert_allclose(a["cmc"], b["cmc"])
    assert a["num_valid_q"] == b["num_valid_q"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    dist, qp, gp, qc, gc = _problem(5)
    cpu = evaluate(dist, qp, gp, qc, gc, rule="llcm")
    gpu = evaluate(*(torch.as_tensor(x).cuda() for x in (dist, qp, gp, qc, gc)), rule="llcm")
    np.testing.assert_array_equal(cpu["cmc"], gpu["cmc"])
    assert cpu["mAP"] == pytest.approx(gpu["mAP"], abs=1e-12)


def test_ties_broken_by_gallery_index():
    # All distances equal: the stable order puts gallery item 0 first.
    out = evaluate(np.zeros((1, 3)), [7], [7, 1, 7], rule="regdb")
    assert out["cmc"][0] == 1.0 and out["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    out = evaluate(np.zeros((1, 3)), [7], [1, 7, 7], rule="regdb")
    assert out["cmc"][0] == 0.0 and out["mINP"] == pytest.approx(2 / 3)


def test_sysu_rule_only_affects_camera3_queries():
    # Gallery: pid 1 in cam 2 (closest) and cam 1. Cam-3 query loses the cam-2 hit, cam-6 keeps it.
    dist = np.array([[0.1, 0.5, 0.3], [0.1, 0.5, 0.3]])
    g_pids, g_cams = [1, 1, 2], [2, 1, 4]
    out3 = evaluate(dist[:1], [1], g_pids, [3], g_cams, rule="sysu", max_rank=2)
    out6 = evaluate(dist[1:], [1], g_pids, [6], g_cams, rule="sysu", max_rank=2)
    assert out3["cmc"].tolist() == [0.0, 1.0] and out6["cmc"].tolist() == [1.0, 1.0]


ERRORS = [
    (dict(distmat=np.zeros((2, 3)), q_pids=[1], g_pids=[1, 2, 3]), "q_pids has shape (1,)"),
    (dict(distmat=np.zeros((2, 3)), q_pids=[1, 2], g_pids=[1, 2]), "g_pids has shape (2,)"),
    (dict(distmat=np.array([[0.0, np.nan]]), q_pids=[1], g_pids=[1, 2]), "NaN/inf"),
    (dict(distmat=np.array([[np.inf, 0.0]]), q_pids=[1], g_pids=[1, 2]), "first at query 0, gallery 0"),
    (dict(distmat=np.zeros((2, 0)), q_pids=[1, 2], g_pids=[]), "gallery is empty"),
    (dict(distmat=np.zeros((0, 2)), q_pids=[], g_pids=[1, 2]), "no queries"),
    (dict(distmat=np.zeros(3), q_pids=[1], g_pids=[1, 2, 3]), "must be 2-D"),
    (dict(distmat=np.zeros((1, 2)), q_pids=[5], g_pids=[1, 2]), "no valid query"),
    (dict(distmat=np.zeros((1, 2)), q_pids=[1], g_pids=[1, 2], rule="market"), "unknown rule 'market'"),
    (dict(distmat=np.zeros((1, 2)), q_pids=[1], g_pids=[1, 2], rule="sysu"), "needs q_camids and g_camids"),
    (dict(distmat=np.zeros((1, 2)), q_pids=[1], g_pids=[1, 2], max_rank=0), "max_rank must be a positive integer"),
    (dict(distmat=np.zeros((1, 2)), q_pids=[1.5], g_pids=[1, 2]), "integer labels"),
]


@pytest.mark.parametrize("kwargs, message", ERRORS, ids=[m for _, m in ERRORS])
def test_bad_input_raises_clear_value_error(kwargs, message):
    kwargs.setdefault("rule", "regdb")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate(**kwargs)


def test_ragged_identity_cmc_is_an_error_not_numbers():
    # A cam-3 query keeps 1 identity (the cam-2 items go), a cam-6 query keeps 2.
    dist = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="use max_rank <= 1 or pad_short_cmc=True"):
        evaluate(dist, [1, 1], [1, 2, 2], [3, 6], [1, 2, 2], rule="sysu", max_rank=2)
    # Padding extends the short row with its last value: the cam-3 query (pid 1) is a
    # rank-1 hit, the cam-6 query too.
    out = evaluate(dist, [1, 1], [1, 2, 2], [3, 6], [1, 2, 2], rule="sysu", max_rank=2, pad_short_cmc=True)
    assert out["cmc"].tolist() == [1.0, 1.0]


def test_padding_matches_loop_reference_on_ragged_rows():
    dist, qp, gp, qc, gc = _problem(12, nq=30, ng=12, ids=6)
    gc = np.where(gp == 0, 2, gc)  # identity 0 only in camera 2: cam-3 queries lose it
    expected = loop_metrics(dist, qp, gp, qc, gc, "sysu", 20, pad=True)
    out = evaluate(dist, qp, gp, qc, gc, rule="sysu", max_rank=20, pad_short_cmc=True)
    assert len(out["cmc"]) == len(set(gp.tolist()))
    np.testing.assert_allclose(out["cmc"], expected["cmc"], atol=1e-6)
    assert out["cmc"][-1] == pytest.approx(1.0)
