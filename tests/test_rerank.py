"""Re-ranking against a loop implementation, on shapes and settings the goldens do not cover."""

import numpy as np
import pytest
import torch

import vireid.evaluation.reranking as R
from loop_reference import loop_rerank
from vireid.evaluation import rerank


def _distances(seed, nq, ng, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, dim))
    x = centres[rng.integers(0, 6, nq + ng)] + 0.7 * rng.normal(size=(nq + ng, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0)).astype(np.float32)
    return d[:nq, nq:], d[:nq, :nq], d[nq:, nq:]


@pytest.mark.parametrize(
    "seed, nq, ng, k1, k2, lam",
    [(0, 12, 20, 20, 6, 0.3), (1, 9, 15, 7, 3, 0.0), (2, 6, 9, 30, 6, 0.3),
     (3, 10, 14, 3, 6, 0.5), (4, 15, 5, 10, 1, 0.1), (5, 7, 11, 1, 1, 1.0)],
)
def test_matches_loop_reference(seed, nq, ng, k1, k2, lam):
    qg, qq, gg = _distances(seed, nq, ng)
    expected = loop_rerank(qg, qq, gg, k1, k2, lam)
    out = rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_blocked_neighbour_search_and_chunked_join_agree(monkeypatch):
    qg, qq, gg = _distances(8, 30, 40)
    whole = rerank(qg, qq, gg)
    monkeypatch.setattr(R, "_BLOCK_CELLS", 70 * 3)
    monkeypatch.setattr(R, "_PAIR_CHUNK", 50)
    np.testing.assert_allclose(rerank(qg, qq, gg), whole, atol=1e-6)


def test_tensor_in_tensor_out():
    qg, qq, gg = _distances(9, 5, 7)
    out = rerank(torch.from_numpy(qg), torch.from_numpy(qq), torch.from_numpy(gg))
    assert isinstance(out, torch.Tensor) and out.shape == (5, 7) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), rerank(qg, qq, gg), atol=1e-6)


def test_ties_in_the_ranking_follow_a_stable_order():
    # Identical embeddings produce exact ties; the result must equal the stable-sort loop.
    qg, qq, gg = _distances(10, 6, 8)
    qg, qq, gg = (np.round(x * 4) / 4 for x in (qg, qq, gg))
    np.testing.assert_allclose(rerank(qg, qq, gg, k1=4, k2=2), loop_rerank(qg, qq, gg, 4, 2, 0.3), atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(k1=0), "k1 must be a positive integer"),
        (dict(k2=-1), "k2 must be a positive integer"),
        (dict(lambda_value=1.5), "lambda_value must be in"),
        (dict(q_q_dist=np.zeros((3, 3), np.float32)), "q_q_dist has shape"),
        (dict(q_g_dist=np.full((2, 3), np.nan, np.float32)), "q_g_dist has NaN"),
    ],
)
def test_bad_input_raises_clear_value_error(args, message):
    qg, qq, gg = _distances(11, 2, 3)
    kwargs = dict(q_g_dist=qg, q_q_dist=qq, g_g_dist=gg)
    kwargs.update(args)
    with pytest.raises(ValueError, match=message):
        rerank(**kwargs)
