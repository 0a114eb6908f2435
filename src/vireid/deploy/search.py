"""Search a gallery: exact chunked top-k in torch, approximate with faiss, optional k-reciprocal re-ranking.

Scores are cosine similarities (features are L2-normalised), larger =
closer: the ranking ``vireid eval`` uses (negated cosine distance).

* Exact search walks the gallery in chunks, keeping a running top-k, so
  memory is bounded by ``queries x chunk`` whatever the gallery size (CPU or
  CUDA).
* ``faiss`` (``pip install 'vireid[faiss]'``): ``flat`` (exact, inner
  product), ``ivf`` (inverted lists over k-means cells, ``nprobe`` cells
  visited) and ``hnsw`` (graph search, ``ef_search``). Approximate results
  are only useful with their recall against exact search, which
  :func:`recall_at_k` gives and the CLI reports.
* Re-ranking (Zhong et al. 2017, :func:`vireid.evaluation.rerank`) needs the
  full query-gallery and gallery-gallery distance matrices, so it is for
  small galleries only and its results are labelled re-ranked.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from vireid.utils.optional import require

log = logging.getLogger(__name__)
ANN_KINDS = ("flat", "ivf", "hnsw", "ivfpq")
RERANK_LIMIT = 20000


def exact_topk(queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk: int = 65536,
               query_chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), each (Q, min(k, N)), of the k largest ``q . g`` over the gallery, best first.

    Runs on the gallery's device; memory is O(query_chunk x chunk). Ties go
    to the lower gallery index.
    """
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)} must be (Q, D) and "
                         "(N, D) with the same D")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = gallery.shape[0]
    k = min(k, n)
    queries = queries.to(gallery.device, gallery.dtype)
    out_s, out_i = [], []
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs:qs + query_chunk]
        best_s = torch.full((q.shape[0], 0), -math.inf, device=gallery.device, dtype=gallery.dtype)
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=gallery.device)
        for gs in range(0, n, chunk):
            scores = q @ gallery[gs:gs + chunk].T
            s, i = torch.topk(scores, min(k, scores.shape[1]), dim=1, sorted=False)
            best_s, best_i = merge_topk(best_s, best_i, s, i + gs, k)
        out_s.append(best_s)
        out_i.append(best_i)
    return torch.cat(out_s).cpu(), torch.cat(out_i).cpu()


