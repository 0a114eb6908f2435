"""Exact and approximate search, the index file (checked on load), and the extract/index/search commands."""

import json

import pytest
import torch
from PIL import Image

from conftest import optional
from deploy_runs import make_run, write_images
from vireid.cli.main import main
from vireid.deploy.index import GalleryIndex, IndexMismatch
from vireid.deploy.search import exact_topk, recall_at_k, search_index
from vireid.deploy.store import load_features


def clustered(n, d, centres=20, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.nn.functional.normalize(torch.randn(centres, d, generator=g), dim=1)
    x = c[torch.randint(0, centres, (n,), generator=g)] + noise * torch.randn(n, d, generator=g) / d ** 0.5
    return torch.nn.functional.normalize(x, dim=1)


def test_exact_topk_matches_a_full_sort_across_chunks():
    g, q = clustered(1000, 16), clustered(37, 16, seed=1)
    g[500] = g[3]  # a tie: the lower index comes first
    scores, idx = exact_topk(q, g, k=12, chunk=97, query_chunk=10)
    full = q @ g.T
    ref = torch.sort(full, dim=1, descending=True, stable=True)
    torch.testing.assert_close(scores, ref.values[:, :12])
    assert torch.equal(idx, ref.indices[:, :12])
    assert exact_topk(q, g[:5], k=10)[1].shape == (37, 5)  # k larger than the gallery


def test_recall_at_k():
    exact = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(torch.tensor([[3, 2, 9], [7, 8, 9]]), exact) == pytest.approx(2 / 6)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_faiss_indexes_agree_with_exact_search(kind):
    optional("faiss")
    from vireid.deploy.search import ann_add, ann_from_record, ann_search, ann_to_record, build_ann

    g, q = clustered(3000, 32), clustered(50, 32, seed=1)
    ann, params = build_ann(g[:2000], kind)
    record = ann_add(ann_to_record(ann, kind, params), g[2000:])  # serialised, extended, read back
    _, idx = ann_search(ann_from_record(record), q, 10)
    recall = recall_at_k(idx, exact_topk(q, g, 10)[1])
    assert recall == 1.0 if kind == "flat" else recall >= 0.9, recall


def test_auto_index_choice_by_size_and_memory():
    from vireid.deploy.search import EXACT_UP_TO, choose_ann

    kind, why = choose_ann(EXACT_UP_TO, 512, available_bytes=2**40)
    assert kind is None and "exact search" in why
    kind, why = choose_ann(1_000_000, 512, available_bytes=24 * 2**30)  # ~4.1 GiB: HNSW fits
    assert kind == "hnsw" and "24.0 GiB available" in why
    kind, why = choose_ann(1_000_000, 2048, available_bytes=24 * 2**30)  # ~15.5 GiB > 12: the lean kind
    assert kind == "ivfpq" and "HNSW would need about 15.5 GiB" in why


def test_recall_is_measured_on_a_sample_of_the_queries():
    optional("faiss")
    from vireid.deploy.search import ann_to_record, build_ann, search_index

    index, _ = _index(n=200, d=16)
    ann, params = build_ann(index.features, "hnsw")
    index.ann = ann_to_record(ann, "hnsw", params)
    result = search_index(index, clustered(7, 16, seed=3), 5, recall_sample=3)
    assert result["method"] == "faiss-hnsw" and result["recall_queries"] == 3 and result["recall_vs_exact"] > 0.5


def _index(n=30, d=8, sha="a" * 64):
    run = {"method": "agw", "checkpoint": "/r", "feature_dim": d, "flip": False, "weights_sha256": sha}
    return GalleryIndex.create(clustered(n, d), [f"/img/{i}.png" for i in range(n)], [0] * n, run), run


def test_index_round_trip_and_corruption_is_refused(tmp_path):
    index, run = _index()
    path = tmp_path / "g.index"
    index.save(path)
    back = GalleryIndex.load(path)
    assert back.paths == index.paths and torch.equal(back.features, index.features) and back.run == run
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0xFF  # a flipped byte in the data
    (tmp_path / "flipped.index").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="flipped.index is corrupt: its contents do not match"):
        GalleryIndex.load(tmp_path / "flipped.index")
    (tmp_path / "cut.index").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.index is corrupt or not a vireid index"):
        GalleryIndex.load(tmp_path / "cut.index")
    with pytest.raises(FileNotFoundError, match="index not found"):
        GalleryIndex.load(tmp_path / "none.index")


def test_index_refuses_another_model_or_width():
    index, run = _index()
    with pytest.raises(IndexMismatch, match="built with another model"):
        index.check_run({**run, "weights_sha256": "b" * 64})
    with pytest.raises(IndexMismatch, match="holds 8-d features but the model/features given are 16-d"):
        index.check_run({**run, "feature_dim": 16})
    with pytest.raises(IndexMismatch, match=r"queries have shape \(2, 4\) but the index holds 8-d"):
        search_index(index, torch.randn(2, 4))
    assert index.add(torch.randn(3, 8), ["/img/0.png", "/new/1.png", "/new/2.png"], [1, 1, 1], run) == 2
    assert len(index) == 32 and index.modalities[-1] == 1


def test_rerank_search_is_labelled():
    index, _ = _index()
    out = search_index(index, clustered(4, 8, seed=3), 5, rerank=True)
    assert out["reranked"] and out["indices"].shape == (4, 5) and "re-ranking" in out["method"]
    assert bool((out["scores"][:, 1:] >= out["scores"][:, :-1]).all())  # distances, ascending


