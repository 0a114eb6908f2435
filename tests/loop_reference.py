"""Slow, obviously-correct loop versions of the metrics and re-ranking.

Written from the algorithm descriptions in the protocol notes (one query at a
time, plain Python sets), to cross-check the vectorised code on random inputs
beyond the golden vectors.
"""

import numpy as np


def loop_metrics(dist, q_pids, g_pids, q_cams, g_cams, rule, max_rank, pad=False):
    num_q, num_g = dist.shape
    max_rank = min(max_rank, num_g)
    aps, inps, id_rows, img_rows = [], [], [], []
    for i in range(num_q):
        order = np.argsort(dist[i], kind="stable")
        if rule == "sysu":
            order = [j for j in order if not (q_cams[i] == 3 and g_cams[j] == 2)]
        elif rule == "llcm":
            order = [j for j in order if not (q_pids[i] == g_pids[j] and q_cams[i] == g_cams[j])]
        pids = [g_pids[j] for j in order]
        seen, dedup = set(), []
        for p in pids:
            if p not in seen:
                seen.add(p)
                dedup.append(p)
        id_rows.append([1 if q_pids[i] in dedup[: r + 1] else 0 for r in range(min(max_rank, len(dedup)))])
        hits = [r + 1 for r, p in enumerate(pids) if p == q_pids[i]]
        if not hits:
            id_rows[-1] = None if id_rows[-1] is None else [0] * len(id_rows[-1])
            continue
        aps.append(sum((k + 1) / r for k, r in enumerate(hits)) / len(hits))
        inps.append(len(hits) / hits[-1])
        img_rows.append([1 if r + 1 >= hits[0] else 0 for r in range(min(max_rank, len(pids)))])
    rows = id_rows if rule in ("sysu", "llcm") else img_rows
    if pad:  # extend short rows with their last value
        length = max(len(r) for r in rows)
        rows = [r + [r[-1]] * (length - len(r)) for r in rows]
    cmc = np.sum(np.asarray(rows, dtype=np.float32), axis=0) / np.float32(len(aps))
    return {"cmc": cmc, "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps)), "num_valid_q": len(aps)}


def loop_rerank(qg, qq, gg, k1, k2, lam):
    nq = qg.shape[0]
    joint = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64) ** 2
    joint = joint.astype(np.float32)
    orig = (joint / joint.max(axis=0)).T
    n = len(orig)
    rank = np.argsort(orig, axis=1, kind="stable")

    def recip(i, k):
        return [j for j in rank[i, :k] if i in set(rank[j, :k])]

    V = np.zeros((n, n), dtype=np.float32)
    half = int(round(k1 / 2)) + 1
    for i in range(n):
        r = recip(i, k1 + 1)
        expansion = set(r)
        for c in r:
            rc = recip(c, half)
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expansion |= set(rc)
        e = sorted(expansion)
        w = np.exp(-orig[i, e])
        V[i, e] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.zeros((nq, n), dtype=np.float32)
    for i in range(nq):
        s = np.minimum(V[i][None, :], V).sum(axis=1)
        jac[i] = 1 - s / (2 - s)
    final = jac * (1 - lam) + orig[:nq] * lam
    return final[:, nq:].astype(np.float32)