def merge_topk(best_s: torch.Tensor, best_i: torch.Tensor, s: torch.Tensor, i: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of two (scores, gallery indices) candidate sets per query, ordered by (score desc, index asc):
    the running top-k of a search that walks the gallery in chunks."""
    cand_s, cand_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
    # sort by index first, then a stable sort by score
    by_index = torch.argsort(cand_i, dim=1)
    cand_s, cand_i = cand_s.gather(1, by_index), cand_i.gather(1, by_index)
    order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
    return cand_s.gather(1, order), cand_i.gather(1, order)


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k."""
    approx, exact = torch.as_tensor(approx), torch.as_tensor(exact)
    if approx.shape != exact.shape:
        raise ValueError(f"approximate {tuple(approx.shape)} and exact {tuple(exact.shape)} results differ in shape")
    if exact.numel() == 0:
        return 1.0
    hits = (approx.unsqueeze(2) == exact.unsqueeze(1)).any(dim=1).float()
    return float(hits.mean())


# ---------------------------------------------------------------- faiss


def _faiss():
    return require("faiss", "faiss", "approximate search")


def default_ann_params(kind: str, n: int, dim: int = 512) -> dict:
    """Starting points, not tuned guarantees: check the recall ``vireid search`` prints.

    IVF: sqrt(N) cells (at least 39 training points each, faiss's minimum),
    32 visited; HNSW: M 32, efConstruction 80, efSearch 64 (recall@10 0.997 at
    100k x 512 in ``benchmarks/bench_search.py``, where IVF needed far more
    probes for 0.95; see docs/deploy.md). IVF-PQ (the memory-lean kind):
    sqrt(N) cells, ``dim / 16`` bytes of product-quantised code per image,
    and the best ``k_factor x k`` candidates re-scored with the fp16 features.
    """
    if kind in ("ivf", "ivfpq"):
        nlist = max(1, min(int(round(math.sqrt(max(n, 1)))), max(n // 39, 1)))
        params = {"nlist": nlist, "nprobe": max(1, min(nlist, 32))}
        if kind == "ivfpq":
            params.update(pq_bytes=_pq_bytes(dim), k_factor=16)
        return params
    if kind == "hnsw":
        return {"m": 32, "ef_construction": 80, "ef_search": 64}
    if kind == "flat":
        return {}
    raise ValueError(f"unknown faiss index kind {kind!r}; expected one of {', '.join(ANN_KINDS)}")


def _pq_bytes(dim: int) -> int:
    """Sub-quantisers of an IVF-PQ code: about dim / 16, a divisor of ``dim`` (faiss requires one)."""
    target = max(1, dim // 16)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def ann_training_rows(kind: str, params: dict) -> int:
    """How many sample rows training ``kind`` wants (0: no training): 64 per IVF cell, and at least the
    9984 points faiss asks for to train 256 PQ centroids."""
    if kind == "ivf":
        return 64 * int(params["nlist"])
    if kind == "ivfpq":
        return max(64 * int(params["nlist"]), 10000)
    return 0


EXACT_UP_TO = 50_000  # images; below this exact search is fast enough that approximation only loses recall


def choose_ann(n: int, dim: int, available_bytes: int | None = None) -> tuple[str | None, str]:
    """What ``vireid index --faiss auto`` builds for ``n`` ``dim``-d features: (kind or None, why).

    None (exact search only) up to :data:`EXACT_UP_TO` images: a chunked exact search there is a few
    milliseconds a query. Above it HNSW, the fastest at recall >= 0.95 (docs/deploy.md), when the index
    (the float32 features, HNSW's own copy and its graph) takes at most half the memory available;
    otherwise IVF-PQ, whose search structure is the fp16 features plus a few bytes of code a row.
    """
    if n <= EXACT_UP_TO:
        return None, (f"{n} images (<= {EXACT_UP_TO}): exact search, about {2 * n * dim / 1e6:.0f} MFLOP a query, "
                      "is fast enough; an approximate index would only lose recall")
    if available_bytes is None:
        available_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    hnsw = n * (2 * 4 * dim + 2 * 32 * 4 + 16)  # features + HNSW's copy + level-0 links (2M ints) + levels
    lean = n * (4 * dim + 2 * dim + _pq_bytes(dim) + 16)
    gib = 2 ** 30
    if hnsw <= available_bytes / 2:
        return "hnsw", (f"{n} images: HNSW needs about {hnsw / gib:.1f} GiB with the features, within half of the "
                        f"{available_bytes / gib:.1f} GiB available")
    return "ivfpq", (f"{n} images: HNSW would need about {hnsw / gib:.1f} GiB, more than half of the "
                     f"{available_bytes / gib:.1f} GiB available; IVF-PQ with fp16 re-scoring needs about "
                     f"{lean / gib:.1f} GiB")


def make_ann(kind: str, dim: int, n: int, params: dict | None = None, train: np.ndarray | None = None,
             seed: int = 0):
    """An empty faiss inner-product index for about ``n`` L2-normalised ``dim``-d features, trained on
    ``train`` where the kind needs training; returns (index, params used). Add rows with ``index.add``
    (in chunks, for a gallery that does not fit in memory as float32)."""
    faiss = _faiss()
    params = {**default_ann_params(kind, n, dim), **(params or {})}
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim), params
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["m"]), ip)
        index.hnsw.efConstruction = int(params["ef_construction"])
        apply_search_params(index, kind, params)
        return index, params
    if kind not in ("ivf", "ivfpq"):
        raise ValueError(f"unknown faiss index kind {kind!r}; expected one of {', '.join(ANN_KINDS)}")
    if train is None or len(train) == 0:
        raise ValueError(f"a faiss {kind} index must be trained: give sample rows")
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, int(params["nlist"]), ip)
    else:  # codes for the candidates, fp16 vectors (2 bytes a value) to re-score them exactly enough
        base = faiss.IndexIVFPQ(quantizer, dim, int(params["nlist"]), int(params["pq_bytes"]), 8, ip)
        index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, ip))
    faiss.extract_index_ivf(index).cp.seed = seed
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    apply_search_params(index, kind, params)
    return index, params


def build_ann(features: torch.Tensor, kind: str, params: dict | None = None, seed: int = 0):
    """A faiss inner-product index over L2-normalised ``features``; returns (index, params used)."""
    x = np.ascontiguousarray(features.float().numpy())
    n, d = x.shape
    params = {**default_ann_params(kind, n, d), **(params or {})}
    rows = ann_training_rows(kind, params)
    train = None
    if rows:
        rng = np.random.default_rng(seed)
        train = x if n <= rows else x[np.sort(rng.choice(n, rows, replace=False))]
    index, params = make_ann(kind, d, n, params, train, seed)
    index.add(x)
    return index, params


def apply_search_params(index, kind: str, params: dict) -> None:
    if kind in ("ivf", "ivfpq"):
        _faiss().extract_index_ivf(index).nprobe = int(params["nprobe"])
    if kind == "ivfpq":
        index.k_factor = float(params["k_factor"])
    elif kind == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])


