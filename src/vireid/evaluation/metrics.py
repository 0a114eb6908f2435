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
5. CMC: RegDB counts images (rank of the first match); SYSU and LLCM count
   identities, keeping only the first occurrence of each gallery identity in
   the ranked list ("only the maximum similarity per person").

Where the reference fails (no valid query; SYSU/LLCM rows of different
lengths, which numpy cannot stack) we raise ``ValueError`` instead of
returning numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

RULES = ("sysu", "regdb", "llcm")
RULE_DESCRIPTIONS = {
    "sysu": "SYSU-MM01: camera-3 queries never see camera-2 gallery images; identity-level CMC",
    "regdb": "RegDB: no camera filtering; image-level CMC",
    "llcm": "LLCM: gallery items with the query's pid and camera are dropped; identity-level CMC",
}
_IDENTITY_CMC = {"sysu": True, "regdb": False, "llcm": True}

# Work on at most this many query x gallery cells at once, so memory stays
# bounded for large galleries (about 60 bytes per cell are alive at once).
_CHUNK_CELLS = 1 << 20


def evaluate(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    rule: str = "sysu",
    max_rank: int = 20,
) -> dict:
    """CMC/mAP/mINP of a query x gallery distance matrix (smaller = closer).

    Accepts numpy arrays or torch tensors (CPU or CUDA). Returns a dict with
    ``cmc`` (float32 numpy array; ``cmc[0]`` is rank-1), ``mAP`` and ``mINP``
    (fractions in [0, 1]) and ``num_valid_q`` (the denominator of every mean).
    ``rule`` is ``"sysu"``, ``"regdb"`` or ``"llcm"`` (see ``RULE_DESCRIPTIONS``);
    ``sysu`` and ``llcm`` need camera ids.
    """
    dist, qp, gp, qc, gc = _validated(distmat, q_pids, g_pids, q_camids, g_camids, rule, max_rank)
    num_q, num_g = dist.shape
    max_rank = min(int(max_rank), num_g)  # the reference caps by gallery images

    # Compact gallery identities so per-identity work is a dense (chunk x ids) array.
    g_ids, g_codes = torch.unique(gp, return_inverse=True)
    q_codes = _codes_of(qp, g_ids)

    chunk = max(1, _CHUNK_CELLS // max(num_g, len(g_ids)))
    parts = [
        _chunk_stats(dist[s : s + chunk], q_codes[s : s + chunk], g_codes, len(g_ids),
                     _chunk_keep(rule, qp[s : s + chunk], gp, qc, gc, s, chunk))
        for s in range(0, num_q, chunk)
    ]
    stats = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return _summarise(stats, rule, max_rank)


def _chunk_keep(rule, qp, gp, qc, gc, start, chunk):
    """Boolean (chunk x gallery) mask of gallery items the camera rule keeps, or None."""
    if rule == "sysu":
        qcam = qc[start : start + chunk]
        return ~((qcam[:, None] == 3) & (gc[None, :] == 2))
    if rule == "llcm":
        qcam = qc[start : start + chunk]
        return ~((qp[:, None] == gp[None, :]) & (qcam[:, None] == gc[None, :]))
    return None


def _chunk_stats(dist, q_codes, g_codes, num_ids, keep):
    """Per-query ranks of the matches in the filtered ranked list."""
    order = torch.sort(dist, dim=1, stable=True).indices
    ranked_codes = g_codes[order]
    match = ranked_codes == q_codes[:, None]
    if keep is None:
        kept = torch.ones_like(match)
    else:
        kept = torch.gather(keep, 1, order)
        match &= kept
    # 1-based position of every item in the list that remains after removal.
    position = torch.cumsum(kept, dim=1, dtype=torch.int64)
    num_kept = position[:, -1]
    hits = torch.cumsum(match, dim=1, dtype=torch.int64)
    num_rel = hits[:, -1]

    pos_f = position.to(torch.float64)
    ap_sum = torch.where(match, hits.to(torch.float64) / pos_f, 0.0).sum(dim=1)
    last_hit = torch.where(match, position, 0).amax(dim=1)
    first_hit = torch.where(match, position, num_kept[:, None] + 1).amin(dim=1)

    # Identity-level rank: 1 + number of distinct identities met before the
    # first true match. first_seen[q, u] = position where identity u first
    # appears in q's filtered list (or a sentinel past the end).
    sentinel = dist.shape[1] + 1
    first_seen = torch.full((dist.shape[0], num_ids), sentinel, dtype=torch.int64, device=dist.device)
    first_seen.scatter_reduce_(1, ranked_codes, torch.where(kept, position, sentinel), "amin")
    num_ids_kept = (first_seen < sentinel).sum(dim=1)
    own = torch.where(
        q_codes >= 0, first_seen.gather(1, q_codes.clamp(min=0)[:, None]).squeeze(1), sentinel
    )
    id_rank = (first_seen < own[:, None]).sum(dim=1) + 1

    return {
        "num_rel": num_rel,
        "ap_sum": ap_sum,
        "last_hit": last_hit,
        "first_hit": first_hit,
        "id_rank": id_rank,
        "num_kept": num_kept,
        "num_ids_kept": num_ids_kept,
    }


def _summarise(stats, rule, max_rank):
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
        length = _common_length(lengths, "distinct gallery identities", rule, max_rank)
        first = stats["id_rank"][valid]
    else:
        length = max_rank
        first = stats["first_hit"][valid]
    # The image-level rows of the valid queries must stack too (all rules).
    _common_length(torch.clamp(stats["num_kept"][valid], max=max_rank), "gallery images", rule, max_rank)

    counts = torch.bincount(first.clamp(max=length + 1) - 1, minlength=length + 1)[:length]
    cmc = torch.cumsum(counts, 0).to(torch.float32) / torch.tensor(num_valid, dtype=torch.float32)
    return {
        "cmc": cmc.cpu().numpy(),
        "mAP": float(ap.mean()),
        "mINP": float(inp.mean()),
        "num_valid_q": num_valid,
    }


def _common_length(lengths, what, rule, max_rank):
    low, high = int(lengths.min()), int(lengths.max())
    if low != high:
        raise ValueError(
            f"CMC rows differ in length under the {rule!r} rule: some queries keep only {low} "
            f"{what} after the camera rule, others {high} (max_rank={max_rank}); "
            f"use max_rank <= {low}"
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
