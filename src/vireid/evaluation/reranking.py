"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), vectorised and sparse.

Computes what the reference ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2,
lambda_value)`` (person-re-ranking, python version) returns, without its
Python loops and without its dense N x N tables (N = queries + gallery):

* only the k1+1 nearest neighbours of each item are kept from the ranking
  (found row-block by row-block, so no N x N array is ever alive);
* the neighbour-weight table V has a few dozen non-zeros per row, so it is
  held as sorted (row, column, value) triplets;
* the Jaccard term only ever pairs query rows with gallery rows that share a
  column, so it is a sparse join, accumulated into the query x gallery output.

Peak extra memory is about one query x gallery float32 array plus row blocks,
instead of 5-6 dense N x N arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vireid.evaluation.metrics import as_tensor

# Rows of the joint distance matrix handled at once (block x N floats).
_BLOCK_CELLS = 1 << 21
# Query/gallery pairs expanded at once in the Jaccard join.
_PAIR_CHUNK = 1 << 20


def rerank(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> Any:
    """Re-ranked query x gallery distances (float32), numpy in -> numpy out, tensor in -> tensor out.

    Inputs are plain (not squared) distances: query-gallery, query-query and
    gallery-gallery. The result mixes the Jaccard distance of the expanded
    k-reciprocal neighbour sets, weight ``1 - lambda_value``, with the squared
    distance normalised per item, weight ``lambda_value``.
    """
    return_numpy = not isinstance(q_g_dist, torch.Tensor)
    qg, qq, gg = _validated(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)
    nq, ng = qg.shape
    n = nq + ng

    row_max, top = _nearest_neighbours(qg, qq, gg, max(k1 + 1, k2))
    k_half = round(k1 / 2) + 1  # numpy's round-half-to-even, as the reference
    reciprocal = _reciprocal_pairs(top[:, : min(k1 + 1, n)], n)
    expanded = _expand(reciprocal, _reciprocal_pairs(top[:, : min(k_half, n)], n), n)
    rows, cols = _unpack(expanded, n)
    weights = torch.exp(-_normalised_dist(qg, qq, gg, row_max, rows, cols))
    weights = weights / _segment_sum(weights, rows, n)[rows]
    if k2 != 1:
        rows, cols, weights = _query_expansion(rows, cols, weights, top[:, : min(k2, n)], n)

    # Start from the overlap sum s, then turn it into the final distance in place.
    out = _jaccard_overlap(rows, cols, weights, nq, n)
    out = 1 - out / (2 - out)
    out.mul_(1 - lambda_value)
    original = qg.square().to(torch.float32)
    original.div_(row_max[:nq, None])
    out.add_(original.mul_(lambda_value))
    return out.cpu().numpy() if return_numpy else out


def _validated(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value):
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}")
    qg = as_tensor(q_g_dist, "q_g_dist")
    qq = as_tensor(q_q_dist, "q_q_dist", qg.device)
    gg = as_tensor(g_g_dist, "g_g_dist", qg.device)
    if qg.ndim != 2 or qg.shape[0] == 0 or qg.shape[1] == 0:
        raise ValueError(f"q_g_dist must be a non-empty 2-D array, got shape {tuple(qg.shape)}")
    nq, ng = qg.shape
    for name, t, shape in (("q_q_dist", qq, (nq, nq)), ("g_g_dist", gg, (ng, ng))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; with q_g_dist of shape "
                             f"{(nq, ng)} it must be {shape}")
    for name, t in (("q_g_dist", qg), ("q_q_dist", qq), ("g_g_dist", gg)):
        if not t.is_floating_point():
            t = t.to(torch.float64)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} has NaN/inf values; distances must be finite")
    # One dtype for the joint matrix, as numpy's concatenation would give.
    dtype = torch.promote_types(torch.promote_types(qg.dtype, qq.dtype), gg.dtype)
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float64
    return qg.to(dtype), qq.to(dtype), gg.to(dtype)