def ann_search(index, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    scores, ids = index.search(np.ascontiguousarray(queries.float().numpy()), k)
    return torch.from_numpy(scores), torch.from_numpy(ids).long()


def ann_to_record(index, kind: str, params: dict) -> dict:
    blob = _faiss().serialize_index(index)
    return {"kind": kind, "params": params, "blob": torch.from_numpy(np.asarray(blob, dtype=np.uint8).copy())}


def ann_from_record(record: dict, count: int | None = None, where: str = "the index"):
    """The faiss index of a stored record; with ``count``, refused unless it holds exactly that many vectors
    (a blob that disagrees with the paths would return ids of other images, or ids past the end)."""
    faiss = _faiss()
    try:
        index = faiss.deserialize_index(np.ascontiguousarray(record["blob"].numpy()))
    except RuntimeError as exc:
        raise ValueError(f"{where} holds a damaged faiss {record.get('kind')} structure ({exc}); rebuild the "
                         "index") from None
    if count is not None and index.ntotal != count:
        raise ValueError(f"{where} is inconsistent: its faiss {record.get('kind')} structure holds {index.ntotal} "
                         f"vectors but the index lists {count} images; rebuild the index")
    apply_search_params(index, record["kind"], record["params"])
    return index


def ann_add(record: dict, features: torch.Tensor, count: int | None = None, where: str = "the index") -> dict:
    index = ann_from_record(record, count, where)
    index.add(np.ascontiguousarray(features.float().numpy()))
    return ann_to_record(index, record["kind"], record["params"])


# ---------------------------------------------------------------- re-ranking


def rerank_topk(queries: torch.Tensor, gallery: torch.Tensor, k: int, k1: int = 20, k2: int = 6,
                lambda_value: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """(re-ranked distances, indices), each (Q, min(k, N)), smaller = closer; small galleries only."""
    from vireid.evaluation.evaluator import euclidean_distance
    from vireid.evaluation.reranking import rerank

    if len(gallery) > RERANK_LIMIT:
        raise ValueError(f"re-ranking builds {len(gallery)} x {len(gallery)} distance matrices; it is meant for "
                         f"galleries up to {RERANK_LIMIT} images (this one has {len(gallery)})")
    dist = rerank(euclidean_distance(queries, gallery), euclidean_distance(queries, queries),
                  euclidean_distance(gallery, gallery), k1=k1, k2=k2, lambda_value=lambda_value)
    dist = torch.as_tensor(np.asarray(dist) if not isinstance(dist, torch.Tensor) else dist).float().cpu()
    order = torch.sort(dist, dim=1, stable=True).indices[:, :min(k, len(gallery))]
    return dist.gather(1, order), order


# ---------------------------------------------------------------- the whole search


def search_index(index, queries: torch.Tensor, k: int = 10, *, method: str = "auto", rerank: bool = False,
                 recall: bool = True, chunk: int = 65536, device: str = "cpu", recall_sample: int = 200) -> dict:
    """Search an :class:`~vireid.deploy.index.GalleryIndex`.

    ``method``: "exact", "faiss" (the index's stored faiss structure) or
    "auto" (faiss when the index has one and faiss is installed). Returns
    {"scores", "indices", "method", "recall_vs_exact", "reranked"}; with
    ``rerank`` the scores are re-ranked distances (smaller = closer). An approximate search's recall is
    measured against exact search on the first ``recall_sample`` queries (``recall_queries`` says how many):
    exact search over a large gallery for every query would cost what the index saves.
    """
    index.check_width(queries)
    queries = torch.nn.functional.normalize(queries.float(), dim=1)
    if rerank:
        dist, idx = rerank_topk(queries, index.features, k)
        return {"scores": dist, "indices": idx, "method": "exact + k-reciprocal re-ranking",
                "recall_vs_exact": None, "reranked": True}
    if method not in ("auto", "exact", "faiss"):
        raise ValueError(f"search method must be auto, exact or faiss, got {method!r}")
    use_faiss = method == "faiss" or (method == "auto" and bool(index.ann))
    if use_faiss and not index.ann:
        raise ValueError("this index has no faiss structure; build it with 'vireid index ... --faiss hnsw' "
                         "(or ivf/flat), or search exactly")
    if use_faiss and method == "auto":
        try:
            _faiss()
        except ImportError:
            log.warning("the index has a %s faiss structure but faiss is not installed "
                        "(pip install 'vireid[faiss]'); searching exactly", index.ann["kind"])
            use_faiss = False
    gallery = index.features.to(device)
    if not use_faiss:
        scores, idx = exact_topk(queries, gallery, k, chunk=chunk)
        return {"scores": scores, "indices": idx, "method": "exact", "recall_vs_exact": 1.0, "reranked": False}
    ann = ann_from_record(index.ann, len(index), f"index {index.source}" if index.source else "the index")
    scores, idx = ann_search(ann, queries, min(k, len(index)))
    result = {"scores": scores, "indices": idx, "method": f"faiss-{index.ann['kind']}", "recall_vs_exact": None,
              "reranked": False}
    if recall:
        sample = min(len(queries), max(recall_sample, 1))
        truth = exact_topk(queries[:sample], gallery, k, chunk=chunk)[1]
        result["recall_vs_exact"] = recall_at_k(idx[:sample], truth)
        result["recall_queries"] = sample
    return result
