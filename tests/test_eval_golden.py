"""Parity with the golden vectors computed by the reference implementations.

Every ``.npz`` under ``$VIREID_GOLDEN/eval`` (public and heldout) is a test;
a file whose ``fn`` this module does not know fails, so new vectors cannot be
silently ignored.
"""

from pathlib import Path

import numpy as np
import pytest

from conftest import golden_root, optional
from vireid.data.records import INFRARED, VISIBLE
from vireid.evaluation import evaluate, rerank
from vireid.evaluation import protocols as P

GOLDEN_FILES = sorted((golden_root() / "eval").rglob("*.npz"))


def test_golden_vectors_present():
    assert len(GOLDEN_FILES) >= 29, f"expected the golden eval vectors under {golden_root() / 'eval'}"


def _metrics_case(z, rule):
    args = dict(rule=rule, max_rank=int(z["max_rank"]))
    if "q_camids" in z.files:
        args.update(q_camids=z["q_camids"], g_camids=z["g_camids"])
    if "expected_exception" in z.files:
        with pytest.raises(ValueError):
            evaluate(z["distmat"], z["q_pids"], z["g_pids"], **args)
        return
    out = evaluate(z["distmat"], z["q_pids"], z["g_pids"], **args)
    assert out["cmc"].shape == z["cmc"].shape
    np.testing.assert_allclose(out["cmc"], z["cmc"], atol=1e-6, rtol=0)
    assert out["mAP"] == pytest.approx(float(z["mAP"]), abs=1e-9, rel=0)
    assert out["mINP"] == pytest.approx(float(z["mINP"]), abs=1e-9, rel=0)
    assert out["num_valid_q"] == int(z["num_valid_q"])


def _rerank_case(z):
    out = rerank(z["q_g_dist"], z["q_q_dist"], z["g_g_dist"], k1=int(z["k1"]), k2=int(z["k2"]),
                 lambda_value=float(z["lambda_value"]))
    expected = z["final_dist"]
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    # Same per-row order, except between entries closer than the tolerance.
    for row_out, row_exp in zip(out, expected):
        order = np.argsort(row_out, kind="stable")
        assert np.all(np.diff(row_exp[order]) > -2e-5)


