"""The market1501 rule and the market1501 / dukemtmc / msmt17 protocols, against hand-computed numbers."""

import numpy as np
import pytest
import torch

from vireid.evaluation import evaluate, evaluate_protocol, get_protocol, protocol_names
from vireid.synth.generator import generate


def hand_case():
    """Three queries; distances chosen so every rule of the protocol changes the numbers.

    q0 (id 1, cam 1): g0 is id 1 seen by cam 1 (dropped), g1 junk (dropped), g2 a distractor (a negative):
        kept ranking g2 -, g3 +, g4 -, g5 +  -> first hit at rank 2, AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4.
    q1 (id 2, cam 2): the junk g1 is closest, then g4 (id 2, cam 1: kept): with junk dropped g4 is rank 1,
        AP = 1, INP = 1.
    q2 (id 3, cam 1): its only gallery image g6 is from its own camera: no match left, skipped.
    """
    g_pids = np.array([1, -1, 0, 1, 2, 1, 3])
    g_cams = np.array([1, 2, 3, 2, 1, 3, 1])
    dist = np.array([
        [0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.95],
        [0.90, 0.05, 0.50, 0.60, 0.15, 0.20, 0.95],
        [0.50, 0.50, 0.50, 0.50, 0.50, 0.50, 0.10],
    ])
    return dist, np.array([1, 2, 3]), g_pids, np.array([1, 2, 1]), g_cams


def test_market1501_rule_hand_computed():
    dist, q_pids, g_pids, q_cams, g_cams = hand_case()
    result = evaluate(dist, q_pids, g_pids, q_cams, g_cams, rule="market1501", max_rank=5)
    assert result["num_valid_q"] == 2
    np.testing.assert_allclose(result["cmc"], [0.5, 1.0, 1.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(0.75) and result["mINP"] == pytest.approx(0.75)
    # Without the junk and same-camera removal (no camera rule) every number is different.
    plain = evaluate(dist, q_pids, g_pids, rule="regdb", max_rank=5)
    assert plain["num_valid_q"] == 3 and plain["cmc"][0] == pytest.approx(2 / 3)


def brute_force(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Independent per-query loop over the sorted gallery (the textbook definitions)."""
    cmc, aps, inps = np.zeros(max_rank), [], []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind="stable")
        keep = [j for j in order if g_pids[j] != -1 and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [rank for rank, j in enumerate(keep, start=1) if g_pids[j] == q_pids[i]]
        if not hits:
            continue
        cmc[hits[0] - 1:] += 1
        aps.append(np.mean([n / rank for n, rank in enumerate(hits, start=1)]))
        inps.append(len(hits) / hits[-1])
    return cmc / len(aps), float(np.mean(aps)), float(np.mean(inps)), len(aps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_market1501_rule_matches_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    q_pids, q_cams = rng.integers(1, 8, 30), rng.integers(1, 7, 30)
    g_pids, g_cams = rng.integers(-1, 8, 200), rng.integers(1, 7, 200)  # -1 junk, 0 distractors
    dist = rng.random((30, 200))
    result = evaluate(torch.tensor(dist), q_pids, g_pids, q_cams, g_cams, rule="market1501", max_rank=10)
    cmc, m_ap, m_inp, valid = brute_force(dist, q_pids, g_pids, q_cams, g_cams, 10)
    assert result["num_valid_q"] == valid
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-6)
    assert result["mAP"] == pytest.approx(m_ap) and result["mINP"] == pytest.approx(m_inp)


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_market_protocol_drops_junk_keeps_distractors_one_trial(tmp_path):
    touch(tmp_path / "query", "0011_c1s1_001051_00.jpg", "0012_c3s1_000051_00.jpg")
    touch(tmp_path / "bounding_box_test", "0011_c2s1_001101_01.jpg", "-1_c1s1_000401_03.jpg",
          "0000_c4s1_000151_01.jpg", "0012_c3s1_000101_02.jpg")
    protocol = get_protocol("market1501")
    assert protocol.rule == "market1501" and protocol.trials == (0,)
    split = protocol.build(tmp_path, 0)
    assert [(s.pid, s.camid) for s in split.query] == [(11, 1), (12, 3)]
    assert [(s.pid, s.camid) for s in split.gallery] == [(0, 4), (11, 2), (12, 3)]  # sorted names, no junk
    touch(tmp_path / "duke" / "query", "0011_c1_f0001051.jpg")
    with pytest.raises(FileNotFoundError, match=r"missing folder .*duke/bounding_box_test \(DukeMTMC-reID keeps its "
                                                r"gallery images there\)"):
        get_protocol("dukemtmc").build(tmp_path / "duke", 0)


def test_the_new_protocols_are_listed():
    assert {"market1501", "dukemtmc", "msmt17"} <= set(protocol_names())


@pytest.mark.parametrize("layout", ["market1501", "dukemtmc", "msmt17"])
def test_protocols_on_synthetic_trees_with_an_oracle_extractor(tmp_path, layout):
    """Features that encode the identity: every valid query is found at rank 1, mAP 1."""
    root = tmp_path / layout
    generate(root, layout, 6, seed=2, size=(32, 16), images=3, workers=1)

    def oracle(samples):
        return torch.nn.functional.one_hot(torch.tensor([s.pid + 1 for s in samples]) % 64, 64).float()

    result = evaluate_protocol(layout, root, oracle)
    assert len(result.trials) == 1
    trial = result.trials[0]
    assert trial["rank1"] == pytest.approx(1.0) and trial["mAP"] == pytest.approx(1.0)