def _joint_rows(qg, qq, gg, start, stop):
    """Rows start:stop of the transposed joint matrix [[qq, qg], [qg^T, gg]]^T, squared, float32.

    The reference normalises each *column* by its maximum and then transposes,
    so item i's row is column i of the joint matrix; building the transpose
    directly keeps that exact for non-symmetric inputs.
    """
    nq = qg.shape[0]
    parts = []
    if start < nq:
        s, e = start, min(stop, nq)
        parts.append(torch.cat([qq[:, s:e].T, qg[s:e]], dim=1))
    if stop > nq:
        s, e = max(start, nq) - nq, stop - nq
        parts.append(torch.cat([qg[:, s:e].T, gg[:, s:e].T], dim=1))
    block = torch.cat(parts) if len(parts) > 1 else parts[0]
    return block.square().to(torch.float32)


def _nearest_neighbours(qg, qq, gg, k):
    """Per-item maximum squared distance and the k nearest items (stable order)."""
    n = qg.shape[0] + qg.shape[1]
    k = min(k, n)
    block = max(1, _BLOCK_CELLS // n)
    maxima, tops = [], []
    for start in range(0, n, block):
        rows = _joint_rows(qg, qq, gg, start, min(start + block, n))
        row_max = rows.amax(dim=1)
        rows.div_(row_max[:, None])
        maxima.append(row_max)
        tops.append(_smallest_stable(rows, k))
    return torch.cat(maxima), torch.cat(tops)


def _smallest_stable(rows, k):
    """Indices of the k smallest entries per row, in the order a stable sort gives."""
    values, index = torch.topk(rows, k, dim=1, largest=False, sorted=True)
    # Order ties by index, then stably by value: equal to a stable full sort ...
    by_index = torch.sort(index, dim=1, stable=True)
    index, values = by_index.values, values.gather(1, by_index.indices)
    index = index.gather(1, torch.sort(values, dim=1, stable=True).indices)
    # ... unless a tie crosses the k-th place, where the full sort decides.
    kth = values.max(dim=1, keepdim=True).values
    crossing = (rows <= kth).sum(dim=1) > k
    if bool(crossing.any()):
        index[crossing] = torch.sort(rows[crossing], dim=1, stable=True).indices[:, :k]
    return index


def _reciprocal_pairs(top, n):
    """Keys i*n + j for every j among i's neighbours that has i among its own neighbours."""
    k = top.shape[1]
    i = torch.arange(n, device=top.device).repeat_interleave(k)
    j = top.reshape(-1)
    forward = torch.sort(i * n + j).values
    backward = j * n + i
    return torch.sort(backward[_is_member(backward, forward)]).values


def _expand(reciprocal, half_reciprocal, n):
    """Add each candidate's half-size reciprocal set when 2/3 of it is already reciprocal."""
    cand_i, cand = _unpack(reciprocal, n)  # candidates c of item i: its reciprocal set
    half_c, half_e = _unpack(half_reciprocal, n)
    starts = torch.searchsorted(half_c, torch.arange(n + 1, device=half_c.device))
    sizes = (starts[1:] - starts[:-1])[cand]
    pair, entry = _expand_ranges(starts[cand], sizes)
    member = half_e[entry]  # e in R_half(c), per (i, c) pair
    item = cand_i[pair]
    inside = _is_member(item * n + member, reciprocal)
    overlap = torch.zeros(len(cand), dtype=torch.int64, device=cand.device).index_add_(
        0, pair, inside.to(torch.int64))
    accepted = overlap.to(torch.float64) > (2.0 / 3.0) * sizes.to(torch.float64)
    added = (item * n + member)[accepted[pair]]
    return torch.unique(torch.cat([reciprocal, added]))


def _query_expansion(rows, cols, weights, top_k2, n):
    """V[i] <- mean of V over i's k2 nearest items (itself included), as sparse triplets."""
    k2 = top_k2.shape[1]
    starts = torch.searchsorted(rows, torch.arange(n + 1, device=rows.device))
    source_row = top_k2.reshape(-1)
    target_row = torch.arange(n, device=rows.device).repeat_interleave(k2)
    pair, entry = _expand_ranges(starts[source_row], (starts[1:] - starts[:-1])[source_row])
    keys, inverse = torch.unique(target_row[pair] * n + cols[entry], return_inverse=True)
    summed = torch.zeros(len(keys), dtype=weights.dtype, device=weights.device).index_add_(
        0, inverse, weights[entry])
    new_rows, new_cols = _unpack(keys, n)
    return new_rows, new_cols, summed / k2


def _jaccard_overlap(rows, cols, weights, nq, n):
    """s[q, g] = sum over columns c of min(V[q, c], V[nq + g, c]), dense query x gallery."""
    ng = n - nq
    out = torch.zeros((nq, ng), dtype=torch.float32, device=weights.device)
    is_gallery = rows >= nq
    # Gallery entries grouped by column, to find every gallery row sharing a column.
    g_cols, order = torch.sort(cols[is_gallery], stable=True)
    g_rows = rows[is_gallery][order] - nq
    g_vals = weights[is_gallery][order]
    col_start = torch.searchsorted(g_cols, torch.arange(n + 1, device=cols.device))

    q_sel = ~is_gallery
    q_rows, q_cols, q_vals = rows[q_sel], cols[q_sel], weights[q_sel]
    sizes = col_start[q_cols + 1] - col_start[q_cols]
    bounds = torch.cumsum(sizes, 0)
    start = 0
    while start < len(q_rows):
        # Take as many query entries as fit in one chunk of pairs.
        done = int(bounds[start - 1]) if start else 0
        stop = int(torch.searchsorted(bounds, done + _PAIR_CHUNK, right=True))
        stop = max(stop, start + 1)
        entry, g_entry = _expand_ranges(col_start[q_cols[start:stop]], sizes[start:stop])
        entry += start
        contrib = torch.minimum(q_vals[entry], g_vals[g_entry])
        out.view(-1).index_add_(0, q_rows[entry] * ng + g_rows[g_entry], contrib)
        start = stop
    return out


def _normalised_dist(qg, qq, gg, row_max, rows, cols):
    """Entries (rows, cols) of the normalised squared distance table.

    Item i's row is column i of the joint matrix (see ``_joint_rows``), so
    entry (i, e) is joint[e, i] / row_max[i].
    """
    value = _joint_entries(qg, qq, gg, cols, rows).square().to(torch.float32)
    return value / row_max[rows]


def _joint_entries(qg, qq, gg, r, c):
    """joint[r, c] of [[qq, qg], [qg^T, gg]] for index vectors r, c, without building it."""
    nq = qg.shape[0]
    out = torch.empty(len(r), dtype=qg.dtype, device=qg.device)
    rq, cq = r < nq, c < nq
    for sel, table, rr, cc in (
        (rq & cq, qq, r, c),
        (rq & ~cq, qg, r, c - nq),
        (~rq & cq, qg, c, r - nq),  # lower-left block is qg transposed
        (~rq & ~cq, gg, r - nq, c - nq),
    ):
        out[sel] = table[rr[sel], cc[sel]]
    return out


def _expand_ranges(starts, sizes):
    """For ranges [starts[i], starts[i] + sizes[i]): (which range, index) of every element."""
    owner = torch.arange(len(sizes), device=sizes.device).repeat_interleave(sizes)
    first_of_owner = torch.cumsum(sizes, 0) - sizes
    offset = torch.arange(len(owner), device=sizes.device) - first_of_owner[owner]
    return owner, starts[owner] + offset


def _segment_sum(values, rows, n):
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, rows, values)


def _is_member(keys, sorted_keys):
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _unpack(keys, n):
    return keys // n, keys % n