def _make_tree(root: Path, files, text_files=()):
    for rel in files:
        path = root / str(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    for rel, content in text_files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _relative(samples, root):
    return [str(Path(s.path).relative_to(root)) for s in samples]


def _sysu_lists_case(z, tmp_path):
    _make_tree(tmp_path, z["tree_files"], [("exp/test_id.txt", str(z["test_id_txt"]))])
    mode = str(z["mode"])
    query = P.sysu_query(tmp_path)
    assert _relative(query, tmp_path) == list(z["query_files"])
    assert [s.pid for s in query] == list(z["query_ids"])
    assert [s.camid for s in query] == list(z["query_cams"])
    assert all(s.modality == INFRARED for s in query)
    protocol = P.get_protocol(f"sysu/{mode}/single/seeded")
    for row, trial in enumerate(z["trials"]):
        split = protocol.build(tmp_path, int(trial))
        assert _relative(split.gallery, tmp_path) == list(z["gallery_files"][row])
        assert [s.pid for s in split.gallery] == list(z["gallery_ids"][row])
        assert [s.camid for s in split.gallery] == list(z["gallery_cams"][row])
        assert all(s.modality == VISIBLE for s in split.gallery)


def _llcm_lists_case(z, tmp_path):
    _make_tree(tmp_path, z["tree_files"], [("idx/test_id.txt", str(z["test_id_txt"]))])
    for mode, modality in ((1, VISIBLE), (2, INFRARED)):
        query = P.llcm_query(tmp_path, modality)
        assert _relative(query, tmp_path) == list(z[f"query_mode{mode}_files"])
        assert [s.pid for s in query] == list(z[f"query_mode{mode}_ids"])
        assert [s.camid for s in query] == list(z[f"query_mode{mode}_cams"])
        for row, trial in enumerate(z["trials"]):
            gallery = P.llcm_gallery(tmp_path, modality, int(trial))
            assert _relative(gallery, tmp_path) == list(z[f"gallery_mode{mode}_files"][row])
            assert [s.pid for s in gallery] == list(z[f"gallery_mode{mode}_ids"][row])
            assert [s.camid for s in gallery] == list(z[f"gallery_mode{mode}_cams"][row])
    # The named protocols are built from the same lists.
    split = P.get_protocol("llcm/i2v").build(tmp_path, 3)
    assert _relative(split.query, tmp_path) == list(z["query_mode2_files"])
    assert _relative(split.gallery, tmp_path) == list(z["gallery_mode1_files"][3])
    released = P.get_protocol("llcm/v2i_as_released").build(tmp_path, 3)
    assert _relative(released.query, tmp_path) == list(z["gallery_mode2_files"][3])
    assert _relative(released.gallery, tmp_path) == list(z["query_mode1_files"])


def write_rand_perm_cam(path: Path, picks: dict, counts: dict):
    """A rand_perm_cam.mat whose row r of {cam}{pid} starts with picks[(cam, pid)][r]."""
    import scipy.io

    max_pid = max(pid for _, pid in counts)
    cells = np.empty((1, 6), dtype=object)
    for cam in range(1, 7):
        per_id = np.empty((1, max_pid), dtype=object)
        for pid in range(1, max_pid + 1):
            n = counts.get((cam, pid), 0)
            if n == 0:
                per_id[0, pid - 1] = np.zeros((0, 0))
                continue
            rows = []
            for first in picks.get((cam, pid), [[]] * 10):
                rest = [i for i in range(1, n + 1) if i not in list(first)]
                rows.append(list(first) + rest)
            per_id[0, pid - 1] = np.array(rows, dtype=np.float64)
        cells[0, cam - 1] = per_id
    scipy.io.savemat(str(path), {"rand_perm_cam": cells})


def _official_split_case(z, tmp_path):
    optional("scipy")
    mode, shots = str(z["mode"]), int(z["shots"])
    counts, picks = {}, {}
    for cam, pid, idx in zip(z["query_cams"], z["query_pids"], z["query_img_index_1based"]):
        counts[(int(cam), int(pid))] = max(counts.get((int(cam), int(pid)), 0), int(idx))
    cams, pids, idxs = z["gallery_cams"], z["gallery_pids"], z["gallery_img_index_1based"]
    for trial in range(cams.shape[0]):
        for cam, pid, idx in zip(cams[trial], pids[trial], idxs[trial]):
            key = (int(cam), int(pid))
            picks.setdefault(key, [[] for _ in range(cams.shape[0])])[trial].append(int(idx))
            counts[key] = max(counts.get(key, 0), int(idx) + 1)  # a spare image never picked
    files = [f"cam{c}/{p:04d}/{i:04d}.jpg" for (c, p), n in counts.items() for i in range(1, n + 1)]
    ids = ",".join(str(int(i)) for i in z["test_ids"])
    _make_tree(tmp_path, files, [("exp/test_id.txt", ids)])
    write_rand_perm_cam(tmp_path / "exp" / "rand_perm_cam.mat", picks, counts)

    protocol = P.get_protocol(f"sysu/{mode}/{'single' if shots == 1 else 'multi'}/official")
    for trial in range(cams.shape[0]):
        split = protocol.build(tmp_path, trial)
        assert [s.camid for s in split.gallery] == list(cams[trial])
        assert [s.pid for s in split.gallery] == list(pids[trial])
        assert [int(Path(s.path).stem) for s in split.gallery] == list(idxs[trial])
    assert [s.camid for s in split.query] == list(z["query_cams"])
    assert [s.pid for s in split.query] == list(z["query_pids"])
    assert [int(Path(s.path).stem) for s in split.query] == list(z["query_img_index_1based"])


CHECKS = {
    "eval_sysu": lambda z, tmp: _metrics_case(z, "sysu"),
    "eval_regdb": lambda z, tmp: _metrics_case(z, "regdb"),
    "eval_llcm": lambda z, tmp: _metrics_case(z, "llcm"),
    "re_ranking": lambda z, tmp: _rerank_case(z),
    "sysu_test_lists": _sysu_lists_case,
    "llcm_test_lists": _llcm_lists_case,
    "sysu_official_split": _official_split_case,
}


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in GOLDEN_FILES])
def test_golden_case(path, tmp_path):
    z = np.load(path)
    fn = str(z["fn"])
    assert fn in CHECKS, f"{path.name}: unknown golden fn {fn!r}; add a check for it"
    CHECKS[fn](z, tmp_path)