# ---------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    run = make_run(base / "run", "agw")
    gallery = write_images(base / "gallery" / "a", 6, seed=1)
    queries = write_images(base / "queries", 3, seed=2, grey=True)
    (base / "gallery" / "b").mkdir()
    (base / "gallery" / "b" / "broken.png").write_bytes(b"\x89PNG but not really")
    return base, run, gallery, queries


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vireid: error: ") and "Traceback" not in err, err
    return err


def test_extract_lists_undecodable_images_or_stops(setup, tmp_path, capsys):
    base, run, gallery, _ = setup
    out = tmp_path / "f.safetensors"
    assert main(["extract", str(run), "--images", str(base / "gallery"), "--modality", "visible",
                 "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "skipped 1 image(s)" in captured.err and "broken.png" in captured.err
    data = load_features(out)
    assert data["paths"] == [str(p) for p in gallery] and data["modalities"] == [0] * 6
    assert data["features"].shape == (6, 512) and data["failed"][0][0].endswith("broken.png")
    assert "broken.png" in _error(capsys, ["extract", str(run), "--images", str(base / "gallery"),
                                           "--modality", "visible", "--out", str(tmp_path / "g.safetensors"),
                                           "--strict"])


def test_index_and_search_end_to_end(setup, tmp_path, capsys):
    base, run, gallery, queries = setup
    index = tmp_path / "g.index"
    listing = tmp_path / "more.txt"
    listing.write_text(f"{gallery[0]} visible\n{queries[0]} infrared\n")
    assert main(["index", str(run), "--images", str(base / "gallery" / "a"), "--modality", "visible",
                 "--out", str(index)]) == 0
    assert main(["index", str(run), "--images", str(listing), "--out", str(index), "--add"]) == 0
    assert "+1 -> 7 images (6 visible, 1 infrared)" in capsys.readouterr().out
    out_json, grid = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["search", str(index), "--query", str(base / "queries"), "--query-modality", "infrared",
                 "--top-k", "3", "--json", str(out_json), "--grid", str(grid)]) == 0
    printed = capsys.readouterr().out
    assert "with 3 queries: exact" in printed
    doc = json.loads(out_json.read_text())
    assert doc["method"] == "exact" and len(doc["queries"]) == 3 and len(doc["queries"][0]["results"]) == 3
    # the indexed copy of queries[0] is its own best match (same model, same image, same modality)
    assert doc["queries"][0]["results"][0]["path"] == str(queries[0].resolve())
    assert doc["queries"][0]["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert Image.open(grid).size[1] == 3 * (128 + 8)
    assert main(["search", str(index), "--query", str(queries[0]), "--query-modality", "ir", "--rerank",
                 "--top-k", "2"]) == 0
    assert "[re-ranked]" in capsys.readouterr().out


def test_faiss_index_through_the_commands(setup, tmp_path, capsys):
    optional("faiss")
    base, run, gallery, queries = setup
    index = tmp_path / "f.index"
    assert main(["index", str(run), "--images", str(base / "gallery" / "a"), "--modality", "visible",
                 "--out", str(index), "--faiss", "hnsw"]) == 0
    assert main(["index", str(run), "--images", str(queries[0]), "--modality", "infrared", "--out", str(index),
                 "--add"]) == 0
    assert "7 images (6 visible, 1 infrared), 512-d agw features, hnsw faiss index" in capsys.readouterr().out
    assert main(["search", str(index), "--query", str(queries[0]), "--query-modality", "ir", "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "faiss-hnsw, recall@3 vs exact 1.0000 (on 1 of 1 queries)" in printed
    assert printed.splitlines()[2].split()[2] == str(queries[0].resolve())  # the indexed copy comes first
    auto = tmp_path / "auto.index"
    assert main(["index", str(run), "--images", str(base / "gallery" / "a"), "--modality", "visible",
                 "--out", str(auto), "--faiss", "auto"]) == 0
    assert "--faiss auto: no faiss index (exact search): 6 images (<= 50000)" in capsys.readouterr().out


def test_search_errors(setup, tmp_path, capsys):
    base, run, gallery, queries = setup
    index = tmp_path / "g.index"
    assert main(["index", str(run), "--images", str(base / "gallery" / "a"), "--modality", "visible",
                 "--out", str(index)]) == 0
    other = make_run(tmp_path / "other", "agw", seed=5)
    assert "built with another model" in _error(capsys, ["search", str(index), "--query", str(queries[0]),
                                                         "--query-modality", "ir", "--run", str(other)])
    assert "no modality for" in _error(capsys, ["search", str(index), "--query", str(queries[0])])
    (tmp_path / "empty").mkdir()
    assert "no images found under" in _error(capsys, ["index", str(run), "--images", str(tmp_path / "empty"),
                                                      "--modality", "visible", "--out", str(tmp_path / "e.index")])
    assert "already exists; pass --add" in _error(capsys, ["index", str(run), "--images", str(gallery[0]),
                                                           "--modality", "visible", "--out", str(index)])
    wide = make_run(tmp_path / "mbfvrd", "mbfvrd")  # 2 x 512-d
    feats = tmp_path / "q.safetensors"
    assert main(["extract", str(wide), "--images", str(queries[0]), "--modality", "ir", "--out", str(feats)]) == 0
    assert "holds 512-d features but the model/features given are 1024-d" in _error(
        capsys, ["search", str(index), "--query", str(feats)])
    (tmp_path / "bad.index").write_bytes(b"garbage")
    assert "is corrupt or not a vireid index" in _error(capsys, ["search", str(tmp_path / "bad.index"),
                                                                 "--query", str(queries[0]),
                                                                 "--query-modality", "ir"])
