"""Gallery search at scale: exact torch top-k vs faiss HNSW, IVF and IVF-PQ; latency, recall@10, build, memory.

    python benchmarks/search_gallery.py fit RUN --data-root DATA --out gallery_model.npz   # once
    python benchmarks/bench_search.py --gallery realistic --model gallery_model.npz --items 1000000 --dim 512
    python benchmarks/bench_search.py --gallery isotropic --items 1000000 --dim 512
    python benchmarks/bench_search.py --gallery realistic --model gallery_model.npz --items 1000000 --dim 2048 \
        --methods ivfpq --no-exact-row

Galleries (benchmarks/search_gallery.py): ``realistic`` is sampled from a Gaussian model fitted to the
features of a trained run (identity means' spread, within-identity spread, camera offsets, identity sizes);
``isotropic`` is ``items / 20`` random unit centres plus isotropic noise of the same norm, the hard floor for
approximate search. Queries are new images of gallery identities. Both are generated in chunks, so a
1M x 2048 gallery is never held as float32 unless the exact-search row asks for it.

For each method: build time (wall and process CPU, with ``--build-threads`` faiss threads, default every
core this process may use) and the extra resident memory of the built structure (MiB, VmRSS delta); per-query
latency with one query at a time on one thread (p50 / p99 in ms, the interactive case) and the amortised
time per query in batches of 256; recall@10 against exact search on the same queries. Times are given as
wall and process CPU time (on a shared machine wall time includes waiting).
Goal on the CPU: < 10 ms per query at 1M items with recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from vireid.deploy.search import (
    ann_search,
    ann_training_rows,
    apply_search_params,
    default_ann_params,
    exact_topk,
    make_ann,
    merge_topk,
    recall_at_k,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_gallery import GalleryModel, isotropic, realistic  # noqa: E402

K = 10


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def gallery_source(args):
    """A function returning (gallery chunks, queries) afresh (same seed, same values) for each pass."""
    if args.gallery == "realistic":
        if not args.model:
            raise SystemExit("--gallery realistic needs --model (python benchmarks/search_gallery.py fit ...)")
        model = GalleryModel.load(args.model)
        return lambda: realistic(model, args.items, args.queries, args.seed, args.dim)
    return lambda: isotropic(args.items, args.queries, args.dim, args.seed, args.per_id, args.noise)


def exact_pass(source, keep: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """(queries, exact top-K indices, the gallery if ``keep``, generation seconds) in one streamed pass."""
    chunks, queries = source()
    q = torch.from_numpy(queries)
    best_s, best_i = torch.empty(len(q), 0), torch.empty(len(q), 0, dtype=torch.long)
    kept, offset, generate = [], 0, 0.0
    t = time.perf_counter()
    for chunk in chunks:
        generate += time.perf_counter() - t
        g = torch.from_numpy(chunk)
        s, i = exact_topk(q, g, K)
        best_s, best_i = merge_topk(best_s, best_i, s, i + offset, K)
        offset += len(g)
        if keep:
            kept.append(g)
        t = time.perf_counter()
    return q, best_i, (torch.cat(kept) if keep else None), generate


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def latencies(search, queries: torch.Tensor, count: int) -> dict:
    """p50/p99 of one-query searches (ms, wall and process CPU time) and amortised ms/query in batches of 256.

    CPU time is reported next to wall time because the machine is shared: with
    one thread it is what the query costs when the core is not contended.
    """
    wall, cpu = [], []
    for i in range(min(count, len(queries))):
        t, c = time.perf_counter(), time.process_time()
        search(queries[i:i + 1])
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    batch = queries[:256]
    t, c = time.perf_counter(), time.process_time()
    search(batch)
    return {"p50_ms": statistics.median(wall), "p99_ms": _pct(wall, 0.99), "p50_cpu_ms": statistics.median(cpu),
            "p99_cpu_ms": _pct(cpu, 0.99), "batched_ms_per_query": (time.perf_counter() - t) * 1000 / len(batch),
            "batched_cpu_ms_per_query": (time.process_time() - c) * 1000 / len(batch), "timed_queries": len(wall)}


def build_streamed(source, kind: str, params: dict, dim: int, items: int, seed: int):
    """Train on the first chunk's rows (as many as the kind wants), then add every chunk; (index, params)."""
    chunks, _ = source()
    first = next(chunks)
    params = {**default_ann_params(kind, items, dim), **params}
    rows = ann_training_rows(kind, params)
    index, params = make_ann(kind, dim, items, params, first[:rows] if rows else None, seed)
    index.add(first)
    for chunk in chunks:
        index.add(chunk)
    return index, params


SWEEPS = {"ivf": ("nprobe",), "hnsw": ("ef_search",), "ivfpq": ("nprobe", "k_factor")}  # = their --options


def sweep(kind: str, args) -> list[dict]:
    """Search-time settings to try (the cross product for IVF-PQ)."""
    settings = [{}]
    for key in SWEEPS.get(kind, ()):
        settings = [{**s, key: v} for s in settings for v in getattr(args, key)]
    return settings


