"""`vireid index` (build or extend a gallery index) and `vireid search` (query it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vireid.cli.extract_cmd import add_model_options, report_failed

PRINT_QUERIES = 10


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="build or extend a gallery index of your own images",
                              description="Embed gallery images with a trained run and write an index file "
                                          "(features, paths, modalities, the run and a hash of its weights).")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--images", required=True, help="folder, image file or list file ('path [modality]' lines)")
    p.add_argument("--modality", help="visible or infrared (for every image a list line does not label)")
    p.add_argument("--out", required=True, help="index file to write (or extend with --add)")
    p.add_argument("--add", action="store_true", help="extend an existing index (same model); known paths are skipped")
    p.add_argument("--faiss", choices=("auto", "flat", "ivf", "hnsw", "ivfpq"),
                   help="also store a faiss index for fast search (needs pip install 'vireid[faiss]'); auto picks "
                        "exact, HNSW or the memory-lean IVF-PQ by gallery size and memory and says why")
    p.add_argument("--strict", action="store_true", help="stop at the first image that cannot be decoded")
    add_model_options(p)
    p.set_defaults(func=run_index)

    s = subparsers.add_parser("search", help="search a gallery index with query images",
                              description="Embed query images with the index's run and list the closest gallery "
                                          "images (cosine similarity). With a stored faiss index the search is "
                                          "approximate and its recall@k against exact search is reported.")
    s.add_argument("index", help="index file written by 'vireid index'")
    s.add_argument("--query", required=True, help="folder, image file, list file, or a 'vireid extract' "
                                                  ".safetensors feature file")
    s.add_argument("--query-modality", help="visible or infrared (for every query a list line does not label)")
    s.add_argument("--run", help="the model to embed queries with (default: the run the index was built with)")
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument("--exact", action="store_true", help="exact search even when the index has a faiss structure")
    s.add_argument("--no-recall", action="store_true",
                   help="with a faiss index, skip the exact search that measures its recall")
    s.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking (small galleries; results are labelled re-ranked)")
    s.add_argument("--json", help="write every query's results to this JSON file")
    s.add_argument("--grid", help="write a picture of the results (first --grid-rows queries)")
    s.add_argument("--grid-rows", type=int, default=8)
    add_model_options(s)
    s.set_defaults(func=run_search)


def run_index(args) -> int:
    """Extract outside the lock (slow, may run in parallel), then load-extend-save under it.

    Why the lock: two ``--add`` runs into one index each load it, extend their
    copy and save; without it the second save drops the first one's images.
    """
    from vireid.deploy.extractor import Extractor
    from vireid.deploy.images import fill_modalities, list_images
    from vireid.deploy.index import GalleryIndex
    from vireid.utils.io import remove_stale_temps
    from vireid.utils.locks import exclusive
    from vireid.utils.outputs import output_file

    out = output_file(args.out)
    existing = GalleryIndex.load(out) if args.add else _refuse_existing(out)
    paths, modalities = list_images(args.images)
    paths = [str(Path(p).resolve()) for p in paths]
    modalities = fill_modalities(paths, modalities, args.modality)
    extractor = Extractor(args.run, device=args.device, batch_size=args.batch_size, flip=args.flip)
    run = extractor.identity().as_dict()
    if existing is not None:
        existing.check_run(run, f"index {out}")  # before spending time on extraction
        if args.faiss and args.faiss != "auto" and (not existing.ann or existing.ann["kind"] != args.faiss):
            raise ValueError(f"{out} has {'a ' + existing.ann['kind'] if existing.ann else 'no'} faiss index; "
                             f"--add keeps it (leave out --faiss, or rebuild the index with --faiss {args.faiss})")
        known = set(existing.paths)
        keep = [i for i, p in enumerate(paths) if p not in known]
        paths, modalities = [paths[i] for i in keep], [modalities[i] for i in keep]
    feats = extractor.embed_files(paths, modalities, strict=args.strict, progress=sys.stderr.isatty())
    if existing is None and not feats.paths:
        report_failed(feats.failed)
        raise ValueError(f"none of the images from {args.images} could be decoded; no index written")
    index = _new_index(feats, run, args.faiss) if existing is None else None  # a faiss build: outside the lock
    with exclusive(out):
        remove_stale_temps(out.parent, out.name)  # left by a writer killed mid-save; we hold the lock
        if index is not None:
            _refuse_existing(out)  # another process may have written it while we extracted
            added = len(index)
        else:
            index = GalleryIndex.load(out)  # the current file: another writer may have extended it meanwhile
            added = index.add(feats.features, feats.paths, feats.modalities, run)
        index.save(out)
    print(f"{'extended' if existing is not None else 'wrote'} {out}: +{added} -> {index.summary()}")
    report_failed(feats.failed)
    return 0


def _refuse_existing(out: Path) -> None:
    if out.exists():
        raise ValueError(f"{out} already exists; pass --add to extend it, or remove it to rebuild")


def _new_index(feats, run: dict, faiss: str | None):
    from vireid.deploy.index import GalleryIndex
    from vireid.deploy.search import ann_to_record, build_ann, choose_ann

    index = GalleryIndex.create(feats.features, feats.paths, feats.modalities, run)
    if faiss == "auto":
        faiss, why = choose_ann(len(index), index.dim)
        print(f"--faiss auto: {faiss or 'no faiss index (exact search)'}: {why}")
    if faiss:
        ann, params = build_ann(index.features, faiss)
        index.ann = ann_to_record(ann, faiss, params)
    return index


def _queries(args, index):
    """(features, paths, modalities, run identity) of the queries."""
    from vireid.deploy.extractor import Extractor
    from vireid.deploy.images import fill_modalities, list_images
    from vireid.deploy.store import load_features

    if str(args.query).endswith(".safetensors"):
        data = load_features(args.query)
        index.check_run(data["run"] or {}, f"index {args.index}")
        return data["features"], data["paths"], data["modalities"], []
    paths, modalities = list_images(args.query)
    modalities = fill_modalities(paths, modalities, args.query_modality)
    run = args.run or index.run.get("checkpoint")
    flip = args.flip if args.flip is not None else index.run.get("flip")
    try:
        extractor = Extractor(run, device=args.device, batch_size=args.batch_size, flip=flip)
    except FileNotFoundError as exc:
        if args.run:
            raise
        raise FileNotFoundError(f"{exc} (the run index {args.index} was built with); pass --run with "
                                "its current location") from None
    index.check_run(extractor.identity().as_dict(), f"index {args.index}")
    feats = extractor.embed_files(paths, modalities, progress=sys.stderr.isatty())
    if not feats.paths:
        report_failed(feats.failed)
        raise ValueError(f"none of the query images from {args.query} could be decoded")
    return feats.features, feats.paths, feats.modalities, feats.failed


def run_search(args) -> int:
    from vireid.data.records import MODALITY_BY_NAME, MODALITY_NAMES
    from vireid.deploy.index import GalleryIndex
    from vireid.deploy.search import search_index
    from vireid.utils.outputs import output_file

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.grid_rows < 1:
        raise ValueError(f"--grid-rows must be >= 1, got {args.grid_rows}")
    output_file(args.json, "--json")
    output_file(args.grid, "--grid")
    index = GalleryIndex.load(args.index)
    features, paths, modalities, failed = _queries(args, index)
    result = search_index(index, features, args.top_k, method="exact" if args.exact else "auto",
                          rerank=args.rerank, recall=not args.no_recall,
                          device="cuda" if args.device == "cuda" else "cpu")
    label = " [re-ranked]" if result["reranked"] else ""
    score_name = "distance" if result["reranked"] else "similarity"
    recall = result["recall_vs_exact"]
    print(f"searched {index.summary()} with {len(paths)} queries: {result['method']}{label}"
          + (f", recall@{result['indices'].shape[1]} vs exact {recall:.4f} (on {result['recall_queries']} of "
             f"{len(paths)} queries)" if result["method"].startswith("faiss") and recall is not None else ""))
    queries = []
    for qi, (path, mod) in enumerate(zip(paths, modalities)):
        hits = [{"rank": r + 1, "path": index.paths[g], "modality": MODALITY_NAMES[int(index.modalities[g])],
                 score_name: float(result["scores"][qi, r])}
                for r, g in enumerate(result["indices"][qi].tolist()) if g >= 0]
        queries.append({"path": path, "modality": MODALITY_NAMES[mod], "results": hits})
        if qi < PRINT_QUERIES:
            print(f"{path} ({MODALITY_NAMES[mod]}){label}")
            for h in hits:
                print(f"  {h['rank']:>3}. {h[score_name]:+.4f}  {h['path']} ({h['modality']})")
    if len(paths) > PRINT_QUERIES:
        print(f"... {len(paths) - PRINT_QUERIES} more queries" + (f" in {args.json}" if args.json else ""))
    if args.json:
        from vireid.utils.io import write_text_atomic

        doc = {"index": str(args.index), "run": index.run, "method": result["method"], "reranked": result["reranked"],
               "score": score_name, "recall_vs_exact": recall, "top_k": args.top_k, "queries": queries}
        write_text_atomic(args.json, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.grid:
        from vireid.evaluation.visualize import save_image, search_grid_image

        rows = [(q["path"], modalities[i], [(h["path"], MODALITY_BY_NAME[h["modality"]]) for h in q["results"]])
                for i, q in enumerate(queries[:args.grid_rows])]
        save_image(search_grid_image(rows), args.grid)
        print(f"wrote {args.grid}")
    report_failed(failed)
    return 0
