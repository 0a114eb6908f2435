"""CMC, mAP and mINP exactly as the VI-ReID reference code computes them, vectorised.

The reference (AGW ``eval_metrics.py``; LLCM's ``eval_llcm``) loops over
queries in Python. We compute the same numbers for a block of queries at once
with torch, on whatever device the distances live on:

1. rank the gallery of each query by ascending distance, ties broken by
   ascending gallery index (a stable sort; the reference's sort is unstable,
   so on ties only the stable order is reproducible);
2. drop gallery items by the protocol's camera rule (``RULES``);
3. a query with no true match left is *invalid* and excluded from every mean;
4. AP = mean over the m remaining true matches of (j / rank of the j-th match);
   INP = m / rank of the last match;
5. CMC: RegDB and Market-1501 count images (rank of the first match); SYSU
   and LLCM count identities, keeping only the first occurrence of each
   gallery identity in the ranked list ("only the maximum similarity per person").

The ``market1501`` rule is the single-modality standard (Market-1501,
DukeMTMC-reID, MSMT17; ``eval_func`` of reid-strong-baseline / ReID-Survey,
the Market-1501 MATLAB code): gallery items with the query's identity and
camera are dropped, and so are junk items (identity -1, which the Python
readers never load and the MATLAB code lists as junk); distractors (0) stay
as negatives.

Where the reference fails (no valid query; SYSU/LLCM rows of different
lengths, which numpy cannot stack) we raise ``ValueError`` instead of
returning numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

RULES = ("sysu", "regdb", "llcm", "market1501")
RULE_DESCRIPTIONS = {
    "sysu": "SYSU-MM01: camera-3 queries never see camera-2 gallery images; identity-level CMC",
    "regdb": "RegDB: no camera filtering; image-level CMC",
    "llcm": "LLCM: gallery items with the query's pid and camera are dropped; identity-level CMC",
    "market1501": "Market-1501 / DukeMTMC-reID / MSMT17: gallery items with the query's pid and camera, and junk "
                  "(pid -1), are dropped; image-level CMC",
}
_IDENTITY_CMC = {"sysu": True, "regdb": False, "llcm": True, "market1501": False}
JUNK_PID = -1  # the market1501 rule's junk label (vireid.data.layouts.JUNK_PID)

# Work on at most this many query x gallery cells at once, so memory stays
# bounded for large galleries (about 60 bytes per cell are alive at once).
_CHUNK_CELLS = 1 << 20
# Above this many true matches per query, sorting whole rows is cheaper than searching.
_SEARCH_MAX_MATCHES = 64


def evaluate(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    rule: str = "sysu",
    max_rank: int = 20,
    *,
    pad_short_cmc: bool = False,
) -> dict:
    """CMC/mAP/mINP of a query x gallery distance matrix (smaller = closer).

    Accepts numpy arrays or torch tensors (CPU or CUDA). Returns a dict with
    ``cmc`` (float32 numpy array; ``cmc[0]`` is rank-1), ``mAP`` and ``mINP``
    (fractions in [0, 1]) and ``num_valid_q`` (the denominator of every mean).
    ``rule`` is ``"sysu"``, ``"regdb"`` or ``"llcm"`` (see ``RULE_DESCRIPTIONS``);
    ``sysu`` and ``llcm`` need camera ids.

    Under the identity-level CMC a query that keeps fewer than ``max_rank``
    gallery identities has a shorter row; the reference then fails unless all
    rows are equally short, and so do we. With ``pad_short_cmc=True`` short
    rows are extended with their last value instead (every identity has been
    listed by then), which is what a small gallery needs.
    """
    dist, qp, gp, qc, gc = _validated(distmat, q_pids, g_pids, q_camids, g_camids, rule, max_rank)
    num_q, num_g = dist.shape
    max_rank = min(int(max_rank), num_g)  # the reference caps by gallery images

    # Compact gallery identities so per-identity work is a dense (chunk x ids) array.
    g_ids, g_codes = torch.unique(gp, return_inverse=True)
    q_codes = _codes_of(qp, g_ids)

    chunk = max(1, _CHUNK_CELLS // max(num_g, len(g_ids)))
    parts = []
    for s in range(0, num_q, chunk):
        rows = slice(s, s + chunk)
        keep = _camera_keep(rule, qp[rows], None if qc is None else qc[rows], gp, gc)
        parts.append(_chunk_stats(dist[rows], q_codes[rows], g_codes, len(g_ids), keep))
    stats = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return _summarise(stats, rule, max_rank, pad_short_cmc)


def _camera_keep(rule, q_pids, q_cams, g_pids, g_cams):
    """Boolean (queries x gallery) mask of gallery items the camera rule keeps, or None (keep all)."""
    if rule == "sysu":
        return ~((q_cams[:, None] == 3) & (g_cams[None, :] == 2))
    if rule == "llcm":
        return ~((q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :]))
    if rule == "market1501":
        return ~((q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])) & (g_pids != JUNK_PID)
    return None


def _chunk_stats(dist, q_codes, g_codes, num_ids, keep):
    """Per-query facts the metrics need, for a block of queries.

    Ranks come from ``_ranks_by_search`` (fast, exact when no gallery item
    ties with a true match), or from a stable sort for rows with such ties
    or with very many true matches.
    """
    match = g_codes[None, :] == q_codes[:, None]
    if keep is not None:
        match &= keep
    num_rel = match.sum(dim=1)
    stats = {
        "num_rel": num_rel,
        "num_ids_kept": _distinct_ids(g_codes, keep, num_ids, dist.shape),
    }
    m_max = int(num_rel.max())
    if m_max == 0:  # no valid query in this block: ranks are never read
        zeros = torch.zeros_like(num_rel)
        stats.update(ap_sum=zeros.double(), first_hit=zeros, last_hit=zeros, id_rank=zeros)
        return stats
    if m_max > _SEARCH_MAX_MATCHES:
        stats.update(_ranks_by_sort(dist, match, keep, g_codes, num_ids))
        return stats
    ranks, tied = _ranks_by_search(dist, match, keep, g_codes, num_ids, num_rel, m_max)
    stats.update(ranks)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        exact = _ranks_by_sort(dist[rows], match[rows], None if keep is None else keep[rows],
                               g_codes, num_ids)
        for key, value in exact.items():
            stats[key][rows] = value.to(stats[key].dtype)
    return stats


def _distinct_ids(g_codes, keep, num_ids, shape):
    """Number of gallery identities with at least one item left after the camera rule."""
    if keep is None:
        return torch.full((shape[0],), num_ids, dtype=torch.int64, device=g_codes.device)
    seen = torch.zeros((shape[0], num_ids), dtype=torch.int32, device=g_codes.device)
    seen.scatter_add_(1, g_codes.expand(shape), keep.to(torch.int32))
    return (seen > 0).sum(dim=1)


def _ranks_by_search(dist, match, keep, g_codes, num_ids, num_rel, m_max):
    """Ranks of the true matches without sorting whole rows.

    With the true-match distances of a query sorted, s_1 <= ... <= s_m, a kept
    item with ``searchsorted(s, d, right=True) == b`` comes after exactly b
    matches; so the t-th match sits at 1 + #(kept items with b <= t-1), and
    the identities met before the first match are those with b == 0. This is
    exact unless some other item's distance equals a match distance (or two
    matches tie), where index order decides: such rows are returned as
    ``tied`` for the sort path.
    """
    rows, cols = match.nonzero(as_tuple=True)
    values = dist[rows, cols]
    # Sort the few match distances per row: by value, then stably by row.
    by_value = torch.sort(values, stable=True).indices
    by_row = torch.sort(rows[by_value], stable=True).indices
    order = by_value[by_row]
    rows, values = rows[order], values[order]
    slot = torch.arange(len(rows), device=rows.device) - (torch.cumsum(num_rel, 0) - num_rel)[rows]
    sorted_matches = torch.full((dist.shape[0], m_max), float("inf"), dtype=dist.dtype, device=dist.device)
    sorted_matches[rows, slot] = values

    after = torch.searchsorted(sorted_matches, dist, right=True)
    before = torch.searchsorted(sorted_matches, dist, right=False)
    kept = keep if keep is not None else torch.ones_like(match)
    tied = ((before != after) & kept & ~match).any(dim=1)
    pad = torch.isinf(sorted_matches[:, 1:])
    tied |= ((sorted_matches[:, 1:] == sorted_matches[:, :-1]) & ~pad).any(dim=1)

    counts = torch.zeros((dist.shape[0], m_max + 2), dtype=torch.int64, device=dist.device)
    counts.scatter_add_(1, torch.where(kept, after, m_max + 1), torch.ones_like(after))
    rank = torch.cumsum(counts, dim=1)[:, :m_max] + 1  # rank of the t-th match, t = 1..m_max
    t = torch.arange(1, m_max + 1, device=dist.device)
    real = t[None, :] <= num_rel[:, None]
    ap_sum = torch.where(real, t / rank.to(torch.float64), 0.0).sum(dim=1)
    last = rank.gather(1, (num_rel - 1).clamp(min=0)[:, None]).squeeze(1)

    ahead = torch.zeros((dist.shape[0], num_ids), dtype=torch.int32, device=dist.device)
    ahead.scatter_add_(1, g_codes.expand(dist.shape), ((after == 0) & kept).to(torch.int32))
    ranks = {
        "ap_sum": ap_sum,
        "first_hit": rank[:, 0],
        "last_hit": last,
        "id_rank": (ahead > 0).sum(dim=1) + 1,
    }
    return ranks, tied


def _ranks_by_sort(dist, match, keep, g_codes, num_ids):
    """Ranks of the true matches from a stable sort of each row (ties by gallery index)."""
    order = torch.sort(dist, dim=1, stable=True).indices
    ranked_codes = g_codes[order]
    match = torch.gather(match, 1, order)
    kept = torch.ones_like(match) if keep is None else torch.gather(keep, 1, order)
    # 1-based position of every item in the list that remains after removal.
    position = torch.cumsum(kept, dim=1, dtype=torch.int64)
    hits = torch.cumsum(match, dim=1, dtype=torch.int64)
    ap_sum = torch.where(match, hits.to(torch.float64) / position.to(torch.float64), 0.0).sum(dim=1)
    last_hit = torch.where(match, position, 0).amax(dim=1)
    beyond = dist.shape[1] + 1
    first_hit = torch.where(match, position, beyond).amin(dim=1)
    # Identities met before the first match: 1 + their count is the identity-level rank.
    ahead = torch.zeros((dist.shape[0], num_ids), dtype=torch.int32, device=dist.device)
    ahead.scatter_add_(1, ranked_codes, (kept & (position < first_hit[:, None])).to(torch.int32))
    return {
        "ap_sum": ap_sum,
        "first_hit": first_hit,
        "last_hit": last_hit,
        "id_rank": (ahead > 0).sum(dim=1) + 1,
    }


def _summarise(stats, rule, max_rank, pad_short_cmc):
    valid = stats["num_rel"] > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"no valid query: none of the {len(valid)} query identities has a match left in the "
            f"gallery after the {rule!r} camera rule; check q_pids/g_pids and the protocol"
        )
    num_rel = stats["num_rel"][valid].to(torch.float64)
    ap = stats["ap_sum"][valid] / num_rel
    inp = num_rel / stats["last_hit"][valid].to(torch.float64)

    if _IDENTITY_CMC[rule]:
        # The reference stacks one row per query (valid or not) of length
        # min(max_rank, identities kept); unequal lengths cannot be stacked.
        lengths = torch.clamp(stats["num_ids_kept"], max=max_rank)
        length = int(lengths.max()) if pad_short_cmc else _common_length(lengths, rule, max_rank)
        first = stats["id_rank"][valid]
    else:
        # Under regdb no rule removes anything, so every row has max_rank entries (under market1501 a
        # row keeps fewer only in galleries smaller than max_rank + removed items; its tail is then padded).
        # (The reference also stacks the image-level rows under the SYSU/LLCM
        # rules and fails when those differ in length, although it discards
        # them; vireid does not, as the result does not depend on them.)
        length = max_rank
        first = stats["first_hit"][valid]

    counts = torch.bincount(first.clamp(max=length + 1) - 1, minlength=length + 1)[:length]
    cmc = torch.cumsum(counts, 0).to(torch.float32) / torch.tensor(num_valid, dtype=torch.float32)
    return {
        "cmc": cmc.cpu().numpy(),
        "mAP": float(ap.mean()),
        "mINP": float(inp.mean()),
        "num_valid_q": num_valid,
    }


def _common_length(lengths, rule, max_rank):
    low, high = int(lengths.min()), int(lengths.max())
    if low != high:
        raise ValueError(
            f"CMC rows differ in length under the {rule!r} rule: some queries keep only {low} "
            f"distinct gallery identities after the camera rule, others {high} "
            f"(max_rank={max_rank}); use max_rank <= {low} or pad_short_cmc=True"
        )
    return low


def _codes_of(q_pids, g_ids):
    """Index of each query pid in the sorted gallery ids, or -1 when absent."""
    pos = torch.searchsorted(g_ids, q_pids).clamp(max=len(g_ids) - 1)
    return torch.where(g_ids[pos] == q_pids, pos, -1)


def as_tensor(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """numpy array / tensor / sequence -> tensor (on ``device`` when given)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} could not be read as an array: {exc}") from None
    return t if device is None else t.to(device)