def run(args) -> list[dict]:
    threads = args.build_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(1)
    source = gallery_source(args)
    keep = args.exact_row
    t = time.perf_counter()
    queries, truth, gallery, generate_s = exact_pass(source, keep)
    print(f"{args.gallery} {args.items} x {args.dim} gallery ({args.items * args.dim * 4 / 2**20:.0f} MiB as float32), "
          f"{args.queries} queries; exact pass {time.perf_counter() - t:.0f} s (generation {generate_s:.0f} s); "
          f"builds on {threads} thread(s), searches on 1; torch {torch.__version__}", flush=True)
    rows = []
    if gallery is not None:
        lat = latencies(lambda q: exact_topk(q, gallery, K, chunk=args.chunk), queries, args.exact_timed)
        rows.append({"method": "torch exact", "params": {"chunk": args.chunk}, "build_s": 0.0, "build_cpu_s": 0.0,
                     "memory_mib": gallery.numel() * 4 / 2**20, "recall@10": 1.0, **lat})
        _print(rows[-1])
        del gallery
    try:
        import faiss
    except ImportError:
        print("faiss not installed (pip install 'vireid[faiss]'): approximate methods skipped")
        return rows
    for kind in args.methods:
        gc.collect()
        before = rss_mib()
        faiss.omp_set_num_threads(threads)
        t, c = time.perf_counter(), time.process_time()
        params = {"m": args.hnsw_m, "ef_construction": args.ef_construction} if kind == "hnsw" else {}
        if kind == "ivfpq" and args.pq_bytes:
            params["pq_bytes"] = args.pq_bytes
        index, params = build_streamed(source, kind, params, args.dim, args.items, args.seed)
        build, build_cpu = time.perf_counter() - t, time.process_time() - c
        memory = rss_mib() - before
        faiss.omp_set_num_threads(1)
        print(f"built {kind} {params} in {build:.0f} s wall ({build_cpu:.0f} s CPU), +{memory:.0f} MiB", flush=True)
        for setting in sweep(kind, args):
            p = {**params, **setting}
            apply_search_params(index, kind, p)
            _, idx = ann_search(index, queries, K)
            lat = latencies(lambda q, ix=index: ann_search(ix, q, K), queries, args.queries)
            rows.append({"method": f"faiss {kind}", "params": p, "build_s": build, "build_cpu_s": build_cpu,
                         "build_threads": threads, "memory_mib": memory, "recall@10": recall_at_k(idx, truth), **lat})
            _print(rows[-1])
        del index
    return rows


def _print(row: dict) -> None:
    params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
    print(f"{row['method']:<12} {params:<40} build {row['build_s']:6.0f} s (cpu {row['build_cpu_s']:6.0f})  "
          f"mem {row['memory_mib']:5.0f} MiB  p50 {row['p50_ms']:8.2f} ms (cpu {row['p50_cpu_ms']:7.2f})  "
          f"p99 {row['p99_ms']:8.2f} ms (cpu {row['p99_cpu_ms']:7.2f})  batched {row['batched_ms_per_query']:7.2f} "
          f"ms/q (cpu {row['batched_cpu_ms_per_query']:6.2f})  recall@10 {row['recall@10']:.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", choices=("realistic", "isotropic"), default="isotropic")
    ap.add_argument("--model", help="gallery model for --gallery realistic (benchmarks/search_gallery.py fit)")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--exact-timed", type=int, default=30, help="one-query exact searches timed (they are slow)")
    ap.add_argument("--no-exact-row", dest="exact_row", action="store_false",
                    help="skip timing exact search (it holds the whole gallery as float32)")
    ap.add_argument("--per-id", type=int, default=20, help="isotropic: gallery images per identity")
    ap.add_argument("--noise", type=float, default=1.0, help="isotropic: noise norm relative to the centre's")
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--methods", nargs="*", default=["hnsw"], choices=["flat", "ivf", "hnsw", "ivfpq"])
    ap.add_argument("--nprobe", type=int, nargs="*", default=[16, 32, 64])
    ap.add_argument("--k-factor", type=int, nargs="*", default=[8, 32])
    ap.add_argument("--pq-bytes", type=int, default=0, help="IVF-PQ code bytes per image (default dim / 16)")
    ap.add_argument("--ef-search", type=int, nargs="*", default=[16, 32, 64, 128])
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--build-threads", type=int, default=0, help="faiss threads for builds (default: every core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows as JSON")
    args = ap.parse_args()
    rows = run(args)
    if args.json:
        doc = {"gallery": args.gallery, "model": args.model, "items": args.items, "dim": args.dim,
               "queries": args.queries, "seed": args.seed, "noise": args.noise, "per_id": args.per_id,
               "platform": platform.platform(), "cpus": os.cpu_count(), "command": " ".join(sys.argv), "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
