"""The IDKL reference repository's own evaluation, reproduced for comparisons with its numbers.

This is *not* vireid's standard protocol (``vireid.evaluation.evaluate``). Use
it only to compare with figures produced by the released IDKL code. It differs
from the standard protocol in that:

- distances are squared Euclidean (no square root); SYSU features are
  L2-normalised, RegDB/LLCM features are not;
- every gallery image from the query's camera is removed (whatever its
  identity), and SYSU query camera 3 is treated as camera 2;
- CMC is computed on the ranked list with repeated identities removed (first
  occurrence kept), and the code fails if the camera filter removes an
  identity from the gallery entirely;
- SYSU/LLCM results in the released code are k-reciprocal re-ranked by default,
  with float16 tables (emulated here bit for bit), and for SYSU the re-ranking
  looks for neighbours among queries only (``eval_type=True``);
- RegDB uses split 1 only and LLCM the full gallery without trials.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F


def sq_euclidean(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """|q|^2 + |g|^2 - 2 q.g in float32, as the reference computes it (torch addmm)."""
    q, g = torch.as_tensor(q, dtype=torch.float32), torch.as_tensor(g, dtype=torch.float32)
    qq = q.pow(2).sum(1, keepdim=True)
    gg = g.pow(2).sum(1, keepdim=True)
    return torch.addmm(qq + gg.t(), q, g.t(), beta=1, alpha=-2).numpy()


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def rerank(q_feat, g_feat, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
           eval_type: bool = False) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al. 2017) with the reference's float16 tables.

    Returns the (Nq, Ng) float32 re-ranked distance. ``eval_type=True`` (the
    reference's SYSU setting) ranks with every gallery column set to the global
    maximum distance, so neighbours are searched among the queries.
    """
    q = np.asarray(q_feat, dtype=np.float32)
    g = np.asarray(g_feat, dtype=np.float32)
    nq = q.shape[0]
    feats = np.concatenate([q, g])
    n = feats.shape[0]
    dist = sq_euclidean(feats, feats)
    orig = np.transpose(dist / np.max(dist, axis=0))
    rank_dist = dist.copy()
    if eval_type:
        rank_dist[:, nq:] = dist.max()
    rank = np.argsort(rank_dist).astype(np.int32)
    V = np.zeros((n, n), dtype=np.float16)
    half = int(np.around(k1 / 2))
    for i in range(n):
        recip = _reciprocal(rank, i, k1)
        expansion = recip
        for cand in recip:
            cand_recip = _reciprocal(rank, cand, half)
            if len(np.intersect1d(cand_recip, recip)) > 2 / 3 * len(cand_recip):
                expansion = np.append(expansion, cand_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-orig[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    orig = orig[:nq]
    if k2 != 1:
        V = np.stack([np.mean(V[rank[i, :k2], :], axis=0) for i in range(n)]).astype(np.float16)
    inv_index = [np.where(V[:, col] != 0)[0] for col in range(n)]
    jaccard = np.zeros((nq, n), dtype=np.float16)
    for i in range(nq):
        s = np.zeros(n, dtype=np.float16)
        for col in np.where(V[i] != 0)[0]:  # float16 accumulation, one column at a time
            rows = inv_index[col]
            s[rows] = s[rows] + np.minimum(V[i, col], V[rows, col])
        jaccard[i] = 1 - s / (2 - s)
    final = jaccard * (1 - lambda_value) + orig * lambda_value
    return final[:, nq:]


def _unique_in_order(a: np.ndarray) -> np.ndarray:
    _, idx = np.unique(a, return_index=True)
    return a[np.sort(idx)]


def map_and_cmc(dist: np.ndarray, q_ids, g_ids, q_cams, g_cams) -> tuple[float, np.ndarray]:
    """mAP and de-duplicated CMC (fractions) as the reference's ``get_mAP``/``get_cmc`` compute them."""
    q_ids, g_ids, q_cams, g_cams = map(np.asarray, (q_ids, g_ids, q_cams, g_cams))
    order = np.argsort(dist, axis=1)
    n_ids = _unique_in_order(g_ids).shape[0]
    counter = np.zeros(n_ids)
    ap_sum, valid = 0.0, 0
    for qi in range(len(q_ids)):
        keep = g_cams[order[qi]] != q_cams[qi]
        ranked = g_ids[order[qi]][keep]
        hits = np.nonzero(ranked == q_ids[qi])[0]
        if hits.size == 0:
            continue
        valid += 1
        ap_sum += ((np.arange(hits.size) + 1) / (hits + 1)).mean()
        uniq = _unique_in_order(ranked)
        if uniq.shape[0] != n_ids:
            raise ValueError(f"query {qi}: the camera filter removed {n_ids - uniq.shape[0]} gallery "
                             f"identities entirely; the reference CMC is undefined there")
        counter += uniq == q_ids[qi]
    if valid == 0:
        raise ValueError("no query has a match in the gallery")
    return ap_sum / valid, np.cumsum(counter / valid)


def _summary(mAP: float, cmc: np.ndarray) -> np.ndarray:
    if cmc.shape[0] < 20:
        raise ValueError(f"rank-20 needs at least 20 gallery identities, got {cmc.shape[0]}")
    return np.array([mAP, cmc[0], cmc[4], cmc[9], cmc[19]]) * 100


def eval_retrieval(q_feats, g_feats, q_ids, g_ids, q_cams, g_cams, rerank_on: bool = False,
                   k1: int = 20, k2: int = 6, lambda_value: float = 0.3):
    """RegDB/LLCM evaluation of the reference: returns ([mAP, r1, r5, r10, r20] in %, cmc, dist)."""
    if rerank_on:
        dist = rerank(q_feats, g_feats, k1, k2, lambda_value, eval_type=False)
    else:
        dist = sq_euclidean(q_feats, g_feats)
    mAP, cmc = map_and_cmc(dist, q_ids, g_ids, q_cams, g_cams)
    return _summary(mAP, cmc), cmc, dist


SYSU_GALLERY_CAMS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
_NAME = re.compile(r"cam(\d+)/(\d+)/(\d+)\.[^/]*$")


def _image_key(path: str) -> tuple[int, int, int]:
    match = _NAME.search(str(path).replace("\\", "/"))
    if not match:
        raise ValueError(f"gallery path {path!r} does not end in cam<c>/<id>/<n>.<ext>")
    return tuple(int(v) for v in match.groups())


def eval_sysu(q_feats, q_ids, q_cams, g_feats, g_ids, g_cams, g_paths, perm_rows, mode: str = "all",
              num_shots: int = 1, num_trials: int = 10, rerank_on: bool = False) -> np.ndarray:
    """SYSU-MM01 evaluation of the reference: [mAP, r1, r5, r10, r20] in %, mean over trials.

    ``perm_rows``: rows (cam, id, trial, rank, n) meaning that in ``trial`` the
    gallery image of (cam, id) at position ``rank`` is image number ``n``
    (a flat form of ``exp/rand_perm_cam.mat``). The caller's arrays are not modified.
    """
    if mode not in SYSU_GALLERY_CAMS:
        raise ValueError(f"SYSU mode {mode!r}; expected 'all' or 'indoor'")
    cams = SYSU_GALLERY_CAMS[mode]
    q_cams = np.where(np.asarray(q_cams) == 3, 2, np.asarray(q_cams))
    q = F.normalize(torch.as_tensor(q_feats, dtype=torch.float32), dim=1).numpy()
    g_cams = np.asarray(g_cams)
    sel = np.isin(g_cams, cams)
    g = F.normalize(torch.as_tensor(np.asarray(g_feats)[sel], dtype=torch.float32), dim=1).numpy()
    g_ids, g_cams = np.asarray(g_ids)[sel], g_cams[sel]
    keys = [_image_key(p) for p in np.asarray(g_paths)[sel]]
    perm = np.asarray(perm_rows)
    id_set = set(np.unique(g_ids).tolist())
    total = np.zeros(5)
    for t in range(num_trials):
        rows = perm[(perm[:, 2] == t) & (perm[:, 3] < num_shots) & np.isin(perm[:, 0], cams)
                    & np.isin(perm[:, 1], list(id_set))]
        chosen = {(int(c), int(i), int(n)) for c, i, _, _, n in rows}
        flag = np.array([k in chosen for k in keys])
        if rerank_on:
            dist = rerank(q, g[flag], eval_type=True)
        else:
            dist = sq_euclidean(q, g[flag])
        mAP, cmc = map_and_cmc(dist, q_ids, g_ids[flag], q_cams, g_cams[flag])
        total += _summary(mAP, cmc)
    return total / num_trials
