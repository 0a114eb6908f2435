"""Protocol objects on small trees: names, directions, draws and errors."""

import json
from pathlib import Path

import pytest
import torch

from vireid.data.records import INFRARED, VISIBLE
from vireid.evaluation import evaluate_protocol, get_protocol, protocol_names


def make_sysu(root: Path, ids=(1, 2, 3, 4), per_folder=12):
    for pid in ids:
        for cam in range(1, 7):
            if cam == 3 and pid == ids[-1]:
                continue  # one identity never seen by camera 3
            folder = root / f"cam{cam}" / f"{pid:04d}"
            folder.mkdir(parents=True)
            for n in range(1, per_folder + 1):
                (folder / f"{n:04d}.jpg").touch()
    (root / "exp").mkdir()
    (root / "exp" / "test_id.txt").write_text(",".join(str(i) for i in ids) + "\n")
    return root


def make_regdb(root: Path, trial=1, ids=3, per_id=2):
    (root / "idx").mkdir(parents=True)
    for kind, folder in (("visible", "Visible"), ("thermal", "Thermal")):
        lines = [f"{folder}/{pid}/img_{n}.bmp {pid}" for pid in range(ids) for n in range(per_id)]
        (root / "idx" / f"test_{kind}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_names_cover_the_documented_families():
    names = set(protocol_names())
    for mode in ("all", "indoor"):
        for shots in ("single", "multi"):
            for split in ("official", "seeded"):
                assert f"sysu/{mode}/{shots}/{split}" in names
    assert {f"regdb/trial{t}/{d}" for t in range(1, 11) for d in ("v2i", "i2v")} <= names
    assert {"llcm/i2v", "llcm/v2i", "llcm/v2i_as_released"} <= names


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown protocol 'sysu/all/single'; known: sysu/"):
        get_protocol("sysu/all/single")


def test_trial_outside_the_protocol_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"has trials \[3\], got 4"):
        get_protocol("regdb/trial3/v2i").build(make_regdb(tmp_path, 3), 4)


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset root not found: .*nowhere"):
        get_protocol("sysu/all/single/seeded").build(tmp_path / "nowhere", 0)


def test_official_split_without_the_mat_file_points_to_seeded(tmp_path):
    make_sysu(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"rand_perm_cam.mat.*seeded"):
        get_protocol("sysu/all/single/official").build(tmp_path, 0)


def test_sysu_seeded_single_and_multi(tmp_path):
    make_sysu(tmp_path)
    single = get_protocol("sysu/all/single/seeded").build(tmp_path, 0)
    assert len(single.gallery) == 4 * 4 and all(s.modality == VISIBLE for s in single.gallery)
    assert all(s.modality == INFRARED and s.camid in (3, 6) for s in single.query)
    assert len(single.query) == (4 * 2 - 1) * 12
    indoor = get_protocol("sysu/indoor/single/seeded").build(tmp_path, 0)
    assert {s.camid for s in indoor.gallery} == {1, 2}

    multi = get_protocol("sysu/all/multi/seeded")
    a, b, again = multi.build(tmp_path, 1), multi.build(tmp_path, 2), multi.build(tmp_path, 1)
    assert len(a.gallery) == 4 * 4 * 10
    assert len({s.path for s in a.gallery}) == len(a.gallery)  # no image twice
    assert [s.path for s in a.gallery] == [s.path for s in again.gallery]
    assert [s.path for s in a.gallery] != [s.path for s in b.gallery]


def test_regdb_directions_and_bad_lines(tmp_path):
    make_regdb(tmp_path, trial=2)
    v2i = get_protocol("regdb/trial2/v2i").build(tmp_path, 2)
    i2v = get_protocol("regdb/trial2/i2v").build(tmp_path, 2)
    assert all(s.modality == VISIBLE for s in v2i.query) and all(s.modality == INFRARED for s in v2i.gallery)
    assert [s.path for s in i2v.query] == [s.path for s in v2i.gallery]
    assert v2i.query[0].path == str(tmp_path / "Visible/0/img_0.bmp") and v2i.query[0].pid == 0
    with open(tmp_path / "idx" / "test_thermal_2.txt", "a") as handle:
        handle.write("Thermal/9/x.bmp nine\n")
    with pytest.raises(ValueError, match=r"test_thermal_2.txt:7: cannot parse"):
        get_protocol("regdb/trial2/v2i").build(tmp_path, 2)


def _identity_extractor(calls):
    """Features that encode the identity, plus a little per-image noise."""
    def extract(samples):
        calls.append(len(samples))
        out = torch.zeros(len(samples), 16)
        for row, s in enumerate(samples):
            out[row, s.pid] = 1.0
            g = torch.Generator().manual_seed(abs(hash(s.path)) % 2**31)
            out[row] += 0.05 * torch.randn(16, generator=g)
        return out
    return extract


def test_evaluate_protocol_end_to_end(tmp_path):
    make_sysu(tmp_path)
    calls = []
    result = evaluate_protocol("sysu/all/single/seeded", tmp_path, _identity_extractor(calls))
    assert len(result.trials) == 10
    assert result.mean["rank1"] == pytest.approx(1.0) and result.mean["mAP"] == pytest.approx(1.0)
    # Queries are extracted once; later trials only extract gallery images not seen yet.
    assert calls[0] == 84 + 16 and sum(calls) <= 84 + 4 * 4 * 12
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"protocol", "rerank", "mean", "std", "trials"}
    assert set(data["mean"]) == {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}
    assert data["protocol"] == "sysu/all/single/seeded" and data["rerank"] is False
    table = result.format_table()
    assert all(line.startswith(("protocol", "sysu/all/single/seeded")) for line in table.splitlines())


def test_evaluate_protocol_with_rerank_is_labelled(tmp_path):
    make_regdb(tmp_path, trial=1, ids=5, per_id=3)
    result = evaluate_protocol("regdb/trial1/v2i", tmp_path, _identity_extractor([]), rerank=True, k1=4, k2=2)
    assert result.rerank and "[re-ranked]" in result.format_table()
    assert result.mean["rank1"] == pytest.approx(1.0)


def test_extractor_returning_wrong_shape_is_reported(tmp_path):
    make_regdb(tmp_path)
    with pytest.raises(ValueError, match=r"returned shape \(3, 4\) for 12 images"):
        evaluate_protocol("regdb/trial1/v2i", tmp_path, lambda s: torch.zeros(3, 4))