def _validated(distmat, q_pids, g_pids, q_camids, g_camids, rule, max_rank):
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    dist = as_tensor(distmat, "distmat")
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (queries x gallery), got shape {tuple(dist.shape)}")
    if not (dist.is_floating_point() or dist.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"distmat must hold numbers, got dtype {dist.dtype}")
    if dist.dtype not in (torch.float32, torch.float64):
        dist = dist.to(torch.float64)  # exact for ints and half floats; sorting needs a full dtype
    num_q, num_g = dist.shape
    if num_q == 0:
        raise ValueError("distmat has no queries (shape (0, ...))")
    if num_g == 0:
        raise ValueError("the gallery is empty: distmat has shape "
                         f"({num_q}, 0); expected at least one gallery column")
    if dist.is_floating_point():
        bad = ~torch.isfinite(dist)
        if bool(bad.any()):
            q, g = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"distmat has {int(bad.sum())} NaN/inf value(s), first at query {q}, "
                f"gallery {g} ({float(dist[q, g])}); distances must be finite"
            )
    device = dist.device
    qp = _labels(q_pids, "q_pids", num_q, "queries", device)
    gp = _labels(g_pids, "g_pids", num_g, "gallery items", device)
    if rule == "regdb":
        return dist, qp, gp, None, None
    if q_camids is None or g_camids is None:
        raise ValueError(f"rule {rule!r} needs q_camids and g_camids (its camera rule uses them)")
    qc = _labels(q_camids, "q_camids", num_q, "queries", device)
    gc = _labels(g_camids, "g_camids", num_g, "gallery items", device)
    return dist, qp, gp, qc, gc


def _labels(x, name, expected, what, device):
    t = as_tensor(x, name, device)
    if t.ndim != 1:
        t = t.reshape(-1) if t.numel() == expected else t
    if t.ndim != 1 or len(t) != expected:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} but distmat has {expected} {what}; "
            f"expected a 1-D array of length {expected}"
        )
    if t.is_floating_point():
        if not bool(torch.equal(t, t.round())):
            raise ValueError(f"{name} must hold integer labels, got non-integer values")
    elif t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold integer labels, got dtype {t.dtype}")
    return t.to(torch.int64)
